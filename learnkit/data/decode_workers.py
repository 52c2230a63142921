"""The worker processes of `DecodeLoader(num_workers=n)`: forked processes that read and decode shares of batches
with a decoder's `host_decoder()` and write them into batch slots of one shared mapping (`DecodeWorkers`), and the
producer loop that hands the slots out and copies finished batches to the device (`run_workers`).

Rules that keep data and the program safe:
- a slot is reused only after every share written into it has finished: on an error or a stop the loop waits for
  the shares still running (5 s at most; then the set is killed and never reused);
- a set serves one epoch at a time; a second epoch at the same time gets a set of its own;
- a set that lost a process (killed, out of memory) is dropped and the next epoch starts a new one;
- the processes ignore Ctrl-C (the consumer's KeyboardInterrupt ends the epoch) and end with their decoder
  (a finalizer), on `DecodeLoader.close()` (idle sets) or at exit;
- a child's error reaches the consumer with its message (an exception that cannot travel between processes is
  replaced by a RuntimeError carrying its type and message).
"""
from __future__ import annotations

import multiprocessing
import pickle
import signal
import threading
import weakref
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import torch

from learnkit.data.parallel import shared_tensor

__all__ = ["DecodeWorkers", "run_workers"]

GRACE_SECONDS = 5.0  # how long a stop waits for shares still being written before it kills the set


class DecodeWorkers:
    """`n` forked processes and `slots` batch slots for one decoder (see the module docstring)."""

    _sets: dict[int, list["DecodeWorkers"]] = {}  # id(decoder) -> its sets; an entry goes with its decoder
    # re-entrant: a decoder's finalizer (_forget) takes it and may run in any thread, inside any allocation (a GC
    # pass), also one made while this thread holds it
    _lock = threading.RLock()
    _fork_lock = threading.Lock()  # only around the fork (the _PENDING hand-over); no finalizer takes it

    def __init__(self, decoder: Any, n: int, batch_size: int, slots: int, first_position: int, pin: bool = False):
        global _PENDING
        host = decoder.host_decoder()
        sample = host.decode([host.read(first_position)], [first_position])  # the size and type of every item
        self.n, self.batch_size = n, batch_size
        self.slots = shared_tensor((slots, batch_size) + tuple(sample.shape[1:]), sample.dtype)
        self.busy, self.broken = True, False
        before = set(multiprocessing.active_children())
        with DecodeWorkers._fork_lock:  # the children inherit (host, slots) through fork; the pool keeps no reference
            _PENDING = (host, self.slots)  # to the decoder, so the decoder can be collected and end the set
            try:
                self.pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_child_init)
                self.pool.submit(int).result()  # with fork every process starts at the first task, here
            finally:
                _PENDING = None
        self.processes = [p for p in multiprocessing.active_children() if p not in before]
        # page-locked after the fork (the children write through their own mapping of the same pages): the copy to
        # the GPU is then one DMA (H200: ~1 ms a 224 px batch of 256) instead of ~8 ms staged through the driver
        self.pinned = pin and _host_register(self.slots, True)

    @classmethod
    def claim(cls, loader: Any) -> "DecodeWorkers":
        """An idle set for this loader's decoder with room for its batches, or a new one (forked here)."""
        key = id(loader.decoder)
        with cls._lock:
            sets = cls._sets.get(key, [])
            for w in [w for w in sets if w.broken]:
                sets.remove(w)
                w.end(wait_s=0.0)
            for w in sets:
                if not w.busy and w.n == loader.num_workers and w.batch_size >= loader.batch_size \
                        and len(w.slots) >= loader.prefetch + 1:
                    w.busy = True
                    return w
        w = cls(loader.decoder, loader.num_workers, loader.batch_size, loader.prefetch + 1, loader.positions[0],
                pin=loader.device.type == "cuda")
        with cls._lock:
            if key not in cls._sets:
                cls._sets[key] = []
                try:
                    weakref.finalize(loader.decoder, cls._forget, key)
                except TypeError:  # a decoder without weak references: its sets end at close() or exit
                    pass
            cls._sets[key].append(w)
        return w

    @classmethod
    def stop(cls, decoder: Any) -> None:
        """End the idle sets of `decoder` (a set whose epoch still runs is left to it)."""
        with cls._lock:
            sets = cls._sets.get(id(decoder), [])
            idle = [w for w in sets if not w.busy]
            for w in idle:
                sets.remove(w)
        for w in idle:
            w.end()

    @classmethod
    def sets_of(cls, decoder: Any) -> list["DecodeWorkers"]:
        with cls._lock:
            return list(cls._sets.get(id(decoder), []))

    @classmethod
    def _forget(cls, key: int) -> None:
        with cls._lock:
            sets = cls._sets.pop(key, [])
        for w in sets:
            w.end(wait_s=0.0)

    def release(self) -> None:
        with self._lock:
            self.busy = False

    def end(self, wait_s: float = GRACE_SECONDS) -> None:
        """Stop the processes: asked to exit, then (after `wait_s`) terminated, then killed; never blocks longer."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in self.processes:
            p.join(timeout=wait_s)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=1.0)
        if self.pinned:
            self.pinned = not _host_register(self.slots, False)


def run_workers(workers: DecodeWorkers, loader: Any, batches: list[list[int]], stopped: Callable[[], bool],
                deliver: Callable[[list[int], torch.Tensor], bool]) -> None:
    """The producer's loop: `prefetch` batches in flight, each cut into one share per process; a finished batch is
    passed to `deliver(batch, slot_tensor)` (which must copy it before returning; False: stop); `stopped()` is
    polled while waiting."""
    window: list[tuple[list[int], int, list]] = []
    pending = iter(batches)
    free = list(range(len(workers.slots)))

    def submit() -> None:
        batch = next(pending, None)
        if batch is not None:
            positions = [loader.positions[i] for i in batch]
            slot, size = free.pop(), max(1, -(-len(positions) // workers.n))
            window.append((batch, slot, [workers.pool.submit(_child_decode, slot, s, positions[s:s + size])
                                         for s in range(0, len(positions), size)]))

    try:
        for _ in range(loader.prefetch):
            submit()
        while window:
            batch, slot, futures = window[0]
            submit()
            while wait(futures, timeout=0.1).not_done:
                if stopped():
                    return
            fallbacks = sum(f.result() for f in futures)  # a child's error is raised here
            if fallbacks:  # the decoder's count of items it passed to its fallback, kept in the parent
                loader.decoder.pillow_files += fallbacks
            window.pop(0)
            go_on = deliver(batch, workers.slots[slot, :len(batch)])
            free.append(slot)
            if not go_on:
                return
    except BrokenProcessPool:
        workers.broken = True
        raise RuntimeError("DecodeLoader: a worker process died (killed, e.g. out of memory); the next epoch "
                           "starts new ones. Fix: fewer num_workers, or num_workers=0") from None
    finally:  # shares still writing into a slot must end before the set serves another epoch
        running = [f for _, _, futures in window for f in futures if not f.cancel()]
        if running and wait(running, timeout=GRACE_SECONDS).not_done:
            workers.broken = True  # a share that does not end (a hung read): the set is never reused
            workers.end(wait_s=0.0)


def _host_register(t: torch.Tensor, pin: bool) -> bool:
    """cudaHostRegister (pin) or cudaHostUnregister `t`'s memory; True if it worked. In a thread of its own: a
    failure leaves a CUDA error in the calling thread's last-error state, which a later kernel launch there would
    raise; that thread's state ends with it."""
    done: list[bool] = []

    def call() -> None:
        try:
            cudart = torch.cuda.cudart()
            err = cudart.cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 0) if pin \
                else cudart.cudaHostUnregister(t.data_ptr())
            done.append(err == cudart.cudaError.success)
        except Exception:  # no CUDA runtime: the copies stay staged
            done.append(False)
    thread = threading.Thread(target=call, name="learnkit-pin")
    thread.start()
    thread.join()
    return bool(done and done[0])


_PENDING: tuple[Any, torch.Tensor] | None = None  # (host decoder, slots) while a set forks its processes
_CHILD: dict[str, Any] = {}  # in a worker process: its decoder and the shared slots


def _child_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the consumer handles it
    torch.set_num_threads(1)  # the workers share the cores
    assert _PENDING is not None, "DecodeLoader: a worker process started without its decoder"
    _CHILD["decoder"], _CHILD["slots"] = _PENDING


def _child_decode(slot: int, start: int, positions: list[int]) -> int:
    """In a worker: decode positions into rows start.. of a slot; returns how many went through the fallback."""
    try:
        return _decode_into(slot, start, positions)
    except BaseException as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:  # it would not reach the consumer: keep its type and message
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        raise


def _decode_into(slot: int, start: int, positions: list[int]) -> int:
    host, slots = _CHILD["decoder"], _CHILD["slots"]
    before = getattr(host, "pillow_files", 0)
    x = host.decode([host.read(p) for p in positions], positions)
    if tuple(x.shape[1:]) != tuple(slots.shape[2:]) or x.dtype != slots.dtype:
        raise ValueError(f"DecodeLoader: the items at positions {positions} decode to {tuple(x.shape[1:])} "
                         f"{x.dtype}, the first item to {tuple(slots.shape[2:])} {slots.dtype}; every item must "
                         "decode to one size and type (e.g. add a Resize item transform)")
    slots[slot, start:start + len(positions)].numpy()[...] = x.numpy()  # NumPy: no torch threads in the child
    return getattr(host, "pillow_files", 0) - before
