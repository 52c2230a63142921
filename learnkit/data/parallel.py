"""`parallel_map`: one function over many values, results in order, on every core — the one place that decides
between worker processes, threads and this thread for the encode-once work of the loaders (decoding images,
reading masks and points).

Why processes: Pillow holds the GIL for most of a small image's decode, so threads do not scale. 70,000 28x28 PNGs
took 33 s on 8 threads of a 16-core host; 20,000 128x128 PNG masks took 19 s on 8 threads of another (measured on
the lent H200 host, issue 17), most of it waiting for the GIL. With `fork` the children inherit the function and the
values, so only index ranges go out and results come back, as NumPy arrays (plain bytes, no shared-memory file
handles). Few values, or no `fork` (macOS, Windows): threads, which start at once and pickle nothing.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["parallel_map", "PROCESS_MIN_VALUES"]

PROCESS_MIN_VALUES = 2048  # below this, a process pool's start-up costs more than it saves

# (fn, values) of this child's map: set by the pool's initializer. With `fork` the initializer's arguments are
# inherited by the child, not pickled, so fn may be a closure and values anything.
_TASK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def parallel_map(fn: Callable[[Any], Any], values: Sequence[Any], num_workers: int | None = None) -> Iterator[Any]:
    """fn(v) for v in values, in order. `num_workers`: None = up to 16 (the cores); 0 or 1 = this thread.

    fn must not raise for a bad value (return the reason instead, as the loaders' steps do) and, with many values,
    must not use CUDA (it may run in a forked child). Results may be tensors, tuples holding tensors, or plain
    Python values; tensors come back as CPU tensors.

    Example:
        >>> sizes = list(parallel_map(lambda f: Image.open(f).size, files))
    """
    n = min(len(values), min(16, os.cpu_count() or 1) if num_workers is None else num_workers)
    if n <= 1:
        yield from map(fn, values)
        return
    if len(values) >= PROCESS_MIN_VALUES and "fork" in multiprocessing.get_all_start_methods():
        yield from _in_processes(fn, values, n)
        return
    with ThreadPoolExecutor(min(n, 8), thread_name_prefix="learnkit-map") as pool:
        yield from pool.map(fn, values)


def _in_processes(fn: Callable[[Any], Any], values: Sequence[Any], n: int) -> Iterator[Any]:
    size = max(64, min(1024, len(values) // (4 * n)))
    ranges = [(lo, min(lo + size, len(values))) for lo in range(0, len(values), size)]
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_set_task,
                             initargs=(fn, values)) as pool:
        for results in pool.map(_run_range, ranges):
            yield from (_unpack(r) for r in results)


def _set_task(fn: Callable[[Any], Any], values: Sequence[Any]) -> None:
    global _TASK
    _TASK = (fn, values)
    torch.set_num_threads(1)  # n children share the cores


def _run_range(bounds: tuple[int, int]) -> list[Any]:
    """In a child: fn over values[lo:hi], packed for the trip back."""
    assert _TASK is not None, "parallel_map: a worker started without its task"
    fn, values = _TASK
    return [_pack(fn(values[i])) for i in range(*bounds)]


class _Array:  # a tensor on its way back from a child: its NumPy array (pickles as bytes)
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def _pack(result: Any) -> Any:
    if isinstance(result, torch.Tensor):
        return _Array(result.numpy())
    if isinstance(result, tuple):
        return tuple(_pack(r) for r in result)
    return result


def _unpack(result: Any) -> Any:
    if isinstance(result, _Array):
        return torch.from_numpy(result.array)
    if isinstance(result, tuple):
        return tuple(_unpack(r) for r in result)
    return result
