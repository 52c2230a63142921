"""Callbacks that act on the step: GradientClipping, GradientAccumulation, TerminateOnNaN, and
Checkpoint (resumable training state)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from learnkit.learner.checkpoint import write_checkpoint
from learnkit.learner.events import Callback, CancelFit, CancelStep
from learnkit.learner.learner import Learner

__all__ = ["GradientClipping", "GradientAccumulation", "TerminateOnNaN", "Checkpoint"]


class GradientClipping(Callback):
    """Clip the global gradient norm to `max_norm` before each step (unscaling fp16 gradients first)."""

    order = 0
    graph_safe = True  # clip_grad_norm_ stays on the device: a CUDA graph records it with the step

    def __init__(self, max_norm: float = 1.0):
        self.max_norm = max_norm

    def after_backward(self, learn: Learner) -> None:
        learn.scaler.unscale_(learn.opt)  # no-op unless fp16 loss scaling is on
        params = [p for g in learn.opt.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)


class GradientAccumulation(Callback):
    """Step the optimizer every `steps` batches with the mean of their gradients (a larger effective
    batch). `learn.opt_steps` counts the real optimizer steps; an incomplete group at the end of an epoch
    is discarded so epochs stay independent."""

    order = -5

    def __init__(self, steps: int = 4):
        if steps < 1:
            raise ValueError(f"GradientAccumulation(steps={steps}): steps must be >= 1")
        self.steps = steps

    def before_train(self, learn: Learner) -> None:
        self.count = 0

    def after_loss(self, learn: Learner) -> None:
        if learn.training:
            learn.loss_grad = learn.loss / self.steps

    def after_backward(self, learn: Learner) -> None:
        self.count += 1
        if self.count % self.steps:
            raise CancelStep()

    def after_train(self, learn: Learner) -> None:
        if self.count % self.steps:
            learn.opt.zero_grad(set_to_none=True)


class TerminateOnNaN(Callback):
    """Stop before the step when the loss is NaN or infinite, naming the batch and the last finite loss.
    Reads the loss every batch (a host sync): use it while debugging."""

    order = -10

    def before_fit(self, learn: Learner) -> None:
        self.last_finite: tuple[int, float] | None = None
        self.message: str | None = None

    def after_loss(self, learn: Learner) -> None:
        if not learn.training:
            return
        value = float(learn.loss.detach())
        if math.isfinite(value):
            self.last_finite = (learn.iter, value)
            return
        last = (f"the last finite loss was {self.last_finite[1]:.6g} at iteration {self.last_finite[0]}"
                if self.last_finite else "no finite loss was seen in this fit")
        self.message = (f"TerminateOnNaN: the loss is {value} at epoch {learn.epoch}, batch {learn.batch_idx} "
                        f"(iteration {learn.iter}); {last}. Training stopped before this step; try a lower lr, "
                        f"GradientClipping, or check this batch's inputs.")
        print(self.message)
        raise CancelFit()


class Checkpoint(Callback):
    """Write a resumable checkpoint at the end of every epoch (and every `every_n_batches` batches),
    atomically. Resume with the same call plus `resume_from=`:

    Example:
        >>> learn.fit_one_cycle(5, 1e-3, callbacks=[Checkpoint("ckpt.pth")])
        >>> # ... interrupted; later, same learner set-up:
        >>> learn.fit_one_cycle(5, 1e-3, callbacks=[Checkpoint("ckpt.pth")], resume_from="models/ckpt.pth")
    """

    order = 90

    def __init__(self, fname: str = "checkpoint.pth", every_n_batches: int | None = None):
        self.fname, self.every_n_batches = fname, every_n_batches

    def path(self, learn: Learner) -> Path:
        return Path(learn.path) / learn.model_dir / self.fname

    def before_fit(self, learn: Learner) -> None:
        # Gradients are not checkpointed: a mid-epoch checkpoint must fall on an optimizer step.
        n = self.every_n_batches
        for cb in learn.callbacks:
            if isinstance(cb, GradientAccumulation) and n and n % cb.steps:
                raise ValueError(f"Checkpoint(every_n_batches={n}) with GradientAccumulation(steps={cb.steps}): "
                                 f"checkpoints must fall on optimizer steps; use a multiple of {cb.steps}")

    def before_train(self, learn: Learner) -> None:
        # The loop builds the loader's iterator (which draws the shuffle) right after this event.
        self._rng_epoch_start = learn.rng_state()

    def after_batch(self, learn: Learner) -> None:
        n = self.every_n_batches
        done = learn.batch_idx + 1
        if learn.training and n and done % n == 0 and done < len(learn.dl):
            learn.iter += 1  # the loop counts this batch right after this event; the checkpoint must too
            try:
                write_checkpoint(learn, self.path(learn), learn.epoch, done, self._rng_epoch_start)
            finally:
                learn.iter -= 1

    def after_epoch(self, learn: Learner) -> None:
        write_checkpoint(learn, self.path(learn), learn.epoch + 1, 0, None)

    def state_dict(self) -> dict[str, Any]:
        return {}
