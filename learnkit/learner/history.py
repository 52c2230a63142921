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
        self._sizes: list[int] = []
        self.hypers: list[dict[str, list[float]]] = []
        self.epoch_records: list[dict[str, float]] = []
        self.valid_iters: list[int] = []  # global batch count at each validation, for plotting
        self._epoch_first = 0  # index in _losses of the current epoch's first batch
        self._in_train = False
        self._epoch_start = time.perf_counter()

    @property
    def losses(self) -> torch.Tensor:
        return torch.stack(self._losses).float().cpu() if self._losses else torch.empty(0)

    @property
    def smooth_loss(self) -> torch.Tensor | None:
        """Debiased exponential moving average of the batch losses (computed when read, on the device)."""
        if not self._losses:
            return None
        recent = torch.stack(self._losses[-500:]).float()  # older terms weigh < 0.98**500 ~ 4e-5
        n = len(self._losses)
        powers = torch.arange(len(recent) - 1, -1, -1, device=recent.device, dtype=torch.float32)
        weights = (1 - self.smooth_beta) * self.smooth_beta ** powers
        return (weights * recent).sum() / (1 - self.smooth_beta ** n)

    def before_fit(self, learn: "Learner") -> None:
        # Losses loaded from a checkpoint (or restored after lr_find) come back on the CPU.
        if self._losses and (self._losses[0].device != learn.device or self._losses[-1].device != learn.device):
            self._losses = [t.to(learn.device) for t in self._losses]

    def before_epoch(self, learn: "Learner") -> None:
        if learn.resume_point is None:  # (resuming mid-epoch keeps the epoch's batches already done)
            self._epoch_start = time.perf_counter()
            self._epoch_first = len(self._losses)

    def before_train(self, learn: "Learner") -> None:
        self._in_train = True

    def after_train(self, learn: "Learner") -> None:
        self._in_train = False

    def after_batch(self, learn: "Learner") -> None:
        # Appends only: no kernel launch and no host sync per batch.
        if learn.training and getattr(learn, "loss", None) is not None:
            self._losses.append(learn.loss.detach())
            self._sizes.append(learn.xb[0].shape[0])
            self.hypers.append(learn.hypers)  # the loop makes a new dict each batch

    def after_epoch(self, learn: "Learner") -> None:
        record: dict[str, float] = {"epoch": learn.epoch}
        losses, sizes = self._losses[self._epoch_first:], self._sizes[self._epoch_first:]
        if losses:
            weights = torch.tensor(sizes, dtype=torch.float32, device=losses[0].device)
            record["train_loss"] = float((torch.stack(losses).float() * weights).sum() / weights.sum())
        record.update(learn.val_results if len(learn.data.valid_dl) else {})
        record["time"] = time.perf_counter() - self._epoch_start
        self.epoch_records.append(record)
        self.valid_iters.append(len(self._losses))

    # --- checkpoints ---
    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "sizes": list(self._sizes), "hypers": self.hypers,
                "epoch_records": self.epoch_records, "valid_iters": self.valid_iters,
                "epoch_first": self._epoch_first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._losses = list(state["losses"].unbind(0)) if len(state["losses"]) else []
        self.hypers = [dict(h) for h in state["hypers"]]
        self.epoch_records = [dict(r) for r in state["epoch_records"]]
        self.valid_iters = list(state["valid_iters"])
        self._sizes = list(state["sizes"])
        self._epoch_first = int(state["epoch_first"])

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
