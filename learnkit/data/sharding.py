"""Per-rank views of loaders for data-parallel training (`DataBunch.shard`); nothing here talks to other
processes: a rank and a world size are all it needs.

- DataLoader: rank r takes batches r, r+W, r+2W, ... of the loader's own batch order (its batch sampler is
  wrapped, so workers only load this rank's batches). With the order generator shared across ranks, the W
  ranks together see exactly the batches of one process, and batch i of the single-process order can be put
  back from rank i % W (used to gather predictions).
- ResidentLoader: training keeps items r, r+W, ... (an equal share per rank, so every rank runs the same number
  of steps) and shuffles them locally; validation keeps the blocks of batches r, r+W, ... Each GPU holds only
  its shard.
- DecodeLoader (device-decode path): the same shares as a ResidentLoader, as a loader over those items only (each
  rank reads and decodes only its files).

Training shards are even (every rank gets len // W batches, a few trailing batches are dropped) because a rank
that stepped once more than the others would wait forever for their gradients.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from learnkit.data.decode_loader import DecodeLoader
from learnkit.data.worker_loader import WorkerLoader
from learnkit.data.resident import ResidentLoader

__all__ = ["RankBatches", "shard_loader"]


class RankBatches(Sampler):
    """Every `world_size`-th batch of `batch_sampler`, starting at `rank`.

    Args:
        batch_sampler: yields lists of indices (e.g. a DataLoader's `batch_sampler`).
        rank, world_size: this rank and the number of ranks.
        even: give every rank the same number of batches (len // world_size), dropping the rest.
    """

    def __init__(self, batch_sampler: Any, rank: int, world_size: int, even: bool):
        self.batch_sampler, self.rank, self.world_size, self.even = batch_sampler, rank, world_size, even

    def __len__(self) -> int:
        n = len(self.batch_sampler)
        return n // self.world_size if self.even else len(range(self.rank, n, self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        stop = len(self) * self.world_size if self.even else None
        for i, batch in enumerate(self.batch_sampler):
            if stop is not None and i >= stop:
                break
            if i % self.world_size == self.rank:
                yield batch


def _shard_dataloader(dl: DataLoader, rank: int, world_size: int, even: bool) -> DataLoader:
    if dl.batch_sampler is None:
        raise NotImplementedError(f"shard: {dl!r} has no batch sampler (batch_size=None or an IterableDataset); "
                                  "give it a batch_size, or shard its dataset yourself for distributed training")
    extra = {"prefetch_factor": dl.prefetch_factor} if dl.num_workers > 0 else {}
    return WorkerLoader(dl.dataset, batch_sampler=RankBatches(dl.batch_sampler, rank, world_size, even),
                      num_workers=dl.num_workers, collate_fn=dl.collate_fn, pin_memory=dl.pin_memory,
                      timeout=dl.timeout, worker_init_fn=dl.worker_init_fn, generator=dl.generator,
                      persistent_workers=dl.persistent_workers, **extra)


def _rank_items(n: int, bs: int, n_batches: int, shuffle: bool, rank: int, world_size: int,
                even: bool) -> torch.Tensor:
    """A rank's items of a loader over tensors: every W-th item (training), or every W-th block of a batch."""
    if shuffle:
        per_rank = n // world_size if even else None
        return torch.arange(rank, n, world_size)[:per_rank]
    blocks = [torch.arange(b * bs, min(n, (b + 1) * bs)) for b in range(rank, n_batches, world_size)]
    return torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.long)


def _shard_resident(dl: ResidentLoader, rank: int, world_size: int, even: bool) -> ResidentLoader:
    idx = _rank_items(dl.n_items, dl.batch_size, len(dl), dl.shuffle, rank, world_size, even).to(dl.device)
    # index_select copies: the full tensors can be freed once the unsharded loader is dropped
    return ResidentLoader(tuple(t.index_select(0, idx) for t in dl.tensors), dl.batch_size, dl.shuffle, dl.drop_last,
                          dl.generator)


def shard_loader(dl: Any, rank: int, world_size: int, even: bool) -> Any:
    """This rank's view of `dl` (a DataLoader, ResidentLoader or DecodeLoader; an empty list stays empty)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank {rank} is not in [0, {world_size})")
    if isinstance(dl, DataLoader):
        return _shard_dataloader(dl, rank, world_size, even)
    if isinstance(dl, ResidentLoader):
        return _shard_resident(dl, rank, world_size, even)
    if isinstance(dl, DecodeLoader):
        return dl.subset(_rank_items(dl.n_items, dl.batch_size, len(dl), dl.shuffle, rank, world_size, even))
    if isinstance(dl, (list, tuple)) and len(dl) == 0:
        return dl
    raise NotImplementedError(f"shard: cannot split a {type(dl).__name__} between ranks (only DataLoader, "
                              "ResidentLoader and DecodeLoader); language-model streams cannot be trained with torchrun "
                              "yet. Run it in one process, or pass loaders that are DataLoaders.")
