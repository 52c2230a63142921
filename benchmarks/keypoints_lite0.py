"""Issue 17's real case: EfficientNet-Lite0 (ImageNet weights) regressing where a Fashion-MNIST item lies on a 64 px
canvas, learnkit's one-liners side by side with a hand-written PyTorch loop on the same model, head and data.

Data (deterministic, in memory): `datasets/build_segmentation_sample.py`'s keypoint canvases (one item scaled 1.0-1.8x
on a smooth random background). Training canvases take their items from the Fashion-MNIST training file, validation
canvases from the test file (no item is in both). Two tasks on the same canvases:

- centre: the item box's centre (x, y) in pixels, `DataBlock((ImageBlock(mode="L"), RegressionBlock()))`;
- corners: the box's 4 corners, `DataBlock((ImageBlock(mode="L"), PointBlock(4)))` (targets in [-1, 1]).

Reported per row: the validation mean absolute error per coordinate in pixels (learnkit's `mae`, in pixels), for
(a) predicting the image centre / the training targets' mean; (b) the hand loop: Lite0's own classifier replaced by
a Linear on its average-pooled features, targets scaled to [-1, 1], MSE, torch AdamW lr 1e-3 with 5% warm-up then
cosine, all layers trained, evaluated in eval mode; (c) `vision_learner(data, "efficientnet_lite0")` then
`fine_tune(3)`, `fine_tune(10)`, and `unfreeze(); fit_one_cycle(E)`, all with defaults.

    python benchmarks/keypoints_lite0.py --quick --out /tmp/kp.json                      # CPU, a few minutes
    python3 benchmarks/keypoints_lite0.py --fmnist DIR --lite0 FILE --seeds 0 1 2 --out benchmarks/results/x.json

`--fmnist DIR` holds train-/t10k-images-idx3-ubyte.gz (default: the full set if installed, else the committed
2,000 + 500-item sample); `--lite0 FILE` is efficientnet-lite0-57934424.pth (default: the PyPI package's).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "datasets"))
from build_segmentation_sample import background, place, read_idx  # noqa: E402  (the generator's own code)

SAMPLE = ROOT / "datasets" / "fashion-mnist-sample"
SIZE = 64


def fmnist_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    from learnkit.core.system_data import system_data_path
    full = system_data_path("/usr/share/datasets/fashion-mnist")
    return full if (Path(full) / "train-images-idx3-ubyte.gz").is_file() else SAMPLE


def canvases(items: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n keypoint canvases as build_segmentation_sample.build makes them: (uint8 (n, 64, 64), boxes (n, 4) x0 y0 x1 y1)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    images, boxes = np.zeros((n, SIZE, SIZE), np.uint8), np.zeros((n, 4), np.float32)
    i = 0
    while i < n:
        canvas, mask = background(rng, SIZE), np.zeros((SIZE, SIZE), np.uint8)
        box = place(rng, canvas, mask, items[int(rng.integers(len(items)))], 0, (1.0, 1.8))
        if box is not None:
            images[i], boxes[i] = canvas, box
            i += 1
    return images, boxes


def build_data(fmnist: Path, n_train: int, n_valid: int, seed: int = 0) -> dict[str, Any]:
    train_items = read_idx(fmnist / "train-images-idx3-ubyte.gz")
    valid_items = read_idx(fmnist / "t10k-images-idx3-ubyte.gz")
    xt, bt = canvases(train_items, n_train, seed)
    xv, bv = canvases(valid_items, n_valid, seed + 1)
    images, boxes = np.concatenate([xt, xv]), np.concatenate([bt, bv])
    x0, y0, x1, y1 = boxes.T
    return {"images": images, "n_train": n_train,
            "centre": np.stack([(x0 + x1) / 2, (y0 + y1) / 2], 1),  # (N, 2) pixels
            "corners": np.stack([np.stack(p, 1) for p in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]], 1)}  # (N, 4, 2)


def mae_px(pred: torch.Tensor, target: np.ndarray) -> float:
    return float((pred.detach().float().cpu().reshape(target.shape) - torch.as_tensor(target)).abs().mean())


def baselines(d: dict, task: str) -> dict[str, float]:
    y, n = d[task], d["n_train"]
    return {"centre of the image": mae_px(torch.full(y[n:].shape, SIZE / 2), y[n:]),
            "mean of the training targets": mae_px(torch.as_tensor(y[:n].mean(0)).expand(y[n:].shape), y[n:])}


# ----------------------------------------------------------------------------------------------------- learnkit
def learnkit_data(d: dict, task: str, device: torch.device, batch_size: int = 64, seed: int = 0):
    from learnkit.data.blocks import RegressionBlock
    from learnkit.data.datablock import DataBlock
    from learnkit.data.splitters import IndexSplitter
    from learnkit.vision.image import ImageBlock
    from learnkit.vision.points import PointBlock
    images, y, n = d["images"], d[task], d["n_train"]
    target = RegressionBlock() if task == "centre" else PointBlock(4)
    block = DataBlock((ImageBlock(mode="L"), target), get_items=lambda _: list(range(len(images))),
                      get_x=lambda i: images[i], get_y=lambda i: y[i], splitter=IndexSplitter(range(n, len(images))))
    return block.databunch(None, batch_size=batch_size, device=device, seed=seed)


def learnkit_run(d: dict, task: str, recipe: str, lite0: Path | None, device: torch.device, seed: int,
                 learner_kwargs: dict | None = None, recipe_kwargs: dict | None = None) -> tuple[torch.Tensor, Any]:
    """recipe 'fine_tune:N' or 'one_cycle:N' (unfreeze, then fit_one_cycle(N)); returns (pixel predictions, learner)."""
    from learnkit import set_seed
    from learnkit.vision.learner import vision_learner
    set_seed(seed)
    data = learnkit_data(d, task, device, seed=seed)
    learn = vision_learner(data, "efficientnet_lite0", weights=lite0, progress=False, **(learner_kwargs or {}))
    name, epochs = recipe.split(":")
    if name == "fine_tune":
        learn.fine_tune(int(epochs), **(recipe_kwargs or {}))
    else:
        learn.unfreeze()
        learn.fit_one_cycle(int(epochs), **(recipe_kwargs or {}))
    preds, _ = learn.get_preds()
    return (preds if task == "centre" else (preds + 1) * SIZE / 2), learn


# ---------------------------------------------------------------------------------------------------- hand loop
def hand_model(n_out: int, lite0: Path | None) -> nn.Module:
    """Lite0 with its ImageNet weights (stem summed to one gray channel), classifier → a fresh Linear(1280, n_out)."""
    from learnkit.vision.efficientnet import EfficientNetLite0, load_efficientnet_lite0_weights
    model = EfficientNetLite0(n_in=1)
    load_efficientnet_lite0_weights(model, lite0)
    model.dropout = nn.Identity()  # as learnkit's regression head: no dropout
    model.classifier = nn.Linear(model.num_features, n_out)
    return model


def hand_run(d: dict, task: str, epochs: int, lite0: Path | None, device: torch.device, seed: int,
             lr: float = 1e-3, batch_size: int = 64, model_fn: Callable[[int], nn.Module] | None = None,
             opt_fn: Callable | None = None, schedule: str = "warmup_cosine") -> torch.Tensor:
    """The loop a careful user writes; returns pixel predictions of the validation canvases."""
    from learnkit.vision.efficientnet import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD
    torch.manual_seed(seed)
    n = d["n_train"]
    mean, std = sum(EFFICIENTNET_LITE0_MEAN) / 3, sum(EFFICIENTNET_LITE0_STD) / 3
    x = (torch.as_tensor(d["images"])[:, None].float().div(255) - mean).div(std).to(device)
    y = (torch.as_tensor(d[task]).reshape(len(x), -1) / (SIZE / 2) - 1).to(device)  # pixels → [-1, 1]
    model = (model_fn or (lambda k: hand_model(k, lite0)))(y.shape[1]).to(device)
    opt = (opt_fn or (lambda p: torch.optim.AdamW(p, lr=lr)))(model.parameters())
    steps, warmup = epochs * (n // batch_size), max(1, round(0.05 * epochs * (n // batch_size)))
    if schedule == "warmup_cosine":
        fn = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))  # noqa: E731
    else:
        fn = lambda s: 1.0  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    amp = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, device=device)[:steps // epochs * batch_size].split(batch_size):
            with amp:
                loss = F.mse_loss(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad(), amp:
        out = torch.cat([model(xb).float() for xb in x[n:].split(256)])
    return (out + 1) * SIZE / 2


# ----------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fmnist", type=Path, default=None, help="folder with train-/t10k-images-idx3-ubyte.gz")
    p.add_argument("--lite0", type=Path, default=None, help="efficientnet-lite0-57934424.pth (default: the package's)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-valid", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10, help="hand loop and unfreeze + fit_one_cycle epochs")
    p.add_argument("--fine-tune", type=int, nargs="*", default=[3, 10], help="fine_tune(N) rows")
    p.add_argument("--tasks", nargs="*", default=["centre", "corners"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--quick", action="store_true", help="CPU size: 600 train / 200 valid, 4 epochs, fine_tune(3)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_valid, args.epochs, args.fine_tune = 600, 200, 4, [3]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source = fmnist_dir(args.fmnist)
    d = build_data(source, args.n_train, args.n_valid)
    rows: list[dict[str, Any]] = []

    def record(task: str, name: str, seed: int | None, error: float, seconds: float) -> None:
        rows.append({"task": task, "row": name, "seed": seed, "mae_px": round(error, 3), "seconds": round(seconds, 1)})
        print(f"{task:8s} {name:42s} seed={seed!s:4s} {error:7.2f} px  {seconds:7.1f} s", flush=True)

    for task in args.tasks:
        y_valid = d[task][args.n_train:]
        for name, value in baselines(d, task).items():
            record(task, name, None, value, 0.0)
        runs: list[tuple[str, Callable[[int], torch.Tensor]]] = [
            (f"hand loop, {args.epochs} epochs", lambda s: hand_run(d, task, args.epochs, args.lite0, device, s))]
        runs += [(f"learnkit fine_tune({k})", lambda s, k=k: learnkit_run(d, task, f"fine_tune:{k}", args.lite0,
                                                                        device, s)[0]) for k in args.fine_tune]
        runs.append((f"learnkit unfreeze; fit_one_cycle({args.epochs})",
                     lambda s: learnkit_run(d, task, f"one_cycle:{args.epochs}", args.lite0, device, s)[0]))
        for name, fn in runs:
            for seed in args.seeds:
                start = time.perf_counter()
                pred = fn(seed)
                record(task, name, seed, mae_px(pred, y_valid), time.perf_counter() - start)
    summary = {}
    for r in rows:
        summary.setdefault((r["task"], r["row"]), []).append(r["mae_px"])
    print(f"\n{'task':8s} {'row':42s} {'mean px':>8s}  per seed")
    for (task, name), values in summary.items():
        print(f"{task:8s} {name:42s} {sum(values) / len(values):8.2f}  {values}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "config": {"fmnist": str(source), "n_train": args.n_train, "n_valid": args.n_valid, "size": SIZE,
                       "epochs": args.epochs, "fine_tune": args.fine_tune, "seeds": args.seeds, "device": str(device),
                       "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
