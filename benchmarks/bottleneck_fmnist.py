"""What `learn.profile()` says about the two loader paths: the Fashion-MNIST PNG folder with the GPU-resident
path vs DataLoader workers, the same resnet18 (28 px, batch 256, bf16).

    python benchmarks/bottleneck_fmnist.py --folder /tmp/fmnist-png [--batches 150]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/fmnist-png"))
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from learnkit import set_seed
    from learnkit.vision import ImageDataBunch, vision_learner
    results = {}
    for resident in (True, False):
        set_seed(0)
        data = ImageDataBunch.from_folder(args.folder, valid="test", mode="L", batch_size=256, seed=0,
                                          resident=resident)
        learn = vision_learner(data, "resnet18", pretrained=False, progress=False)
        learn.profile(10)  # warm-up: cuDNN autotuning, worker start
        report = learn.profile(args.batches)
        results[data.loader_kind] = report
        print(data.loader_kind, json.dumps(report, default=str))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
