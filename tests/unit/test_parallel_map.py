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


def test_workers_write_same_shaped_results_into_the_shared_tensor(monkeypatch):
    monkeypatch.setattr(parallel, "PROCESS_MIN_VALUES", 4)
    assert parallel.uses_processes(300, num_workers=2) and not parallel.uses_processes(300, num_workers=1)
    into = parallel.shared_tensor((300, 2, 3), torch.uint8)

    def fn(i):  # every tenth result has another shape: it comes back through the pipe as before
        shape = (2, 4) if i % 10 == 0 else (2, 3)
        return (torch.full(shape, i % 256, dtype=torch.uint8), torch.full((2, 3), 7, dtype=torch.uint8), None)
    got = list(parallel_map(fn, list(range(300)), num_workers=2, into=into))
    for i, (x, second, why) in enumerate(got):
        assert why is None and bool((x == i % 256).all()) and bool((second == 7).all())
        if i % 10:  # the first matching tensor only, written into row i by a forked child: a view, no copy
            assert x.data_ptr() == into[i].data_ptr() and second.data_ptr() != into[i].data_ptr()
        else:
            assert x.shape == (2, 4) and second.data_ptr() == into[i].data_ptr()
    assert int(into[5, 0, 0]) == 5


def test_decoded_images_are_the_same_through_the_shared_tensor(monkeypatch, tmp_path):
    from PIL import Image

    from learnkit.vision.image import decode_images
    g = torch.Generator().manual_seed(0)
    files = []
    for i in range(40):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(torch.randint(0, 256, (9, 7, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
        files.append(path)
    files[3].write_bytes(b"not a png")  # a bad file before the others: rows move up by one
    monkeypatch.setattr(parallel, "PROCESS_MIN_VALUES", 10_000)
    threads, bad_threads = decode_images(files, num_workers=2, on_bad="skip")
    monkeypatch.setattr(parallel, "PROCESS_MIN_VALUES", 4)
    processes, bad_processes = decode_images(files, num_workers=2, on_bad="skip")
    assert torch.equal(threads, processes) and processes.shape == (39, 3, 9, 7)
    assert bad_threads == bad_processes and bad_processes[0][0] == files[3]
