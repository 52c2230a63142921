"""The LR finder: `fit` with an exponential lr schedule and a callback that records the smoothed loss and
stops on divergence; afterwards model, optimizer, RNG and history are put back bit-exactly."""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Iterator, NamedTuple, TYPE_CHECKING

import numpy as np
import torch

from learnkit.learner.events import Callback, CancelFit, CancelValidate
from learnkit.learner.progress import ProgressBar
from learnkit.optim.schedules import Exp

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["SuggestedLRs", "LRFinder", "leave_no_trace", "lr_find", "suggest_lrs", "plot_lr_find"]


class SuggestedLRs(NamedTuple):
    valley: float
    minimum: float
    steepest: float


class LRFinder(Callback):
    """Records (lr, smoothed loss) per batch; stops after `num_it` batches or when the smoothed loss
    exceeds 4x its best (or is not finite). Reads the loss every batch: a finder may sync."""

    order = 40
    beta = 0.98

    def __init__(self, num_it: int, stop_div: bool = True):
        self.num_it, self.stop_div = num_it, stop_div
        self.lrs: list[float] = []
        self.losses: list[float] = []

    def before_fit(self, learn: "Learner") -> None:
        self._avg, self.best = 0.0, math.inf

    def before_validate(self, learn: "Learner") -> None:
        raise CancelValidate()

    def after_batch(self, learn: "Learner") -> None:
        if not learn.training:
            return
        loss = float(learn.loss.detach())
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(learn.hypers["lr"][-1])
        self.losses.append(smooth)
        self.best = min(self.best, smooth)
        if len(self.losses) >= self.num_it:
            raise CancelFit()
        if self.stop_div and (not math.isfinite(smooth) or smooth > 4 * self.best):
            raise CancelFit()


def suggest_lrs(lrs: list[float], losses: list[float]) -> SuggestedLRs:
    """valley: half-way (in loss) down the longest chain of decreasing losses; minimum: the lr of the
    lowest loss / 10; steepest: the lr where the loss falls fastest (per log-lr)."""
    # The last few points are usually the divergence; they would drag every suggestion to the right.
    n = len(lrs) - 5 if len(lrs) > 15 else len(lrs)
    lrs_a, losses_a = np.array(lrs[:n]), np.array(losses[:n])
    if n < 2:
        raise ValueError(f"lr_find recorded only {n} point(s); use more iterations (num_it) or more data")
    minimum = float(lrs_a[int(np.nanargmin(losses_a))] / 10)
    grads = np.gradient(losses_a, np.log(lrs_a))
    steepest = float(lrs_a[int(np.nanargmin(grads))])
    # Longest (not necessarily contiguous) decreasing chain of points: O(n^2) is fine for ~100 points.
    length, prev = [1] * n, [-1] * n
    for j in range(n):
        for i in range(j):
            if losses_a[i] > losses_a[j] and length[i] + 1 > length[j]:
                length[j], prev[j] = length[i] + 1, i
    chain = [int(np.argmax(length))]
    while prev[chain[-1]] >= 0:
        chain.append(prev[chain[-1]])
    chain.reverse()
    # The valley: where the chain has made half of its loss drop (a long flat start does not pull it left).
    target = (losses_a[chain[0]] + losses_a[chain[-1]]) / 2
    valley = float(lrs_a[next(i for i in chain if losses_a[i] <= target)])
    return SuggestedLRs(valley, minimum, steepest)


@contextlib.contextmanager
def leave_no_trace(learn: "Learner") -> Iterator[None]:
    """Run a `fit` that is not training (the LR sweep, a profile) and put everything it touches back exactly:
    model, optimizer (or its absence), scaler, RNG (data generators included), history and counters. Progress
    bars are detached meanwhile: the sweep's rows would read like epochs of a real fit."""
    saved_model = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    had_opt = learn.opt is not None
    saved_opt = copy.deepcopy(learn.opt.state_dict()) if had_opt else None
    saved_rng = learn.rng_state()
    saved_history = copy.deepcopy(learn.history.state_dict())
    saved_counters = {k: getattr(learn, k) for k in ("epoch", "iter", "n_iter", "n_epochs", "opt_steps",
                                                      "schedules", "hypers", "val_results")}
    saved_scaler = copy.deepcopy(learn.scaler.state_dict())
    bars = [cb for cb in learn.callbacks if isinstance(cb, ProgressBar)]
    for cb in bars:
        learn.remove_callback(cb)
    try:
        yield
    finally:
        learn.add_callbacks(bars)
        with torch.no_grad():
            for k, v in learn.model.state_dict().items():
                v.copy_(saved_model[k])
        if had_opt:
            learn.opt.load_state_dict(saved_opt)
        else:
            learn.opt = None
        learn.scaler.load_state_dict(saved_scaler)
        learn.history.load_state_dict(saved_history)
        for k, v in saved_counters.items():
            setattr(learn, k, v)
        learn.set_rng_state(saved_rng)


def lr_find(learn: "Learner", start_lr: float = 1e-7, end_lr: float = 10, num_it: int = 100,
            stop_div: bool = True, show_plot: bool = True) -> SuggestedLRs:
    """Sweep lr exponentially from start_lr to end_lr over num_it batches. Returns `SuggestedLRs`."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find(start_lr={start_lr}, end_lr={end_lr}): need 0 < start_lr < end_lr")
    finder = LRFinder(num_it, stop_div)
    n_batches = len(learn.data.train_dl)
    n_epochs = max(1, math.ceil(num_it / max(1, n_batches)))
    total = n_epochs * n_batches
    # Exp over the fit's progress, stretched so that batch num_it - 1 gets exactly end_lr.
    last = Exp(start_lr, start_lr * (end_lr / start_lr) ** ((total - 1) / max(1, num_it - 1)))
    with leave_no_trace(learn):
        learn.fit(n_epochs, schedules={"lr": last}, callbacks=[finder])
    learn.lr_find_results = {"lrs": finder.lrs, "losses": finder.losses}
    suggestions = suggest_lrs(finder.lrs, finder.losses)
    learn.lr_find_results["suggestions"] = suggestions._asdict()
    if show_plot:
        plot_lr_find(learn)
    return suggestions


def plot_lr_find(learn: "Learner", skip_end: int = 5, ax: Any = None) -> Any:
    """Smoothed loss against lr (log scale) with the suggestions marked. Returns the figure."""
    import matplotlib.pyplot as plt
    results = getattr(learn, "lr_find_results", None)
    if not results:
        raise ValueError("plot_lr_find: run learn.lr_find() first")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    end = max(2, len(results["lrs"]) - skip_end)
    ax.plot(results["lrs"][:end], results["losses"][:end])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    for (name, lr), marker in zip(results["suggestions"].items(), ("o", "s", "^")):
        i = int(np.argmin(np.abs(np.log(np.array(results["lrs"])) - math.log(lr))))
        ax.plot(lr, results["losses"][i], marker, label=f"{name}: {lr:.2e}")
    ax.legend()
    return fig
