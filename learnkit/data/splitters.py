"""Splitters: `splitter(items) -> (train_indices, valid_indices)`. Deterministic; train/valid only."""
from __future__ import annotations

from pathlib import PurePath
from typing import Any, Callable, Sequence

import torch

__all__ = ["RandomSplitter", "FolderSplitter", "ColumnSplitter", "FuncSplitter", "IndexSplitter", "check_split",
           "is_valid_flag"]

def check_split(train: Sequence[int], valid: Sequence[int], n: int, name: str) -> tuple[list[int], list[int]]:
    """Validate a split: indices in range, no overlap, a non-empty training part."""
    train, valid = [int(i) for i in train], [int(i) for i in valid]
    bad = [i for i in train + valid if not 0 <= i < n]
    if bad:
        raise IndexError(f"{name}: indices {bad[:10]} are outside 0..{n - 1} ({n} items); give indices "
                         "into the list of items (after get_items)")
    overlap = set(train) & set(valid)
    if overlap:
        raise ValueError(f"{name}: {len(overlap)} item(s) are in both train and valid, e.g. indices "
                         f"{sorted(overlap)[:10]}; each item must go to exactly one split")
    if not train:
        raise ValueError(f"{name}: the training split is empty ({n} items, {len(valid)} in valid); "
                         "check the splitter's arguments")
    return train, valid


class RandomSplitter:
    """A seeded random split; the same seed and number of items always give the same split.

    Example:
        >>> train, valid = RandomSplitter(valid_pct=0.2, seed=42)(list(range(10)))
    """

    def __init__(self, valid_pct: float = 0.2, seed: int | None = 0):
        if not 0 <= valid_pct < 1:
            raise ValueError(f"RandomSplitter(valid_pct={valid_pct}): valid_pct must be in [0, 1), e.g. 0.2")
        self.valid_pct, self.seed = valid_pct, seed

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        g = torch.Generator()
        g.manual_seed(0 if self.seed is None else self.seed)
        perm = torch.randperm(len(items), generator=g).tolist()
        cut = int(round(self.valid_pct * len(items)))
        return check_split(perm[cut:], perm[:cut], len(items), "RandomSplitter")

    def __repr__(self) -> str:
        return f"RandomSplitter(valid_pct={self.valid_pct}, seed={self.seed})"


class FolderSplitter:
    """Split paths by the name of a folder above them: `.../train/...` vs `.../valid/...`.

    An item under neither folder is an error naming it (never a silent drop).
    """

    def __init__(self, train_name: str = "train", valid_name: str = "valid"):
        self.train_name, self.valid_name = train_name, valid_name

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        train, valid, neither = [], [], []
        for i, item in enumerate(items):
            parts = PurePath(str(item)).parts[:-1]
            if self.valid_name in parts:
                valid.append(i)
            elif self.train_name in parts:
                train.append(i)
            else:
                neither.append(str(item))
        if neither:
            raise ValueError(f"FolderSplitter: {len(neither)} item(s) are in neither a '{self.train_name}' nor a "
                             f"'{self.valid_name}' folder, e.g. {neither[:3]}. Fix: move them, or pass "
                             f"FolderSplitter(train_name=..., valid_name=...)")
        return check_split(train, valid, len(items), "FolderSplitter")


class ColumnSplitter:
    """Valid items are those whose `item[col]` is true (rows of a DataFrame, dicts, ...)."""

    def __init__(self, col: Any = "is_valid"):
        self.col = col

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        flags = []
        for i, item in enumerate(items):
            try:
                flags.append(bool(item[self.col]))
            except (KeyError, IndexError, TypeError) as e:
                raise KeyError(f"ColumnSplitter: item {i} ({str(item)[:60]}) has no column {self.col!r} ({e}); "
                               "pass ColumnSplitter(col=...) with the column that marks validation rows") from None
        return check_split([i for i, f in enumerate(flags) if not f], [i for i, f in enumerate(flags) if f],
                           len(items), "ColumnSplitter")


class FuncSplitter:
    """Valid items are those for which `func(item)` is true."""

    def __init__(self, func: Callable[[Any], bool]):
        self.func = func

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        flags = []
        for i, item in enumerate(items):
            try:
                flags.append(bool(self.func(item)))
            except Exception as e:
                raise ValueError(f"FuncSplitter: func failed on item {i} ({str(item)[:60]}): "
                                 f"{type(e).__name__}: {e}; fix the function passed to FuncSplitter") from e
        return check_split([i for i, f in enumerate(flags) if not f], [i for i, f in enumerate(flags) if f],
                           len(items), "FuncSplitter")


class IndexSplitter:
    """Valid items are exactly the given indices."""

    def __init__(self, valid_idx: Sequence[int]):
        self.valid_idx = [int(i) for i in valid_idx]

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        valid = set(self.valid_idx)
        return check_split([i for i in range(len(items)) if i not in valid], self.valid_idx, len(items),
                           "IndexSplitter")


_VALID_WORDS = {"1": True, "true": True, "yes": True, "valid": True, "validation": True, "y": True, "t": True,
                "0": False, "false": False, "no": False, "train": False, "training": False, "n": False, "f": False,
                "": False}


def is_valid_flag(value: Any) -> bool:
    """Whether a CSV cell (or a bool / number) marks a row as validation: the one reading of an `is_valid` column.

    True: 1, true, yes, valid, validation, y, t; False: 0, false, no, train, training, n, f, an empty cell (case
    and surrounding spaces ignored); bools and the numbers 0/1 as themselves. Anything else is a ValueError naming
    the value, so a typo cannot silently move a row into training.

    Example:
        >>> [is_valid_flag(v) for v in ("True", " 1 ", "train", "")]
        [True, True, False, False]
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word not in _VALID_WORDS:
        raise ValueError(f"is_valid value {value!r} is neither true (1, true, yes, valid, y, t) nor false (0, false, "
                         "no, train, n, f, empty); fix the cell or the column name")
    return _VALID_WORDS[word]
