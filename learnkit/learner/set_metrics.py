"""Metrics over the whole validation set: ROC AUC, balanced accuracy, Matthews correlation, per-class accuracy
and scikit-learn-style functions (`SkMetric`). (A torchmetrics `Metric` is wrapped by metrics.py's
`StatefulMetric`.)

They differ from a batch average: AUC ranks every validation item against every other, so these metrics keep
counts (a confusion matrix) or the predictions themselves on the device and score once per validation, in torch
(scikit-learn is not needed at run time). What each supports:

| metric | single-label (B, C) scores + (B,) indices | binary, one logit (B,) or (B, 1) | multi-label (B, C) multi-hot |
|---|---|---|---|
| `RocAuc` | C=2: AUC of softmax[:, 1]; C>2: one-vs-rest | AUC of sigmoid | per label, averaged |
| `F1Score` (metrics.py) | macro / weighted / micro | - | macro / weighted / micro |
| `BalancedAccuracy`, `MatthewsCorrCoef`, `ClassAccuracy`, `TopKAccuracy` | yes | - | refused (clear error) |
| `SkMetric` | `y_pred=` says what the function gets | yes | yes |
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch

from learnkit.learner.confusion import confusion_counts
from learnkit.learner.metrics import Metric, metric_name

__all__ = ["AccumulatedMetric", "RocAuc", "BalancedAccuracy", "MatthewsCorrCoef", "ClassAccuracy",
           "per_class_accuracy", "SkMetric", "target_kind"]


def target_kind(pred: torch.Tensor, target: torch.Tensor) -> str:
    """What a (prediction, target) pair is: 'single' (class scores (B, C) and class-index targets (B,)),
    'binary' (one score per item, (B,) or (B, 1), and 0/1 targets of the same shape) or 'multi_label'
    ((B, C) scores and (B, C) multi-hot targets). Anything else is a ValueError showing the shapes."""
    if pred.ndim == target.ndim + 1 and not target.is_floating_point():
        return "single"
    if pred.shape == target.shape:
        return "binary" if pred.ndim == 1 or pred.shape[-1] == 1 else "multi_label"
    raise ValueError(f"expected class scores (B, C) with class-index targets (B,), one score per item with 0/1 "
                     f"targets of its shape, or (B, C) multi-hot targets; got pred {tuple(pred.shape)} and "
                     f"{str(target.dtype).replace('torch.', '')} target {tuple(target.shape)}")


def _single_label_only(metric: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != target.ndim + 1 or target.is_floating_point():
        raise ValueError(f"{metric} needs class scores (B, n_classes) and class-index targets (B,), got pred "
                         f"{tuple(pred.shape)} and {str(target.dtype).replace('torch.', '')} target "
                         f"{tuple(target.shape)}; for multi-label targets use F1Score, RocAuc or accuracy_multi")


class AccumulatedMetric(Metric):
    """Keeps every validation batch's predictions (float32) and targets on the device and scores them together
    in `score(pred, target)`, which a subclass defines. Memory: one float per class per validation item.
    `cat_states`: under torchrun the lists are joined over ranks before `compute()`."""

    cat_states = ("preds", "targets")

    def reset(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.check(pred, target)
        self.preds.append(pred.detach().float())
        self.targets.append(target.detach())

    def check(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Refuse a batch the metric cannot score (raise ValueError); the default accepts anything."""

    def compute(self) -> torch.Tensor:
        if not self.preds:
            return torch.tensor(float("nan"))
        return self.score(torch.cat(self.preds), torch.cat(self.targets))

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of x (float64), tied values sharing the mean of their ranks (as scipy's rankdata)."""
    sorted_x, order = x.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    group_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty(len(x), dtype=torch.float64, device=x.device)
    ranks[order] = group_rank[inverse]
    return ranks


def _binary_auc(score: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counted half
    (the Mann-Whitney statistic); NaN when one of the two classes is missing."""
    n_pos = positive.sum().double()
    n_neg = len(positive) - n_pos
    rank_sum = _average_ranks(score)[positive].sum()
    return ((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).float()


class RocAuc(AccumulatedMetric):
    """Area under the ROC curve over the whole validation set, from probabilities (as scikit-learn's
    `roc_auc_score` on `get_preds()` outputs): binary with one logit → sigmoid; two class scores → softmax[:, 1];
    more classes → one-vs-rest of the softmax, averaged; multi-label → one AUC per label of the sigmoid, averaged.

    `average='macro'` (the plain mean) or 'weighted' (by how many validation items are positive for each class).
    A class with no positive (or no negative) validation item has no AUC: a warning names it and it is left out
    of the average (scikit-learn raises instead); with none left, or a binary validation set holding one class,
    the result is NaN with a warning, so a fit goes on (NaN predictions too). Ties are counted half, as
    scikit-learn does.

    Example:
        >>> learn = Learner(data, model, metrics=[accuracy, RocAuc()])
    """

    def __init__(self, average: str = "macro"):
        if average not in ("macro", "weighted"):
            raise ValueError(f"RocAuc(average={average!r}): use 'macro' or 'weighted'")
        self.average = average
        self.name = "roc_auc" if average == "macro" else "roc_auc_weighted"
        self.reset()

    def check(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target_kind(pred, target)

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = target_kind(pred, target)
        if kind == "single":  # (B, T, C) scores of a sequence: every position is an item
            pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1)
        if kind == "single" and pred.shape[-1] == 2:
            scores, positives = pred.softmax(-1)[:, 1:], (target == 1).unsqueeze(1)
        elif kind == "single":
            scores = pred.softmax(-1)
            positives = target.reshape(-1, 1) == torch.arange(pred.shape[-1], device=target.device)
        else:  # one logit per item, or per label
            scores, positives = torch.sigmoid(pred.reshape(len(pred), -1)), target.reshape(len(pred), -1) > 0.5
        if bool(torch.isnan(scores).any()):  # a diverged model: NaN as the loss would be, not a failed fit
            warnings.warn(f"{self.name}: the predictions hold NaN; AUC is undefined (NaN)", RuntimeWarning,
                          stacklevel=2)
            return torch.tensor(float("nan"), device=pred.device)
        n_pos = positives.sum(0)
        defined = (n_pos > 0) & (n_pos < len(positives))
        if not bool(defined.all()):
            missing = torch.nonzero(~defined).flatten().tolist()
            what = "the validation targets hold one class only" if positives.shape[1] == 1 and kind != "multi_label" \
                else f"column(s) {missing} have no positive or no negative validation item and are left out"
            warnings.warn(f"{self.name}: {what}; AUC is undefined there" +
                          ("" if bool(defined.any()) else " (NaN)"), RuntimeWarning, stacklevel=2)
        if not bool(defined.any()):
            return torch.tensor(float("nan"), device=pred.device)
        aucs = torch.stack([_binary_auc(scores[:, c], positives[:, c]) for c in torch.nonzero(defined).flatten()])
        if self.average == "macro":
            return aucs.mean()
        weights = n_pos[defined].float()
        return (aucs * weights).sum() / weights.sum()


class _Confusion(Metric):
    """A confusion matrix (rows: target, columns: arg-max prediction) summed on the device; single-label only."""

    sum_states = ("confusion",)

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _single_label_only(self.name, pred, target)
        n = pred.shape[-1]
        counts = confusion_counts(pred.reshape(-1, n), target.reshape(-1), n)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> torch.Tensor:
        if self.confusion is None:
            return torch.tensor(float("nan"))
        return self.from_confusion(self.confusion.double()).float()

    def from_confusion(self, cm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BalancedAccuracy(_Confusion):
    """The mean over classes of each class's recall (scikit-learn's `balanced_accuracy_score`); classes with no
    validation item are left out. Single-label targets only."""

    name = "balanced_accuracy"

    def __init__(self) -> None:
        self.reset()

    def from_confusion(self, cm: torch.Tensor) -> torch.Tensor:
        support = cm.sum(1)
        present = support > 0
        return (cm.diag()[present] / support[present]).mean()


class MatthewsCorrCoef(_Confusion):
    """Matthews correlation coefficient, multi-class form (scikit-learn's `matthews_corrcoef`): 1 perfect, 0 no
    better than chance; 0 when it is undefined (one class predicted or present only). Single-label targets only."""

    name = "mcc"

    def __init__(self) -> None:
        self.reset()

    def from_confusion(self, cm: torch.Tensor) -> torch.Tensor:
        t, p = cm.sum(1), cm.sum(0)  # items per true class, per predicted class
        c, s = cm.diag().sum(), cm.sum()
        den = ((s * s - (p * p).sum()) * (s * s - (t * t).sum())).sqrt()
        return torch.where(den > 0, (c * s - (t * p).sum()) / den.clamp_min(1e-300), torch.zeros_like(den))


class ClassAccuracy(Metric):
    """Accuracy on the validation items of one class (its recall): share of items of class `index` predicted as
    it. NaN when the validation set has no item of that class. Single-label targets only; `per_class_accuracy`
    makes one per class."""

    sum_states = ("correct", "total")

    def __init__(self, index: int, name: str | None = None):
        self.index = index
        self.name = name or f"accuracy_{index}"
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | float = 0.0
        self.total: torch.Tensor | float = 0.0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _single_label_only(self.name, pred, target)
        mine = target.reshape(-1) == self.index
        self.correct = self.correct + (mine & (pred.argmax(-1).reshape(-1) == self.index)).sum()
        self.total = self.total + mine.sum()

    def compute(self) -> torch.Tensor:
        total = torch.as_tensor(self.total).float()
        return torch.where(total > 0, torch.as_tensor(self.correct).float() / total.clamp_min(1),
                           torch.full_like(total, float("nan")))


def per_class_accuracy(classes: int | Sequence[Any]) -> list[ClassAccuracy]:
    """One `ClassAccuracy` per class, named `accuracy_<class>`: a column each in the history and the logs.

    Example:
        >>> learn = Learner(data, model, metrics=[accuracy, *per_class_accuracy(data.classes)])
    """
    names = list(range(classes)) if isinstance(classes, int) else list(classes)
    return [ClassAccuracy(i, f"accuracy_{name}") for i, name in enumerate(names)]


_Y_PRED = ("label", "proba", "positive_proba", "raw")


class SkMetric(AccumulatedMetric):
    """A scikit-learn-style function `fn(y_true, y_pred) -> number`, called once per validation on the whole
    validation set (NumPy arrays on the CPU; one host copy per validation).

    `y_true` is the targets as the loader gives them (class indices (N,) int64 for single-label; 0/1 (N,) int64
    for a binary one-logit model; (N, C) int64 multi-hot for multi-label; as they are with `y_pred='raw'`).
    `y_pred` says what `fn` gets as its second argument, from the model's first output:
        'label': the predicted class: arg-max (N,) for class scores; (sigmoid >= threshold) as int64, (N,) for one
            logit per item or (N, C) multi-hot for multi-label (f1_score, cohen_kappa_score, accuracy_score);
        'proba': probabilities: softmax (N, C); sigmoid (N,) for one logit, (N, C) for multi-label
            (log_loss, roc_auc_score with multi_class='ovr');
        'positive_proba': the probability of class 1, (N,): softmax[:, 1] of two class scores or the sigmoid of
            one logit (roc_auc_score, average_precision_score, brier_score_loss on binary tasks);
        'raw': the model's outputs as they are, and the targets as they are (regression: r2_score).
    Bind a function's other arguments with `functools.partial`; the metric is named after it.

    Example:
        >>> from sklearn.metrics import cohen_kappa_score, f1_score
        >>> metrics = [SkMetric(partial(cohen_kappa_score, weights="quadratic"), y_pred="label"),
        ...            SkMetric(partial(f1_score, average="macro"), y_pred="label", name="f1")]
    """

    def __init__(self, fn: Callable[[Any, Any], Any], y_pred: str, name: str | None = None,
                 threshold: float = 0.5):
        if y_pred not in _Y_PRED:
            raise ValueError(f"SkMetric(y_pred={y_pred!r}): use one of {_Y_PRED} (what {metric_name(fn)} receives "
                             "as y_pred)")
        if not callable(fn):
            raise TypeError(f"SkMetric: {fn!r} is not callable; pass a function fn(y_true, y_pred) -> number")
        self.fn, self.y_pred, self.threshold = fn, y_pred, threshold
        self.name = name or metric_name(fn)
        self.reset()

    def check(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if self.y_pred != "raw":
            kind = target_kind(pred, target)
            if self.y_pred == "positive_proba" and not (kind == "binary" or (kind == "single" and pred.shape[-1] == 2)):
                raise ValueError(f"SkMetric(y_pred='positive_proba') needs a binary task (two class scores or one "
                                 f"logit per item), got pred {tuple(pred.shape)} and target {tuple(target.shape)}; "
                                 "use y_pred='proba' for more classes")

    def decode(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_true, y_pred) as tensors, as the class docstring says."""
        if self.y_pred == "raw":
            return target, pred
        kind = target_kind(pred, target)
        if kind == "single":
            pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1)  # a sequence: every position
            y_pred = {"label": lambda: pred.argmax(-1), "proba": lambda: pred.softmax(-1),
                      "positive_proba": lambda: pred.softmax(-1)[:, 1]}[self.y_pred]()
            return target.long(), y_pred
        if kind == "binary":
            pred, target = pred.reshape(-1), target.reshape(-1)
        proba = torch.sigmoid(pred)
        return target.round().long(), (proba >= self.threshold).long() if self.y_pred == "label" else proba

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y_true, y_pred = self.decode(pred, target)
        value = self.fn(y_true.cpu().numpy(), y_pred.cpu().numpy())
        try:
            return torch.tensor(float(value))
        except (TypeError, ValueError):
            raise TypeError(f"SkMetric: {self.name} returned {type(value).__name__} {value!r:.80}; a metric must "
                            "return one number (for per-class arrays, e.g. average=None, use per_class_accuracy "
                            "or one SkMetric per class)") from None
