"""The Fashion-MNIST speed recipe: PNG folder → trained → evaluated, aiming at >= 94.0 % test accuracy in
<= 30 s end to end on one H100.

    python benchmarks/fmnist_recipe.py --folder /tmp/fmnist-png [--epochs 12] [--out results.json]

The clock starts before the folder is read and stops after the test-set evaluation. The recipe: the
GPU-resident path (60,000 PNGs decoded once, kept as uint8 on the GPU), learnkit's `resnet9`, batch 512,
flip + small zoom/shift augmentation in one grid_sample per batch, label smoothing, one-cycle AdamW, bf16,
and flip TTA at the end.
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
sys.path.insert(0, str(ROOT / "benchmarks"))


def recipe(folder: Path, epochs: int, max_lr: float, batch_size: int, seed: int, widths: list[int],
           use_tta: bool = True, valid_name: str = "test") -> dict:
    from learnkit import set_seed
    from learnkit.vision import ImageDataBunch, LabelSmoothingCrossEntropy, aug_transforms, tta, vision_learner

    torch.cuda.synchronize() if torch.cuda.is_available() else None
    start = time.perf_counter()
    set_seed(seed)
    data = ImageDataBunch.from_folder(folder, train="train", valid=valid_name, mode="L", batch_size=batch_size,
                                      seed=seed, batch_tfms=aug_transforms(max_rotate=0.0, max_warp=0.0,
                                                                           max_lighting=0.0, p_affine=0.5))
    loaded = time.perf_counter()
    learn = vision_learner(data, "resnet9", pretrained=False, loss_fn=LabelSmoothingCrossEntropy(0.1),
                           progress=False)
    if widths:
        from learnkit import create_model
        learn.model = create_model("resnet9", n_in=1, n_out=10, widths=widths).to(data.device)
        learn.opt = None
        learn.layer_groups = learn._make_layer_groups()
    learn.fit_one_cycle(epochs, max_lr)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    fitted = time.perf_counter()
    plain = learn.validate()["accuracy"]
    result = {"accuracy": plain}
    if use_tta:
        result.update({k: v for k, v in tta(learn, n=1).items() if k in ("accuracy", "tta_accuracy")})
    end = time.perf_counter()
    result.update({"epochs": epochs, "max_lr": max_lr, "batch_size": batch_size, "seed": seed,
                   "widths": widths or [64, 128, 256, 512], "load_s": round(loaded - start, 2),
                   "fit_s": round(fitted - loaded, 2), "end_to_end_s": round(end - start, 2),
                   "loader": data.loader_report, "device": torch.cuda.get_device_name() if torch.cuda.is_available()
                   else "cpu"})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/fmnist-png"))
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                        help="the four IDX files the PNG folder is written from (when not there yet)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--max-lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widths", type=int, nargs=4, default=None)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--valid-name", default="test", help="'valid' for the committed sample (a smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.valid_name == "test":
        from fmnist_png import write_png_folder
        write_png_folder(args.folder, source=args.source)
    result = recipe(args.folder, args.epochs, args.max_lr, args.batch_size, args.seed, args.widths or [],
                    not args.no_tta, args.valid_name)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
