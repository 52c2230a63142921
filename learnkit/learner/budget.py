"""Budgeted training: `fit_one_cycle(budget="60s")` measures the step and validation times on a few batches,
then sizes the run (possibly ending mid-epoch) so that the one-cycle schedule completes, annealed, in time."""
from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

import torch

from learnkit.learner.events import Callback, CancelFit, CancelTrain
from learnkit.learner.inference import inference_forward

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["parse_budget", "plan_budget", "StopAfterBatches"]

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_budget(budget: str | float | int) -> float:
    """Seconds from 90, 90.0, "90s", "1.5m", "2min" or "1h"."""
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        seconds = float(budget)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(budget))
        if match is None:
            raise ValueError(f"budget={budget!r}: give seconds (90) or a string like '90s', '1.5m', '1h'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"budget={budget!r}: must be a positive duration")
    return seconds


class StopAfterBatches(Callback):
    """Ends a fit after `total` training batches: the last epoch is cut short, validated, and the fit ends.
    At `before_fit` it sets `learn.n_iter = total`, so schedules see the run's true length. Prefer
    `fit(..., max_batches=total)`, which the loop handles itself (the budgeted fit uses it)."""

    order = 1000  # last: every other callback sees the final batch before the epoch is cut

    def __init__(self, total: int):
        self.total, self.done = total, False

    def before_fit(self, learn: "Learner") -> None:
        learn.n_iter, self.done = self.total, False

    def after_batch(self, learn: "Learner") -> None:
        if learn.training and learn.iter + 1 >= self.total:
            self.done = True
            raise CancelTrain()

    def after_epoch(self, learn: "Learner") -> None:
        if self.done:
            raise CancelFit()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _validation_seconds(learn: "Learner") -> float:
    """One pass over the validation loader as validation does it (no callbacks, no state changed)."""
    dl = learn.data.valid_dl
    if len(dl) == 0:
        return 0.0
    was_training = learn.model.training
    learn.model.eval()
    _sync(learn.device)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in dl:
            batch = learn.data.transfer(batch, training=False)
            inference_forward(learn.model, batch[:learn.data.n_inp], learn.amp_dtype)
    _sync(learn.device)
    learn.model.train(was_training)
    return time.perf_counter() - start


def measure(learn: "Learner", n_batches: int = 20) -> tuple[float, float]:
    """(seconds per training batch, seconds per validation pass), after a short warm-up; leaves no trace."""
    n = min(n_batches, len(learn.data.train_dl))
    learn.profile(min(5, n))  # warm-up: kernel selection, worker start
    report = learn.profile(n)
    return report["seconds"] / max(1, report["batches"]), _validation_seconds(learn)


def plan_budget(learn: "Learner", budget: str | float) -> dict[str, Any]:
    """How many training batches (and so epochs, the last possibly cut short) fit in `budget` seconds of fit,
    validations included. Returns {'seconds', 'batch_s', 'valid_s', 'total_batches', 'epochs'}; `fit_one_cycle`
    runs `fit(epochs, max_batches=total_batches)`."""
    seconds = parse_budget(budget)
    batch_s, valid_s = measure(learn)
    if learn.dist is not None:  # every rank must plan the same number of steps: rank 0's timings decide
        batch_s, valid_s = learn.dist.broadcast((batch_s, valid_s))
    per_epoch = len(learn.data.train_dl)
    epochs, total = 1, 0
    for _ in range(20):  # total depends on the number of validations, which depends on total: iterate
        total = int((seconds - epochs * valid_s) // batch_s)
        new_epochs = max(1, math.ceil(total / per_epoch))
        if new_epochs == epochs:
            break
        epochs = new_epochs
    if total < 2:
        raise ValueError(f"budget={budget!r}: a training batch takes {batch_s:.3f} s and a validation pass "
                         f"{valid_s:.2f} s here, so not even 2 batches fit; give a larger budget")
    return {"seconds": seconds, "batch_s": batch_s, "valid_s": valid_s, "total_batches": total,
            "epochs": epochs}
