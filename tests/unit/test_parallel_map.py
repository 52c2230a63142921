"""parallel_map: results in order whichever way it runs (this thread, threads, forked processes), closures and
unpicklable values reach forked children, tensors come back as tensors inside tuples."""
import threading

import pytest
import torch

import learnkit.data.parallel as parallel
from learnkit.data.parallel import parallel_map


@pytest.mark.parametrize("process_min", [10_000, 4])  # threads, then forked processes
def test_results_in_order_with_closures_and_tensors(monkeypatch, process_min):
    monkeypatch.setattr(parallel, "PROCESS_MIN_VALUES", process_min)
    lock = threading.Lock()  # unpicklable: reaches the children only because they are forked
    offset = 7

    def fn(i):
        with lock:
            return (torch.full((2,), i + offset, dtype=torch.int16), None if i % 3 else f"bad {i}")
    got = list(parallel_map(fn, list(range(300)), num_workers=2))
    assert [int(x[0]) for x, _ in got] == [i + 7 for i in range(300)]
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int16 for x, _ in got)
    assert [why for _, why in got if why] == [f"bad {i}" for i in range(0, 300, 3)]


def test_one_worker_runs_here():
    seen = []
    assert list(parallel_map(lambda v: seen.append(v) or v * 2, [1, 2, 3], num_workers=0)) == [2, 4, 6]
    assert seen == [1, 2, 3]
