"""The one confusion matrix: counts of (actual, predicted) class pairs, used by `ClassificationInterpretation`
and `learnkit demo`."""
from __future__ import annotations

import torch

__all__ = ["confusion_matrix"]


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
    return torch.bincount(targets * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
