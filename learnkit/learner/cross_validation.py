"""K-fold cross-validation over any learner factory, in one call: seeded (stratified for class labels) folds, one
Learner per fold built by the user's factory, per-fold metrics, out-of-fold predictions in the items' order and
the test predictions averaged over the folds.

A fold reaches the factory as a `Fold`: its train/valid indices and `fold.splitter`, an `IndexSplitter` that a
`DataBlock(..., splitter=fold.splitter)` takes as it is (`TextDataBunch.from_lists(valid_idx=fold.valid_idx)` and
`ImageDataBunch.from_lists(valid_idx=fold.valid_idx)` take the indices), so every constructor goes through
`DataBlock.databunch` with that fold's split. Predictions use the learner's own path (`data.test_dl`, `get_preds`).

Example:
    >>> def make_learner(fold):
    ...     data = ImageDataBunch.from_lists(root, files, labels, valid_idx=fold.valid_idx, mode="L")
    ...     return Learner(data, create_model("simple_cnn", n_in=1, n_out=data.n_classes), metrics=accuracy)
    >>> cv = cross_validate(make_learner, files, labels, n_splits=5, fit=lambda learn: learn.fit_one_cycle(2),
    ...                     test_items=test_files)                                            # doctest: +SKIP
    >>> cv.metrics, cv.oof_accuracy, cv.test_probs.shape                                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from learnkit.core.random import set_seed
from learnkit.data.bunch import n_items
from learnkit.data.splitters import IndexSplitter

__all__ = ["Fold", "CrossValidation", "cross_validate", "kfold_indices"]


@dataclass(frozen=True)
class Fold:
    """One fold: `index` (0..n_splits-1), `train_idx` and `valid_idx` (sorted positions in the items), and
    `splitter`, an `IndexSplitter(valid_idx)` for a DataBlock."""
    index: int
    train_idx: list[int]
    valid_idx: list[int]

    @property
    def splitter(self) -> IndexSplitter:
        return IndexSplitter(self.valid_idx)


@dataclass
class CrossValidation:
    """What `cross_validate` returns.

    Attributes:
        folds: the `Fold`s (disjoint validation sets that cover every item once).
        fold_metrics: per fold, `learn.validate()` after fitting: {'valid_loss': ..., 'accuracy': ...}.
        classes: the classes (the first fold's; every fold must have the same).
        oof_probs: float32 (n_items, n_classes): each item predicted by the model that did not train on it.
        oof_preds: the decoded out-of-fold predictions, in the items' order.
        test_probs: the test items' probabilities averaged over the folds' models (None without test_items).
        test_preds: their decoded predictions (None without test_items).
        labels: the labels given (None without).
    """
    folds: list[Fold]
    fold_metrics: list[dict[str, float]]
    classes: list[Any] | None
    oof_probs: torch.Tensor
    oof_preds: list[Any]
    test_probs: torch.Tensor | None = None
    test_preds: list[Any] | None = None
    labels: list[Any] | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        """The mean of each metric over the folds."""
        names = self.fold_metrics[0].keys() if self.fold_metrics else ()
        return {k: sum(float(m[k]) for m in self.fold_metrics) / len(self.fold_metrics) for k in names}

    @property
    def oof_accuracy(self) -> float | None:
        """Share of items whose out-of-fold prediction equals its label (None without labels)."""
        if self.labels is None:
            return None
        return sum(p == y for p, y in zip(self.oof_preds, self.labels)) / len(self.labels)


def kfold_indices(n_items: int, n_splits: int = 5, seed: int = 0,
                  labels: Sequence[Any] | None = None) -> list[tuple[list[int], list[int]]]:
    """(train_idx, valid_idx) per fold, seeded. With `labels`, stratified: each class's items are shuffled and dealt
    round-robin over the folds (continuing where the previous class stopped), so every fold holds each class's share
    to within one item and the fold sizes differ by at most one.

    Example:
        >>> folds = kfold_indices(10, n_splits=5, seed=0, labels=list("aabbbbcccc"))
        >>> sorted(i for _, valid in folds for i in valid) == list(range(10))
        True
    """
    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"cross_validate(n_splits={n_splits!r}): must be an int of at least 2")
    if n_items < n_splits:
        raise ValueError(f"cross_validate: {n_items} items cannot make {n_splits} folds; pass n_splits <= {n_items}")
    rng = random.Random(seed)
    if labels is None:
        order = list(range(n_items))
        rng.shuffle(order)
        groups = [order]
    else:
        labels = list(labels)
        if len(labels) != n_items:
            raise ValueError(f"cross_validate: {n_items} items but {len(labels)} labels; give one label per item")
        by_class: dict[Any, list[int]] = {}
        for i, y in enumerate(labels):
            by_class.setdefault(y, []).append(i)
        rare = {str(y): len(ix) for y, ix in by_class.items() if len(ix) < n_splits}
        if rare:
            raise ValueError(f"cross_validate: classes with fewer items than n_splits={n_splits} cannot be in every "
                             f"fold's training and validation data: {dict(list(rare.items())[:5])}; pass a smaller "
                             "n_splits or merge those classes")
        groups = []
        for y in sorted(by_class, key=str):  # a fixed class order, whatever the items' order
            ix = by_class[y]
            rng.shuffle(ix)
            groups.append(ix)
    valid: list[list[int]] = [[] for _ in range(n_splits)]
    k = 0
    for ix in groups:
        for i in ix:
            valid[k % n_splits].append(i)
            k += 1
    return [(sorted(set(range(n_items)) - set(v)), sorted(v)) for v in valid]


def _default_fit(learn: Any) -> None:
    learn.fit_one_cycle(3)


def _probs(learn: Any, items: Sequence[Any], batch_size: int | None) -> torch.Tensor:
    probs, _ = learn.get_preds(learn.data.test_dl(list(items), batch_size=batch_size))
    if probs.shape[0] != len(items):
        raise RuntimeError(f"cross_validate: got {probs.shape[0]} predictions for {len(items)} items")
    return probs


def cross_validate(make_learner: Callable[[Fold], Any], items: Sequence[Any], labels: Sequence[Any] | None = None, *,
                   n_splits: int = 5, seed: int = 0, fit: Callable[[Any], Any] | None = None,
                   test_items: Sequence[Any] | None = None, stratify: bool = True,
                   batch_size: int | None = None) -> CrossValidation:
    """K-fold cross-validation: for each fold, `learn = make_learner(fold)`, `fit(learn)`, then the fold's metrics
    (`learn.validate()`), its validation items' predictions (out-of-fold) and the test items' predictions.

    Args:
        make_learner: `fold -> Learner` whose data holds exactly `fold.valid_idx` as validation (build it with
            `fold.splitter` or `valid_idx=fold.valid_idx`, from the same items in the same order).
        items: the raw inputs, one per item, as `data.test_dl` takes them (image paths, texts): the out-of-fold
            predictions are made from these.
        labels: one label per item; stratifies the folds (with `stratify`) and gives `oof_accuracy`.
        n_splits: the number of folds (at least 2).
        seed: seeds the folds and, with `seed + fold.index`, each fold's `set_seed` before `make_learner`.
        fit: `learn -> None` that trains (default: `learn.fit_one_cycle(3)`).
        test_items: raw test inputs predicted by every fold's model; their probabilities are averaged.
        stratify: stratified folds when labels are given (False: plain shuffled folds, e.g. for regression).
        batch_size: items per forward pass for the predictions (default: the validation loader's).

    Example:
        >>> cv = cross_validate(make_learner, texts, labels, n_splits=5, seed=0)               # doctest: +SKIP
        >>> cv.fold_metrics[0]["accuracy"], cv.oof_probs.shape                                 # doctest: +SKIP
    """
    items = list(items)
    labels = None if labels is None else list(labels)
    fit = _default_fit if fit is None else fit
    splits = kfold_indices(len(items), n_splits, seed, labels if stratify else None)
    folds = [Fold(k, train, valid) for k, (train, valid) in enumerate(splits)]
    fold_metrics: list[dict[str, float]] = []
    oof: torch.Tensor | None = None
    test_sum: torch.Tensor | None = None
    classes: list[Any] | None = None
    y_block: Any = None
    for fold in folds:
        set_seed(seed + fold.index)
        learn = make_learner(fold)
        n_valid = _n_valid(learn)
        if n_valid is not None and n_valid != len(fold.valid_idx):
            raise ValueError(f"cross_validate: fold {fold.index}'s learner validates on {n_valid} items, but the "
                             f"fold has {len(fold.valid_idx)}; build its data with splitter=fold.splitter (or "
                             "valid_idx=fold.valid_idx) over the same items in the same order")
        fit(learn)
        fold_metrics.append({k: float(v) for k, v in learn.validate().items()})
        fold_classes = None if learn.data.classes is None else list(learn.data.classes)
        if fold.index == 0:
            classes, y_block = fold_classes, learn.data.y_block
        elif fold_classes != classes:
            raise ValueError(f"cross_validate: fold {fold.index} has the classes {fold_classes}, fold 0 had {classes}; "
                             "every fold's training data must hold every class (stratify with labels=)")
        probs = _probs(learn, [items[i] for i in fold.valid_idx], batch_size)
        if oof is None:
            oof = torch.full((len(items), *probs.shape[1:]), math.nan)
        oof[fold.valid_idx] = probs
        if test_items is not None:
            test = _probs(learn, list(test_items), batch_size)
            test_sum = test if test_sum is None else test_sum + test
    assert oof is not None
    test_probs = None if test_sum is None else test_sum / len(folds)

    def decode(p: torch.Tensor) -> list[Any]:
        return [y_block.decode_prediction(row)[0] for row in p] if y_block is not None else p.tolist()

    return CrossValidation(folds=folds, fold_metrics=fold_metrics, classes=classes, oof_probs=oof,
                           oof_preds=decode(oof), test_probs=test_probs,
                           test_preds=None if test_probs is None else decode(test_probs), labels=labels)


def _n_valid(learn: Any) -> int | None:
    try:
        return n_items(learn.data.valid_dl)
    except (TypeError, AttributeError):
        return None
