"""Whole-step CUDA graphs: the forward, loss, backward and optimizer step of a training batch recorded once
with `torch.cuda.graph` and replayed for every later batch of the same shapes (validation: the forward and
loss). No torch.compile, so no compile wait: a capture costs about one eager step.

Why: at small image sizes every step is bound by kernel launches (hundreds of small kernels, each a Python
call); a replay launches them all at once.

How the loop uses it (learner.py, `_one_batch`): for each batch, `StepGraphs.run(learn)` either replays the
graph of this batch's shapes ('replayed': the loop then counts the step or the validation sums), runs the loop's
eager step itself as a warm-up on the capture stream ('warm-up': nothing left to do), captures and replays
('replayed'), or declines (None: more than `MAX_SHAPES` shapes in this mode already) and the loop runs its eager
step. One graph per batch shape and mode: a last partial batch gets its own, and so do the few lengths of text
batches padded to a multiple on CUDA (`text/data.py`, `graph_pad_multiple`); each holds its own activations and
gradients (the parameters' `.grad` are pointed at the replayed graph's).
Hyper-parameters stay plain floats in `learn.opt.param_groups` (schedules, checkpoints and users see floats);
the graph reads device copies of each group's lr and momentum, refreshed before every replay, so the one-cycle
schedule reaches the captured step without a host sync. Weight decay and eps are baked in (a change recaptures).

What is graph-safe: learnkit's loop and default steps, Adam/AdamW (their update recorded by `adam_step`, the
same formulas on the optimizer's own state with lr and betas as device tensors; eager warm-up steps keep the
optimizer's own fused kernel), callbacks that only act between steps (`before_batch`,
`after_step`, `after_batch`, ...) and those that declare `graph_safe = True` (GradientClipping,
RNNRegularizer): their `after_forward` / `after_loss` / `after_backward` work is recorded into the graph.
Dropout stays random per step (torch registers the default CUDA generator with the graph); augmentation runs
before the graph, eagerly. Everything else (fp16's loss scaling, GradientAccumulation's skipped steps, other
optimizers, recurrent layers whose state lives across batches, torchrun) trains eagerly, with the reason in
`learn.cuda_graph_report["reason"]` and one printed line when progress is on.
"""
from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from learnkit.core.device import autocast

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["StepGraphs", "adam_hypers", "adam_step", "graph_blockers", "graphs_for_fit", "STEP_EVENTS"]

# Events that fire inside a step: a callback handling one of them must declare `graph_safe = True`.
STEP_EVENTS = ("after_forward", "after_loss", "after_backward")
WARMUP = {True: 2, False: 1}  # eager steps on the capture stream before capturing (training, validation)
MAX_SHAPES = 12  # graphs kept per mode; batches of further shapes run eagerly
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW)


def graph_blockers(learn: "Learner", forced: bool = False) -> list[str]:
    """Why this learner's fit cannot (or, with `cuda_graphs='auto'`, should not) run as CUDA graphs; [] when it
    can. With `forced` (cuda_graphs=True) only the hard reasons count."""
    hard, soft = [], []
    if learn.device.type != "cuda":
        hard.append(f"the device is {learn.device.type}, not CUDA")
    if learn.dist is not None:
        hard.append("under torchrun (DDP's gradient hooks are not captured here)")
    if learn.amp_dtype == torch.float16:
        hard.append("fp16 autocast needs the grad scaler's dynamic step skipping (use mixed_precision='bf16')")
    if learn.opt is not None and not isinstance(learn.opt, CAPTURABLE):
        hard.append(f"the optimizer {type(learn.opt).__name__} is not Adam/AdamW")
    elif learn.opt is not None and any(g.get("amsgrad") or g.get("maximize") for g in learn.opt.param_groups):
        hard.append("the optimizer uses amsgrad or maximize (not recorded here)")
    if getattr(learn.model, "_compiled_call_impl", None) is not None:
        hard.append("the model is torch.compiled (learn.compile uses its own CUDA graphs)")
    for event in STEP_EVENTS:
        for cb in learn.callbacks:
            if callable(getattr(cb, event, None)) and not getattr(cb, "graph_safe", False):
                hard.append(f"{type(cb).__name__}.{event} runs inside the step and is not marked graph_safe")
    if any(isinstance(m, nn.RNNBase) for m in learn.model.modules()) or getattr(learn.model, "cuda_graph_safe", True) is False:
        soft.append("the model carries state across batches (a recurrent layer)")
    if type(learn).train_step is not _learner_class().train_step or type(learn).eval_step is not _learner_class().eval_step:
        soft.append("train_step/eval_step are overridden (pass cuda_graphs=True if they are graph-safe)")
    failure = (learn.cuda_graph_report or {}).get("capture_failed")
    if failure:  # a host sync inside the model: do not pay the attempt in every fit
        soft.append(f"an earlier fit's {failure} (cuda_graphs=True retries)")
    return hard if forced else hard + soft


def graphs_for_fit(learn: "Learner") -> "StepGraphs | None":
    """This fit's StepGraphs, or None (eager) with the reason in `learn.cuda_graph_report` (and one printed line
    on CUDA when progress is on). `cuda_graphs=True` with a hard blocker is an error naming it."""
    if learn.cuda_graphs is False:
        learn.cuda_graph_report = {"used": False, "reason": "cuda_graphs=False"}
        return None
    forced = learn.cuda_graphs is True
    blockers = graph_blockers(learn, forced=forced)
    kind = getattr(learn.data, "loader_kind", None)
    few_lengths = getattr(getattr(learn.data, "x_block", None), "pad_multiple", None) is not None
    if not forced and (kind == "stream" or kind == "padded" and not few_lengths):
        blockers.append(f"the {kind} loader's batches change shape (pass cuda_graphs=True to insist)")
    if blockers and forced:
        raise ValueError("cuda_graphs=True, but this fit cannot be recorded as CUDA graphs: " + "; ".join(blockers)
                         + ". Fix that, or pass cuda_graphs='auto' to train eagerly when it cannot.")
    if blockers:  # a capture failure is remembered from fit to fit ('auto' does not retry it)
        failure = (learn.cuda_graph_report or {}).get("capture_failed")
        learn.cuda_graph_report = {"used": False, "reason": "; ".join(blockers),
                                   **({"capture_failed": failure} if failure else {})}
        if learn.device.type == "cuda" and learn.progress:
            print(f"CUDA graphs: off, {learn.cuda_graph_report['reason']}; training eagerly")
        return None
    graphs = StepGraphs(learn)
    learn.cuda_graph_report = graphs.report
    return graphs


def _learner_class() -> type:
    from learnkit.learner.learner import Learner
    return Learner


def _key(batch: tuple[Any, ...], learn: "Learner") -> tuple | None:
    """What a graph is valid for: every batch element a CUDA tensor of these shapes and dtypes, the same
    trainable parameters, the same baked-in hyper-parameters. None: this batch cannot be replayed."""
    if not all(isinstance(t, torch.Tensor) and t.is_cuda for t in batch):
        return None
    shapes = tuple((tuple(t.shape), t.dtype) for t in batch)
    trainable = tuple(p.requires_grad for p in learn.model.parameters())
    baked = tuple((g.get("weight_decay"), g.get("eps")) for g in learn.opt.param_groups) if learn.opt else ()
    return shapes, trainable, baked


class _Graph:
    """One recorded step: the graph, its static inputs and outputs, and the device hyper-parameters it reads."""

    def __init__(self, key: tuple, graph: torch.cuda.CUDAGraph, inputs: tuple[torch.Tensor, ...],
                 pred: Any, loss: torch.Tensor, hypers: list[tuple[torch.Tensor, dict, str, int | None]],
                 grads: list[tuple[torch.Tensor, torch.Tensor | None]]):
        self.key, self.graph, self.inputs, self.pred, self.loss, self.hypers = key, graph, inputs, pred, loss, hypers
        self.grads = grads  # (parameter, the gradient buffer this graph writes)

    def replay(self, batch: tuple[torch.Tensor, ...]) -> None:
        for static, t in zip(self.inputs, batch):
            static.copy_(t, non_blocking=True)
        for tensor, group, name, slot in self.hypers:  # the schedule's current values, without a host sync
            tensor.fill_(group[name] if slot is None else group[name][slot])
        self.graph.replay()


class StepGraphs:
    """The CUDA graphs of one fit (made by `Learner.fit` when `graph_blockers` is empty, dropped after it)."""

    def __init__(self, learn: "Learner"):
        self.stream = torch.cuda.Stream(learn.device)
        self.graphs: dict[bool, dict[tuple, _Graph]] = {True: {}, False: {}}  # per mode, by batch shapes
        self.context: dict[bool, tuple | None] = {True: None, False: None}  # trainable set + baked hypers of those
        self.warm: dict[bool, dict[tuple, int]] = {True: {}, False: {}}  # per mode, by shapes: warm-up steps run
        self.bound: _Graph | None = None  # the graph whose gradient buffers the parameters' .grad are
        self.failed: str | None = None
        self.report: dict[str, Any] = {"used": True, "reason": None, "capture_seconds": 0.0, "replays": 0,
                                       "eager_batches": 0, "captures": 0, "shapes": None}

    def run(self, learn: "Learner", eager_step: Callable[[], None], event: Callable[[str], None]) -> str | None:
        """Run this batch's step (as set up by the loop: `learn.xb`, `learn.yb`, schedules applied): 'replayed'
        (on a graph), 'warm-up' (`eager_step`, the loop's own, ran here in full), or None when the loop must run
        it eagerly. `event` fires a loop event (the graph_safe handlers of the in-step events are recorded)."""
        training, batch = learn.training, learn.xb + learn.yb
        key = _key(batch, learn) if self.failed is None else None
        if key is None:
            return self._decline(learn, training)
        graphs = self.graphs[training]
        if graphs and self.context[training] != key[1:]:  # other trainable parameters or baked-in hypers
            graphs.clear()  # record them again
            self.warm[training].clear()
        self.context[training] = key[1:]
        graph = graphs.get(key[0])
        if graph is None and len(graphs) >= MAX_SHAPES:
            return self._decline(learn, training)
        warm = self.warm[training]
        if graph is None and warm.get(key[0], 0) < WARMUP[training]:
            warm[key[0]] = warm.get(key[0], 0) + 1
            self._unbind(learn, training)
            with self._on_stream():
                eager_step()
            return "warm-up"
        if graph is None:
            try:
                graph = graphs[key[0]] = self._capture(learn, key, batch, event)
            except Exception as e:  # whatever the capture tripped on, training goes on eagerly
                self._give_up(learn, f"capture failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
                return self._decline(learn, training)
        if training and self.bound is not graph:
            for p, g in graph.grads:
                p.grad = g
            self.bound = graph
        graph.replay(batch)
        self._outputs(learn, graph)
        self.report["replays"] += 1
        return "replayed"

    def _unbind(self, learn: "Learner", training: bool) -> None:
        """Before an eager training step: .grad set to None, or backward would add into a graph's buffers."""
        if training and learn.opt is not None:
            learn.opt.zero_grad(set_to_none=True)
            self.bound = None

    def _decline(self, learn: "Learner", training: bool) -> None:
        self._unbind(learn, training)
        self.report["eager_batches"] += 1

    def _outputs(self, learn: "Learner", graph: _Graph) -> None:
        # The loss is copied (History keeps one tensor per batch); the prediction is the graph's own buffer,
        # valid until the next replay (the metrics read it at once).
        learn.pred, learn.loss = graph.pred, graph.loss.detach().clone()
        learn.loss_grad = learn.loss

    @contextlib.contextmanager
    def _on_stream(self) -> Iterator[None]:
        """Warm-ups run on the capture stream (cuBLAS/cuDNN set up their per-stream state there)."""
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def _capture(self, learn: "Learner", key: tuple, batch: tuple[torch.Tensor, ...],
                 event: Callable[[str], None]) -> _Graph:
        start = time.perf_counter()
        training = learn.training
        inputs = tuple(t.clone() for t in batch)
        graph = torch.cuda.CUDAGraph()
        hypers = adam_hypers(learn.opt) if training else []
        if training:
            self._unbind(learn, training)  # gradients are then allocated (and written) by the graph
        generator = torch.cuda.default_generators[learn.device.index or 0]
        clean = generator.clone_state()  # a failed capture leaves the generator's state half-captured
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                with autocast(learn.device.type, learn.amp_dtype, cache_enabled=False):  # no cast cache in a capture
                    if training:
                        loss = learn.train_step(inputs)
                    else:
                        learn.pred, loss = learn.eval_step(inputs)
                learn.loss = learn.loss_grad = loss
                if training:
                    event("after_loss")  # graph_safe handlers only (graph_blockers checked)
                    learn.loss_grad.backward()
                    event("after_backward")
                    adam_step(learn.opt, hypers)
        except BaseException:
            generator.graphsafe_set_state(clean)
            raise
        finally:
            torch.cuda.current_stream().wait_stream(self.stream)
        self.report["capture_seconds"] += time.perf_counter() - start
        grads = [(p, p.grad) for group in learn.opt.param_groups for p in group["params"]] if training else []
        self.report["captures"] += 1
        if training and self.report["shapes"] is None:  # the first training shapes (a full batch)
            self.report["shapes"] = [list(t.shape) for t in batch]
        return _Graph(key, graph, inputs, learn.pred, loss, hypers, grads)

    def _give_up(self, learn: "Learner", reason: str) -> None:
        self.failed = reason
        self.graphs, self.bound = {True: {}, False: {}}, None
        self.report.update(used=False, reason=reason, capture_failed=reason)
        if learn.opt is not None:
            learn.opt.zero_grad(set_to_none=True)
        if learn.progress:
            print(f"CUDA graphs: off for the rest of this fit, {reason}; training goes on eagerly")


def adam_hypers(opt: torch.optim.Optimizer) -> list[tuple[torch.Tensor, dict, str, int | None]]:
    """Made before a capture (a graph cannot copy host numbers in): one device tensor per param group for lr and
    each beta, with where a replay refills it from: (tensor, group, name, slot). Also puts the step counts of
    a non-fused optimizer (kept on the host) on the device, where a graph can count them."""
    hypers = []
    for group in opt.param_groups:
        device = group["params"][0].device
        for name, slot in (("lr", None), ("betas", 0), ("betas", 1)):
            value = group[name] if slot is None else group[name][slot]
            hypers.append((torch.tensor(float(value), dtype=torch.float32, device=device), group, name, slot))
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "step" in state and state["step"].device != device:
                state["step"] = state["step"].to(device=device, dtype=torch.float32)
    return hypers


def adam_step(opt: torch.optim.Optimizer, hypers: list[tuple[torch.Tensor, dict, str, int | None]]) -> None:
    """torch.optim.Adam/AdamW's update on their own state (step, exp_avg, exp_avg_sq), written with foreach ops
    whose hyper-parameters that a schedule moves (lr, both betas) are the device tensors of `adam_hypers`: what
    a CUDA graph records. (torch's capturable step reads the betas as host numbers, which a graph freezes.)"""
    with torch.no_grad():
        for i, group in enumerate(opt.param_groups):
            lr, beta1, beta2 = (h[0] for h in hypers[3 * i:3 * i + 3])
            _adam_group(opt, group, lr, beta1, beta2)


def _adam_group(opt: torch.optim.Optimizer, group: dict, lr: torch.Tensor, beta1: torch.Tensor,
                beta2: torch.Tensor) -> None:
    params = [p for p in group["params"] if p.grad is not None]
    if not params:
        return
    states = [opt.state[p] for p in params]
    if not all("exp_avg" in st and "exp_avg_sq" in st and "step" in st for st in states):
        raise RuntimeError("the optimizer has no state yet for some parameters (a warm-up step makes it)")
    grads = [p.grad for p in params]
    exp_avgs, exp_avg_sqs = [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states]
    steps = [st["step"] for st in states]
    torch._foreach_add_(steps, 1)
    if group["weight_decay"]:
        if group.get("decoupled_weight_decay", isinstance(opt, torch.optim.AdamW)):
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        else:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, torch._foreach_mul(grads, 1 - beta1))
    torch._foreach_mul_(exp_avg_sqs, beta2)
    squares = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(squares, 1 - beta2)
    torch._foreach_add_(exp_avg_sqs, squares)
    # 1 - beta ** step per parameter (frozen ones have taken fewer steps), as 1 - exp(step * log(beta)):
    # foreach ops take a device tensor only as a factor.
    corrections = []
    for beta in (beta1, beta2):
        c = torch._foreach_mul(steps, torch.log(beta))
        torch._foreach_exp_(c)
        torch._foreach_neg_(c)
        torch._foreach_add_(c, 1)
        corrections.append(c)
    torch._foreach_sqrt_(corrections[1])
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, corrections[1])
    torch._foreach_add_(denom, group["eps"])
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_div_(update, corrections[0])
    torch._foreach_mul_(update, lr)
    torch._foreach_sub_(params, update)
