"""The per-item pipeline (getter → block encode → item transforms), its dataset and its collate.

Every step runs through `run_step`, so a failure anywhere (also inside a DataLoader worker) names the
step, the item and the value involved.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from learnkit.data.blocks import _short

Step = tuple[str, Callable[[Any], Any]]


class PipelineError(RuntimeError):
    """A data pipeline step failed; the message names the step, the item and the value."""


def step_name(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return "<lambda>" if name.endswith("<lambda>") else name


def run_step(name: str, fn: Callable[[Any], Any], value: Any, index: int, item: Any) -> Any:
    try:
        return fn(value)
    except PipelineError:
        raise
    except Exception as e:
        given = "" if value is item else f"; its input was {_short(value)}"
        raise PipelineError(f"data step '{name}' failed on item {index} ({_short(item)}){given}: "
                            f"{type(e).__name__}: {e}") from e


class BlockDataset(Dataset):
    """items[i] → tuple of tensors, one per block, through each block's list of (name, step).

    `indices` are the items' positions in the source, so that errors name the item the user knows
    (train item 3 may be source item 17).
    """

    def __init__(self, items: Sequence[Any], pipelines: Sequence[Sequence[Step]],
                 indices: Sequence[int] | None = None):
        self.items, self.pipelines = items, pipelines
        self.indices = list(indices) if indices is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = self.items[index]
        source_index = self.indices[index] if self.indices is not None else index
        out = []
        for steps in self.pipelines:
            value = item
            for name, fn in steps:
                value = run_step(name, fn, value, source_index, item)
            out.append(value)
        return tuple(out)


class Collate:
    """Batch samples block by block: a block's own `collate` where it has one (padding for variable-length
    values), else `default_collate`, with an error that says which block's shapes differ and what to do."""

    def __init__(self, blocks: Sequence[Any]):
        self.block_names = [repr(b) for b in blocks]
        self.collates = [getattr(b, "collate", None) for b in blocks]

    def __call__(self, samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        if any(c is not None for c in self.collates):
            return tuple(c([s[b] for s in samples]) if c is not None else default_collate([s[b] for s in samples])
                         for b, c in enumerate(self.collates[:len(samples[0])]))
        try:
            return tuple(default_collate(samples))
        except RuntimeError as e:
            for b, name in enumerate(self.block_names):
                shapes = {tuple(s[b].shape) for s in samples if isinstance(s[b], torch.Tensor)}
                if len(shapes) > 1:
                    raise PipelineError(f"cannot batch block {b} ({name}): items have different shapes "
                                        f"{sorted(shapes)[:5]}. Add an item transform that gives every item "
                                        f"the same shape (e.g. a resize), or use batch_size=1.") from e
            raise


class ItemGetter:
    """item → item[i] (a picklable callable, so worker processes can use it)."""

    def __init__(self, i: int):
        self.i = i
        self.__qualname__ = f"item[{i}]"

    def __call__(self, item: Any) -> Any:
        try:
            return item[self.i]
        except (TypeError, IndexError, KeyError) as e:
            raise TypeError(f"item has no element {self.i} ({e}); items must be (x, y) pairs, or pass "
                            "get_x/get_y to DataBlock") from None
