"""ProgressBar: fastprogress epoch bar + batch bar + metrics table (terminal or notebook), and in a notebook a
live plot of the losses and metrics redrawn after every epoch."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from learnkit.learner.events import Callback

if TYPE_CHECKING:
    from learnkit.learner.history import History
    from learnkit.learner.learner import Learner

__all__ = ["ProgressBar", "format_record", "in_notebook", "live_graph"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (or Colab): fastprogress's own check (`fastprogress.core.in_notebook`), the one
    that makes it draw HTML bars there; False in a terminal, a script or a terminal IPython."""
    from fastprogress.core import in_notebook as fastprogress_in_notebook
    return bool(fastprogress_in_notebook())


Graph = tuple[list[str], list[tuple[list, list]], tuple[float, float], tuple[float, float]]


def live_graph(history: "History", first: int, n_iter: int) -> Graph:
    """What the live plot shows for the fit whose first batch is `history`'s batch `first` and that runs `n_iter`
    batches: (names, [(x, y) per line], x_bounds, y_bounds). Lines: the training loss per batch, then per epoch
    the validation loss and each metric, at the epoch's last batch; x counts this fit's batches.

    Example:
        >>> names, graphs, x_bounds, y_bounds = live_graph(learn.history, 0, learn.n_iter)
    """
    losses = history.losses[first:].tolist()  # one read per epoch (the losses are device tensors)
    names, graphs = ["train"], [(list(range(len(losses))), losses)]
    epochs = [(i - first, r) for i, r in zip(history.valid_iters, history.epoch_records) if i > first]
    keys = [k for k in (epochs[-1][1] if epochs else {}) if k not in ("epoch", "time", "train_loss")]
    for key in keys:
        points = [(i - 1, r[key]) for i, r in epochs if isinstance(r.get(key), (int, float))]
        names.append("valid" if key == "valid_loss" else key)
        graphs.append(([x for x, _ in points], [y for _, y in points]))
    finite = [y for _, ys in graphs for y in ys if math.isfinite(y)]
    y_bounds = (min(0.0, min(finite, default=0.0)), max(finite, default=1.0) * 1.05)
    return names, graphs, (0, max(1, n_iter - 1)), y_bounds


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

    The live plot (`live_graph`: training loss per batch, validation loss and metrics per epoch, redrawn by
    fastprogress's `update_graph` after every epoch) is on in a notebook and off in a terminal (`in_notebook`).
    Switch it with `learn.live_plot = False` (or True; None: automatic), or `ProgressBar(plot=...)`, which wins.
    Drawing it reads the losses once per epoch.

    Example:
        >>> learn.live_plot = False   # tables only, also in a notebook
    """

    order = 50
    refresh = 0.5

    def __init__(self, plot: bool | None = None):
        self.plot = plot

    def wants_plot(self, learn: "Learner") -> bool:
        """This bar's `plot`, else the learner's `live_plot`, else whether this runs in a notebook."""
        choice = self.plot if self.plot is not None else getattr(learn, "live_plot", None)
        return in_notebook() if choice is None else bool(choice)

    def before_fit(self, learn: "Learner") -> None:
        from fastprogress.fastprogress import master_bar
        self.mbar = master_bar(range(learn.n_epochs))
        self.mbar.on_iter_begin()
        self._header_written = False
        self._plot = self.wants_plot(learn)
        self._first = len(learn.history.hypers) - learn.iter  # this fit's first batch (a resumed fit ran some)

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
        if self._plot:
            names, graphs, x_bounds, y_bounds = live_graph(learn.history, self._first, learn.n_iter)
            self.mbar.names = names  # fastprogress labels the lines with its bar's names
            self.mbar.update_graph(graphs, x_bounds, y_bounds)

    def after_fit(self, learn: "Learner") -> None:
        if hasattr(self, "mbar"):
            self.mbar.on_iter_end()
            del self.mbar
