"""Metrics accumulated on the device (no host sync per batch); read once per validation.

A metric is either a plain function `fn(pred, target) -> tensor` (averaged over items, weighted by
batch size) or a `Metric` with reset/update/compute.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["Metric", "AvgMetric", "accuracy", "error_rate", "accuracy_multi", "TopKAccuracy", "F1Score",
           "mse", "mae", "RMSE", "as_metric"]


class Metric:
    """Base class for metrics that need more than a batch average.

    `sum_states` names the attributes that are sums over items (tensors or numbers; None before any
    update): in a distributed run they are added up over ranks before `compute()`, which makes the metric
    exact over the whole validation set. A metric without them is averaged over ranks, weighted by items.
    """

    name: str = "metric"
    sum_states: tuple[str, ...] = ()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> torch.Tensor:
        raise NotImplementedError


class AvgMetric(Metric):
    """Item-weighted average of `fn(pred, target)` over batches, summed on the device."""

    sum_states = ("total", "count")

    def __init__(self, fn: Callable[..., torch.Tensor], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = pred.shape[0]
        self.total = self.total + self.fn(pred, target).detach().float() * n
        self.count += n

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return torch.as_tensor(self.total) / self.count


def as_metric(m: Any) -> Metric:
    return m if isinstance(m, Metric) else AvgMetric(m)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of items whose arg-max class equals the target."""
    return (pred.argmax(dim=-1) == target).float().mean()


def error_rate(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - accuracy."""
    return 1 - accuracy(pred, target)


def accuracy_multi(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Multi-label accuracy: share of (item, label) decisions right, sigmoid(pred) >= threshold."""
    return ((torch.sigmoid(pred.float()) >= threshold) == target.bool()).float().mean()


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error (shapes must match)."""
    return ((pred.float() - target.float()) ** 2).mean()


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (shapes must match)."""
    return (pred.float() - target.float()).abs().mean()


class RMSE(Metric):
    """Root of the mean squared error over the whole set (not the mean of batch roots)."""

    name = "rmse"
    sum_states = ("sq", "count")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sq: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.sq = self.sq + ((pred.float() - target.float()) ** 2).sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (torch.as_tensor(self.sq) / max(1, self.count)).sqrt()


class TopKAccuracy(AvgMetric):
    """Share of items whose target is among the k highest scores."""

    def __init__(self, k: int = 5):
        self.k = k
        super().__init__(self._fn, f"top_{k}_accuracy")

    def _fn(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = min(self.k, pred.shape[-1])
        return (pred.topk(k, dim=-1).indices == target.unsqueeze(-1)).any(-1).float().mean()


class F1Score(Metric):
    """F1 from a confusion matrix kept on the device. `average='macro'` (mean over classes, a class with no
    true and no predicted items counts as 0 and is left out) or 'micro'."""

    sum_states = ("confusion",)

    def __init__(self, average: str = "macro"):
        if average not in ("macro", "micro"):
            raise ValueError(f"F1Score(average={average!r}): use 'macro' or 'micro'")
        self.average = average
        self.name = f"f1_{average}"
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = pred.shape[-1]
        idx = target.reshape(-1) * n + pred.argmax(-1).reshape(-1)
        counts = torch.bincount(idx, minlength=n * n).reshape(n, n)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> torch.Tensor:
        if self.confusion is None:
            return torch.tensor(float("nan"))
        cm = self.confusion.float()
        tp = cm.diag()
        if self.average == "micro":
            return tp.sum() / cm.sum().clamp_min(1)
        precision_den, recall_den = cm.sum(0), cm.sum(1)
        f1 = 2 * tp / (precision_den + recall_den).clamp_min(1e-12)
        present = (precision_den + recall_den) > 0
        return f1[present].mean()
