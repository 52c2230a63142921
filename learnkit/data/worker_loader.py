"""`WorkerLoader`: the DataLoader of the *workers* strategy (data/loaders.py chooses it), with learnkit's defaults
(`make_loader`: worker processes on CUDA only, persistent, pinned memory, the blocks' collate) and persistent
workers that stop promptly when Python exits."""
from __future__ import annotations

import atexit
import os
import weakref
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from learnkit.data.blocks import TransformBlock
from learnkit.data.pipeline import Collate

__all__ = ["WorkerLoader", "make_loader", "default_workers"]


def default_workers(device: torch.device) -> int:
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
        # _iterator / _shutdown_workers are DataLoader internals: the only way to end persistent workers early.
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        _OPEN_LOADERS.discard(self)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, device: torch.device, num_workers: int | None,
                blocks: Sequence[TransformBlock], drop_last: bool = False,
                generator: torch.Generator | None = None, batch_sampler: Sampler | None = None) -> DataLoader:
    """A plain DataLoader with learnkit's defaults: workers on CUDA only, persistent when used, pinned memory on
    CUDA, and the blocks' collate (padding for variable-length blocks)."""
    workers = default_workers(device) if num_workers is None else num_workers
    common = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                  collate_fn=Collate(blocks))
    if batch_sampler is not None:
        return WorkerLoader(dataset, batch_sampler=batch_sampler, **common)
    return WorkerLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator,
                        **common)
