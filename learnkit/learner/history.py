"""History: per-batch training loss and hyper-parameters, per-epoch metrics, and their plots.

Losses stay on the device while training (no host sync per batch); they are read when asked for.
"""
from __future__ import annotations

import time
from typing import Any, TYPE_CHECKING

import torch

from learnkit.learner.events import Callback

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["History"]


class History(Callback):
    """Records what happened during every fit (kept across fits; `reset()` clears it).

    Attributes:
        losses: per training batch (a CPU tensor, read on access).
        hypers: per training batch, name → list of per-layer-group values (e.g. hypers[i]['lr'][-1]).
        epoch_records: one dict per epoch: epoch, train_loss, valid_loss, metrics..., time.
    """

    order = -20
    smooth_beta = 0.98

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._losses: list[torch.Tensor] = []
        self.hypers: list[dict[str, list[float]]] = []
        self.epoch_records: list[dict[str, float]] = []
        self.valid_iters: list[int] = []  # global batch count at each validation, for plotting
        self.smooth_loss: torch.Tensor | None = None
        self._raw_smooth: torch.Tensor | None = None
        self._smooth_n = 0
        self._in_train = False
        self._partial: tuple[torch.Tensor | float, int] | None = None
        self._epoch_start = time.perf_counter()

    @property
    def losses(self) -> torch.Tensor:
        return torch.stack(self._losses).float().cpu() if self._losses else torch.empty(0)

    def before_train(self, learn: "Learner") -> None:
        self._in_train = True
        if self._partial is not None:  # resumed mid-epoch: keep the sums of the batches already done
            self._train_sum, self._train_count = self._partial
            self._partial = None
            return
        self._epoch_start = time.perf_counter()
        self._train_sum: torch.Tensor | float = 0.0
        self._train_count = 0

    def after_train(self, learn: "Learner") -> None:
        self._in_train = False

    def after_batch(self, learn: "Learner") -> None:
        if not learn.training or not hasattr(learn, "loss"):
            return
        loss = learn.loss.detach().float()
        self._losses.append(loss)
        self.hypers.append({k: list(v) for k, v in learn.hypers.items()})
        n = learn.xb[0].shape[0]
        self._train_sum = self._train_sum + loss * n
        self._train_count += n
        # Debiased exponential moving average, as in Adam: unbiased from the first batch on.
        self._smooth_n += 1
        raw = self._raw_smooth if self._raw_smooth is not None else torch.zeros_like(loss)
        self._raw_smooth = self.smooth_beta * raw + (1 - self.smooth_beta) * loss
        self.smooth_loss = self._raw_smooth / (1 - self.smooth_beta ** self._smooth_n)

    def after_epoch(self, learn: "Learner") -> None:
        record: dict[str, float] = {"epoch": learn.epoch}
        if self._train_count:
            record["train_loss"] = float(torch.as_tensor(self._train_sum)) / self._train_count
        record.update(learn.val_results if len(learn.data.valid_dl) else {})
        record["time"] = time.perf_counter() - self._epoch_start
        self.epoch_records.append(record)
        self.valid_iters.append(len(self._losses))

    # --- checkpoints ---
    def state_dict(self) -> dict[str, Any]:
        state = {"losses": self.losses, "hypers": self.hypers, "epoch_records": self.epoch_records,
                 "valid_iters": self.valid_iters}
        if self._in_train:  # a checkpoint taken mid-epoch also needs the epoch's running loss
            state["partial"] = [torch.as_tensor(self._train_sum).cpu(), self._train_count]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._losses = list(state["losses"].unbind(0)) if len(state["losses"]) else []
        self.hypers = [dict(h) for h in state["hypers"]]
        self.epoch_records = [dict(r) for r in state["epoch_records"]]
        self.valid_iters = list(state["valid_iters"])
        if "partial" in state:
            self._partial = (state["partial"][0], int(state["partial"][1]))

    # --- plots ---
    def plot_loss(self, skip_start: int = 5, with_valid: bool = True, ax: Any = None) -> Any:
        """Training loss per batch (and validation loss per epoch). Returns the figure."""
        import matplotlib.pyplot as plt
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
        losses = self.losses
        start = min(skip_start, max(0, len(losses) - 1))
        ax.plot(range(start, len(losses)), losses[start:].numpy(), label="train")
        valid = [(i, r["valid_loss"]) for i, r in zip(self.valid_iters, self.epoch_records) if "valid_loss" in r]
        if with_valid and valid:
            ax.plot([i for i, _ in valid], [v for _, v in valid], "o-", label="valid")
        ax.set_xlabel("batches")
        ax.set_ylabel("loss")
        ax.legend()
        return fig

    def plot_sched(self, names: tuple[str, ...] = ("lr", "mom")) -> Any:
        """The scheduled hyper-parameters (last layer group) per batch. Returns the figure."""
        import matplotlib.pyplot as plt
        names = tuple(n for n in names if self.hypers and n in self.hypers[0])
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names):
            ax.plot([h[name][-1] for h in self.hypers])
            ax.set_title(name)
            ax.set_xlabel("batches")
        return fig
