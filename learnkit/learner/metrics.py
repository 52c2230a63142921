"""Metrics accumulated on the device (no host sync per batch); read once per validation.

A metric is either a plain function `fn(pred, target) -> tensor` (averaged over items, weighted by batch size) or a
`Metric` with reset/update/compute (any other object with them, a torchmetrics `Metric`, is wrapped in
`StatefulMetric`; metrics over the whole set's predictions, such as ROC AUC, are in set_metrics.py). A model with
several outputs (a tuple) gives metrics its first output, unless the metric declares `takes_tuple = True` (then
`update` receives the whole tuple). A metric that raises is re-raised as `MetricError`, naming the metric and the
shapes it was given. `default_metrics(block)` picks metrics that fit a target block (accuracy for a category,
accuracy_multi for multi-label, mae for a number).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from learnkit.learner.confusion import confusion_counts

__all__ = ["Metric", "AvgMetric", "MetricError", "accuracy", "error_rate", "accuracy_multi", "TopKAccuracy",
           "F1Score", "StatefulMetric", "mse", "mae", "RMSE", "as_metric", "as_metrics", "default_metrics",
           "update_metric", "metric_name", "PixelAccuracy", "MeanIoU", "MeanDice", "SegmentationConfusion", "iou_per_class",
           "dice_per_class"]


class MetricError(RuntimeError):
    """A metric failed; the message names the metric and the prediction and target shapes it was given."""


class Metric:
    """Base class for metrics that need more than a batch average.

    `sum_states` names the attributes that are sums over items (tensors or numbers; None before any
    update): in a distributed run they are added up over ranks before `compute()`, which makes the metric
    exact over the whole validation set. `cat_states` names attributes that are lists of tensors (kept
    predictions, set_metrics.py's `AccumulatedMetric`): joined over ranks. A metric with neither is averaged over
    ranks, weighted by items.
    """

    name: str = "metric"
    sum_states: tuple[str, ...] = ()
    cat_states: tuple[str, ...] = ()
    takes_tuple: bool = False  # True: update() gets a multi-output model's whole tuple, not its first output

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> torch.Tensor:
        raise NotImplementedError


class AvgMetric(Metric):
    """Item-weighted average of `fn(pred, target)` over batches, summed on the device."""

    sum_states = ("total", "count")

    def __init__(self, fn: Callable[..., torch.Tensor], name: str | None = None, takes_tuple: bool = False):
        self.fn = fn
        self.name = name or metric_name(fn)
        self.takes_tuple = takes_tuple
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0] if isinstance(pred, (tuple, list)) else pred.shape[0]
        self.total = self.total + self.fn(pred, target).detach().float() * n
        self.count += n

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return torch.as_tensor(self.total) / self.count


def metric_name(fn: Any) -> str:
    """A readable name for a metric function: its `__name__`; for a `functools.partial`, the function with its
    bound arguments (`fbeta(beta=2)`); for another callable object, its class name."""
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{metric_name(fn.func)}({', '.join(args)})"
    return getattr(fn, "__name__", type(fn).__name__)


def as_metric(m: Any) -> Metric:
    """A `Metric` as it is, a `Metric` class instantiated (`F1Score` → `F1Score()`), an object with `reset`,
    `update` and `compute` (a torchmetrics `Metric`) wrapped in `StatefulMetric`, a function `(pred, target)`
    wrapped in `AvgMetric`. A scikit-learn function is refused with the fix (`SkMetric`): it takes
    `(y_true, y_pred)`, the other order."""
    if isinstance(m, Metric):
        return m
    if isinstance(m, type) and issubclass(m, Metric):
        return m()
    if isinstance(m, type):
        raise TypeError(f"metrics: {m.__name__} is a class; pass an instance, e.g. {m.__name__}(...) (torchmetrics "
                        "metrics need their arguments, such as num_classes)")
    if all(callable(getattr(m, a, None)) for a in ("reset", "update", "compute")):
        return StatefulMetric(m)  # its documented interface: a torchmetrics Metric (or the like), not a batch average
    if _from_sklearn(m):
        raise TypeError(f"metrics: {metric_name(m)} is a scikit-learn function fn(y_true, y_pred); wrap it so it "
                        f"gets the whole validation set in the right order: SkMetric({metric_name(m)}, "
                        "y_pred='label') (or 'proba', 'positive_proba', 'raw')")
    if not callable(m):
        raise TypeError(f"metrics: {m!r} is not a metric; pass functions (pred, target) -> tensor or Metric "
                        "instances, e.g. metrics=[accuracy]")
    return AvgMetric(m)


def _from_sklearn(fn: Any) -> bool:
    fn = fn.func if isinstance(fn, functools.partial) else fn
    return callable(fn) and str(getattr(fn, "__module__", "") or "").startswith("sklearn.")


def as_metrics(metrics: Any) -> list[Metric]:
    """The metrics of a Learner from None, one metric (`metrics=accuracy`) or a sequence of them.

    Example:
        >>> [m.name for m in as_metrics(accuracy)], [m.name for m in as_metrics([accuracy, F1Score()])]
        (['accuracy'], ['accuracy', 'f1_macro'])
    """
    if metrics is None:
        return []
    if callable(metrics) or isinstance(metrics, Metric):
        metrics = [metrics]
    return [as_metric(m) for m in metrics]


def _shape(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_shape(v) for v in value)
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__


def update_metric(metric: Metric, pred: Any, *targets: Any) -> None:
    """`metric.update(pred, *targets)`, with a multi-output model's first output unless the metric takes the
    tuple; an error is re-raised as `MetricError` naming the metric and the shapes (the loop calls this)."""
    if isinstance(pred, (tuple, list)) and not metric.takes_tuple:
        pred = pred[0]
    try:
        metric.update(pred, *targets)
    except Exception as e:
        shapes = ", ".join(f"target shape {_shape(t)}" for t in targets) or "no target"
        raise MetricError(f"metric {metric.name!r} failed on pred shape {_shape(pred)}, {shapes}: "
                          f"{type(e).__name__}: {e}. Fix: pass metrics that fit the target (metrics=[mae] for "
                          f"a number, [accuracy_multi] for multi-label, [] for none)") from e


def default_metrics(block: Any) -> list[Metric]:
    """Metrics that fit a target block, from the names its `default_metrics()` gives (CategoryBlock: accuracy;
    MultiCategoryBlock: accuracy_multi; RegressionBlock: mae); none for other blocks or no block.

    Example:
        >>> [m.name for m in default_metrics(RegressionBlock())]
        ['mae']
    """
    names = block.default_metrics() if callable(getattr(block, "default_metrics", None)) else []
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"default_metrics: {type(block).__name__} asks for unknown metric(s) {unknown}; "
                         f"known: {sorted(_BY_NAME)}")
    # A segmentation target's void label reaches the metrics that skip it (pixel_accuracy, mean_iou, dice).
    ignore = getattr(block, "ignore_index", None)
    return [_BY_NAME[n](ignore_index=ignore) if ignore is not None and isinstance(_BY_NAME[n], type) and
            issubclass(_BY_NAME[n], SegmentationConfusion) else as_metric(_BY_NAME[n]) for n in names]


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of items whose arg-max class equals the target (class indices, one dimension fewer than pred)."""
    if target.is_floating_point() or pred.ndim != target.ndim + 1:
        # Without this, (B, 1) regression outputs and targets broadcast to a (B, B) comparison: a silent number.
        raise ValueError(f"accuracy needs class scores (B, n_classes) and class-index targets (B,), got pred "
                         f"{tuple(pred.shape)} and {str(target.dtype).replace('torch.', '')} target "
                         f"{tuple(target.shape)}; for a number use mae or RMSE(), for multi-label accuracy_multi")
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
    """Share of items whose target is among the k highest scores (scikit-learn's `top_k_accuracy_score`; tied
    scores at the k-th place are broken arbitrarily). Single-label targets only."""

    def __init__(self, k: int = 5):
        self.k = k
        super().__init__(self._fn, f"top_{k}_accuracy")

    def _fn(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != target.ndim + 1 or target.is_floating_point():
            raise ValueError(f"{self.name} needs class scores (B, n_classes) and class-index targets (B,), got pred "
                             f"{tuple(pred.shape)} and target {tuple(target.shape)}; it does not support multi-label "
                             "targets (use F1Score, RocAuc or accuracy_multi)")
        k = min(self.k, pred.shape[-1])
        return (pred.topk(k, dim=-1).indices == target.unsqueeze(-1)).any(-1).float().mean()


class F1Score(Metric):
    """F1 kept as counts on the device. Single-label targets (class indices): a confusion matrix. Multi-label
    targets (multi-hot, the shape of pred): per label true/false positives and false negatives, a label predicted
    when sigmoid(pred) >= `threshold`. `average='macro'`: the mean of the per-class (per-label) F1, a class with
    no true and no predicted items left out; 'weighted': that mean weighted by each class's (label's) number of
    true items; 'micro': F1 of the pooled counts (single-label: the accuracy). As scikit-learn's `f1_score`.

    Example:
        >>> learn = Learner(data, model, metrics=[F1Score("micro"), F1Score("macro")])   # multi-label data too
    """

    sum_states = ("confusion", "label_counts")

    def __init__(self, average: str = "macro", threshold: float = 0.5):
        if average not in ("macro", "weighted", "micro"):
            raise ValueError(f"F1Score(average={average!r}): use 'macro', 'weighted' or 'micro'")
        self.average, self.threshold = average, threshold
        self.name = f"f1_{average}"
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None
        self.label_counts: torch.Tensor | None = None  # (3, n_labels): tp, fp, fn (multi-label targets)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = pred.shape[-1]
        if target.shape == pred.shape and pred.ndim >= 2:  # multi-hot targets: multi-label
            predicted = (torch.sigmoid(pred.float()) >= self.threshold).reshape(-1, n)
            actual = target.reshape(-1, n).bool()
            counts = torch.stack([(predicted & actual).sum(0), (predicted & ~actual).sum(0),
                                  (~predicted & actual).sum(0)])
            self.label_counts = counts if self.label_counts is None else self.label_counts + counts
            return
        counts = confusion_counts(pred.reshape(-1, n), target.reshape(-1), n)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> torch.Tensor:
        if self.label_counts is not None:
            tp, fp, fn = self.label_counts.float()
            if self.average == "micro":
                return 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1e-12)
            den = 2 * tp + fp + fn
            if self.average == "weighted":
                return _weighted(2 * tp / den.clamp_min(1e-12), tp + fn)
            present = den > 0
            return (2 * tp[present] / den[present]).mean()
        if self.confusion is None:
            return torch.tensor(float("nan"))
        cm = self.confusion.float()
        tp = cm.diag()
        if self.average == "micro":
            return tp.sum() / cm.sum().clamp_min(1)
        precision_den, recall_den = cm.sum(0), cm.sum(1)
        f1 = 2 * tp / (precision_den + recall_den).clamp_min(1e-12)
        if self.average == "weighted":
            return _weighted(f1, recall_den)
        present = (precision_den + recall_den) > 0
        return f1[present].mean()


class StatefulMetric(Metric):
    """Any object with `reset()`, `update(pred, target)` and `compute()` — a torchmetrics `Metric` — used as a
    learnkit metric; `as_metric` wraps such objects in it. `update` gets the model's first output (logits, not
    probabilities: use metrics that accept logits, such as torchmetrics' classification metrics) and the target;
    the object is moved to the predictions' device once. Under torchrun, torchmetrics gathers its own states in
    `compute()`.

    Example:
        >>> import torchmetrics
        >>> learn = Learner(data, model, metrics=[torchmetrics.classification.MulticlassAUROC(num_classes=10)])
    """

    def __init__(self, metric: Any, name: str | None = None):
        missing = [a for a in ("reset", "update", "compute") if not callable(getattr(metric, a, None))]
        if missing:
            raise TypeError(f"StatefulMetric: {metric!r} has no {missing}; it needs reset(), update(pred, target) "
                            "and compute()")
        self.metric = metric
        self.name = name or type(metric).__name__
        self.reset()

    def reset(self) -> None:
        self.metric.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        device = getattr(self.metric, "device", None)
        if isinstance(device, torch.device) and device != pred.device and callable(getattr(self.metric, "to", None)):
            self.metric.to(pred.device)
        self.metric.update(pred.detach(), target)

    def compute(self) -> torch.Tensor:
        value = self.metric.compute()
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise TypeError(f"{self.name}.compute() returned shape {tuple(value.shape)}; a metric must return one "
                            "number (e.g. average='macro', or per_class_accuracy for per-class values)")
        return torch.as_tensor(value).float()


def _weighted(values: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    return (values * support).sum() / support.sum().clamp_min(1e-12)
def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class from a (n, n) confusion matrix (rows: target, columns: prediction): tp / (tp + fp + fn);
    NaN for a class that is neither in the targets nor predicted (its IoU is undefined, not 0 or 1)."""
    cm = confusion.double()
    tp, union = cm.diag(), cm.sum(0) + cm.sum(1) - cm.diag()
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan"))).float()


def dice_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Dice (F1) of each class from a confusion matrix: 2 tp / (2 tp + fp + fn); NaN where the class is absent
    from both targets and predictions."""
    cm = confusion.double()
    tp, den = cm.diag(), cm.sum(0) + cm.sum(1)
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.full_like(tp, float("nan"))).float()


class SegmentationConfusion(Metric):
    """Per-pixel confusion matrix over the whole validation set, on the device (one `bincount` per batch).

    `update(pred, target)`: pred (N, C, H, W) class scores, target (N, H, W) class indices; pixels whose target is
    `ignore_index` are left out. A target value outside [0, C) that is not `ignore_index` is counted and makes
    `compute()` raise (checking it per batch would cost a host sync). Subclasses reduce `confusion`; in a
    distributed run the matrices are summed over ranks first (`sum_states`), so every value is exact.
    """

    sum_states = ("confusion", "invalid")
    name = "segmentation_confusion"

    def __init__(self, ignore_index: int | None = 255):
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None
        self.invalid: torch.Tensor | int = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.ndim != target.ndim + 1 or pred.shape[2:] != target.shape[1:] or target.is_floating_point():
            raise ValueError(f"{self.name} needs class scores (N, C, H, W) and integer masks (N, H, W), got pred "
                             f"{tuple(pred.shape)} and {str(target.dtype).replace('torch.', '')} target "
                             f"{tuple(target.shape)}")
        n = pred.shape[1]
        target = target.reshape(-1).long()
        keep = target != self.ignore_index if self.ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        in_range = (target >= 0) & (target < n)
        self.invalid = self.invalid + (keep & ~in_range).sum()
        keep = keep & in_range
        predicted = pred.argmax(1).reshape(-1)
        counts = torch.bincount(target[keep] * n + predicted[keep], minlength=n * n).reshape(n, n)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def matrix(self) -> torch.Tensor:
        """The accumulated (n, n) confusion matrix; raises when a target held values outside the classes."""
        if int(self.invalid):
            raise ValueError(f"{self.name}: {int(self.invalid)} target pixel(s) are neither a class index in "
                             f"[0, {self.confusion.shape[0] if self.confusion is not None else '?'}) nor the "
                             f"ignore_index {self.ignore_index}; fix the masks or pass ignore_index=")
        if self.confusion is None:
            raise ValueError(f"{self.name}: no batch was seen")
        return self.confusion

    def compute(self) -> torch.Tensor:
        raise NotImplementedError


class PixelAccuracy(SegmentationConfusion):
    """Share of the (non-ignored) pixels whose arg-max class is the target's, over the whole set."""

    name = "pixel_accuracy"

    def compute(self) -> torch.Tensor:
        cm = self.matrix().double()
        return (cm.diag().sum() / cm.sum().clamp_min(1)).float()


class MeanIoU(SegmentationConfusion):
    """Mean over classes of the IoU tp / (tp + fp + fn), over the whole set (not per batch). A class absent from
    both targets and predictions has no IoU (NaN) and is left out of the mean (as `numpy.nanmean` over
    scikit-learn's `jaccard_score(average=None, zero_division=nan)`); a class predicted but never present in the
    targets counts as 0. `iou_per_class(metric.matrix())` gives every class."""

    name = "mean_iou"

    def compute(self) -> torch.Tensor:
        return iou_per_class(self.matrix()).nanmean()


class MeanDice(SegmentationConfusion):
    """Mean over classes of Dice 2 tp / (2 tp + fp + fn) over the whole set; absent classes left out (NaN), as
    `MeanIoU`."""

    name = "dice"

    def compute(self) -> torch.Tensor:
        return dice_per_class(self.matrix()).nanmean()


# The metrics a target block may name in its `default_metrics()` (see `default_metrics`).
_BY_NAME: dict[str, Any] = {"accuracy": accuracy, "accuracy_multi": accuracy_multi, "mae": mae, "mse": mse,
                            "rmse": RMSE, "error_rate": error_rate, "f1_macro": F1Score,
                            "pixel_accuracy": PixelAccuracy, "mean_iou": MeanIoU, "dice": MeanDice}
