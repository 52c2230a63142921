"""Test-time augmentation (`tta`): predictions averaged over passes with the batch transforms in training mode.
Modality-free (any random batch augmentation); `write_submission(tta=True)` and `learnkit.vision.tta` use it."""
from __future__ import annotations

import warnings
from typing import Any

import torch

from learnkit.core.random import get_rng_state, set_rng_state
from learnkit.learner.inference import inference_forward
from learnkit.learner.learner import Learner

__all__ = ["tta"]


def _accuracy(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> float | None:
    if not targets.is_floating_point() and targets.ndim == 1 and probs.ndim == 2:
        return float((probs.argmax(-1) == targets).float().mean())
    if targets.is_floating_point() and targets.shape == probs.shape:  # multi-label: every (item, label) decision
        return float(((probs >= threshold) == targets.bool()).float().mean())
    return None


def tta(learn: Learner, dl: Any = None, n: int = 4, beta: float | None = 0.25) -> dict[str, Any]:
    """Test-time augmentation: predictions averaged over `n` augmented passes, mixed with the plain pass.

    The augmented passes run the batch transforms in training mode (`data.transfer(batch, training=True)`,
    which turns random augmentation on) while the model stays in eval mode, under no_grad and autocast.
    As in fastai, the result is `beta * plain + (1 - beta) * mean(augmented)` (with `beta=None`: the mean
    of the augmented passes alone). The random generators the augmentation draws from (the global ones
    and every `generator` attribute of `learn.data.batch_tfms`) and the transforms' training flags are
    restored afterwards, so TTA leaves no trace (and calling it twice gives the same result).

    Returns:
        {"accuracy": plain accuracy, "tta_accuracy": TTA accuracy, "probs": TTA probabilities,
         "plain_probs": plain probabilities, "targets": targets}. Accuracy is arg-max accuracy for class
        indices, per-label accuracy at the block's threshold for multi-label targets, None otherwise.

    Example:
        >>> out = tta(learn, n=4)
        >>> print(f"{out['accuracy']:.3f} -> {out['tta_accuracy']:.3f}")
    """
    if n < 1:
        raise ValueError(f"tta(n={n}): n must be at least 1")
    if beta is not None and not 0 <= beta <= 1:
        raise ValueError(f"tta(beta={beta}): beta must be in [0, 1] (or None for the augmented mean only)")
    data, y_block = learn.data, learn.data.y_block
    if y_block is None:
        raise ValueError("tta: the data has no target block")
    dl = dl if dl is not None else data.valid_dl
    modules = list(data.batch_tfms.modules())
    flags, was_training = [m.training for m in modules], learn.model.training
    generators = [m.generator for m in modules if isinstance(getattr(m, "generator", None), torch.Generator)]
    if isinstance(getattr(dl, "generator", None), torch.Generator):
        generators.append(dl.generator)
    generators = list({id(g): g for g in generators}.values())
    state = get_rng_state(generators)
    try:
        plain, targets = learn.get_preds(dl)
        learn.model.eval()
        total = torch.zeros_like(plain)
        with torch.no_grad():
            for _ in range(n):
                outs = []
                for batch in dl:
                    batch = data.transfer(batch, training=True)
                    outs.append(inference_forward(learn.model, batch[:data.n_inp], learn.amp_dtype,
                                                  y_block.activation).cpu())
                total += torch.cat(outs)
    finally:
        set_rng_state(state, generators)
        for m, flag in zip(modules, flags):
            m.training = flag
        learn.model.train(was_training)
    augmented = total / n
    if torch.equal(augmented, plain):
        warnings.warn(f"tta: the batch transforms ({[type(m).__name__ for m in data.batch_tfms]}) changed nothing "
                      f"in training mode: the data has no random augmentation, so TTA equals the plain prediction. "
                      f"Add augmentation batch transforms to the DataBlock to use TTA.", stacklevel=2)
    probs = augmented if beta is None else beta * plain + (1 - beta) * augmented
    threshold = float(getattr(y_block, "threshold", 0.5))
    return {"accuracy": None if targets is None else _accuracy(plain, targets, threshold),
            "tta_accuracy": None if targets is None else _accuracy(probs, targets, threshold),
            "probs": probs, "plain_probs": plain, "targets": targets}
