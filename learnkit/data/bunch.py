"""DataBunch: the train/valid DataLoaders, the blocks that say what a batch means, the batch transforms
and the device. `transfer(batch, training)` is the one place a batch moves to the device."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from learnkit.core.device import default_device, to_device
from learnkit.data.blocks import CategoryBlock, RegressionBlock, TensorBlock, TransformBlock, _short
from learnkit.data.loaders import n_items
from learnkit.data.worker_loader import WorkerLoader, make_loader
from learnkit.data.pipeline import BlockDataset, ItemGetter, Step
from learnkit.data.sharding import shard_loader

__all__ = ["DataBunch", "WorkerLoader", "make_loader", "n_items"]


def _structure(batch: Any) -> str:
    """A one-line picture of a batch's structure for error messages."""
    if isinstance(batch, (tuple, list)):
        inner = ", ".join(_structure(b) for b in batch[:6])
        return f"{type(batch).__name__}({inner}{', ...' if len(batch) > 6 else ''})"
    if isinstance(batch, dict):
        return "dict(" + ", ".join(f"{k!r}: {_structure(v)}" for k, v in list(batch.items())[:6]) + ")"
    return _short(batch)


def _check_batch(batch: Any, name: str) -> tuple[torch.Tensor, ...]:
    """A batch of a user's loader, checked: a tuple/list of tensors with one first dimension."""
    fix = ("Fix: make the dataset return (input, target) tuples of tensors (e.g. torch.utils.data.TensorDataset), "
           "or pass blocks=[...] for inputs that are not tensors")
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or \
            not all(isinstance(t, torch.Tensor) for t in batch):
        raise TypeError(f"DataBunch: cannot read the batches of {name}: a batch is {_structure(batch)}, but learnkit "
                        f"needs a tuple of tensors, inputs first and the target last. {fix}")
    sizes = [t.shape[0] if t.ndim else None for t in batch]
    if len(set(sizes)) != 1 or sizes[0] is None:
        raise ValueError(f"DataBunch: the tensors of a batch of {name} have different lengths {sizes} "
                         f"({_structure(batch)}); every tensor needs one row per item")
    return tuple(batch)


def _first_batch(dl: Any, name: str) -> tuple[torch.Tensor, ...]:
    """The first batch of a user's loader, checked."""
    try:
        return _check_batch(next(iter(dl)), name)
    except StopIteration:
        raise ValueError(f"DataBunch: {name} yields no batch; give it at least one item") from None


def _known_targets(dl: Any) -> torch.Tensor | None:
    """All training targets without iterating, when the dataset holds them (TensorDataset, torchvision)."""
    ds = getattr(dl, "dataset", None)
    tensors = getattr(ds, "tensors", None)
    if isinstance(tensors, tuple) and tensors:
        return tensors[-1]
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)
    return None


def infer_blocks(train_dl: Any) -> tuple[list[TransformBlock], int, str]:
    """Blocks for a plain (inputs..., target) loader: tensor inputs; an integer target is a class index
    (classes 0..max), a float target a regression value. Returns (blocks, n_inp, what was inferred)."""
    batch = _first_batch(train_dl, "train_dl")
    target = batch[-1]
    inputs = [TensorBlock(dtype=None) for _ in batch[:-1]]
    if target.is_floating_point():
        return inputs + [RegressionBlock()], len(inputs), (f"float targets {tuple(target.shape[1:]) or ''}: "
                                                           "RegressionBlock (MSE loss)")
    known = _known_targets(train_dl)
    if known is None:  # the dataset does not expose its targets: read them once
        known = torch.cat([_check_batch(b, "train_dl")[-1].reshape(-1) for b in train_dl])
    n = int(known.max()) + 1 if known.numel() else 0
    return inputs + [CategoryBlock(classes=list(range(n)))], len(inputs), \
        f"integer targets: CategoryBlock with {n} classes 0..{n - 1} (cross-entropy loss)"


class DataBunch:
    """Train and valid loaders plus everything needed to read a batch.

    Attributes:
        train_dl, valid_dl: `torch.utils.data.DataLoader`s yielding tuples of CPU tensors.
        blocks: one block per tensor in a batch; the first `n_inp` are inputs, the rest targets.
        item_tfms: the item transforms of the inputs (recorded by `export`).
        batch_tfms: `nn.ModuleList` applied to the first input on the device (train mode on train batches).
        device: where `transfer` puts batches.
    """

    def __init__(self, train_dl: Any, valid_dl: Any, blocks: Sequence[TransformBlock] | None = None,
                 n_inp: int | None = None, batch_tfms: Sequence[nn.Module] = (),
                 device: torch.device | str | None = None, item_pipelines: Sequence[Sequence[Step]] | None = None,
                 item_tfms: Sequence[Any] = (), input_pipelines: Sequence[Sequence[Step]] | None = None):
        self.train_dl, self.valid_dl = train_dl, valid_dl
        self.inferred: str | None = None  # what was guessed about plain loaders (None when blocks were given)
        if blocks is None:
            blocks, inferred_inp, self.inferred = infer_blocks(train_dl)
            n_inp = inferred_inp if n_inp is None else n_inp
            if not hasattr(valid_dl, "__len__") or len(valid_dl) > 0:  # an empty validation loader is allowed
                _first_batch(valid_dl, "valid_dl")
            print(f"DataBunch: {self.inferred}; {n_inp} tensor input(s). Override with DataBunch(train_dl, "
                  f"valid_dl, blocks=[...], n_inp=...).")
        self.blocks = list(blocks)
        self.n_inp = 1 if n_inp is None else n_inp
        self.batch_tfms = nn.ModuleList(batch_tfms)
        self.item_pipelines = item_pipelines
        self.item_tfms = list(item_tfms)
        self.input_pipelines = input_pipelines
        self.shard_of: tuple[int, int] | None = None
        # Set by DataBlock.databunch: which loader strategy was chosen and why, the items left out (on_bad='skip'),
        # and the recipe and source it was built from (`summary()`).
        self.loader_kind: str = "custom"
        self.loader_report: str = "loaders given by the user"
        self.skipped: list[tuple[Any, str]] = []
        self.datablock: Any = None
        self.source: Any = None
        self.device = torch.device("cpu")
        self.to(default_device() if device is None else device)

    # --- what the batches mean ---
    @property
    def x_block(self) -> TransformBlock:
        return self.blocks[0]

    @property
    def y_block(self) -> TransformBlock | None:
        return self.blocks[self.n_inp] if len(self.blocks) > self.n_inp else None

    @property
    def classes(self) -> list[Any] | None:
        """The target's classes (None for a target without classes)."""
        return getattr(self.y_block, "classes", None)

    @property
    def n_classes(self) -> int | None:
        """Number of model outputs the target needs (classes), or None when the target does not say."""
        return len(self.classes) if self.classes is not None else None

    @property
    def vocab(self) -> list[Any] | None:
        """Deprecated: the target's classes are `classes` (`vocab` is for tokens)."""
        warnings.warn("data.vocab is deprecated for the target's labels: use data.classes", DeprecationWarning,
                      stacklevel=2)
        return self.classes

    @property
    def c(self) -> int | None:
        """Deprecated (fastai's name): use `n_classes`."""
        warnings.warn("data.c is deprecated: use data.n_classes", DeprecationWarning, stacklevel=2)
        return self.n_classes

    def loss_fn(self) -> Any:
        """The target block's default loss."""
        return self.y_block.loss_fn() if self.y_block is not None else None

    # --- devices and batches ---
    def to(self, device: torch.device | str) -> "DataBunch":
        """Send future batches (and the batch transforms) to `device`."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # 'cuda' and 'cuda:0' must compare equal later
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.batch_tfms.to(self.device)
        return self

    def transfer(self, batch: Sequence[Any], training: bool) -> tuple[Any, ...]:
        """Move a batch from a loader to the device and apply the batch transforms to the first input.

        A batch transform with a `transform_batch(batch, blocks, n_inp)` method gets the whole batch instead and
        returns it (geometric augmentation moves the input and the targets that follow it, masks and points, in
        one pass; see `BatchAugment.transform_batch`). Then each target block's `finish_batch` runs (MaskBlock:
        uint8 → int64)."""
        non_blocking = self.device.type == "cuda"
        batch = tuple(t.to(self.device, non_blocking=non_blocking) if isinstance(t, torch.Tensor)
                      else to_device(t, self.device, non_blocking) for t in batch)
        if len(self.batch_tfms):
            if self.batch_tfms.training != training:
                self.batch_tfms.train(training)
            for tfm in self.batch_tfms:
                whole = getattr(tfm, "transform_batch", None)
                batch = tuple(whole(batch, self.blocks, self.n_inp)) if whole is not None \
                    else (tfm(batch[0]),) + tuple(batch[1:])
        if any(getattr(b, "follows_input", False) for b in self.blocks[self.n_inp:]):
            batch = batch[:self.n_inp] + tuple(b.finish_batch(t) if isinstance(t, torch.Tensor) else t
                                               for b, t in zip(self.blocks[self.n_inp:], batch[self.n_inp:]))
        return batch

    def shard(self, rank: int, world_size: int) -> "DataBunch":
        """Keep only rank `rank`'s share of the training and validation batches (in place; see
        data/sharding.py). The Learner calls this under torchrun; calling it again with the same values is a
        no-op."""
        if self.shard_of == (rank, world_size):
            return self
        if self.shard_of is not None:
            raise ValueError(f"shard({rank}, {world_size}): this DataBunch is already sharded as {self.shard_of}; "
                             "build the data again for another split")
        self.train_dl = shard_loader(self.train_dl, rank, world_size, even=True)
        self.valid_dl = shard_loader(self.valid_dl, rank, world_size, even=False)
        self.shard_of = (rank, world_size)
        return self

    def order_generators(self) -> list[torch.Generator]:
        """The generators behind the training order (which ranks must share to split batches consistently)."""
        dl = self.train_dl
        found = [getattr(dl, "generator", None), getattr(getattr(dl, "sampler", None), "generator", None),
                 getattr(getattr(dl, "batch_sampler", None), "generator", None)]
        unique = {id(g): g for g in found if isinstance(g, torch.Generator)}
        return list(unique.values())

    def generators(self) -> list[torch.Generator]:
        """The random generators behind training batches: the training order's and those of batch transforms
        that draw their own numbers (augmentation). A bit-exact save/restore (lr_find, resume) covers these."""
        found = [getattr(self.train_dl, "generator", None)] + [getattr(t, "generator", None) for t in self.batch_tfms]
        return [g for g in found if isinstance(g, torch.Generator)]

    def one_batch(self, split: str = "train") -> tuple[Any, ...]:
        """The first batch of a split, on the device, batch transforms applied."""
        if split not in ("train", "valid"):
            raise ValueError(f"one_batch(split={split!r}): split must be 'train' or 'valid'")
        dl = self.train_dl if split == "train" else self.valid_dl
        for batch in dl:
            return self.transfer(batch, training=split == "train")
        raise ValueError(f"one_batch: the {split} loader is empty")

    def test_dl(self, items: Sequence[Any], with_labels: bool = False, batch_size: int | None = None) -> DataLoader:
        """A loader over new data through the same pipeline.

        Without labels, each entry is an input as `get_x` returns it (e.g. an image path or an array):
        it goes through the input block's encoding and the item transforms. With labels, each entry is
        a whole item, as in the source, and goes through the getters too.
        """
        pipelines = self.item_pipelines if with_labels else self.input_pipelines
        if pipelines is None:
            raise ValueError("test_dl needs a DataBunch made by DataBlock.databunch (it reuses its pipeline); with "
                             "your own loaders, run the model on your own test loader (learn.get_preds(dl))")
        n = len(self.blocks) if with_labels else self.n_inp
        items = list(items)
        pipelines = list(pipelines[:n])
        if not with_labels and n > 1:  # several inputs: each entry holds one value per input, in order
            for k, entry in enumerate(items):
                if not isinstance(entry, (tuple, list)) or len(entry) != n:
                    raise ValueError(f"test_dl: this data has {n} inputs, so each entry must be a tuple of {n} "
                                     f"values (one per input, as the getters return them); entry {k} is "
                                     f"{_short(entry)}")
            pipelines = [[(f"input[{b}]", ItemGetter(b))] + list(p) for b, p in enumerate(pipelines)]
        ds = BlockDataset(items, pipelines)
        return make_loader(ds, batch_size or getattr(self.valid_dl, "batch_size", None) or 64, False, self.device, 0,
                           self.blocks[:n])

    def summary(self) -> None:
        """Walk one item of the source through every step of the DataBlock this data was built from."""
        if self.datablock is None:
            raise ValueError("summary: this DataBunch was built from your own loaders, not a DataBlock; there is no "
                             "per-item pipeline to walk")
        self.datablock.summary(self.source)

    def show_batch(self, n: int = 9, split: str = "train", ncols: int | None = None, figsize: Any = None) -> Any:
        """Draw `n` items of a batch (after batch transforms) with their targets as titles. Returns the figure."""
        import matplotlib.pyplot as plt

        batch = self.one_batch(split)
        n = min(n, len(batch[0]))
        ncols = ncols or min(n, int(math.ceil(math.sqrt(n))))
        nrows = int(math.ceil(n / ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (2.2 * ncols, 2.4 * nrows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.axis("off")
                continue
            self.x_block.show(batch[0][i], ax)
            if self.y_block is not None and self.y_block.follows_input:  # a mask or points: drawn over the input
                self.y_block.show(batch[self.n_inp][i].cpu(), ax)
            elif self.y_block is not None:
                ax.set_title(self.y_block.title(batch[self.n_inp][i].cpu()), fontsize=9)
        fig.tight_layout()
        legend = getattr(self.y_block, "legend", None)  # MaskBlock: one colour patch per code present
        if legend is not None:
            legend(fig, batch[self.n_inp][:n].cpu())
        return fig

    def __repr__(self) -> str:
        return (f"DataBunch(train={n_items(self.train_dl)} items, valid={n_items(self.valid_dl)} items, "
                f"batch_size={getattr(self.train_dl, 'batch_size', '?')}, blocks={self.blocks}, device={self.device})")

    def with_batch_tfms(self, batch_tfms: Sequence[nn.Module]) -> "DataBunch":
        """A shallow copy (same loaders, blocks and pipelines) with its own batch transforms; this bunch is left
        as it is. A factory such as `vision_learner` gives its Learner such a view instead of editing yours.

        Example:
            >>> view = data.with_batch_tfms(list(data.batch_tfms) + [Normalize(mean, std)])
            >>> view.train_dl is data.train_dl, len(data.batch_tfms) < len(view.batch_tfms)
            (True, True)
        """
        import copy  # only this method needs it

        view = copy.copy(self)
        view.blocks, view.item_tfms = list(self.blocks), list(self.item_tfms)
        view.batch_tfms = nn.ModuleList(batch_tfms).to(self.device)
        return view
