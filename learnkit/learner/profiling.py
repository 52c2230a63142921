"""Bottleneck report: per training epoch, samples/s, the share of time waiting for batches, peak GPU memory and
one line of advice (`BottleneckReport`); `profile(learn, n_batches)` times a few steps and leaves no trace."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from learnkit.learner.events import Callback, CancelValidate
from learnkit.learner.lr_find import leave_no_trace

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["BottleneckReport", "profile"]


def _advice(data_share: float, device_type: str, peak_fraction: float | None) -> str:
    """One line from fixed rules, first match wins: peak > 90% of the GPU's memory → memory-bound; data share
    > 0.3 → data-bound; CPU → CPU run; data share < 0.1 → compute-bound; otherwise balanced."""
    if peak_fraction is not None and peak_fraction > 0.9:
        return (f"memory-bound: the peak is {peak_fraction:.0%} of the GPU's memory; use mixed precision, a smaller "
                "batch_size (with GradientAccumulation) or a smaller item size")
    if data_share > 0.3:
        return (f"data-bound: {data_share:.0%} of the time waits for batches; use the GPU-resident path "
                "(ImageDataBunch resident=True / a smaller item size), presizing (large item Resize + GPU "
                "aug_transforms(size=...)), more num_workers, or uint8 batches normalized on the device")
    if device_type == "cpu":
        return (f"CPU run: the step takes {1 - data_share:.0%} of the time; a GPU (device='cuda') is the big "
                "speed-up, else a smaller model, item size or fewer features")
    if data_share < 0.1:
        return ("compute-bound: try mixed precision (default on CUDA), channels_last, a larger batch size or "
                "torch.compile")
    return (f"balanced: {data_share:.0%} of the time waits for batches; faster data and a faster step both help "
            "(see the data-bound and compute-bound advice)")


class BottleneckReport(Callback):
    """Where the training time goes, per epoch, with host clocks and one device sync per epoch.

    Data time is the host time from the end of one training batch (`after_batch`) to the start of the next
    (`before_batch`; the first from `before_train`): the loader's `next()`, `data.transfer` and the batch
    transforms. Step time is the rest of the training phase's wall time (forward, backward, step, callbacks).
    The device is synchronized once, at `after_train`, so queued GPU work counts in the step time; with no
    per-batch sync, a GPU that is behind makes the host wait at kernel launches (step time), not in the loader.

    Args:
        print_fn: where the one-line summary of each epoch goes.
        every_epoch: print that line after each epoch (the reports are kept in `reports` either way).

    Attributes:
        reports: one dict per training phase: epoch, batches, samples, seconds, samples_per_s, data_share,
            data_s, step_s, peak_gpu_mb (None off CUDA), advice.

    Example:
        >>> report = BottleneckReport()
        >>> learn.fit(1, lr=1e-3, callbacks=[report])
        epoch 0: 5,120 samples/s (192 samples in 0.04 s); waiting for data 8% (0.00 s), step 0.03 s; CPU run: ...
        >>> report.reports[-1]["data_share"]
        0.08
    """

    order = 60  # after ProgressBar (50): its occasional sync in after_batch is step time; our line follows its row

    def __init__(self, print_fn: Callable[[str], Any] = print, every_epoch: bool = True):
        self.print_fn, self.every_epoch = print_fn, every_epoch
        self.reports: list[dict[str, Any]] = []
        self._start: float | None = None
        self._unprinted: dict[str, Any] | None = None

    def before_train(self, learn: "Learner") -> None:
        if learn.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(learn.device)
        self._batches, self._samples, self._data_s = 0, 0, 0.0
        self._start = self._last_end = time.perf_counter()

    def before_batch(self, learn: "Learner") -> None:
        # Counted here, not in after_batch: a callback ordered before us may end the fit in after_batch.
        if learn.training and self._start is not None:
            self._data_s += time.perf_counter() - self._last_end
            self._batches += 1
            self._samples += int((learn.xb or learn.yb)[0].shape[0])  # a Python int: no sync

    def after_batch(self, learn: "Learner") -> None:
        if learn.training and self._start is not None:
            self._last_end = time.perf_counter()

    def after_train(self, learn: "Learner") -> None:
        self._finish(learn, sync=True)

    def after_epoch(self, learn: "Learner") -> None:
        self._print()

    def after_fit(self, learn: "Learner") -> None:
        # CancelFit (or an error) mid-epoch skips after_train and after_epoch: report the partial epoch here,
        # without a sync, which could raise again after a device error and hide the original one.
        self._finish(learn, sync=False)
        self._print()

    def _finish(self, learn: "Learner", sync: bool) -> None:
        if self._start is None:
            return
        peak_mb = peak_fraction = None
        if learn.device.type == "cuda":
            if sync:
                torch.cuda.synchronize(learn.device)  # the one sync of the epoch
            peak = torch.cuda.max_memory_allocated(learn.device)
            peak_mb, peak_fraction = peak / 2**20, peak / torch.cuda.get_device_properties(learn.device).total_memory
        seconds = time.perf_counter() - self._start
        self._start = None
        data_share = min(1.0, self._data_s / seconds) if seconds > 0 else 0.0
        self._unprinted = {
            "epoch": learn.epoch, "batches": self._batches, "samples": self._samples, "seconds": seconds,
            "samples_per_s": self._samples / seconds if seconds > 0 else 0.0, "data_share": data_share,
            "data_s": self._data_s, "step_s": max(0.0, seconds - self._data_s), "peak_gpu_mb": peak_mb,
            "advice": _advice(data_share, learn.device.type, peak_fraction)}
        self.reports.append(self._unprinted)

    def _print(self) -> None:
        r, self._unprinted = self._unprinted, None
        if r is None or not self.every_epoch:
            return
        peak = "" if r["peak_gpu_mb"] is None else f"; peak GPU memory {r['peak_gpu_mb']:,.0f} MB"
        self.print_fn(f"epoch {r['epoch']}: {r['samples_per_s']:,.0f} samples/s ({r['samples']:,} samples in "
                      f"{r['seconds']:.2f} s); waiting for data {r['data_share']:.0%} ({r['data_s']:.2f} s), "
                      f"step {r['step_s']:.2f} s{peak}; {r['advice']}")


class _SkipValidation(Callback):
    """Skips validation: a profile times training steps only."""

    order = 70

    def before_validate(self, learn: "Learner") -> None:
        raise CancelValidate()


def profile(learn: "Learner", n_batches: int = 50) -> dict[str, Any]:
    """Time `n_batches` training steps and return their `BottleneckReport` dict; the learner is left unchanged.

    The steps run through `learn.fit(1, lr=1e-12, max_batches=n_batches)` (fit rejects lr=0; the weights are
    restored anyway), with validation skipped. The first steps include warm-up (worker start-up, CUDA kernel selection): profile
    enough batches for it to fade. The dict adds `note`: None, or why fewer batches were measured.

    Example:
        >>> r = profile(learn, n_batches=20)
        >>> print(f"{r['samples_per_s']:.0f} samples/s, {r['data_share']:.0%} waiting for data: {r['advice']}")
    """
    if not isinstance(n_batches, int) or isinstance(n_batches, bool) or n_batches < 1:
        raise ValueError(f"profile(n_batches={n_batches!r}): n_batches must be a positive int, e.g. 50")
    available = len(learn.data.train_dl)
    note = (f"the training loader has only {available} batches per epoch; profiled the whole epoch instead of "
            f"{n_batches} batches") if 0 < available < n_batches else None
    report = BottleneckReport(every_epoch=False)
    with leave_no_trace(learn):
        learn.fit(1, lr=1e-12, max_batches=n_batches, callbacks=[report, _SkipValidation()])
    return {**report.reports[-1], "note": note}
