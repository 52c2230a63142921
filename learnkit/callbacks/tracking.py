"""Callbacks that watch a per-epoch value: EarlyStopping, SaveBestModel, ReduceLROnPlateau, CSVLogger."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

from learnkit.core.serialization import atomic_write
from learnkit.learner.events import Callback, CancelFit
from learnkit.learner.learner import Learner

__all__ = ["EarlyStopping", "SaveBestModel", "ReduceLROnPlateau", "CSVLogger"]


# Metric names that are minimized in mode='auto' (substrings: 'valid_loss', 'error_rate', 'rmse', ...).
_MIN_WORDS = ("loss", "error", "mse", "mae", "perplexity")


class _Monitor(Callback):
    """Reads `monitor` from the epoch's record; 'min' for losses and errors (loss, error, mse, mae, rmse,
    perplexity), 'max' otherwise (mode='auto')."""

    order = 60
    state_keys: tuple[str, ...] = ("best",)  # what a checkpoint keeps (subclasses add theirs)

    def __init__(self, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__}(mode={mode!r}): use 'auto', 'min' or 'max'")
        self.monitor, self.min_delta = monitor, abs(min_delta)
        if mode == "auto":
            mode = "min" if any(w in monitor.lower() for w in _MIN_WORDS) else "max"
        self.mode = mode
        self._restored = False
        self.reset()

    def reset(self) -> None:
        """Forget what earlier fits saw."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def before_fit(self, learn: Learner) -> None:
        # fit(resume_from=...) loads the checkpoint's callback states just before before_fit: keep them.
        if not self._restored:
            self.reset()
        self._restored = False

    def _value(self, learn: Learner) -> float:
        record = learn.history.epoch_records[-1]
        if self.monitor not in record:
            raise KeyError(f"{type(self).__name__}(monitor={self.monitor!r}): no such value this epoch; "
                           f"available: {[k for k in record if k not in ('epoch', 'time')]}")
        return record[self.monitor]

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _waited_out(self, learn: Learner) -> bool:
        """Take this epoch's value; True once it has not improved for `self.patience` epochs in a row."""
        value = self._value(learn)
        if self._improved(value):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.state_keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self.state_keys:
            setattr(self, k, state[k])
        self._restored = True


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    state_keys = ("best", "wait")

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, mode: str = "auto", min_delta: float = 0.0):
        self.patience = patience
        super().__init__(monitor, mode, min_delta)

    def reset(self) -> None:
        super().reset()
        self.wait = 0

    def after_epoch(self, learn: Learner) -> None:
        if self._waited_out(learn):
            print(f"EarlyStopping: no improvement of {self.monitor} for {self.wait} epochs "
                  f"(best {self.best:.6g}); stopping after epoch {learn.epoch}.")
            raise CancelFit()



class SaveBestModel(_Monitor):
    """Save the weights whenever `monitor` improves; reload the best ones when the fit ends."""

    state_keys = ("best", "best_epoch")

    def __init__(self, monitor: str = "valid_loss", name: str = "best", mode: str = "auto", min_delta: float = 0.0,
                 reload: bool = True):
        self.name, self.reload = name, reload
        super().__init__(monitor, mode, min_delta)

    def reset(self) -> None:
        super().reset()
        self.best_epoch: int | None = None

    def after_epoch(self, learn: Learner) -> None:
        value = self._value(learn)
        if self._improved(value):
            self.best, self.best_epoch = value, learn.epoch
            learn.save(self.name, with_opt=False)

    def after_fit(self, learn: Learner) -> None:
        if self.reload and self.best_epoch is not None:
            learn.load(self.name, with_opt=False)



class ReduceLROnPlateau(_Monitor):
    """Multiply the lr schedule by `factor` when `monitor` has not improved for `patience` epochs."""

    state_keys = ("best", "wait", "scale")

    def __init__(self, monitor: str = "valid_loss", patience: int = 2, factor: float = 0.2, mode: str = "auto",
                 min_delta: float = 0.0, min_lr: float = 0.0):
        self.patience, self.factor, self.min_lr = patience, factor, min_lr
        super().__init__(monitor, mode, min_delta)

    def reset(self) -> None:
        super().reset()
        self.wait, self.scale = 0, 1.0

    def before_fit(self, learn: Learner) -> None:
        super().before_fit(learn)
        self._base = learn.schedules["lr"]
        if self.scale != 1.0:  # resumed after a reduction
            self._apply(learn)

    def after_epoch(self, learn: Learner) -> None:
        if self._waited_out(learn):
            self.wait = 0
            self.scale *= self.factor
            self._apply(learn)

    def _apply(self, learn: Learner) -> None:
        base, scale, floor = self._base, self.scale, self.min_lr
        scaled = [_Scaled(s, scale, floor) for s in base] if isinstance(base, (list, tuple)) \
            else _Scaled(base, scale, floor)
        learn.schedules = {**learn.schedules, "lr": scaled}



class _Scaled:
    """schedule(p) * scale, not below floor."""

    def __init__(self, sched: Any, scale: float, floor: float):
        self.sched, self.scale, self.floor = sched, scale, floor

    def __call__(self, p: float) -> float:
        return max(self.floor, self.sched(p) * self.scale)

    def __repr__(self) -> str:
        return f"{self.sched!r} x {self.scale:.3g}"


class CSVLogger(Callback):
    """Write each epoch's record (epoch, losses, metrics, time) to a CSV file under learn.path: one log for every
    fit the logger sees, with epochs counted across those fits.

    The `epoch` column is a running count over the fits logged to the file, not the epoch within one fit:
    `fine_tune` (two fits) given this logger, or a Learner holding it for several fits, writes epochs 0, 1, 2, ...
    to one file. The first fit a logger sees starts the file afresh (`append=False`) or continues an existing
    file, its header and its epoch count (`append=True`); later fits with the same logger always append. A fit
    resumed with `resume_from=` (the `Checkpoint` callback stores this logger's state) continues from where the
    checkpoint stands: the rows of the epochs before it stay, and a row written after it (an epoch that is run
    again) is dropped, so no epoch appears twice. The columns are those of the first record (or the existing
    file's header); a value missing from an epoch's record (e.g. an epoch cancelled before validation) is left
    empty.

    Example:
        >>> learn.fine_tune(3, callbacks=[CSVLogger()])  # learn.path/history.csv: epochs 0..3 (1 frozen + 3)
    """

    order = 70

    def __init__(self, fname: str = "history.csv", append: bool = False):
        self.fname, self.append = fname, append
        self.rows = 0  # data rows in the file that this logger wrote or kept
        self.epoch_offset = 0  # the `epoch` column of the current fit's epoch 0
        self.next_epoch = 0  # the `epoch` column of the next epoch logged
        self._columns: list[str] | None = None
        self._started = self._restored = self._warned = False

    def before_fit(self, learn: Learner) -> None:
        self.file = Path(learn.path) / self.fname
        self.file.parent.mkdir(parents=True, exist_ok=True)
        if self._restored:  # resume_from=: keep the rows the checkpoint counts, drop later ones
            self._keep_rows(self.rows)
        elif not self._started:
            self.rows = self.next_epoch = 0
            self._columns = None
            if self.append and self.file.exists() and self.file.stat().st_size > 0:
                rows = _read_rows(self.file)
                self._columns, self.rows = rows[0], len(rows) - 1
                self.next_epoch = _next_epoch(rows)
            else:
                self.file.write_text("")
            self.epoch_offset = self.next_epoch
        else:  # a later fit of this logger (e.g. fine_tune's second): append, counting on
            self.epoch_offset = self.next_epoch
        self._started, self._restored = True, False

    def _keep_rows(self, n: int) -> None:
        rows = _read_rows(self.file) if self.file.exists() and self.file.stat().st_size > 0 else []
        self._columns = rows[0] if rows else None
        kept = rows[:n + 1]
        self.rows = max(0, len(kept) - 1)
        if len(kept) < len(rows):
            with atomic_write(self.file) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)

    def after_epoch(self, learn: Learner) -> None:
        record = {**learn.history.epoch_records[-1], "epoch": self.epoch_offset + learn.epoch}
        with open(self.file, "a", newline="") as f:
            writer = csv.writer(f)
            if self._columns is None:
                self._columns = list(record)
                writer.writerow(self._columns)
            extra = [k for k in record if k not in self._columns]
            if extra and not self._warned:
                self._warned = True
                warnings.warn(f"CSVLogger: {extra} are not columns of {self.file} ({self._columns}) and are not "
                              f"logged; use another fname or append=False", stacklevel=2)
            writer.writerow([_cell(record[k]) if k in record else "" for k in self._columns])
        self.rows += 1
        self.next_epoch = record["epoch"] + 1

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "epoch_offset": self.epoch_offset, "next_epoch": self.next_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.epoch_offset, self.next_epoch = state["rows"], state["epoch_offset"], state["next_epoch"]
        self._started = self._restored = True


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]


def _next_epoch(rows: list[list[str]]) -> int:
    """One past the last row's `epoch` (0 when there is no such column or no row)."""
    if "epoch" not in rows[0] or len(rows) < 2:
        return 0
    try:
        return int(rows[-1][rows[0].index("epoch")]) + 1
    except (ValueError, IndexError):
        return len(rows) - 1


def _cell(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v
