"""ResidentLoader: batches indexed straight out of tensors that already live on the device.

When a decoded dataset fits in memory (uint8 images: 60,000 Fashion-MNIST images are 47 MB), keeping it on
the GPU and slicing whole batches there beats any worker pipeline: no decoding per epoch, no host-to-device
copies, no worker processes. The loader keeps the DataLoader contract the Learner relies on: `len()` is the
number of batches, iterating yields tuples of tensors, `batch_size`, `drop_last` and `generator` exist.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

__all__ = ["ResidentLoader", "memory_budget"]


class ResidentLoader:
    """Iterate over `tensors` (same first dimension, all on one device) in batches.

    Args:
        tensors: e.g. (images uint8 (N,C,H,W), targets (N,)), already on the device.
        batch_size: items per batch.
        shuffle: a new random order every epoch, drawn from `generator` (a CPU generator, so the order
            is the same on CPU and GPU for one seed).
        drop_last: drop the last partial batch.
        generator: the CPU `torch.Generator` for the order (None: the global torch RNG).

    Example:
        >>> dl = ResidentLoader((x_gpu, y_gpu), batch_size=256, shuffle=True)
        >>> xb, yb = next(iter(dl))
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, generator: torch.Generator | None = None):
        if not tensors:
            raise ValueError("ResidentLoader: no tensors given")
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"ResidentLoader: the tensors have different lengths {[len(t) for t in tensors]}; "
                             "give one value per item in each")
        devices = {t.device for t in tensors}
        if len(devices) != 1:
            raise ValueError(f"ResidentLoader: the tensors are on different devices {sorted(map(str, devices))}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"ResidentLoader(batch_size={batch_size!r}): must be a positive int")
        self.tensors = tuple(tensors)
        self.batch_size, self.shuffle, self.drop_last, self.generator = batch_size, shuffle, drop_last, generator
        self.device = next(iter(devices))

    @property
    def n_items(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        n = self.n_items
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, bs = self.n_items, self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device, non_blocking=True)
            for start in range(0, len(self) * bs, bs):
                idx = order[start:start + bs]
                yield tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            for start in range(0, len(self) * bs, bs):
                yield tuple(t[start:start + bs] for t in self.tensors)

    def __repr__(self) -> str:
        return (f"ResidentLoader({self.n_items} items on {self.device}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")


def memory_budget(device: torch.device, share: float | None = None) -> int:
    """Bytes a resident dataset may take on `device`: by default half of the free GPU memory (the rest is
    for the model, activations and the allocator's cache), or a quarter of the available host memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * (0.5 if share is None else share))
    try:
        import os
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: be conservative
        available = 2 * 1024 ** 3
    return int(available * (0.25 if share is None else share))
