"""A CPU-sized version of transfer_defaults.py: a small CNN pretrained on five Fashion-MNIST classes (T-shirt, Trouser,
Pullover, Dress, Coat; 2,000 images of each from the full training set) is transferred to the other five (Sandal,
Shirt, Sneaker, Bag, Ankle boot) read as small PNG folders from the committed sample: 20 / 50 / 135 images per
class (100 / 250 / 675; at batch 32 the last is 21 optimizer steps an epoch, as the issue's 1,350-image folder at
64), validated on the sample's 250 validation images of those classes. Same four contenders as
transfer_defaults.py, base_lr 2e-3.

    python benchmarks/transfer_defaults_cpu.py --idx /work/main/.whl/fashion-mnist --out results/x.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PNG = ROOT / "datasets" / "fashion-mnist-sample" / "png"
TARGET = ["Ankle_boot", "Bag", "Sandal", "Shirt", "Sneaker"]  # FMNIST labels 5-9; the body learns 0-4


class SmallNet(nn.Module):
    """Two conv stages and a linear head: three layer groups, as a pretrained body + head."""

    def __init__(self, n_out: int):
        super().__init__()
        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        self.early = nn.Sequential(block(1, 16), block(16, 16), nn.MaxPool2d(2))
        self.late = nn.Sequential(block(16, 32), block(32, 32), nn.MaxPool2d(2), block(32, 64),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.late(self.early(x)))

    def layer_groups(self) -> list[nn.Module]:
        return [self.early, self.late, self.head]


def pretrain(idx: Path, per_class: int, epochs: int) -> dict[str, torch.Tensor]:
    from learnkit import DataBunch, Learner, accuracy, read_idx, set_seed
    set_seed(0)
    images, labels = read_idx(idx / "train-images-idx3-ubyte.gz"), read_idx(idx / "train-labels-idx1-ubyte.gz")
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(5)])
    x, y = images[keep][:, None].float() / 255, labels[keep].long()
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    n_valid = len(x) // 10
    ds = torch.utils.data.TensorDataset
    data = DataBunch(torch.utils.data.DataLoader(ds(x[n_valid:], y[n_valid:]), batch_size=128, shuffle=True),
                     torch.utils.data.DataLoader(ds(x[:n_valid], y[:n_valid]), batch_size=512))
    learn = Learner(data, SmallNet(5), metrics=[accuracy], progress=False)
    learn.fit_one_cycle(epochs, 1e-2)
    print(f"pretrained on 5 classes: valid accuracy {learn.validate()['accuracy']:.3f}", flush=True)
    return {k: v for k, v in learn.model.state_dict().items() if not k.startswith("head.")}


def target_folder(per_class: int, root: Path) -> Path:
    folder = root / f"fmnist5_{per_class}"
    for split, n in (("train", per_class), ("valid", None)):
        for cls in TARGET:
            (folder / split / cls).mkdir(parents=True)
            files = sorted((PNG / split / cls).glob("*.png"), key=lambda p: int(p.stem))
            for f in files[:n]:
                (folder / split / cls / f.name).symlink_to(f.resolve())
    return folder


def run(folder: Path, body: dict, method: str, epochs: int, seed: int, batch_size: int) -> dict:
    from learnkit import Learner, accuracy, set_seed
    from learnkit.vision import ImageDataBunch
    from transfer_defaults import train
    set_seed(seed)
    start = time.perf_counter()
    data = ImageDataBunch.from_folder(folder, mode="L", normalize=None, batch_size=batch_size, seed=seed,
                                      verbose=False)
    model = SmallNet(len(data.classes))
    model.load_state_dict(body, strict=False)
    learn = Learner(data, model, splitter=SmallNet.layer_groups, metrics=[accuracy], progress=False)
    train(learn, method, epochs, base_lr=2e-3)
    report = getattr(learn, "fine_tune_report", {})
    return {"task": folder.name, "train_items": 5 * int(folder.name.split("_")[1]), "batch_size": batch_size,
            "steps_per_epoch": len(data.train_dl), "method": method, "epochs": epochs, "seed": seed,
            "accuracy": round(learn.validate()["accuracy"], 4), "seconds": round(time.perf_counter() - start, 1),
            "head_epochs": report.get("head_epochs"), "restored": report.get("restored"),
            "after_head": report.get("after_head", [None, None])[1] if report.get("after_head") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idx", type=Path, required=True, help="folder with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 50, 135])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from transfer_defaults import METHODS
    body = pretrain(args.idx, per_class=2000, epochs=3)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in args.per_class:
            folder = target_folder(per_class, Path(tmp))
            for epochs in args.epochs:
                for seed in args.seeds:
                    for method in METHODS:
                        results.append(run(folder, body, method, epochs, seed, args.batch_size))
                        print(json.dumps(results[-1]), flush=True)
                        if args.out:
                            args.out.write_text(json.dumps({"device": "cpu (2 shared cores)", "results": results},
                                                           indent=1))


if __name__ == "__main__":
    main()
