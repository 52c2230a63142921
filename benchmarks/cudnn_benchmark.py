"""Does `cudnn.benchmark` pay, and where? vision_learner turns it on for its learner's fits only (CUDA); this
times the same fit with `cudnn_benchmark=True` and `False`, each in a fresh process, at two image sizes.

    python benchmarks/cudnn_benchmark.py --folder /tmp/fmnist-png --source .whl/fashion-mnist

Reported per run: the first epoch (includes cuDNN's autotuning when on), the later epochs, and test accuracy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_run(folder: str, arch: str, size: int, benchmark: bool, epochs: int) -> dict:
    import torch
    from learnkit import Callback, set_seed
    from learnkit.vision import BatchResize, ImageDataBunch, vision_learner

    class EpochTimes(Callback):
        def __init__(self):
            self.times = []

        def before_epoch(self, learn):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def after_epoch(self, learn):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    set_seed(0)
    data = ImageDataBunch.from_folder(folder, valid="test", mode="L", batch_size=256, seed=0, verbose=False,
                                      batch_tfms=[BatchResize(size)] if size != 28 else [])
    timer = EpochTimes()
    learn = vision_learner(data, arch, pretrained=False, progress=False, callbacks=[timer],
                           cudnn_benchmark=benchmark)
    learn.fit_one_cycle(epochs, 1e-3)
    return {"arch": arch, "size": size, "cudnn_benchmark": benchmark, "first_epoch_s": timer.times[0],
            "later_epoch_s": sum(timer.times[1:]) / max(1, len(timer.times) - 1),
            "accuracy": learn.val_results.get("accuracy"),
            "flag_after_fit": torch.backends.cudnn.benchmark}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/fmnist-png")
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.one:
        arch, size, bench, epochs = args.one.split(",")
        print(json.dumps(one_run(args.folder, arch, int(size), bench == "1", int(epochs))))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fmnist_png
    fmnist_png.write_png_folder(args.folder, args.source)
    results = []
    for arch, size, epochs in (("resnet18", 28, 3), ("resnet34", 128, 2)):
        for bench in (1, 0, 1, 0):
            out = subprocess.run([sys.executable, __file__, "--folder", args.folder, "--one",
                                  f"{arch},{size},{bench},{epochs}"], capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{arch} {size:>3} px cudnn.benchmark={bool(bench)!s:5}: first epoch {r['first_epoch_s']:.2f} s, "
                  f"later {r['later_epoch_s']:.2f} s/epoch, acc {r['accuracy']:.4f}, flag after fit "
                  f"{r['flag_after_fit']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
