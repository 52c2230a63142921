"""Does one `fine_tune(epochs)` with default arguments win on small data? Against training the head alone on the
frozen body, fastai's one-epoch head phase (learnkit's old default), and a full fine-tune from the start; plus
LoRA against full fine-tuning for a transformer.

Image folders: 30 / 60 / 135 Fashion-MNIST images per class (300 / 600 / 1,350) from the committed PNG sample, 64 px,
its 500 validation images; EfficientNet-Lite0 with ImageNet weights. Text: the 6-class fortunes split with
all-MiniLM-L6-v2.

    python benchmarks/transfer_defaults.py --lite0 efficientnet-lite0.pth --minilm DIR --csv fortunes.csv \
        --out results.json [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PNG = ROOT / "datasets" / "fashion-mnist-sample" / "png"
METHODS = ("head_only", "fastai_head_1_epoch", "default", "full")


def image_folder(per_class: int, root: Path, png: Path = PNG) -> Path:
    """A train/valid folder of symlinks: the first `per_class` training images of each class, all valid images."""
    folder = root / f"fmnist_{per_class}"
    for cls in sorted((png / "train").iterdir()):
        (folder / "train" / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.glob("*.png"), key=lambda p: int(p.stem))[:per_class]:
            (folder / "train" / cls.name / f.name).symlink_to(f.resolve())
    (folder / "valid").symlink_to((png / "valid").resolve())
    return folder


def train(learn, method: str, epochs: int, base_lr: float, lora: int | None = None) -> None:
    """The four contenders with the same base rate: `fine_tune`'s unfrozen phase and the full fine-tune use
    slice(base_lr / 200, base_lr / 2), the head-only run base_lr."""
    if method == "head_only":
        learn.freeze()
        learn.fit_one_cycle(epochs, base_lr)
    elif method == "fastai_head_1_epoch":
        learn.fine_tune(epochs, base_lr=base_lr, freeze_epochs=1, keep_best=False)
    elif method == "default":
        learn.fine_tune(epochs, base_lr=base_lr, lora=lora)
    else:
        learn.unfreeze()
        learn.fit_one_cycle(epochs, slice(base_lr / 200, base_lr / 2), pct_start=0.3, div_factor=5.0)


def peak_memory() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_vision(folder: Path, lite0: str | None, method: str, epochs: int, seed: int, per_class: int,
               size: int = 64, batch_size: int = 64) -> dict:
    from learnkit import set_seed
    from learnkit.vision import ImageDataBunch, Resize, vision_learner
    set_seed(seed)
    start = time.perf_counter()
    data = ImageDataBunch.from_folder(folder, item_tfms=[Resize(size)], batch_size=batch_size, seed=seed, verbose=False)
    learn = vision_learner(data, "efficientnet_lite0", weights=lite0, progress=False)
    train(learn, method, epochs, base_lr=2e-3)
    report = getattr(learn, "fine_tune_report", {})
    return {"task": folder.name, "train_items": 10 * per_class, "size": size, "batch_size": batch_size,
            "steps_per_epoch": len(data.train_dl), "method": method, "epochs": epochs, "seed": seed,
            "accuracy": round(learn.validate()["accuracy"], 4), "seconds": round(time.perf_counter() - start, 1),
            "head_epochs": report.get("head_epochs"), "restored": report.get("restored")}


def fortunes(csv_path: str) -> tuple[list[str], list[str], list[int]]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    from learnkit.data.splitters import is_valid_flag
    return [r["text"] for r in rows], [r["label"] for r in rows], [i for i, r in enumerate(rows)
                                                                   if is_valid_flag(r["is_valid"])]


def run_text(minilm: str, csv_path: str, method: str, epochs: int, seed: int, arch: str = "bert",
             lora: int | None = None) -> dict:
    from learnkit import set_seed
    from learnkit.text import TextDataBunch, text_classifier_learner
    set_seed(seed)
    texts, labels, valid = fortunes(csv_path)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    data = TextDataBunch.from_lists(texts, labels, valid_idx=valid, batch_size=32, seed=seed)
    learn = text_classifier_learner(data, arch, weights=minilm, max_len=128, progress=False)
    total = sum(p.numel() for p in learn.model.parameters())
    train(learn, method, epochs, base_lr=2e-3, lora=lora)
    trainable = getattr(learn, "lora_report", {}).get("trainable_params", total if method != "head_only" else
                                                        sum(p.numel() for p in learn.layer_groups[-1].parameters()))
    report = getattr(learn, "fine_tune_report", {})
    return {"task": "fortunes", "model": f"all-MiniLM-L6-v2 ({arch})", "method": method + (f"+lora{lora}" if lora
            else ""), "epochs": epochs, "seed": seed, "accuracy": round(learn.validate()["accuracy"], 4),
            "seconds": round(time.perf_counter() - start, 1), "trainable_params": trainable, "total_params": total,
            "peak_gpu_mib": peak_memory(), "head_epochs": report.get("head_epochs"),
            "restored": report.get("restored")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lite0", default=None, help="EfficientNet-Lite0 weights file (default: the package's)")
    parser.add_argument("--png", type=Path, default=PNG, help="the Fashion-MNIST PNG sample (train/, valid/)")
    parser.add_argument("--minilm"), parser.add_argument("--csv")
    parser.add_argument("--per-class", type=int, nargs="+", default=[30, 60, 135])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--text-train", type=int, default=None, help="use only this many training texts")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--text-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", choices=["vision", "text"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []

    def record(row: dict) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                            else "cpu", "results": results}, indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "vision"):
            for per_class in args.per_class:
                folder = image_folder(per_class, Path(tmp), args.png)
                for epochs in args.epochs:
                    for seed in args.seeds:
                        for method in METHODS:
                            record(run_vision(folder, args.lite0, method, epochs, seed, per_class, args.size,
                                              args.batch_size))
    if args.only in (None, "text") and args.minilm:
        for seed in args.seeds:
            for method in METHODS:
                record(run_text(args.minilm, args.csv, method, args.text_epochs, seed))
            record(run_text(args.minilm, args.csv, "default", args.text_epochs, seed, lora=8))


if __name__ == "__main__":
    main()
