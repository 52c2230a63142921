"""Data-parallel scaling: the same learnkit script on 1 and on N GPUs (torchrun), Fashion-MNIST from a PNG folder.

Command (on a machine with 2 GPUs):
    python benchmarks/ddp_scaling.py --gpus 1,2 --folder /tmp/fmnist-png --source .whl/fashion-mnist \
        --out benchmarks/results/ddp_scaling.json

The driver writes the PNG folder (benchmarks/fmnist_png.py) if needed, then for each GPU count launches
`python -m torch.distributed.run --standalone --nproc_per_node=K benchmarks/ddp_scaling.py --worker ...`, one
after the other, and prints a table and the speed-up of each count over 1 GPU.

The worker is an unmodified learnkit one-liner script: `ImageDataBunch.from_folder` (GPU-resident path; under
torchrun each rank keeps its 1/K shard) → `vision_learner("resnet18", pretrained=False)` → `fit_one_cycle`.
The batch size is per GPU (256), so K GPUs take K x 256 images per step and run 1/K of the steps; the learning
rate is the same. Measured on rank 0, every reading bracketed by torch.cuda.synchronize:
    - train s: the training phases of fit (validation excluded), summed over epochs;
    - train img/s: images stepped on by all ranks / train s (the throughput that scaling is about);
    - fit s: the whole fit, validation included; data s: building the DataBunch (decoding on every rank);
    - test accuracy: learnkit's validation, summed over the ranks' shards (the whole test set).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def worker(args: argparse.Namespace) -> None:
    import torch
    from learnkit import Callback, set_seed
    from learnkit.vision import ImageDataBunch, vision_learner

    class TrainClock(Callback):
        def before_fit(self, learn):
            self.seconds, self.batches = 0.0, 0

        def before_train(self, learn):
            _sync()
            self.start = time.perf_counter()

        def after_batch(self, learn):
            self.batches += learn.training

        def after_train(self, learn):
            _sync()
            self.seconds += time.perf_counter() - self.start

    set_seed(args.seed)
    start = time.perf_counter()
    data = ImageDataBunch.from_folder(args.folder, train="train", valid=args.valid_name, batch_size=args.batch_size,
                                      mode="L", seed=args.seed)
    _sync()
    data_s = time.perf_counter() - start
    clock = TrainClock()
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False, callbacks=[clock])
    start = time.perf_counter()
    learn.fit_one_cycle(args.epochs, args.max_lr)
    _sync()
    fit_s = time.perf_counter() - start
    world = learn.dist.world_size if learn.dist is not None else 1
    images = clock.batches * args.batch_size * world
    result = {"gpus": world, "data_s": data_s, "fit_s": fit_s, "train_s": clock.seconds,
              "train_img_s": images / clock.seconds, "images_stepped": images,
              "steps_per_rank": clock.batches, "test_accuracy": learn.val_results["accuracy"],
              "test_loss": learn.val_results["valid_loss"], "loader": data.loader_report,
              "amp": str(learn.amp_dtype), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "peak_gpu_gib_rank0": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    if learn.dist is None or learn.dist.is_main:
        Path(args.result).write_text(json.dumps(result, indent=1))
    if learn.dist is not None:
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/fmnist-png"))
    parser.add_argument("--valid-name", default="test", help="'valid' for datasets/fashion-mnist-sample/png")
    parser.add_argument("--source", type=Path, default=None, help="IDX files to write the folder from if needed")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256, help="per GPU")
    parser.add_argument("--max-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    if args.source is not None:
        sys.path.insert(0, str(HERE))
        import fmnist_png
        fmnist_png.write_png_folder(args.folder, args.source, len(os.sched_getaffinity(0)))
    rows = []
    for k in [int(v) for v in args.gpus.split(",")]:
        result_file = Path(f"/tmp/ddp_scaling_{k}.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}", __file__,
               "--worker", "--result", str(result_file), "--folder", str(args.folder), "--valid-name", args.valid_name, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--max-lr", str(args.max_lr), "--seed", str(args.seed)]
        env = {key: v for key, v in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:])
            raise SystemExit(f"{k} GPU run failed (exit {proc.returncode})")
        row = json.loads(result_file.read_text())
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
    base = rows[0]["train_img_s"]
    print(f"{'GPUs':>4} {'data s':>7} {'fit s':>7} {'train s':>8} {'train img/s':>12} {'speed-up':>9} {'test acc':>9}")
    for r in rows:
        r["speedup_vs_first"] = r["train_img_s"] / base
        print(f"{r['gpus']:>4} {r['data_s']:>7.1f} {r['fit_s']:>7.1f} {r['train_s']:>8.1f} {r['train_img_s']:>12,.0f} "
              f"{r['speedup_vs_first']:>8.2f}x {r['test_accuracy']:>9.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
