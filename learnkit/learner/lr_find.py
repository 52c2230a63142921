"""The LR finder: `fit` with an exponential lr schedule and a callback that records the smoothed loss and
stops on divergence; afterwards model, optimizer, RNG and history are put back bit-exactly."""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
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


SKIP_END = 5  # the last points are usually the divergence; they would drag every suggestion to the right
SMOOTH = 5  # points of the centred moving average applied to the (already running-mean) losses before choosing
EDGE = 2  # a suggestion this close to either end of the kept curve is not trusted
MIN_DROP = 0.02  # a "clear descent": the loss falls at least 2% below its highest value before its minimum


def _kept_range(n: int) -> tuple[int, int]:
    """[start, end) of the points the suggestions read. As fastai does, the first tenth (at least 3 points) is
    skipped: the debiased running mean of 1-3 losses still swings by noise there (a drop over the first 3 points
    put the valley at 1.45e-7 on a text classifier), and the last `SKIP_END` points are dropped."""
    end = n - SKIP_END if n > 15 else n
    start = max(3, n // 10) if end >= 15 else 0
    return start, end


def _centred_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Moving average over k points centred on each point (ends padded with the end values): smoother than the
    running mean without moving the curve to the right."""
    if k <= 1 or len(x) < k:
        return x
    padded = np.pad(x, k // 2, mode="edge")
    return np.convolve(padded, np.ones(k) / k, mode="valid")


def suggest_lrs(lrs: list[float], losses: list[float], warn: bool = True) -> SuggestedLRs:
    """Suggestions from a sweep of (lr, running-mean loss) points.

    The first tenth and the last 5 points are skipped (see `_kept_range`), the rest smoothed by a centred mean
    over 5 points. The descent is the stretch that leads into the lowest loss, from the last point still 90% of
    the way up from that minimum to the highest loss before it:

    - valley: where the descent has made half of its drop;
    - steepest: where the loss falls fastest per log-lr within the descent;
    - minimum: the lr of the lowest loss (before the centred mean) / 10.

    Suggestions within `EDGE` points of the ends of the kept curve are rejected: a valley there is replaced by
    the steepest point (or the minimum suggestion). When the loss never falls `MIN_DROP` below its highest value
    before its minimum (no clear descent), all three become a tenth of the lr where the loss starts rising (there is
    no descent to read). One warning, with the fix, says when the suggestions mean little: no clear
    descent, or a loss still falling at the end of the sweep.
    """
    if len(lrs) != len(losses):
        raise ValueError(f"suggest_lrs: {len(lrs)} lrs but {len(losses)} losses; give one loss per lr")
    start, end = _kept_range(len(lrs))
    lrs_a, losses_a = np.asarray(lrs[start:end], dtype=float), np.asarray(losses[start:end], dtype=float)
    n = len(lrs_a)
    if n < 2:
        raise ValueError(f"lr_find recorded only {len(lrs)} point(s); use more iterations (num_it) or more data")
    finite = np.isfinite(losses_a)
    if not finite.any():
        raise ValueError(f"lr_find: every loss of the sweep is inf or nan (from lr {lrs[0]:.2e}); check the "
                         "model, the loss and the data before choosing a learning rate")
    losses_a = np.where(finite, losses_a, losses_a[finite].max())  # a diverged point counts as the worst one
    minimum = float(lrs_a[int(np.argmin(losses_a))] / 10)
    losses_a = _centred_mean(losses_a, SMOOTH)

    def at_edge(i: int) -> bool:
        return n > 2 * EDGE + 1 and (i < EDGE or i >= n - EDGE)

    i_min = int(np.argmin(losses_a))
    top = float(losses_a[:i_min + 1].max())
    high = losses_a[i_min] + 0.9 * (top - losses_a[i_min])
    i_top = max(i for i in range(i_min + 1) if losses_a[i] >= high)  # where the descent into the minimum starts
    grads = np.gradient(losses_a, np.log(lrs_a))
    lo, hi = max(i_top, EDGE if n > 2 * EDGE + 1 else 0), max(i_top, min(i_min, n - 1 - EDGE)) + 1
    i_steep = lo + int(np.argmin(grads[lo:hi])) if lo < hi else i_min
    half = (losses_a[i_top] + losses_a[i_min]) / 2
    i_valley = next(i for i in range(i_top, i_min + 1) if losses_a[i] <= half)
    steepest, valley = float(lrs_a[i_steep]), float(lrs_a[i_valley])
    if at_edge(i_valley):
        valley = steepest if not at_edge(i_steep) else minimum
    drop = (top - float(losses_a[i_min])) / max(abs(top), 1e-12)
    problem = None
    if drop < MIN_DROP or i_min < EDGE:
        # No descent to read: fall back to the old rule of thumb, a tenth of the lr where the loss starts rising.
        bound = losses_a[i_min] + 2 * MIN_DROP * abs(losses_a[i_min])
        i_rise = next((i for i in range(i_min, n) if losses_a[i] > bound), n - 1)
        valley = steepest = minimum = float(lrs_a[i_rise] / 10)
        problem = (f"the loss shows no clear descent between lr {lrs_a[0]:.1e} and {lrs_a[-1]:.1e} (it falls "
                   f"{100 * drop:.1f}% at most; every suggestion set to a tenth of the lr where it starts rising)")
    elif i_min >= n - EDGE:
        problem = f"the loss is still falling at the end of the sweep (lr {lrs_a[-1]:.1e})"
    if warn and problem is not None:
        warnings.warn(f"lr_find: {problem}, so the suggestions (valley {valley:.1e}) are unreliable; fix: give a "
                      f"learning rate yourself (e.g. 1e-3), or sweep longer or further (lr_find(num_it=300, "
                      f"end_lr=...)) over more data", stacklevel=2)
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
