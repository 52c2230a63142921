"""The device-decode path (data/decode_loader.py + vision/jpeg.py) on the CPU: JPEG batches decoded by torchvision
match the Pillow path, files the decoder must not take go through Pillow, the order is seeded and new each epoch,
errors name the file, threads end, the choice is reported, and a Learner trains on it."""
from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from learnkit import Learner, accuracy
from learnkit.data.decode_loader import DecodeLoader
from learnkit.vision import ImageDataBunch, Resize
from learnkit.vision.image import ImageBlock, ImageLoadError
from learnkit.vision.jpeg import JpegDecoder, jpeg_problem

CPU = torch.device("cpu")


def _image(rng: np.random.Generator, c: str, h: int, w: int) -> np.ndarray:
    a = rng.integers(0, 70, (h, w, 3), dtype=np.uint8)
    (a[: h // 2] if c == "a" else a[h // 2:])[...] += 150  # class a: bright top; b: bright bottom
    return a


def _folder(root, n=24, extra=True):
    """train/ and valid/ class folders of RGB JPEGs of two sizes; with `extra`, a grayscale and a CMYK JPEG too."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("valid", n // 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (40, 48) if i % 2 else (44, 36)
                Image.fromarray(_image(rng, c, h, w)).save(root / split / c / f"{i}.jpg", quality=90)
    if extra:
        Image.fromarray(_image(rng, "a", 40, 48)).convert("L").save(root / "valid" / "a" / "gray.jpg", quality=90)
        Image.fromarray(_image(rng, "b", 40, 48)).convert("CMYK").save(root / "valid" / "b" / "cmyk.jpg", quality=90)
    return root


def _bunch(root, **kw):
    kw = {"item_tfms": Resize(32), "batch_size": 8, "seed": 0, "normalize": None, "verbose": False, **kw}
    return ImageDataBunch.from_folder(root, **kw)


def _all(dl):
    xs, ys = zip(*[(x, y) for x, y in dl])
    return torch.cat(xs), torch.cat(ys)


def test_device_decode_batches_match_the_pillow_path(tmp_path):
    root = _folder(tmp_path)
    dev = _bunch(root, device_decode=True)
    pil = _bunch(root, resident=False)
    assert dev.loader_kind == "device-decode" and pil.loader_kind == "dataloader"
    assert "torchvision's JPEG decoder on cpu, then Resize(32x32, crop)" in dev.loader_report
    xd, yd = _all(dev.valid_dl)
    xp, yp = _all(pil.valid_dl)
    assert xd.shape == xp.shape == (26, 3, 32, 32) and xd.dtype == torch.uint8
    assert torch.equal(yd, yp)
    diff = (xd.float() - xp.float()).abs()
    # measured: 0.0 (torchvision and Pillow both decode with libjpeg-turbo; the resize is the same code). The bound
    # allows another libjpeg build's IDCT; a wrong crop or squish gives > 10.
    assert diff.mean() <= 0.5 and diff.max() <= 16
    names = [p.name for p, _ in dev.valid_dl.dataset.items]
    assert dev.valid_dl.decoder.pillow_files == 1 and "cmyk.jpg" in names  # CMYK through Pillow: exact
    k = names.index("cmyk.jpg")
    assert torch.equal(xd[k], xp[k])


def test_grayscale_mode_matches_pillow_luma(tmp_path):
    root = _folder(tmp_path, n=8)
    xd, _ = _all(_bunch(root, device_decode=True, mode="L").valid_dl)
    xp, _ = _all(_bunch(root, resident=False, mode="L").valid_dl)
    assert xd.shape == xp.shape == (10, 1, 32, 32)
    diff = (xd.float() - xp.float()).abs()
    assert diff.mean() <= 0.5  # measured 0.03: libjpeg's Y channel vs Pillow's luma of the RGB decode


def test_files_the_device_must_not_take_go_through_pillow(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for name, mode in (("rgb.jpg", "RGB"), ("gray.jpg", "L"), ("cmyk.jpg", "CMYK")):
        Image.fromarray(_image(rng, "a", 40, 48)).convert(mode).save(tmp_path / name, quality=90)
        files.append(tmp_path / name)
    Image.fromarray(_image(rng, "b", 40, 48)).save(tmp_path / "png.jpg", format="PNG")  # a PNG named .jpg
    files.append(tmp_path / "png.jpg")
    problems = [jpeg_problem(f.read_bytes()) for f in files]
    assert problems[0] is None and problems[1] is None
    assert "CMYK" in problems[2] and "not JPEG data" in problems[3]
    dec = JpegDecoder(files, "RGB", [Resize(24, "squish")], CPU)
    x = dec.decode([dec.read(i) for i in range(4)], [0, 1, 2, 3])
    assert x.shape == (4, 3, 24, 24) and dec.pillow_files == 2
    block = ImageBlock()
    for i, f in enumerate(files):
        expected = Resize(24, "squish")(block.encode(f))
        assert (x[i].float() - expected.float()).abs().mean() <= 0.5


def test_a_corrupt_jpeg_is_an_error_naming_the_file(tmp_path):
    root = _folder(tmp_path, n=8, extra=False)
    good = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "broken.jpg").write_bytes(good[: len(good) // 2])  # truncated: no end marker
    with pytest.raises(ValueError, match="broken.jpg"):  # verify=True (default): found before training
        _bunch(root, device_decode=True)
    data = _bunch(root, device_decode=True, verify=False, drop_last=False)
    with pytest.raises(ImageLoadError, match="broken.jpg.*truncated"):
        _all(data.train_dl)
    skipped = _bunch(root, device_decode=True, on_bad="skip")
    assert skipped.train_dl.n_items == 16 and "broken.jpg" in str(skipped.skipped)


def test_the_reader_keeps_every_byte_and_names_an_empty_file(tmp_path):
    root = _folder(tmp_path, n=8, extra=False)
    good = root / "train" / "a" / "0.jpg"
    data = good.read_bytes()
    (root / "train" / "a" / "tail.jpg").write_bytes(data + b"padding after the image")  # complete: decoded
    (root / "train" / "a" / "cut.jpg").write_bytes(data[:-2] + b"\x00\x00")  # no end marker at all
    (root / "train" / "a" / "empty.jpg").write_bytes(b"")
    files = [good] + [root / "train" / "a" / name for name in ("tail.jpg", "cut.jpg", "empty.jpg")]
    dec = JpegDecoder(files, "RGB", [Resize(24, "squish")], CPU)
    raws = [dec.read(i) for i in range(4)]
    assert bytes(raws[0][0].numpy()) == data and raws[0][1] is None  # the bytes as on disk, no copy lost a byte
    assert bytes(raws[1][0].numpy()).endswith(b"after the image") and raws[1][1] is None
    assert "truncated" in raws[2][1] and raws[3][1] == "the file is empty"
    x = dec.decode(raws[:2], [0, 1])
    assert torch.equal(x[0], x[1])  # trailing bytes change nothing
    with pytest.raises(ImageLoadError, match="empty.jpg.*empty"):
        dec.decode(raws[3:], [3])


def test_jpegs_with_exif_go_through_the_device_reader_and_a_rotation_through_pillow(tmp_path):
    root = _folder(tmp_path, n=8, extra=False)
    rng = np.random.default_rng(3)
    for i, orientation in enumerate((1, 1, 6)):  # a camera's block (upright twice, then rotated)
        exif = Image.Exif()
        exif[0x0112], exif[0x010F] = orientation, "Camera"
        Image.fromarray(_image(rng, "a", 40, 48)).save(root / "train" / "a" / f"exif{i}.jpg", quality=90,
                                                      exif=exif.tobytes())
    files = [root / "train" / "a" / f"exif{i}.jpg" for i in range(3)]
    dec = JpegDecoder(files, "RGB", [Resize(24, "squish")], CPU)
    raws = [dec.read(i) for i in range(3)]  # the reader's bytearrays through the EXIF parser
    assert raws[0][1] is None and raws[1][1] is None and "EXIF orientation 6" in raws[2][1]
    x = dec.decode(raws, [0, 1, 2])
    assert x.shape == (3, 3, 24, 24) and dec.pillow_files == 1
    data = _bunch(root, device_decode=True, resident=False, normalize="auto")  # image_stats decodes them too
    assert data.loader_kind == "device-decode" and sum(len(xb) for xb, _ in data.train_dl) == 16


def test_image_stats_on_the_device_decode_path_decode_a_random_sample_there(tmp_path):
    from test_vision_data import _dark_and_bright
    _dark_and_bright(tmp_path, ".jpg")
    resident = ImageDataBunch.from_folder(tmp_path, batch_size=4, verbose=False)
    device = ImageDataBunch.from_folder(tmp_path, batch_size=4, resident=False, device_decode=True, verbose=False)
    assert device.loader_kind == "device-decode" and device.train_dl.drop_last
    device.train_dl.stream_priority = 0
    assert device.train_dl.subset([0, 1]).stream_priority == 0  # a rank's share keeps the loader's settings
    (mean_r, std_r), (mean_d, std_d) = resident.image_stats(max_items=10), device.image_stats(max_items=10)
    assert mean_d == pytest.approx(mean_r, abs=3e-3) and std_d == pytest.approx(std_r, abs=3e-3)  # decoder noise
    assert all(0.2 < m < 0.8 for m in mean_d)  # both classes in the sample (the first 10 files are all dark)


def test_the_choice_and_its_reason(tmp_path):
    root = _folder(tmp_path, n=8, extra=False)
    assert _bunch(root).loader_kind == "resident"  # small: resident first, device_decode='auto'
    off = _bunch(root, resident=False, device_decode=False)
    assert off.loader_kind == "dataloader" and "device_decode=False" in off.loader_report
    auto = _bunch(root, resident=False)
    assert auto.loader_kind == "dataloader" and "no device decoding on cpu" in auto.loader_report
    Image.fromarray(_image(np.random.default_rng(2), "a", 40, 48)).save(root / "train" / "a" / "x.png")
    with pytest.raises(ValueError, match=r"device_decode=True but 1 of 25 files are not JPEG \(e.g. x.png\)"):
        _bunch(root, device_decode=True)
    from learnkit.vision import RandomResizedCrop
    (root / "train" / "a" / "x.png").unlink()
    with pytest.raises(ValueError, match="random per item"):
        _bunch(root, device_decode=True, item_tfms=RandomResizedCrop(32))
    with pytest.raises(ValueError, match="pick one"):
        _bunch(root, device_decode=True, resident=True)
    decoder, why = ImageBlock(mode=None).batch_decoder([root / "train" / "a" / "0.jpg"], [], CPU)
    assert decoder is None and "mode=None" in why


class _Numbers:
    """A decoder whose items are their positions: batches say which items they hold."""
    description = "numbers"

    def __init__(self, fail_at: int | None = None, delay: float = 0.0):
        self.fail_at, self.delay, self.reads = fail_at, delay, 0

    def read(self, position):
        self.reads += 1
        time.sleep(self.delay)
        if position == self.fail_at:
            raise ImageLoadError(f"item{position}.jpg", "unreadable")
        return position

    def decode(self, raws, positions):
        assert list(raws) == list(positions)
        return torch.tensor(raws)

    def host_decoder(self):  # for num_workers > 0: the same decoding, in the worker processes
        return _Numbers(self.fail_at, self.delay)


def _threads():
    return [t for t in threading.enumerate() if t.name.startswith(("learnkit-decode", "learnkit-read"))]


def test_decode_loader_order_is_seeded_new_each_epoch_and_complete():
    def loader(seed):
        return DecodeLoader(_Numbers(), [torch.arange(50) * 10], range(50), 8, shuffle=True,
                            generator=torch.Generator().manual_seed(seed), num_threads=2)
    a, b = loader(0), loader(0)
    first = [x.tolist() for x, _ in a]
    assert first == [x.tolist() for x, _ in b] and len(first) == len(a) == 7  # the same seed, the same order
    second = [x.tolist() for x, _ in a]
    assert first != second
    for epoch in (first, second):
        seen = sorted(sum(epoch, []))
        assert seen == list(range(50))  # every item once per epoch (the last partial batch kept)
    x, y = next(iter(a))
    assert torch.equal(y, x * 10)  # targets follow their items
    dropped = DecodeLoader(_Numbers(), [torch.arange(50)], range(50), 8, shuffle=True, drop_last=True)
    assert len(dropped) == 6 and all(len(x) == 8 for x, _ in dropped)
    valid = DecodeLoader(_Numbers(), [torch.arange(20)], range(20), 8)
    assert [x.tolist() for x, _ in valid][-1] == list(range(16, 20))


def test_decode_loader_errors_reach_the_consumer_and_threads_end():
    dl = DecodeLoader(_Numbers(fail_at=13), [torch.arange(40)], range(40), 4, num_threads=2)
    got = []
    with pytest.raises(ImageLoadError, match="item13.jpg"):
        for x, _ in dl:
            got.append(x)
    assert len(got) == 3  # batches before the bad one arrive; nothing after it
    slow = _Numbers(delay=0.002)
    dl = DecodeLoader(slow, [torch.arange(400)], range(400), 4, num_threads=2, prefetch=2)
    for _ in dl:
        break  # the iterator is dropped: its threads stop
    deadline = time.time() + 5
    while _threads() and time.time() < deadline:
        time.sleep(0.02)
    assert not _threads()
    assert slow.reads <= 4 * 4  # bounded: at most a few batches were read ahead (not all 400 items)
    it = iter(dl)
    next(it)
    dl.close()
    assert not _threads()
    with pytest.raises(StopIteration):
        next(it)


def test_worker_processes_give_the_threads_batches_and_keep_running_between_epochs():
    from learnkit.data.decode_workers import DecodeWorkers

    def loader(dec, **kw):
        return DecodeLoader(dec, [torch.arange(50) * 10], range(50), 8, shuffle=True,
                            generator=torch.Generator().manual_seed(0), **kw)
    dec = _Numbers()
    threads, workers = loader(_Numbers(), num_threads=2), loader(dec, num_workers=2)
    for _ in range(2):
        assert [(x.tolist(), y.tolist()) for x, y in workers] == [(x.tolist(), y.tolist()) for x, y in threads]
    assert len(DecodeWorkers.sets_of(dec)) == 1  # one set of processes, started once, reused by the second epoch
    for _ in workers:
        break  # dropped mid-epoch: its slots are freed, so the next epoch does not wait for them
    assert sorted(sum((x.tolist() for x, _ in workers), [])) == list(range(50))
    pairs = list(zip(workers, workers))  # two epochs at the same time: the second gets processes of its own
    assert len(pairs) == 7 and len(DecodeWorkers.sets_of(dec)) == 2
    workers.close()  # ends the processes too
    assert DecodeWorkers.sets_of(dec) == [] and multiprocessing.active_children() == []
    failing = DecodeLoader(_Numbers(fail_at=13), [torch.arange(40)], range(40), 4, num_workers=2)
    with pytest.raises(ImageLoadError, match="item13.jpg"):  # a worker's error, raised here, naming the item
        list(failing)
    failing.close()
    with pytest.raises(ValueError, match="num_workers=-1"):
        DecodeLoader(dec, [torch.arange(4)], range(4), 2, num_workers=-1)

    class NoHost:
        description = "bytes only"
    with pytest.raises(ValueError, match="NoHost has no host_decoder"):
        DecodeLoader(NoHost(), [torch.arange(4)], range(4), 2, num_workers=2)


def test_a_learner_trains_on_the_device_decode_path(tmp_path):
    torch.manual_seed(0)
    data = _bunch(_folder(tmp_path, n=32, extra=False), device_decode=True, item_tfms=Resize(16), normalize="auto")
    assert data.loader_kind == "device-decode"
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 1)), nn.Flatten(),
                          nn.Linear(16, 2))
    learn = Learner(data, model, metrics=[accuracy], progress=False)
    learn.fit_one_cycle(4, 0.03)
    assert learn.validate()["accuracy"] >= 0.9  # chance is 0.5; measured 1.0


def test_sharding_splits_the_device_decode_loader(tmp_path):
    data = _bunch(_folder(tmp_path, n=16, extra=False), device_decode=True)
    full = data.train_dl.n_items
    data.shard(1, 2)
    assert data.train_dl.n_items == full // 2 and len(data.train_dl.dataset) == full // 2
    assert len(data.train_dl) == (full // 2) // 8


def test_how_many_decode_processes_the_device_decode_path_starts(monkeypatch):
    from types import SimpleNamespace

    from learnkit.data import loaders

    def count(cores, device="cuda", num_workers=None, ranks=None, decoder=_Numbers()):
        monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        if ranks is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
        plan = SimpleNamespace(num_workers=num_workers, device=torch.device(device))
        return loaders._decode_processes(plan, decoder)
    assert count(16) == 15 and count(128) == 31  # all cores but one, at most 31
    assert count(16, ranks=2) == 7 and count(16, ranks=4) == 0  # torchrun's local ranks share the cores
    assert count(4) == 0 and count(16, device="cpu") == 0  # few cores, or no GPU to spare: reader threads
    assert count(16, num_workers=3) == 3 and count(16, num_workers=0) == 0  # the user's choice
    assert count(16, decoder=object()) == 0  # a decoder without a host decoder
