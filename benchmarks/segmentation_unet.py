"""learnkit unet_learner vs fastai 2.8.12 unet_learner: folder of PNGs → trained, evaluated model, one run each.

The data: a deterministic generator (below) pastes 1-3 Fashion-MNIST items, scaled 1.5-2.5x and tinted, on noisy
128 px canvases; the mask labels each item's pixels with its garment class (1-10, background 0). Written as
images/NNNNN.png and masks/NNNNN.png, with codes.txt. Validation: fastai's split is the last 20% of the files,
learnkit's its own seeded random 20% (`from_folder(valid_pct=0.2)`); the images are generated i.i.d., so both are
samples of the same distribution, but not the same 4,000 images.

Same for both: resnet34 body from scratch (pretrained=False: no internet on the device), batch size, epochs,
one-cycle at lr 1e-3, no augmentation, mixed precision (fastai `to_fp16()`, learnkit's default bf16 autocast),
each library's documented one-liner with its defaults otherwise (learnkit: `SegmentationDataBunch.from_folder` +
`unet_learner`, loss cross-entropy + Dice, CUDA graphs 'auto'; fastai: `DataBlock(ImageBlock, MaskBlock)` +
`unet_learner`, cross-entropy). Each contender runs in a fresh process; its time runs from the file names to the
evaluated model (decoding, loaders, model build, training, validation predictions; imports excluded). Mean IoU is
computed by the same function over both libraries' validation predictions (confusion matrix over all pixels,
classes absent from targets and predictions left out). `--only learnkit_ce` runs learnkit with cross-entropy
alone, to measure the loss choice.

Run (device): python benchmarks/segmentation_unet.py --n 20000 --epochs 4 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # learnkit from this checkout
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
    """learnkit's documented one-liner: `SegmentationDataBunch.from_folder` (images/, masks/, codes.txt) +
    `unet_learner` + `fit_one_cycle`, then the validation predictions. Its split is its own seeded 20%."""
    from learnkit.vision import SegmentationDataBunch, unet_learner
    from learnkit.vision.losses import SegmentationCrossEntropy

    torch.manual_seed(seed)
    t = time.perf_counter()
    data = SegmentationDataBunch.from_folder(root, codes=CODES, valid_pct=0.2, seed=seed, batch_size=batch_size,
                                             verbose=False)
    t_data = time.perf_counter()
    learn = unet_learner(data, arch, pretrained=False, progress=False,
                         loss_fn=SegmentationCrossEntropy() if loss == "ce" else None)
    t_fit = time.perf_counter()
    learn.fit_one_cycle(epochs, 1e-3)
    t_preds = time.perf_counter()
    probs, target = learn.get_preds()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 1), "data_seconds": round(t_data - t, 1),
            "learner_seconds": round(t_fit - t_data, 1), "preds_seconds": round(time.perf_counter() - t_preds, 1),
            "fit_seconds": round(time.perf_counter() - t_fit, 1), "mean_iou": round(mean_iou(probs, target), 4),
            "val_results": learn.val_results, "loss": type(learn.loss_fn).__name__,
            "loader": getattr(data, "loader_report", None), "cuda_graphs": getattr(learn, "cuda_graph_report", None)}


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
    t_preds = time.perf_counter()
    probs, target = learn.get_preds()
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 1), "fit_seconds": round(time.perf_counter() - t_fit, 1),
            "preds_seconds": round(time.perf_counter() - t_preds, 1),
            "mean_iou": round(mean_iou(probs.float(), target), 4), "loss": type(learn.loss_func).__name__}


def worker(a: argparse.Namespace) -> dict:
    root, n_valid_from = Path(a.root), int(a.n * 0.8)
    if a.worker == "fastai":
        import fastai
        return {**run_fastai(root, n_valid_from, a.epochs, a.batch_size), "version": fastai.__version__}
    return run_learnkit(root, n_valid_from, a.epochs, a.batch_size, "ce" if a.worker == "learnkit_ce" else "default",
                        a.arch, a.seed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--root", default="/tmp/fmnist_seg")
    p.add_argument("--fmnist", default="../.whl/fashion-mnist")
    p.add_argument("--only", default="learnkit,fastai")
    p.add_argument("--arch", default="resnet34", help="learnkit-only runs (the loss measurement on a CPU)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results/segmentation_unet_h200.json")
    a = p.parse_args()
    if a.worker:  # one contender in this fresh process; the parent reads the last line
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return
    root = Path(a.root)
    gen_s = generate(root, a.n, a.size, Path(a.fmnist))
    (root / "codes.txt").write_text("\n".join(CODES) + "\n")
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
              "n_images": a.n, "size": a.size, "epochs": a.epochs, "batch_size": a.batch_size, "arch": a.arch,
              "pretrained": False, "generate_seconds": round(gen_s, 1), "command": " ".join(sys.argv),
              "note": "each contender in a fresh process; seconds from the folder on disk to the evaluated model "
                      "(imports excluded); the page cache is warm from the generation for both"}
    base = [sys.executable, __file__, "--n", str(a.n), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
            "--root", a.root, "--arch", a.arch]
    for name in a.only.split(","):
        runs = []
        for seed in range(a.seeds):
            t = time.perf_counter()
            out = subprocess.run(base + ["--worker", name, "--seed", str(seed)], capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not lines:
                print(out.stdout[-3000:], out.stderr[-6000:], flush=True)
                runs.append({"error": out.stderr[-2000:]})
                continue
            runs.append({**json.loads(lines[-1][7:]), "process_seconds": round(time.perf_counter() - t, 1)})
        result[name] = runs[0] if a.seeds == 1 else {"runs": runs, "mean_iou": round(
            float(np.mean([r.get("mean_iou", float("nan")) for r in runs])), 4)}
        print(name, result[name], flush=True)
    if "seconds" in result.get("fastai", {}) and "seconds" in result.get("learnkit", {}):
        result["speedup"] = round(result["fastai"]["seconds"] / result["learnkit"]["seconds"], 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
