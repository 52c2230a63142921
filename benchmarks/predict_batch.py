"""Inference throughput of an exported model: `Predictor.predict_batch` vs a plain `model(x)` loop, in one run.

Command:
    python benchmarks/predict_batch.py --out benchmarks/results/predict_batch_h100.json          # on the GPU
    python benchmarks/predict_batch.py --arch resnet18 --size 224 --n 20000 --out results.json   # a heavier model
    python benchmarks/predict_batch.py --device cpu --n 256 --batch-size 64 --epochs 0 --repeats 2  # CPU smoke run

What is measured:
    A model is built with `vision_learner(data, arch, pretrained=False)` on a folder of PNG images (default: the
    committed Fashion-MNIST sample, 2,000 train / 500 valid, 28 px grey), trained for `--epochs` (0: exported
    untrained, which changes no timing), exported with `learn.export()` and loaded with `load_learner(folder,
    device)`. Inputs are N image paths (the folder's files, cycled when N is larger: repeated files are read
    from the page cache). With `--size` other than 28 the images are upsampled on the device by a
    `BatchResize` batch transform, which is part of the recipe (so inside (i) and (ii), outside (iii)).

    (i)   predict_batch: `predictor.predict_batch(paths, batch_size)`: PNG decoding in the predictor's
          thread pool, batching into pinned memory, host-to-device copies, normalization (+ resize), the model
          under `torch.inference_mode()` and autocast (bf16 on CUDA; none on the CPU), softmax, one copy of
          the probabilities back to the CPU. End to end.
    (ii)  predict_tensors (device): `predictor.predict_tensors(x, batch_size)` on the same images already
          decoded into one uint8 (N, 1, 28, 28) tensor on the device: normalization (+ resize), model,
          softmax, the copy back. (ii-host): the same from a CPU tensor (adds the host-to-device copies).
    (iii) plain loop: `with torch.inference_mode(), torch.autocast(...): for xb in batches: model(xb)` over
          pre-made device batches that are already normalized (+ resized) float32 (channels-last on CUDA,
          as the predictor runs them), outputs dropped. The same model object as the predictor's.

    Every variant runs once as a warm-up (cuDNN autotuning, allocator), then `--repeats` times in rotation;
    each run is bracketed by `torch.cuda.synchronize()`. Reported: the median seconds, samples/s = N / median,
    and the ratios (ii)/(iii) and (i)/(iii) of samples/s (target on the GPU: (ii)/(iii) >= 0.9).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("learnkit") is None:  # not installed (the GPU machine): this checkout's copy
    sys.path.insert(0, str(ROOT))
DEFAULT_FOLDER = ROOT / "datasets" / "fashion-mnist-sample" / "png"


def clock(device: torch.device) -> float:
    """perf_counter after the device's queued work is done, so intervals measure work, not launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def environment(device: torch.device) -> dict[str, Any]:
    import learnkit
    env = {"torch": torch.__version__, "learnkit": learnkit.__version__, "python": platform.python_version(),
           "cpus": len(os.sched_getaffinity(0)), "device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["bf16"] = torch.cuda.is_bf16_supported()
    return env


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.png") if p.is_file())
    if not files:
        raise FileNotFoundError(f"--folder {folder}: no .png files below it")
    return files


def build_predictor(args: argparse.Namespace, device: torch.device, workdir: Path) -> tuple[Any, dict[str, Any]]:
    """Train (or not) and export a vision model on the folder, then load it back as a Predictor."""
    import learnkit as lk
    from learnkit.vision import BatchResize, ImageDataBunch, vision_learner

    lk.set_seed(args.seed)
    batch_tfms = [BatchResize(args.size)] if args.size != 28 else []
    data = ImageDataBunch.from_folder(args.folder, valid=args.valid_name, mode="L", batch_size=args.train_batch_size,
                                      batch_tfms=batch_tfms, seed=args.seed, device=device, verbose=False)
    learn = vision_learner(data, args.arch, pretrained=False, path=workdir, progress=False)
    t = clock(device)
    if args.epochs:
        learn.fit_one_cycle(args.epochs, 1e-3)
    train_s = clock(device) - t
    folder = learn.export("export")
    predictor = lk.load_learner(folder, device=device, num_workers=args.workers)
    info = {"train_s": train_s, "valid": learn.val_results, "loader": data.loader_report,
            "amp_dtype": str(predictor.amp_dtype), "channels_last": predictor.channels_last,
            "decode_threads": predictor.num_workers,
            "card": json.loads((folder / "model_card.json").read_text())["title"]}
    return predictor, info


def time_runs(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """One warm-up call each, then `repeats` rounds in rotation (so drift hits every variant alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = clock(device)
            fn()
            times[name].append(clock(device) - t)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help="PNG folder with train/<class>/ and valid/<class>/ (default: the committed sample)")
    parser.add_argument("--valid-name", default="valid", help="the validation split's folder name (default: valid)")
    parser.add_argument("--arch", default="resnet18", help="vision_learner architecture, from scratch (resnet18)")
    parser.add_argument("--size", type=int, default=28, help="model input size; != 28 adds BatchResize(size)")
    parser.add_argument("--n", type=int, default=20000, help="images to predict (default 20000)")
    parser.add_argument("--batch-size", type=int, default=256, help="inference batch size (default 256)")
    parser.add_argument("--train-batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs before export (0: untrained)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    parser.add_argument("--workers", type=int, default=None, help="predictor decode threads (default: up to 8)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest kernels, for every variant alike

    with tempfile.TemporaryDirectory(prefix="predict_batch_") as tmp:
        predictor, info = build_predictor(args, device, Path(tmp))
    files = image_files(args.folder)
    paths = [files[i % len(files)] for i in range(args.n)]
    bs = args.batch_size

    # Inputs for (ii) and (iii), made once, outside every clock.
    decoded = [predictor.blocks[0].encode(p) for p in paths[:len(files)]]
    for tfm in predictor.item_tfms:
        decoded = [tfm(x) for x in decoded]
    x_host = torch.stack([decoded[i % len(decoded)] for i in range(args.n)])
    x_device = x_host.to(device)
    model = predictor.model
    with torch.inference_mode():
        batches = []
        for i in range(0, args.n, bs):
            xb = x_device[i:i + bs]
            for tfm in predictor.batch_tfms:
                xb = tfm(xb)
            if predictor.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            batches.append(xb.float())

    def plain_loop() -> None:
        with torch.inference_mode(), predictor.autocast():
            for xb in batches:
                model(xb)

    results: dict[str, Any] = {}
    fns = {"predict_batch": lambda: results.__setitem__("i", predictor.predict_batch(paths, bs)[1]),
           "predict_tensors_device": lambda: results.__setitem__("ii", predictor.predict_tensors(x_device, bs)),
           "predict_tensors_host": lambda: predictor.predict_tensors(x_host, bs),
           "plain_loop": plain_loop}
    times = time_runs(fns, device, args.repeats)
    table = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        table[name] = {"median_s": median, "samples_per_s": args.n / median, "runs_s": ts}
    plain = table["plain_loop"]["samples_per_s"]
    ratios = {"predict_tensors_device / plain_loop": table["predict_tensors_device"]["samples_per_s"] / plain,
              "predict_tensors_host / plain_loop": table["predict_tensors_host"]["samples_per_s"] / plain,
              "predict_batch / plain_loop": table["predict_batch"]["samples_per_s"] / plain}
    agreement = {"max_abs_diff_i_vs_ii": float((results["i"] - results["ii"]).abs().max()),
                 "same_argmax": bool(torch.equal(results["i"].argmax(1), results["ii"].argmax(1)))}

    payload = {"environment": environment(device), "args": {k: str(v) for k, v in vars(args).items()},
               "model": info, "results": table, "ratios": ratios, "agreement": agreement}
    print(json.dumps(payload["environment"]))
    print(f"{args.arch} {args.size} px, N={args.n}, batch {bs}, autocast {info['amp_dtype']}, "
          f"channels_last {info['channels_last']}, decode threads {info['decode_threads']}")
    print(f"{'variant':<26}{'median s':>10}{'samples/s':>12}")
    for name, row in table.items():
        print(f"{name:<26}{row['median_s']:>10.4f}{row['samples_per_s']:>12,.0f}")
    for name, value in ratios.items():
        print(f"{name:<40}{value:>6.3f}")
    print(json.dumps(agreement))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
