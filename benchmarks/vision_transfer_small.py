"""Real transfer on few images: EfficientNet-Lite0 with its ImageNet weights vs the same network from scratch,
on 30 Fashion-MNIST images per class (300) from the committed PNG sample, evaluated on its 500 valid images.

    python benchmarks/vision_transfer_small.py [--sizes 64 96] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PNG = ROOT / "datasets" / "fashion-mnist-sample" / "png"


def run(size: int, pretrained: bool, per_class: int, epochs: int, lr: float, seed: int) -> dict:
    from learnkit import set_seed
    from learnkit.vision import BatchResize, ImageDataBunch, vision_learner
    set_seed(seed)
    train = []
    for folder in sorted((PNG / "train").iterdir()):
        train += sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:per_class]
    valid = sorted((PNG / "valid").rglob("*.png"))
    files = train + valid
    labels = [f.parent.name for f in files]
    start = time.perf_counter()
    data = ImageDataBunch._build(files, labels, list(range(len(train))), list(range(len(train), len(files))),
                                 batch_size=32, seed=seed, batch_tfms=[BatchResize(size)], verbose=False)
    learn = vision_learner(data, "efficientnet_lite0", pretrained=pretrained, progress=False)
    if pretrained:
        learn.fine_tune(epochs - 1, base_lr=lr)
    else:
        learn.fit_one_cycle(epochs, lr)
    accuracy = learn.validate()["accuracy"]
    return {"size": size, "pretrained": pretrained, "train_items": len(train), "epochs": epochs, "lr": lr,
            "seed": seed, "accuracy": round(accuracy, 4), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lrs", type=float, nargs="+", default=[4e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        for lr in args.lrs:
            for seed in args.seeds:
                for pretrained in (True, False):
                    results.append(run(size, pretrained, args.per_class, args.epochs, lr, seed))
                    print(json.dumps(results[-1]), flush=True)
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
