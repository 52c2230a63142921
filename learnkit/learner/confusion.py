"""The one confusion matrix: counts of (actual, predicted) class pairs, used by `ClassificationInterpretation`
and `learnkit demo` (`confusion_matrix`, checked, on the CPU) and by the metrics per batch (`confusion_counts`, on
the device, no host sync)."""
from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "confusion_counts"]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, n_classes) int64 counts on the CPU: rows are the actual classes, columns the predicted ones.

    Args:
        preds: predicted class indices (N,), or scores/probabilities (N, n_classes) whose arg-max is taken.
        targets: actual class indices (N,).
        n_classes: the number of classes (the matrix's size, also for classes never seen).

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if preds.ndim == 2:
        preds = preds.argmax(dim=-1)
    preds, targets = preds.detach().long().cpu().reshape(-1), targets.detach().long().cpu().reshape(-1)
    if preds.shape != targets.shape:
        raise ValueError(f"confusion_matrix: {len(preds)} predictions but {len(targets)} targets; pass one "
                         "prediction per target")
    both = torch.cat([preds, targets])
    bad = both[(both < 0) | (both >= n_classes)][:3].tolist()
    if bad:
        raise ValueError(f"confusion_matrix: class indices {bad} are outside 0..{n_classes - 1}; pass "
                         f"n_classes= the number of classes")
    return confusion_counts(preds, targets, n_classes)


def confusion_counts(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The same counts on the predictions' device, without reading anything to the host (so indices are not
    checked: the metrics call this every batch). `preds`: class indices, or scores with one more dimension than
    `targets` (arg-max taken).

    Example:
        >>> confusion_counts(torch.tensor([[2., 1.], [0., 3.]]), torch.tensor([0, 0]), 2)
        tensor([[1, 1],
                [0, 0]])
    """
    if preds.ndim == targets.ndim + 1:
        preds = preds.argmax(dim=-1)
    idx = targets.reshape(-1).long() * n_classes + preds.reshape(-1).long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
