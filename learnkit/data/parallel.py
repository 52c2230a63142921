"""`parallel_map`: one function over many values, results in order, on every core — the one place that decides
between worker processes, threads and this thread for the encode-once work of the loaders (decoding images,
reading masks and points).

Why processes: Pillow holds the GIL for most of a small image's decode, so threads do not scale. 70,000 28x28 PNGs
took 33 s on 8 threads of a 16-core host; 20,000 128x128 PNG masks took 19 s on 8 threads of another (measured on
the lent H200 host, issue 17), most of it waiting for the GIL. With `fork` the children inherit the function and the
values, so only index ranges go out and results come back, as NumPy arrays (plain bytes, no shared-memory file
handles). Few values, or no `fork` (macOS, Windows): threads, which start at once and pickle nothing.

Results of one shape can skip the trip back: `into`, a `shared_tensor` made before the workers fork, receives each
result's tensor in its row, written by the worker. 20,000 decoded 128 px images (1 GB) through the pipes cost the
main thread 2.3 s of reading and unpickling on the H200 host, while the decoding itself took 2 s on 16 cores.
"""
from __future__ import annotations

import math
import mmap
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["parallel_map", "PROCESS_MIN_VALUES", "shared_tensor", "uses_processes"]

PROCESS_MIN_VALUES = 2048  # below this, a process pool's start-up costs more than it saves

# (fn, values, into) of this child's map: set by the pool's initializer. With `fork` the initializer's arguments
# are inherited by the child, not pickled, so fn may be a closure, values anything, and `into` is the parent's memory.
_TASK: tuple[Callable[[Any], Any], Sequence[Any], torch.Tensor | None] | None = None


def _workers(n_values: int, num_workers: int | None) -> int:
    return min(n_values, min(16, os.cpu_count() or 1) if num_workers is None else num_workers)


def uses_processes(n_values: int, num_workers: int | None = None) -> bool:
    """Whether `parallel_map` over n_values values runs in forked worker processes (where `into` pays)."""
    return (_workers(n_values, num_workers) > 1 and n_values >= PROCESS_MIN_VALUES
            and "fork" in multiprocessing.get_all_start_methods())


def shared_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor that forked workers write into: an anonymous shared mapping (no /dev/shm file, so a container's
    small /dev/shm does not limit it), freed with the tensor."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(1, count * torch.empty((), dtype=dtype).element_size()))
    return torch.frombuffer(buffer, dtype=dtype, count=count).view(*shape)


def parallel_map(fn: Callable[[Any], Any], values: Sequence[Any], num_workers: int | None = None,
                 into: torch.Tensor | None = None) -> Iterator[Any]:
    """fn(v) for v in values, in order. `num_workers`: None = up to 16 (the cores); 0 or 1 = this thread.

    fn must not raise for a bad value (return the reason instead, as the loaders' steps do) and, with many values,
    must not use CUDA (it may run in a forked child). Results may be tensors, tuples holding tensors, or plain
    Python values; tensors come back as CPU tensors. `into` (a `shared_tensor` of len(values) rows, used when
    `uses_processes`): a worker writes the first tensor of result i that has into's row shape and dtype into
    into[i], and that tensor comes back as the view into[i].

    Example:
        >>> sizes = list(parallel_map(lambda f: Image.open(f).size, files))
    """
    n = _workers(len(values), num_workers)
    if n <= 1:
        yield from map(fn, values)
        return
    if uses_processes(len(values), num_workers):
        yield from _in_processes(fn, values, n, into)
        return
    with ThreadPoolExecutor(min(n, 8), thread_name_prefix="learnkit-map") as pool:
        yield from pool.map(fn, values)


def _in_processes(fn: Callable[[Any], Any], values: Sequence[Any], n: int, into: torch.Tensor | None) -> Iterator[Any]:
    size = max(64, min(1024, len(values) // (4 * n)))
    ranges = [(lo, min(lo + size, len(values))) for lo in range(0, len(values), size)]
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_set_task,
                             initargs=(fn, values, into)) as pool:
        for (lo, _), results in zip(ranges, pool.map(_run_range, ranges)):
            yield from (_unpack(r, into, lo + k) for k, r in enumerate(results))


def _set_task(fn: Callable[[Any], Any], values: Sequence[Any], into: torch.Tensor | None) -> None:
    global _TASK
    _TASK = (fn, values, into)
    torch.set_num_threads(1)  # n children share the cores


def _run_range(bounds: tuple[int, int]) -> list[Any]:
    """In a child: fn over values[lo:hi], packed for the trip back."""
    assert _TASK is not None, "parallel_map: a worker started without its task"
    fn, values, into = _TASK
    return [_pack(fn(values[i]), into, i, [True]) for i in range(*bounds)]


class _Array:  # a tensor on its way back from a child: its NumPy array (pickles as bytes)
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


class _InRow:  # a tensor the child wrote into row i of `into`
    __slots__ = ()


def _pack(result: Any, into: torch.Tensor | None, i: int, free: list[bool]) -> Any:
    if isinstance(result, torch.Tensor):
        if free[0] and into is not None and result.shape == into.shape[1:] and result.dtype == into.dtype:
            free[0] = False  # one row per value
            into[i].numpy()[...] = result.numpy()  # NumPy: no torch intra-op threads in the child
            return _InRow()
        return _Array(result.numpy())
    if isinstance(result, tuple):
        return tuple(_pack(r, into, i, free) for r in result)
    return result


def _unpack(result: Any, into: torch.Tensor | None, i: int) -> Any:
    if isinstance(result, _InRow):
        return into[i]  # type: ignore[index]
    if isinstance(result, _Array):
        return torch.from_numpy(result.array)
    if isinstance(result, tuple):
        return tuple(_unpack(r, into, i) for r in result)
    return result
