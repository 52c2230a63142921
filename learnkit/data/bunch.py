"""DataBunch: the train/valid DataLoaders, the blocks that say what a batch means, the batch transforms
and the device. `transfer(batch, training)` is the one place a batch moves to the device."""
from __future__ import annotations

import atexit
import math
import os
import weakref
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from learnkit.core.device import default_device, to_device
from learnkit.data.blocks import TransformBlock
from learnkit.data.pipeline import BlockDataset, Collate

__all__ = ["DataBunch", "WorkerLoader", "make_loader", "n_items"]


def _default_workers(device: torch.device) -> int:
    # On the CPU the model already uses every core for compute, so worker processes mostly add start-up
    # cost; on CUDA, workers overlap decoding with GPU work.
    if device.type != "cuda":
        return 0
    return min(8, os.cpu_count() or 1)


_OPEN_LOADERS: "weakref.WeakSet[DataLoader]" = weakref.WeakSet()


def _close_open_loaders() -> None:
    for dl in list(_OPEN_LOADERS):
        dl.close()


class WorkerLoader(DataLoader):
    """A `DataLoader` whose persistent worker processes stop promptly when Python exits (and on `close()`).

    Why: torch registers one exit hook per persistent worker that waits up to 5 s for it to end, and with pinned
    memory nothing asks the worker to end first (pytorch/pytorch#81794): a script on a GPU finished 80 s late
    (2 loaders x 8 workers x 5 s, measured on an H100). Each time a loader starts its workers, a hook that
    closes the open loaders is registered again, last, so that it runs before torch's.
    """

    def __iter__(self) -> Any:
        iterator = super().__iter__()
        if self.persistent_workers and self not in _OPEN_LOADERS:
            _OPEN_LOADERS.add(self)
            atexit.unregister(_close_open_loaders)
            atexit.register(_close_open_loaders)  # atexit runs last-registered first
        return iterator

    def close(self) -> None:
        """Stop the worker processes now; the next iteration starts new ones."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        _OPEN_LOADERS.discard(self)


def make_loader(dataset: BlockDataset, batch_size: int, shuffle: bool, device: torch.device,
                num_workers: int | None, block_names: Sequence[str], drop_last: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """A plain DataLoader with learnkit's defaults: workers on CUDA only, persistent when used, pinned
    memory on CUDA."""
    workers = _default_workers(device) if num_workers is None else num_workers
    return WorkerLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      collate_fn=Collate(block_names), generator=generator)


def n_items(dl: Any) -> int:
    """Items behind a loader (a DataLoader's dataset, or a GPU-resident loader's `n_items`)."""
    dataset = getattr(dl, "dataset", None)
    return len(dataset) if dataset is not None else int(getattr(dl, "n_items", 0))


class DataBunch:
    """Train and valid loaders plus everything needed to read a batch.

    Attributes:
        train_dl, valid_dl: `torch.utils.data.DataLoader`s yielding tuples of CPU tensors.
        blocks: one block per tensor in a batch; the first `n_inp` are inputs, the rest targets.
        item_tfms: the item transforms of the inputs (recorded by `export`).
        batch_tfms: `nn.ModuleList` applied to the first input on the device (train mode on train batches).
        device: where `transfer` puts batches.
    """

    def __init__(self, train_dl: DataLoader, valid_dl: DataLoader, blocks: Sequence[TransformBlock],
                 n_inp: int = 1, batch_tfms: Sequence[nn.Module] = (), device: torch.device | str | None = None,
                 item_pipelines: Sequence[Sequence[Any]] | None = None, item_tfms: Sequence[Any] = (),
                 input_pipelines: Sequence[Sequence[Any]] | None = None):
        self.train_dl, self.valid_dl = train_dl, valid_dl
        self.blocks = list(blocks)
        self.n_inp = n_inp
        self.batch_tfms = nn.ModuleList(batch_tfms)
        self.item_pipelines = item_pipelines
        self.item_tfms = list(item_tfms)
        self.input_pipelines = input_pipelines
        self.shard_of: tuple[int, int] | None = None
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
    def vocab(self) -> list[Any] | None:
        """The target's classes (None for a target without classes)."""
        return getattr(self.y_block, "vocab", None)

    @property
    def classes(self) -> list[Any] | None:
        return self.vocab

    @property
    def c(self) -> int | None:
        """Number of model outputs the target needs (classes), or None when the target does not say."""
        return len(self.vocab) if self.vocab is not None else None

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
        """Move a batch from a loader to the device and apply the batch transforms to the first input."""
        non_blocking = self.device.type == "cuda"
        batch = tuple(t.to(self.device, non_blocking=non_blocking) if isinstance(t, torch.Tensor)
                      else to_device(t, self.device, non_blocking) for t in batch)
        if len(self.batch_tfms) == 0:
            return batch
        if self.batch_tfms.training != training:
            self.batch_tfms.train(training)
        x = batch[0]
        for tfm in self.batch_tfms:
            x = tfm(x)
        return (x,) + tuple(batch[1:])

    def shard(self, rank: int, world_size: int) -> "DataBunch":
        """Keep only rank `rank`'s share of the training and validation batches (in place; see
        data/sharding.py). The Learner calls this under torchrun; calling it again with the same values is a
        no-op."""
        from learnkit.data.sharding import shard_loader
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
            raise ValueError("test_dl needs a DataBunch made by DataBlock.databunch (it reuses its pipeline)")
        n = len(self.blocks) if with_labels else self.n_inp
        ds = BlockDataset(list(items), pipelines[:n])
        return make_loader(ds, batch_size or self.valid_dl.batch_size or 64, False, self.device, 0,
                           [repr(b) for b in self.blocks[:n]])

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
            if self.y_block is not None:
                ax.set_title(self.y_block.title(batch[self.n_inp][i].cpu()), fontsize=9)
        fig.tight_layout()
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
