"""DataBlock: a recipe (blocks, getters, splitter, transforms) that turns a source into a DataBunch,
and `summary()` which walks one item through every step to debug the recipe."""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence, TextIO

import torch
from torch import nn

from learnkit.core.device import default_device
from learnkit.data.blocks import TransformBlock, TensorBlock, CategoryBlock, _short
from learnkit.data.bunch import DataBunch, make_loader
from learnkit.data.pipeline import BlockDataset, Collate, PipelineError, Step, run_step, step_name
from learnkit.data.splitters import RandomSplitter

__all__ = ["DataBlock"]


class DataBlock:
    """How to go from a source (a folder, a table, a list) to a DataBunch.

    Args:
        blocks: one block (class or instance) per tensor in a batch, inputs first.
        get_items: source → list of items (default: the source itself, as a list).
        get_x, get_y: item → raw input / raw target (default: item[0] / item[1] for pairs).
        getters: one getter per block, instead of get_x/get_y.
        splitter: items → (train indices, valid indices); default RandomSplitter(0.2) seeded by `seed`.
        item_tfms: callables applied to each encoded input tensor (e.g. a resize), in order.
        batch_tfms: `nn.Module`s applied to input batches on the device (augmentation, Normalize).
        n_inp: how many of the blocks are inputs.

    Example:
        >>> dblock = DataBlock(blocks=(TensorBlock, CategoryBlock), get_x=lambda r: r["x"],
        ...                    get_y=lambda r: r["label"], splitter=RandomSplitter(0.2, seed=0))
        >>> data = dblock.databunch(rows, batch_size=64)
    """

    def __init__(self, blocks: Sequence[TransformBlock | type] = (TensorBlock, CategoryBlock),
                 get_items: Callable[[Any], Sequence[Any]] | None = None,
                 get_x: Callable[[Any], Any] | None = None, get_y: Callable[[Any], Any] | None = None,
                 getters: Sequence[Callable[[Any], Any]] | None = None,
                 splitter: Callable[[Sequence[Any]], tuple[Sequence[int], Sequence[int]]] | None = None,
                 item_tfms: Sequence[Callable] = (), batch_tfms: Sequence[nn.Module] = (), n_inp: int = 1):
        self.blocks = [b() if isinstance(b, type) else b for b in blocks]
        if not self.blocks or not all(isinstance(b, TransformBlock) for b in self.blocks):
            raise TypeError(f"DataBlock(blocks={blocks!r}): every block must be a TransformBlock class or instance")
        if not 1 <= n_inp <= len(self.blocks):
            raise ValueError(f"DataBlock(n_inp={n_inp}): must be between 1 and the number of blocks ({len(self.blocks)})")
        if getters is not None and (get_x is not None or get_y is not None):
            raise ValueError("DataBlock: pass either getters=[...] or get_x/get_y, not both")
        if getters is not None and len(getters) != len(self.blocks):
            raise ValueError(f"DataBlock: {len(getters)} getters for {len(self.blocks)} blocks; give one per block")
        self.get_items, self.get_x, self.get_y, self.getters = get_items, get_x, get_y, getters
        self.splitter = splitter
        self.item_tfms = list(item_tfms) + [t for b in self.blocks[:n_inp] for t in b.item_tfms]
        self.batch_tfms = list(self.blocks[0].batch_tfms) + list(batch_tfms)
        self.n_inp = n_inp

    # --- the steps ---
    def _getter(self, i: int) -> tuple[str, Callable[[Any], Any]] | None:
        if self.getters is not None:
            return f"getters[{i}]", self.getters[i]
        if i < self.n_inp and self.get_x is not None:
            return "get_x", self.get_x
        if i >= self.n_inp and self.get_y is not None:
            return "get_y", self.get_y
        if len(self.blocks) == 1:
            return None
        return f"item[{i}]", _ItemGetter(i)

    def _pipelines(self, with_getters: bool = True) -> list[list[Step]]:
        pipelines = []
        for i, block in enumerate(self.blocks):
            steps: list[Step] = []
            getter = self._getter(i) if with_getters else None
            if getter is not None:
                steps.append(getter)
            steps.append((f"{type(block).__name__}.encode", block.encode))
            if i < self.n_inp:
                steps += [(step_name(t), t) for t in self.item_tfms]
            pipelines.append(steps)
        return pipelines

    def _items(self, source: Any) -> list[Any]:
        try:
            items = self.get_items(source) if self.get_items is not None else source
            items = list(items)
        except Exception as e:
            raise PipelineError(f"data step 'get_items' failed on source {_short(source)}: {type(e).__name__}: {e}") from e
        if not items:
            raise ValueError(f"DataBlock: no items found in {_short(source)}; check the source and get_items")
        return items

    def _split(self, items: list[Any], seed: int | None) -> tuple[list[int], list[int]]:
        splitter = self.splitter or RandomSplitter(0.2, seed=seed if seed is not None else 0)
        try:
            train, valid = splitter(items)
        except (ValueError, KeyError, IndexError):
            raise
        except Exception as e:
            raise PipelineError(f"data step 'splitter' ({step_name(splitter)}) failed: {type(e).__name__}: {e}") from e
        return [int(i) for i in train], [int(i) for i in valid]

    def _raw_values(self, items: list[Any], indices: list[int], i: int) -> list[Any]:
        getter = self._getter(i)
        if getter is None:
            return [items[j] for j in indices]
        name, fn = getter
        return [run_step(name, fn, items[j], j, items[j]) for j in indices]

    def databunch(self, source: Any, batch_size: int = 64, num_workers: int | None = None,
                  device: torch.device | str | None = None, seed: int | None = None,
                  drop_last: bool | None = None) -> DataBunch:
        """Build the DataBunch.

        Args:
            source: what `get_items` reads (a path, a table, a list of items).
            batch_size: items per training batch (validation uses the same).
            num_workers: loader worker processes; None = 0 on CPU, min(8, cores) on CUDA.
            device: where batches go; None = CUDA if available else CPU.
            seed: seeds the default splitter and the training shuffle (None: global torch RNG).
            drop_last: drop the last partial training batch; None = drop when there is more than one batch.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"databunch(batch_size={batch_size!r}): batch_size must be a positive int")
        device = default_device() if device is None else torch.device(device)
        items = self._items(source)
        train_idx, valid_idx = self._split(items, seed)
        for i, block in enumerate(self.blocks):
            block.setup(self._raw_values(items, train_idx, i))
            if valid_idx:
                block.check(self._raw_values(items, valid_idx, i), "validation")
        pipelines = self._pipelines()
        names = [repr(b) for b in self.blocks]
        train_ds = BlockDataset([items[i] for i in train_idx], pipelines, train_idx)
        valid_ds = BlockDataset([items[i] for i in valid_idx], pipelines, valid_idx)
        generator = None
        if seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        if drop_last is None:
            drop_last = len(train_ds) > batch_size
        train_dl = make_loader(train_ds, batch_size, True, device, num_workers, names, drop_last, generator)
        valid_dl = make_loader(valid_ds, batch_size, False, device, num_workers, names)
        return DataBunch(train_dl, valid_dl, self.blocks, self.n_inp, self.batch_tfms, device, pipelines,
                         self.item_tfms, self._pipelines(with_getters=False))

    def summary(self, source: Any, file: TextIO | None = None, seed: int | None = None) -> None:
        """Walk the first training item through every step, printing each result.

        On failure, the step, the item and the value it received are printed and the error is raised.
        """
        out = file or sys.stdout
        def say(text: str) -> None:
            print(text, file=out)
        say(f"DataBlock summary\n  blocks: {self.blocks}, n_inp={self.n_inp}")
        items = self._items(source)
        say(f"  get_items: {len(items)} items; first: {_short(items[0])}")
        train_idx, valid_idx = self._split(items, seed)  # the same split as databunch(source, seed=seed)
        say(f"  splitter: {len(train_idx)} train, {len(valid_idx)} valid")
        for i, block in enumerate(self.blocks):
            try:
                block.setup(self._raw_values(items, train_idx, i))
            except Exception as e:  # a getter failing on some training item, or e.g. a single class
                say(f"  setup block {i} ({block!r}): FAILED\n\n{e}")
                raise
            say(f"  setup {block!r}")
        index = train_idx[0]
        item = items[index]
        say(f"\nItem {index}: {_short(item)}")
        samples = []
        for b, steps in enumerate(self._pipelines()):
            say(f"  block {b} ({self.blocks[b]!r}):")
            value = item
            for name, fn in steps:
                try:
                    value = run_step(name, fn, value, index, item)
                except PipelineError as e:
                    say(f"    {name}: FAILED\n\n{e}")
                    raise
                say(f"    {name} -> {_short(value)}")
            samples.append(value)
        say("\nBatch of 2 copies of that item:")
        batch = Collate([repr(b) for b in self.blocks])([tuple(samples), tuple(samples)])
        for b, t in enumerate(batch):
            say(f"  collate block {b} -> {_short(t)}")
        x = batch[0]
        for tfm in self.batch_tfms:
            try:
                x = tfm(x)
            except Exception as e:
                say(f"  batch transform {step_name(tfm)}: FAILED on {_short(x)}: {type(e).__name__}: {e}")
                raise PipelineError(f"batch transform {step_name(tfm)} failed on input {_short(x)}: "
                                    f"{type(e).__name__}: {e}") from e
            say(f"  batch transform {step_name(tfm)} -> {_short(x)}")


class _ItemGetter:
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
