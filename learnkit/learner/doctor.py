"""The pre-flight check ("doctor") and `Learner.summary`: one batch through model and loss, and the
classic mistakes reported in plain words, with the shapes and the fix."""
from __future__ import annotations

from typing import Any, TYPE_CHECKING

import torch
from torch import nn

from learnkit.learner.inference import inference_forward

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["LearnerCheckError", "check_learner", "learner_summary", "print_training_loop"]

_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_FLOAT_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCEWithLogitsLoss, nn.BCELoss)


class LearnerCheckError(ValueError):
    """The pre-flight check found a mistake that would make training fail or silently go wrong."""

    def __str__(self) -> str:
        return (super().__str__() + " [pre-flight check; if this set-up is intended, build the learner with "
                "Learner(..., preflight=False)]")


def _shape(t: Any) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" if isinstance(t, torch.Tensor) else type(t).__name__


def _devices(module: nn.Module) -> set[torch.device]:
    return {t.device for t in list(module.parameters()) + list(module.buffers())}


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.type != "cuda" or (a.index or 0) == (b.index or 0)


def one_batch(learn: "Learner") -> tuple[Any, ...]:
    """A validation batch (training if there is none) on the device, without touching any RNG."""
    dl = learn.data.valid_dl if len(learn.data.valid_dl) > 0 else learn.data.train_dl
    state = learn.rng_state()
    try:
        batch = next(iter(dl))
    finally:
        learn.set_rng_state(state)
    return learn.data.transfer(batch, training=False)


def _forward(learn: "Learner", xb: tuple) -> Any:
    model = learn.model
    was_training = model.training
    model.eval()  # eval: BatchNorm statistics and dropout are left alone
    try:
        return inference_forward(model, xb, learn.amp_dtype)
    except RuntimeError as e:
        msg = str(e)
        shapes = ", ".join(_shape(x) for x in xb)
        if "shapes cannot be multiplied" in msg or "size mismatch" in msg:
            raise LearnerCheckError(
                f"The model failed on an input batch of shape {shapes}: a Linear layer received features of the "
                f"wrong size ({msg}). Usual causes: a missing nn.Flatten() or pooling layer before the Linear head, "
                f"or a Linear in_features that does not match the input (check n_in).") from e
        if "channels" in msg and ("expected" in msg.lower() or "Given groups" in msg):
            raise LearnerCheckError(
                f"The model failed on an input batch of shape {shapes}: the number of input channels does not "
                f"match the first layer ({msg}). Build the model with n_in equal to the data's channels.") from e
        if "same device" in msg or "Expected all tensors" in msg:
            raise LearnerCheckError(f"The model and the data are on different devices ({msg}); keep the model "
                                    f"on data.device ({learn.data.device}).") from e
        raise LearnerCheckError(f"The model failed on one batch of inputs {shapes}: {type(e).__name__}: {msg}") from e
    finally:
        model.train(was_training)


def check_learner(learn: "Learner") -> None:
    """Raise `LearnerCheckError` for the classic mistakes; do nothing when the batch and loss look right."""
    data = learn.data
    bad = [d for d in _devices(learn.model) if not _same_device(d, data.device)]
    if bad:
        raise LearnerCheckError(f"The model has weights on {sorted(map(str, set(bad)))} but the data goes to "
                                f"{data.device}. Fix: learn.model.to({str(data.device)!r}) or data.to(...) so both match.")
    batch = one_batch(learn)
    xb, yb = tuple(batch[:data.n_inp]), tuple(batch[data.n_inp:])
    pred = _forward(learn, xb)
    if not yb or not isinstance(pred, torch.Tensor):
        return
    y = yb[0]
    if pred.shape[0] != y.shape[0]:
        raise LearnerCheckError(
            f"The model returned {pred.shape[0]} predictions (output {_shape(pred)}) for a batch of {y.shape[0]} "
            f"targets (target {_shape(y)}). The batch dimension was lost or reshaped inside the model: use "
            f"nn.Flatten() (not x.view(-1)) before the head, or pool the spatial dimensions first.")
    vocab = data.classes
    loss_fn = learn.loss_fn
    is_index_target = not y.is_floating_point() and not y.is_complex()
    if vocab is not None and is_index_target and y.ndim == 1:
        if pred.ndim != 2:
            raise LearnerCheckError(f"A classifier must output (batch, n_classes) = ({y.shape[0]}, {len(vocab)}); "
                                    f"the model output is {_shape(pred)}. Add nn.Flatten()/pooling before the head.")
        if pred.shape[1] != len(vocab):
            raise LearnerCheckError(
                f"The model's head outputs {pred.shape[1]} values per item, but the data has {len(vocab)} classes "
                f"({vocab[:10]}{' ...' if len(vocab) > 10 else ''}). Fix: build the head with n_out={len(vocab)} "
                f"(data.n_classes).")
    if vocab is not None and y.is_floating_point() and y.ndim == 2 and y.shape[1] == len(vocab) \
            and pred.shape[-1] != len(vocab):
        raise LearnerCheckError(f"The model's head outputs {pred.shape[-1]} values per item, but the multi-label "
                                f"data has {len(vocab)} labels. Fix: build the head with n_out={len(vocab)}.")
    soft_labels = y.shape == pred.shape and pred.ndim >= 2 and pred.shape[-1] > 1  # e.g. MixUp targets
    if isinstance(loss_fn, _INDEX_LOSSES) and y.is_floating_point() and not soft_labels:
        raise LearnerCheckError(
            f"{type(loss_fn).__name__} needs integer class indices (dtype long) as targets, but the targets are "
            f"{_shape(y)}. Fix: use CategoryBlock for labels, or a regression loss such as nn.MSELoss() "
            f"(with RegressionBlock) for numbers.")
    if isinstance(loss_fn, _FLOAT_LOSSES) and not y.is_floating_point():
        raise LearnerCheckError(
            f"{type(loss_fn).__name__} needs float targets, but the targets are {_shape(y)} (integer). Fix: for "
            f"class labels use nn.CrossEntropyLoss (CategoryBlock's default); for numbers use RegressionBlock.")
    if pred.is_floating_point() and y.is_floating_point() and pred.shape != y.shape:
        try:
            broadcast = torch.broadcast_shapes(pred.shape, y.shape)
        except RuntimeError:
            broadcast = None
        if broadcast is not None:
            raise LearnerCheckError(
                f"Predictions {_shape(pred)} and targets {_shape(y)} have different shapes that broadcast to "
                f"{tuple(broadcast)}: an element-wise loss would compare every prediction with every target and "
                f"train on the wrong objective without any error. Fix: make them match, e.g. end the model with "
                f"Linear(..., {y.shape[-1] if y.ndim > 1 else 1}) and use RegressionBlock (targets (B, 1)), or "
                f"reshape with pred.view_as(target) in your loss.")
    try:
        with torch.no_grad(), learn.autocast():
            loss = loss_fn(pred, *yb)
    except Exception as e:
        raise LearnerCheckError(f"The loss {loss_fn!r} failed on predictions {_shape(pred)} and targets "
                                f"{', '.join(_shape(t) for t in yb)}: {type(e).__name__}: {e}") from e
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise LearnerCheckError(f"The loss must return one number (a scalar tensor); {loss_fn!r} returned "
                                f"{_shape(loss)}. Use reduction='mean'.")
    if not torch.isfinite(loss.detach().float()).item():
        raise LearnerCheckError(f"The loss is {float(loss)} on the first batch before any training: check the "
                                f"inputs for NaN/inf ({', '.join(_shape(x) for x in xb)}) and their scale.")


def learner_summary(learn: "Learner") -> str:
    """Per-layer table from one batch: output shape, parameters, trainable or frozen; then totals."""
    rows: list[tuple[str, str, int, str]] = []
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: Any, output: Any) -> None:
            params = list(module.parameters(recurse=False))
            n = sum(p.numel() for p in params)
            train = "" if not params else ("trainable" if all(p.requires_grad for p in params) else
                                           "frozen" if not any(p.requires_grad for p in params) else "partly")
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            rows.append((f"{name} ({type(module).__name__})", str(shape), n, train))
        return fn

    for name, module in learn.model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        batch = one_batch(learn)
        _forward(learn, tuple(batch[:learn.data.n_inp]))
    finally:
        for h in hooks:
            h.remove()
    width = max([len(r[0]) for r in rows] + [20])
    lines = [f"{type(learn.model).__name__} on input {', '.join(_shape(x) for x in batch[:learn.data.n_inp])}",
             f"{'Layer':<{width}}  {'Output shape':<22} {'Params':>10}  Trainable", "-" * (width + 46)]
    lines += [f"{a:<{width}}  {b:<22} {c:>10,}  {d}" for a, b, c, d in rows]
    total = sum(p.numel() for p in learn.model.parameters())
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    lines += ["-" * (width + 46), f"Total params: {total:,} (trainable {trainable:,}, frozen {total - trainable:,})",
              f"Layer groups: {len(learn.layer_groups)}",
              f"Optimizer: {learn.opt_fn.__name__ if hasattr(learn.opt_fn, '__name__') else learn.opt_fn}"
              f"{'' if learn.opt is None else f' ({len(learn.opt.param_groups)} param groups)'}",
              f"Loss: {learn.loss_fn!r}",
              f"Mixed precision: {str(learn.amp_dtype).replace('torch.', '') if learn.amp_dtype else 'off'}"]
    return "\n".join(lines)


def print_training_loop(learn: "Learner") -> None:
    """Print each event of the loop, indented by nesting, with the callbacks that run on it."""
    from learnkit.learner.events import EVENTS
    depth = {"before_fit": 0, "before_epoch": 1, "before_train": 2, "before_batch": 3, "after_forward": 3,
             "after_loss": 3, "after_backward": 3, "after_step": 3, "after_batch": 3, "after_train": 2,
             "before_validate": 2, "after_validate": 2, "after_epoch": 1, "after_fit": 0}
    for e in EVENTS:
        names = ", ".join(repr(c) for c in learn.callbacks if callable(getattr(c, e, None)))  # run in this order
        print("  " * depth[e] + f"{e}: {names or '-'}")
