"""ProgressBar: fastprogress epoch bar + batch bar + metrics table (terminal or notebook)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from learnkit.learner.events import Callback

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["ProgressBar", "format_record"]


def format_record(record: dict) -> list[str]:
    out = []
    for k, v in record.items():
        if k == "epoch":
            out.append(str(int(v)))
        elif k == "time":
            out.append(f"{int(v) // 60:02d}:{int(v) % 60:02d}")
        else:
            out.append(f"{v:.6f}" if isinstance(v, float) else str(v))
    return out


class ProgressBar(Callback):
    """Progress bars and a metrics table. The smoothed loss is read (a host sync) at most every
    `refresh` seconds, so the bar costs nothing measurable per batch.

    Switch it off with `Learner(..., progress=False)` or `learn.remove_callback(ProgressBar)`.
    """

    order = 50
    refresh = 0.5

    def before_fit(self, learn: "Learner") -> None:
        from fastprogress.fastprogress import master_bar
        self.mbar = master_bar(range(learn.n_epochs))
        self.mbar.on_iter_begin()
        self._header_written = False

    def before_epoch(self, learn: "Learner") -> None:
        self.mbar.update(learn.epoch)

    def _launch(self, learn: "Learner") -> None:
        from fastprogress.fastprogress import progress_bar
        self.pbar = progress_bar(range(len(learn.dl)), parent=self.mbar, leave=False)
        self.pbar.update(0)
        self._last = time.perf_counter()

    def before_train(self, learn: "Learner") -> None:
        self._launch(learn)

    def before_validate(self, learn: "Learner") -> None:
        if hasattr(self, "mbar"):
            self._launch(learn)

    def after_batch(self, learn: "Learner") -> None:
        if not hasattr(self, "pbar"):
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh:
            self._last = now
            smooth = learn.history.smooth_loss
            if learn.training and smooth is not None:
                self.pbar.comment = f"{float(smooth):.4f}"
            self.pbar.update(learn.batch_idx + 1)

    def after_train(self, learn: "Learner") -> None:
        self.pbar.on_iter_end()

    def after_validate(self, learn: "Learner") -> None:
        if hasattr(self, "pbar"):
            self.pbar.on_iter_end()

    def after_epoch(self, learn: "Learner") -> None:
        record = learn.history.epoch_records[-1] if learn.history.epoch_records else {}
        if not self._header_written:
            self.mbar.write(list(record), table=True)
            self._header_written = True
        self.mbar.write(format_record(record), table=True)

    def after_fit(self, learn: "Learner") -> None:
        if hasattr(self, "mbar"):
            self.mbar.on_iter_end()
            del self.mbar
