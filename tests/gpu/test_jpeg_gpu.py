"""The device-decode path on CUDA: nvJPEG batches match the CPU decode (torchvision's libjpeg, the same as Pillow's),
the path is chosen by itself when the images are not resident, and a model trains on it. Marked `gpu`."""
import numpy as np
import pytest
import torch
from PIL import Image

from learnkit import set_seed
from learnkit.vision import ImageDataBunch, Resize, vision_learner


def _folder(root, n=48):
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("valid", n // 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (64, 80) if i % 2 else (72, 56)
                a = rng.integers(0, 70, (h, w, 3), dtype=np.uint8)
                (a[: h // 2] if c == "a" else a[h // 2:])[...] += 150
                im = Image.fromarray(a)
                if i == 0:
                    im = im.convert("L")  # a grayscale JPEG: nvJPEG with RGB output
                elif i == 1:
                    im = im.convert("CMYK")  # CMYK: through Pillow
                im.save(root / split / c / f"{i}.jpg", quality=90)
    return root


def _all(dl):
    xs, ys = zip(*[(x, y) for x, y in dl])
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.gpu
def test_nvjpeg_batches_match_the_cpu_decode_and_train(tmp_path):
    root = _folder(tmp_path)
    common = dict(item_tfms=Resize(48), batch_size=16, seed=0, normalize=None, verbose=False)
    auto = ImageDataBunch.from_folder(root, resident=False, **common)  # 'auto' on CUDA: host decode in processes
    assert auto.loader_kind == "device-decode" and "worker processes" in auto.loader_report
    auto.train_dl.close()
    gpu = ImageDataBunch.from_folder(root, resident=False, num_workers=0, **common)  # reader threads + nvJPEG
    assert gpu.loader_kind == "device-decode" and "nvJPEG on cuda" in gpu.loader_report
    workers = ImageDataBunch.from_folder(root, resident=False, device_decode=False, **common)
    assert workers.loader_kind == "dataloader" and "device_decode=False" in workers.loader_report
    cpu = ImageDataBunch.from_folder(root, device="cpu", device_decode=True, **common)
    pil = ImageDataBunch.from_folder(root, device="cpu", resident=False, **common)
    xg, yg = _all(gpu.valid_dl)
    xc, yc = _all(cpu.valid_dl)
    xp, _ = _all(pil.valid_dl)
    assert xg.is_cuda and xg.dtype == torch.uint8 and xg.shape == xc.shape == (48, 3, 48, 48)
    assert torch.equal(yg.cpu(), yc)
    diff = (xg.cpu().float() - xc.float()).abs()
    print(f"nvJPEG vs CPU decode: mean abs diff {diff.mean():.3f}, max {diff.max():.0f}")
    # measured on the H200 (nvJPEG, torchvision 0.26): mean 1.81, max 24 levels (IDCT and chroma upsampling differ
    # from libjpeg's, plus float resize rounding); a swapped channel or a misplaced crop is tens of levels on average
    assert diff.mean() <= 2.5 and diff.max() <= 40
    assert (xc.float() - xp.float()).abs().mean() <= 0.5
    assert gpu.valid_dl.decoder.pillow_files == 2  # the two CMYK files
    set_seed(0)
    learn = vision_learner(gpu, "resnet18", pretrained=False, progress=False)
    learn.fit_one_cycle(4, 3e-3)
    assert learn.validate()["accuracy"] >= 0.9


@pytest.mark.gpu
def test_break_mid_epoch_on_cuda_frees_the_threads(tmp_path):
    import threading

    data = ImageDataBunch.from_folder(_folder(tmp_path, n=64), resident=False, device_decode=True, item_tfms=Resize(32), batch_size=8,
                                      seed=0, normalize=None, verbose=False)
    for i, (xb, _) in enumerate(data.train_dl):
        assert xb.is_cuda
        if i == 2:
            break
    torch.cuda.synchronize()
    alive = [t for t in threading.enumerate() if t.name.startswith(("learnkit-decode", "learnkit-read"))]
    assert not alive


@pytest.mark.gpu
def test_worker_processes_decode_on_the_host_and_deliver_cuda_batches(tmp_path):
    from learnkit.data.decode_loader import DecodeLoader
    from learnkit.vision.jpeg import JpegDecoder

    files = sorted(_folder(tmp_path, n=16).rglob("*.jpg"))
    cpu = JpegDecoder(files, "RGB", [Resize(48)], torch.device("cpu"))
    want = cpu.decode([cpu.read(i) for i in range(len(files))], list(range(len(files))))
    gpu = JpegDecoder(files, "RGB", [Resize(48)], torch.device("cuda"))
    dl = DecodeLoader(gpu, [torch.arange(len(files))], list(range(len(files))), 10, device="cuda", num_workers=2)
    for _ in range(2):  # the second epoch reuses the processes
        x, y = _all(dl)
        assert x.is_cuda and torch.equal(y.cpu(), torch.arange(len(files)))
        assert torch.equal(x.cpu(), want)  # the host decoder's pixels, exactly (no nvJPEG involved)
    assert gpu.pillow_files == 2 * 4  # the four CMYK files, each epoch
    from learnkit.data.decode_workers import DecodeWorkers
    (workers,) = DecodeWorkers.sets_of(gpu)
    assert workers.pinned  # page-locked slots (cudaHostRegister after the fork): one DMA a batch
    dl.close()
    assert not workers.pinned and not DecodeWorkers.sets_of(gpu)  # unregistered when the set ended
