"""DecodeLoader: batches read from storage and decoded whole on the device, every epoch (the *device-decode* path).

The input block supplies a decoder with two methods: `read(position)`, run in a pool of background threads (file
I/O, which releases the GIL; each thread reads a contiguous share of a batch), and `decode(raws, positions)`, run in
one background thread on its own CUDA stream (e.g. nvJPEG decoding plus resizing a whole batch on the GPU). Nothing
here knows what the items are.

With `num_workers` > 0 the work goes to forked worker processes instead: each reads and decodes its share of a batch
with the decoder's `host_decoder()` (on the CPU: no GPU time taken from the training step) and writes the result
into a batch slot in shared memory (data/decode_workers.py); the batch then reaches the device in one copy. Threads
cannot do this part: a host decode in 14 reader threads reached 2,700 images/s where one thread alone did 835
(measured on the H200 host, jpeg_decode_rate.py), the rest lost waiting for the GIL.

Memory is bounded: the raw values (file bytes) of at most `prefetch` batches are held in host memory (with worker
processes: `prefetch` + 1 decoded batch slots) and at most `prefetch` decoded batches wait on the device, whatever
the size of the data set; nothing is kept between epochs.
So this is also the streaming path for data larger than host memory: every epoch reads from storage again.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Protocol, Sequence

import torch

from learnkit.data.decode_workers import DecodeWorkers, run_workers
from learnkit.data.pipeline import BlockDataset

__all__ = ["BatchDecoder", "DecodeLoader"]

_DONE = object()


class BatchDecoder(Protocol):
    """What an input block's `batch_decoder` returns: `read` one item's raw value (threads), `decode` a batch of
    them into one tensor (N, ...) on the device, and a one-line `description` for the loader report."""
    description: str

    def read(self, position: int) -> Any: ...

    def decode(self, raws: Sequence[Any], positions: Sequence[int]) -> torch.Tensor: ...


class DecodeLoader:
    """Iterate over items whose inputs a `BatchDecoder` reads and decodes per batch, with their targets.

    The DataLoader contract the Learner relies on: `len()` is the number of batches, iterating yields tuples of
    tensors on `device` (inputs first), `batch_size`, `drop_last`, `shuffle`, `generator`, `n_items`, and `dataset`
    (the per-item pipeline over the same items, for code that reads single items: statistics, fingerprints).

    Args:
        decoder: the block's batch decoder; positions index into its items.
        targets: one tensor per target block, (len(positions), ...), in `positions`' order.
        positions: the decoder's items this loader serves, in order.
        batch_size, shuffle, drop_last: as for a DataLoader.
        generator: the CPU generator of the per-epoch order (None: the global torch RNG).
        device: where batches are made.
        prefetch: batches read and decoded ahead of the consumer (raw values of this many batches in memory).
        num_threads: reader threads (None: min(4, cores); more threads were slower while a model trains, measured:
            jpeg_stream_variants.py, 16 threads 5,270 images/s, 4 threads 6,264, 2 threads 6,453).
        dataset: the per-item view of the same items (a BlockDataset), or None.
        stream_priority: the decode stream's CUDA priority (lower is sooner; -1 high, 0 the default). Its kernels
            are small and the training step waits for them, so by default they go ahead of the step's queued ones.
        num_workers: 0 (default) reads in threads and decodes on the device; n > 0 reads and decodes in n forked
            worker processes with `decoder.host_decoder()` (started at the first epoch, kept for the next ones,
            shared by the loaders of one decoder). Needs `fork` (Linux).

    A read or decode error stops the epoch and is raised in the consumer (its message names the item); breaking
    out of the loop, or `close()`, stops the background threads.

    Example:
        >>> for xb, yb in loader:   # xb on the device, already decoded and resized
        ...     break
    """

    def __init__(self, decoder: BatchDecoder, targets: Sequence[torch.Tensor], positions: Sequence[int],
                 batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu", prefetch: int = 4,
                 num_threads: int | None = None, dataset: Any = None, stream_priority: int = -1,
                 num_workers: int = 0):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DecodeLoader(batch_size={batch_size!r}): must be a positive int")
        if any(len(t) != len(positions) for t in targets):
            raise ValueError(f"DecodeLoader: targets have lengths {[len(t) for t in targets]} but there are "
                             f"{len(positions)} items; give one target per item")
        self.decoder, self.positions = decoder, list(positions)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.targets = tuple(t.to(self.device) for t in targets)
        self.batch_size, self.shuffle, self.drop_last, self.generator = batch_size, shuffle, drop_last, generator
        self.prefetch = max(1, int(prefetch))
        self.num_threads = min(4, os.cpu_count() or 1) if num_threads is None else max(1, int(num_threads))
        self.dataset, self.stream_priority = dataset, int(stream_priority)
        self.num_workers = int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"DecodeLoader(num_workers={num_workers!r}): 0 (threads) or a number of processes")
        if self.num_workers and not hasattr(decoder, "host_decoder"):
            raise ValueError(f"DecodeLoader(num_workers={num_workers}): {type(decoder).__name__} has no "
                             "host_decoder() to run in worker processes; use num_workers=0")
        if self.num_workers and "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError(f"DecodeLoader(num_workers={num_workers}): worker processes need the 'fork' start "
                             "method, which this platform lacks; use num_workers=0 (reader threads)")
        self._epochs: "weakref.WeakSet[_Epoch]" = weakref.WeakSet()

    @property
    def n_items(self) -> int:
        return len(self.positions)

    def __len__(self) -> int:
        n = self.n_items
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batches(self) -> list[list[int]]:
        """This epoch's batches as lists of indices into `positions` (draws the order from `generator`)."""
        n, bs = self.n_items, self.batch_size
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else list(range(n))
        return [order[s:s + bs] for s in range(0, len(self) * bs, bs)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = _Epoch(self, self.batches())
        self._epochs.add(epoch)
        return epoch

    def close(self) -> None:
        """Stop the background threads of every epoch still running, and the decoder's idle worker processes (a
        later iteration starts new ones)."""
        for epoch in list(self._epochs):
            epoch.close()
        DecodeWorkers.stop(self.decoder)

    def subset(self, indices: Sequence[int], shuffle: bool | None = None,
               drop_last: bool | None = None) -> "DecodeLoader":
        """A loader over some of this one's items (indices into `positions`), e.g. one rank's share; `shuffle` and
        `drop_last` as this one's unless given."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        dataset = self.dataset
        if isinstance(dataset, BlockDataset):
            rows = idx.tolist()
            source = dataset.indices or list(range(len(dataset)))
            dataset = BlockDataset([dataset.items[i] for i in rows], dataset.pipelines, [source[i] for i in rows])
        return DecodeLoader(self.decoder, [t.index_select(0, idx.to(t.device)) for t in self.targets],
                            [self.positions[i] for i in idx.tolist()], self.batch_size,
                            self.shuffle if shuffle is None else shuffle,
                            self.drop_last if drop_last is None else drop_last, self.generator, self.device,
                            self.prefetch, self.num_threads, dataset, self.stream_priority, self.num_workers)

    def __repr__(self) -> str:
        return (f"DecodeLoader({self.n_items} items, {self.decoder.description}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")


class _Epoch:
    """One pass: a producer thread (reads through a thread pool, decodes on a side stream) feeding a bounded
    queue; iterating takes from the queue. Stopped by exhaustion, an error, `close()` or when the iterator is
    dropped (a `break`): the thread holds only `_Pipe`, never this object, so dropping it ends the thread."""

    def __init__(self, loader: DecodeLoader, batches: list[list[int]]):
        self.device = loader.device
        self.pipe = _Pipe(loader.prefetch)
        stream = torch.cuda.Stream(loader.device, priority=loader.stream_priority) \
            if loader.device.type == "cuda" else None
        # worker processes are forked here, in the iterating thread, before the producer thread starts
        workers = DecodeWorkers.claim(loader) if loader.num_workers and batches else None
        self.pipe.thread = threading.Thread(target=_produce, args=(self.pipe, loader, batches, stream, workers),
                                            name="learnkit-decode", daemon=True)
        self.pipe.thread.start()

    def __iter__(self) -> "_Epoch":
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        pipe = self.pipe
        if pipe.finished:
            raise StopIteration
        while True:
            try:
                item = pipe.out.get(timeout=1.0)
                break
            except queue.Empty:
                if not pipe.thread.is_alive() and pipe.out.empty():  # only if the thread was killed
                    pipe.close()
                    raise RuntimeError("DecodeLoader: the decoding thread ended without a result") from None
        if item is _DONE:
            pipe.close()
            raise StopIteration
        kind, value, event = item
        if kind == "error":
            pipe.close()
            raise value
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in value:  # made on the side stream, used on this one: keep the allocator from reusing them early
                t.record_stream(current)
        return value

    @property
    def running(self) -> bool:
        return self.pipe.thread.is_alive()

    def close(self) -> None:
        self.pipe.close()

    def __del__(self) -> None:
        try:
            self.pipe.close()
        except Exception:
            pass


class _Pipe:
    """What the producer thread and the consumer share: the bounded queue, the stop flag, the thread."""

    def __init__(self, size: int):
        self.out: queue.Queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()
        self.finished = False
        self.thread: threading.Thread

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self.out.get_nowait()
            except queue.Empty:
                break
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=30)


def _produce(pipe: _Pipe, loader: DecodeLoader, batches: list[list[int]], stream: Any,
             workers: DecodeWorkers | None) -> None:
    """The producer thread: read `prefetch` batches ahead in the pool, decode each in order, queue it."""
    try:
        if stream is not None:
            torch.cuda.set_device(loader.device)
        if workers is not None:
            def deliver(batch: list[int], slot: torch.Tensor) -> bool:  # copied before the slot is reused
                if loader.device.type == "cpu":
                    return pipe.put(_with_targets(loader, batch, slot.clone(), stream))
                with torch.cuda.stream(stream):
                    x = slot.to(loader.device, non_blocking=workers.pinned)
                    if workers.pinned:  # the DMA reads the slot: it must end before the slot is reused
                        stream.synchronize()
                    return pipe.put(_with_targets(loader, batch, x, stream))
            try:
                run_workers(workers, loader, batches, lambda: pipe.stop.is_set(), deliver)
            finally:
                workers.release()
            pipe.put(_DONE)
            return
        with ThreadPoolExecutor(loader.num_threads, thread_name_prefix="learnkit-read") as pool:
            try:
                _run(pipe, loader, batches, stream, pool)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    except BaseException as e:  # raised in the consumer; the decoder's messages name the item
        pipe.put(("error", e, None))
        return
    pipe.put(_DONE)


def _run(pipe: _Pipe, loader: DecodeLoader, batches: list[list[int]], stream: Any, pool: ThreadPoolExecutor) -> None:
    window: deque = deque()
    pending = iter(batches)

    def submit() -> None:
        batch = next(pending, None)
        if batch is not None:
            positions = [loader.positions[i] for i in batch]
            # one task per reader thread, not per item: a future per item cost more GIL time than the reads
            # themselves (measured: 16 threads reading 256 px JPEGs went from 3,600 to 9,000 items/s)
            size = max(1, -(-len(positions) // loader.num_threads))
            chunks = [positions[s:s + size] for s in range(0, len(positions), size)]
            window.append((batch, positions, [pool.submit(_read_all, loader.decoder, c) for c in chunks]))

    for _ in range(loader.prefetch):
        submit()
    while window and not pipe.stop.is_set():
        batch, positions, futures = window.popleft()
        submit()
        raws = [raw for f in futures for raw in f.result()]
        with torch.cuda.stream(stream) if stream is not None else _nothing():
            item = _with_targets(loader, batch, loader.decoder.decode(raws, positions), stream)
        del raws
        if not pipe.put(item):
            return


def _with_targets(loader: DecodeLoader, batch: list[int], x: torch.Tensor, stream: Any) -> tuple:
    """The queue item of one batch: its inputs, its targets, and the side stream's event (None on the CPU)."""
    idx = torch.as_tensor(batch, dtype=torch.long).to(loader.device, non_blocking=True)
    ys = tuple(t.index_select(0, idx) for t in loader.targets)
    event = None
    if stream is not None:
        event = torch.cuda.Event()
        event.record(stream)
    return ("batch", (x,) + ys, event)


def _read_all(decoder: BatchDecoder, positions: Sequence[int]) -> list[Any]:
    """A reader thread's share of one batch, in order."""
    return [decoder.read(p) for p in positions]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
