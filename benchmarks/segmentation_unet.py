"""learnkit unet_learner vs fastai 2.8.12 unet_learner: folder of PNGs → trained, evaluated model, one run each.

The data: a deterministic generator (below) pastes 1-3 Fashion-MNIST items, scaled 1.5-2.5x and tinted, on noisy
128 px canvases; the mask labels each item's pixels with its garment class (1-10, background 0). Written as
images/NNNNN.png and masks/NNNNN.png; the last 20% are the validation split for both libraries.

Same for both: resnet34 body from scratch (pretrained=False: no internet on the device), batch size, epochs,
one-cycle at lr 1e-3, no augmentation, inputs in [0, 1] (fastai does not normalize when pretrained=False), mixed
precision (fastai `to_fp16()`, learnkit's default bf16 autocast). Each library's time runs from the file names to
the evaluated model (decoding, loaders, model build, training, validation predictions); mean IoU is computed by
the same function over both libraries' validation predictions (confusion matrix over all pixels, classes absent
from targets and predictions left out). learnkit is also run with cross-entropy alone (its default is
cross-entropy + Dice) to measure that choice. On this branch the learnkit side reads the folders with
`decode_images` and a stand-in mask block, since SegmentationDataBunch.from_folder lands with the data side.

Run (device): python benchmarks/segmentation_unet.py --n 20000 --epochs 4 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

N_CLASSES = 11
CODES = ["background", "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


_ITEMS: np.ndarray | None = None
_LABELS: np.ndarray | None = None


def _init(items: np.ndarray, labels: np.ndarray) -> None:
    global _ITEMS, _LABELS
    _ITEMS, _LABELS = items, labels


def _make(args: tuple[int, str, int]) -> None:
    from PIL import Image
    i, out, size = args
    rng = np.random.default_rng(i)
    img = (rng.uniform(0, 60, (1, 1, 3)) + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        k = rng.integers(len(_ITEMS))
        scale = rng.uniform(1.5, 2.5) * size / 128
        s = int(28 * scale)
        item = np.asarray(Image.fromarray(_ITEMS[k]).resize((s, s), Image.BILINEAR), np.float32)
        y, x = rng.integers(0, size - s, 2)
        tint = rng.uniform(0.5, 1.0, 3)
        on = item > 60
        region = img[y:y + s, x:x + s]
        region[on] = (item[on, None] * tint)
        mask[y:y + s, x:x + s][on] = _LABELS[k] + 1
    Image.fromarray(img.astype(np.uint8)).save(f"{out}/images/{i:05d}.png")
    Image.fromarray(mask).save(f"{out}/masks/{i:05d}.png")


def generate(root: Path, n: int, size: int, fmnist: Path) -> float:
    t = time.perf_counter()
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    items, labels = _read_idx(fmnist / "train-images-idx3-ubyte.gz"), _read_idx(fmnist / "train-labels-idx1-ubyte.gz")
    with Pool(os.cpu_count(), _init, (items, labels)) as pool:
        pool.map(_make, [(i, str(root), size) for i in range(n)], chunksize=256)
    return time.perf_counter() - t


def mean_iou(probs: torch.Tensor, target: torch.Tensor) -> float:
    """The one evaluation both libraries' predictions go through."""
    pred = probs.argmax(1).reshape(-1).long()
    target = target.reshape(-1).long()
    cm = torch.bincount(target * N_CLASSES + pred, minlength=N_CLASSES ** 2).reshape(N_CLASSES, N_CLASSES).double()
    tp, union = cm.diag(), cm.sum(0) + cm.sum(1) - cm.diag()
    return float((tp[union > 0] / union[union > 0]).mean())


def run_learnkit(root: Path, n_valid_from: int, epochs: int, batch_size: int, loss: str, arch: str = "resnet34",
                 seed: int = 0) -> dict:
    from learnkit.data.blocks import TransformBlock
    from learnkit.data.bunch import DataBunch
    from learnkit.data.resident import ResidentLoader
    from learnkit.vision.image import ImageBlock, decode_images
    from learnkit.vision.learner import unet_learner
    from learnkit.vision.losses import SegmentationCrossEntropy
    from learnkit.vision.transforms import IntToFloat

    class Masks(TransformBlock):  # stand-in for MaskBlock (vision/segment.py, the data side of issue 17)
        def __init__(self):
            self.classes, self.ignore_index = CODES, 255

        def activation(self, output):
            return F.softmax(output.float(), dim=1)

        def default_metrics(self):
            return ["pixel_accuracy", "mean_iou"]

    torch.manual_seed(seed)
    t = time.perf_counter()
    files = sorted((root / "images").iterdir())
    images, _ = decode_images(files, mode="RGB")
    masks, _ = decode_images([root / "masks" / f.name for f in files], mode="L")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, y = images.to(dev), masks[:, 0].long().to(dev)
    tr, va = slice(0, n_valid_from), slice(n_valid_from, len(files))
    gen = torch.Generator().manual_seed(seed)
    data = DataBunch(ResidentLoader((x[tr], y[tr]), batch_size, shuffle=True, drop_last=True, generator=gen),
                     ResidentLoader((x[va], y[va]), batch_size), blocks=[ImageBlock(), Masks()],
                     batch_tfms=[IntToFloat()], device=dev)
    learn = unet_learner(data, arch, pretrained=False, progress=False,
                         loss_fn=SegmentationCrossEntropy() if loss == "ce" else None)
    t_fit = time.perf_counter()
    learn.fit_one_cycle(epochs, 1e-3)
    probs, target = learn.get_preds()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 1), "fit_seconds": round(time.perf_counter() - t_fit, 1),
            "mean_iou": round(mean_iou(probs, target), 4), "val_results": learn.val_results,
            "loss": type(learn.loss_fn).__name__}


def run_fastai(root: Path, n_valid_from: int, epochs: int, batch_size: int) -> dict:
    from fastai.vision.all import (DataBlock, FuncSplitter, ImageBlock, MaskBlock, get_image_files, resnet34,
                                   unet_learner)
    torch.manual_seed(0)
    t = time.perf_counter()
    block = DataBlock(blocks=(ImageBlock, MaskBlock(CODES)), get_items=get_image_files,
                      get_y=lambda o: root / "masks" / o.name,
                      splitter=FuncSplitter(lambda o: int(o.stem) >= n_valid_from))
    dls = block.dataloaders(root / "images", bs=batch_size, num_workers=min(16, os.cpu_count() or 1))
    learn = unet_learner(dls, resnet34, pretrained=False, n_out=N_CLASSES)
    if torch.cuda.is_available():
        learn = learn.to_fp16()
    t_fit = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 1e-3)
    probs, target = learn.get_preds()
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 1), "fit_seconds": round(time.perf_counter() - t_fit, 1),
            "mean_iou": round(mean_iou(probs.float(), target), 4), "loss": type(learn.loss_func).__name__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--root", default="/tmp/fmnist_seg")
    p.add_argument("--fmnist", default="../.whl/fashion-mnist")
    p.add_argument("--only", default="learnkit,learnkit_ce,fastai")
    p.add_argument("--arch", default="resnet34", help="learnkit-only runs (the loss measurement on a CPU)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/segmentation_unet_h200.json")
    a = p.parse_args()
    root = Path(a.root)
    gen_s = generate(root, a.n, a.size, Path(a.fmnist))
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
              "n_images": a.n, "size": a.size, "epochs": a.epochs, "batch_size": a.batch_size, "arch": a.arch,
              "pretrained": False,
              "generate_seconds": round(gen_s, 1), "command": " ".join(sys.argv)}
    n_valid_from = int(a.n * 0.8)
    for name in a.only.split(","):
        if name == "fastai":
            import fastai
            result["fastai_version"] = fastai.__version__
            result["fastai"] = run_fastai(root, n_valid_from, a.epochs, a.batch_size)
        else:
            runs = [run_learnkit(root, n_valid_from, a.epochs, a.batch_size, "ce" if name == "learnkit_ce" else "default",
                                 a.arch, seed) for seed in range(a.seeds)]
            result[name] = runs[0] if a.seeds == 1 else {"runs": runs, "mean_iou": round(
                float(np.mean([r["mean_iou"] for r in runs])), 4)}
        print(name, result[name], flush=True)
    if "fastai" in result and "seconds" in result.get("learnkit", {}):
        result["speedup"] = round(result["fastai"]["seconds"] / result["learnkit"]["seconds"], 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
