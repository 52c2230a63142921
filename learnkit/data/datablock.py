"""DataBlock: a recipe (blocks, getters, splitter, transforms) that turns a source into a DataBunch,
and `summary()` which walks one item through every step to debug the recipe."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Callable, Sequence, TextIO

import torch
from torch import nn

from learnkit.core.args import checked_keywords
from learnkit.core.device import default_device
from learnkit.data.blocks import TransformBlock, TensorBlock, CategoryBlock, _short
from learnkit.data.bunch import DataBunch
from learnkit.data.loaders import LoaderPlan, build_loaders, eval_version, is_random, n_items
from learnkit.data.pipeline import Collate, ItemGetter, PipelineError, Step, run_step, step_name
from learnkit.data.splitters import RandomSplitter

__all__ = ["DataBlock", "ItemGetter", "as_list", "check_on_bad", "report_bad"]

log = logging.getLogger("learnkit")


def as_list(value: Any) -> list[Any]:
    """A list of transforms (or metrics) from one of them, a sequence of them, or None."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, nn.ModuleList):
        return list(value)
    return [value]


def check_on_bad(on_bad: str) -> None:
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad={on_bad!r}: use 'error' (stop, listing the bad items) or 'skip' (leave them out "
                         "with a warning)")


def _listing(pairs: Sequence[tuple[Any, str]], limit: int = 20) -> str:
    lines = [f"  {p}: {why}" for p, why in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"  ... and {len(pairs) - limit} more")
    return "\n".join(lines)


def report_bad(bad: Sequence[tuple[Any, str]], on_bad: str, what: str, fix: str) -> None:
    """on_bad='error': raise listing every offender; 'skip': warn and log the list (never a silent drop)."""
    check_on_bad(on_bad)
    if not bad:
        return
    if on_bad == "error":
        raise ValueError(f"{len(bad)} {what}:\n{_listing(bad)}\nFix: {fix}, or pass on_bad='skip' to leave them "
                         f"out (they are then listed in a warning and in data.skipped).")
    text = f"learnkit skipped {len(bad)} {what}:\n{_listing(bad)}"
    warnings.warn(text, stacklevel=4)
    log.warning(text)


def _identity(value: Any) -> Any:
    return value


class WithInput:
    """item → (target getter's value, input getter's value): what a target that follows the input (a mask,
    keypoints) is encoded from, so that it can check and follow the input's size. Picklable for workers."""

    def __init__(self, get_target: Callable[[Any], Any], get_input: Callable[[Any], Any]):
        self.get_target, self.get_input = get_target, get_input

    def __call__(self, item: Any) -> tuple[Any, Any]:
        return self.get_target(item), self.get_input(item)


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
        get_name: item → what error messages and `data.skipped` call it (default: the item's input value).

    A single transform may be given without a list (`item_tfms=Resize(28)`).

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
                 item_tfms: Sequence[Callable] | Callable = (), batch_tfms: Sequence[nn.Module] | nn.Module = (),
                 n_inp: int = 1, get_name: Callable[[Any], Any] | None = None):
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
        self.item_tfms = as_list(item_tfms) + [t for b in self.blocks[:n_inp] for t in b.item_tfms]
        self.batch_tfms = list(self.blocks[0].batch_tfms) + as_list(batch_tfms)
        self.n_inp, self.get_name = n_inp, get_name

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
        return f"item[{i}]", ItemGetter(i)

    def _pipelines(self, with_getters: bool = True, tfms: Sequence[Callable] | None = None) -> list[list[Step]]:
        """Per block: getter → encode → item transforms of the inputs (`tfms`; default: their eval versions)."""
        tfms = [eval_version(t) for t in self.item_tfms] if tfms is None else tfms
        pipelines = []
        for i, block in enumerate(self.blocks):
            steps: list[Step] = []
            getter = self._getter(i) if with_getters else None
            if getter is not None:
                steps.append(getter)
            if i >= self.n_inp and block.follows_input:  # a mask or points: encoded with the input's raw value
                if getter is not None:
                    steps[-1] = (f"({getter[0]}, input)", WithInput(getter[1], self._input_getter()))
                random = [step_name(t) for t in tfms if is_random(t)]
                if random:
                    raise ValueError(f"DataBlock: the item transform(s) {random} are random per item, but the target "
                                     f"{block!r} must move exactly as the input does, which a random item transform "
                                     "cannot promise. Fix: use a deterministic item transform (Resize(...)) and make "
                                     "the random crop in the batch (batch_tfms=aug_transforms(size=..., "
                                     "min_scale=0.75)), which moves masks and points with the image")
                steps += block.target_steps(tfms)
                pipelines.append(steps)
                continue
            steps.append((f"{type(block).__name__}.encode", block.encode))
            if i < self.n_inp:
                steps += [(step_name(t), t) for t in tfms]
            pipelines.append(steps)
        return pipelines

    def _input_getter(self) -> Callable[[Any], Any]:
        getter = self._getter(0)
        return getter[1] if getter is not None else _identity

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

    def split_of(self, source: Any, seed: int | None = None) -> tuple[list[int], list[int]]:
        """(train indices, valid indices) into the items of `source`: the split `databunch(source, seed=seed)`
        uses."""
        return self._split(self._items(source), seed)

    def _raw_values(self, items: list[Any], indices: list[int], i: int) -> list[Any]:
        getter = self._getter(i)
        if getter is None:
            return [items[j] for j in indices]
        name, fn = getter
        return [run_step(name, fn, items[j], j, items[j]) for j in indices]

    @checked_keywords
    def databunch(self, source: Any, *, batch_size: int = 64, num_workers: int | None = None,
                  device: torch.device | str | None = None, seed: int | None = None, drop_last: bool | None = None,
                  resident: bool | str = "auto", device_decode: bool | str = "auto", memory_budget: int | None = None,
                  on_bad: str = "error",
                  verify: bool = True, verbose: bool = False,
                  bunch_type: type[DataBunch] = DataBunch) -> DataBunch:
        """Build the DataBunch: items → split → block setup → loaders (data/loaders.py picks the strategy).

        Args:
            source: what `get_items` reads (a path, a table, a list of items).
            batch_size: items per training batch (validation uses the same).
            num_workers: loader worker processes; None = 0 on CPU, min(8, cores) on CUDA.
            device: where batches go; None = CUDA if available else CPU.
            seed: seeds the default splitter and the training shuffle (None: global torch RNG).
            drop_last: drop the last partial training batch; None = drop when there is more than one batch.
            resident: 'auto' keeps the encoded inputs on the device when the input block can estimate their size,
                it fits `memory_budget` bytes (default: half the free GPU memory, a quarter of free host memory)
                and no item transform is random; True insists, False always uses DataLoader workers.
            device_decode: when the inputs are not made resident: 'auto' decodes whole batches on the GPU when the
                device is CUDA and the input block can (JPEG files with a deterministic Resize: nvJPEG), reading
                the files in background threads every epoch (bounded memory: a few batches); True insists (on the
                CPU too: torchvision's decoder), False always uses DataLoader workers. `data.loader_report` says
                which path was chosen and why.
            on_bad: 'error' lists every item the input block cannot read (an unreadable file, an empty document)
                in one error; 'skip' leaves them out with a warning listing them (`data.skipped`).
            verify: on the DataLoader path, let the input block check every item up front (images: decode each
                file once) so bad items are found before training.
            verbose: print which loader path was chosen and why (`data.loader_report`).
            bunch_type: the DataBunch class to build (`ImageDataBunch`, `TextDataBunch` pass theirs).

        Example:
            >>> data = dblock.databunch(rows, batch_size=64, seed=0)
        """
        check_on_bad(on_bad)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"databunch(batch_size={batch_size!r}): batch_size must be a positive int, e.g. 64")
        device = default_device() if device is None else torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        items = self._items(source)
        train_idx, valid_idx = self._split(items, seed)
        used = train_idx + valid_idx
        values: list[list[Any]] = [[None] * len(items) for _ in self.blocks]
        for b, block in enumerate(self.blocks):  # targets first: one class or an unseen label fails before decoding
            for i, v in zip(used, self._raw_values(items, used, b)):
                values[b][i] = v
        for b in list(range(self.n_inp, len(self.blocks))) + list(range(self.n_inp)):
            block = self.blocks[b]
            block.setup([values[b][i] for i in train_idx])
            if valid_idx:
                block.check([values[b][i] for i in valid_idx], "validation")
        eval_tfms = [eval_version(t) for t in self.item_tfms]  # once: the same objects in pipelines and exports
        eval_pipelines = self._pipelines(tfms=eval_tfms)
        plan = LoaderPlan(self.blocks, self.n_inp, items, values, train_idx, valid_idx,
                          self._pipelines(tfms=self.item_tfms), eval_pipelines, eval_tfms, batch_size,
                          device, num_workers, torch.Generator().manual_seed(seed) if seed is not None else None,
                          drop_last, resident=resident, device_decode=device_decode, memory_budget=memory_budget,
                          verify=verify, random_items=any(is_random(t) for t in self.item_tfms))
        train_dl, valid_dl, kind, report = build_loaders(plan)
        target_bad = [(self._name(items[i], values[0][i]), why) for i, why in plan.target_bad]
        report_bad(target_bad, on_bad, "items whose target cannot be read or does not fit its input",
                   "fix or remove these target files (masks, points)")
        bad = [(self._name(items[i], values[0][i]), why) for i, why in sorted(plan.bad)]
        report_bad(bad, on_bad, self.blocks[0].bad_items, "delete or replace them")
        if target_bad and not n_items(train_dl):
            raise ValueError("DataBlock: no training items are left after leaving out those with bad targets")
        data = bunch_type(train_dl, valid_dl, self.blocks, self.n_inp, self.batch_tfms, device, eval_pipelines,
                          eval_tfms, self._pipelines(with_getters=False, tfms=eval_tfms))
        data.loader_kind, data.loader_report, data.skipped = kind, report, target_bad + bad
        data.datablock, data.source = self, source
        if verbose:
            print(report)
        log.info(report)
        return data

    def _name(self, item: Any, value: Any) -> Any:
        """What messages call an item: `get_name(item)`, else its input value (e.g. the file path)."""
        if self.get_name is not None:
            try:
                return self.get_name(item)
            except Exception:
                return value
        return value

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
        batch = Collate(self.blocks)([tuple(samples), tuple(samples)])
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
