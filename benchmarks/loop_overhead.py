"""Loop overhead: learnkit's `Learner.fit_one_cycle` against a hand-written PyTorch loop.

Command:
    python benchmarks/loop_overhead.py --size both            # on a GPU (the figures worth reporting)
    python benchmarks/loop_overhead.py --quick --size both    # CPU smoke run: tiny models, few batches
    python benchmarks/loop_overhead.py --size small --json results.json

What is measured:
    Both loops train the same model (same initial weights) on the same list of batches, which are
    made once and already live on the device, so data loading and host-to-device copies are out of the
    picture: what is left is the step itself plus whatever the loop adds around it.

    (a) hand-written: torch.optim.AdamW (betas 0.9/0.99, eps 1e-5, weight decay 0.01 on weights and 0 on
        biases/norm parameters, fused on CUDA), OneCycleLR stepped per batch with cycle_momentum,
        bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), zero_grad(set_to_none=True),
        no .item() in the loop. This is what learnkit's defaults amount to.
    (b) learnkit: Learner(data, model, metrics=(), progress=False/True) then fit_one_cycle(epochs, max_lr)
        with the default callbacks (History, and ProgressBar when progress=True). No validation runs
        (valid_dl is empty). Learner construction, the optimizer's creation and the pre-flight check are
        one-off costs per Learner and are done before the clock starts; the hand-written loop likewise
        builds its optimizer before the clock.

    Each variant first runs once on a few batches (warm-up: CUDA context, cuBLAS/cuDNN handles, autotuning,
    imports; excluded). Then the variants alternate (hand, learnkit, learnkit+progress, hand, ...) for
    --repeats rounds; every timed run is bracketed by torch.cuda.synchronize(). Reported per variant: the
    median time per batch over the rounds, the spread of the rounds, the ratio learnkit / hand-written,
    overhead % = (ratio - 1) * 100, and on CUDA the peak memory (torch.cuda.max_memory_allocated) of a run.

    Sizes: 'small' is an MLP (1024 -> 3 x 512 -> 10, batch 256) whose step is a few hundred microseconds of
    GPU work, so the Python around it dominates and any per-batch overhead shows. 'large' is a ResNet-18-like
    conv net on 3x64x64 inputs, batch 256, whose step is tens of milliseconds on an H100: compute-dominated,
    the overhead should vanish in the noise.

Without fastprogress installed, progress=True cannot run (its ProgressBar imports fastprogress when a fit
starts); the script then measures progress=False only and says so.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

try:
    from learnkit import CategoryBlock, DataBunch, Learner, TensorBlock
except ImportError:  # run from a checkout where learnkit is not installed: use the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from learnkit import CategoryBlock, DataBunch, Learner, TensorBlock

N_CLASSES = 10

# Model and batch sizes. 'quick' versions are for a CPU smoke run only; their timings mean nothing.
SIZES: dict[str, dict[str, Any]] = {
    "small": {"kind": "mlp", "n_in": 1024, "hidden": [512, 512, 512], "batch_size": 256},
    "large": {"kind": "resnet", "image": 64, "widths": [64, 128, 256, 512], "blocks": 2, "batch_size": 256},
}
QUICK_SIZES: dict[str, dict[str, Any]] = {
    "small": {"kind": "mlp", "n_in": 64, "hidden": [64, 64, 64], "batch_size": 32},
    "large": {"kind": "resnet", "image": 16, "widths": [8, 16, 32, 64], "blocks": 1, "batch_size": 16},
}


# ---------------------------------------------------------------------------------------------- data and models
class DeviceBatches:
    """A loader over batches that already live on the device: iterates them in order, has a length.

    That is the whole contract `Learner` needs from `data.train_dl` (what `torch.utils.data.DataLoader`
    would yield, minus the loading).
    """

    def __init__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        self.batches = list(batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_batches(cfg: dict, n_batches: int, device: torch.device, seed: int,
                 n_unique: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` (input, target) pairs on `device`, cycling through `n_unique` distinct ones: the timings
    do not depend on the values, and the large size would otherwise hold gigabytes of inputs."""
    g = torch.Generator().manual_seed(seed)
    shape = (cfg["n_in"],) if cfg["kind"] == "mlp" else (3, cfg["image"], cfg["image"])
    unique = []
    for _ in range(min(n_unique, n_batches)):
        x = torch.randn(cfg["batch_size"], *shape, generator=g)
        y = torch.randint(0, N_CLASSES, (cfg["batch_size"],), generator=g)
        unique.append((x.to(device), y.to(device)))
    return [unique[i % len(unique)] for i in range(n_batches)]


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convs with BatchNorm, plus a (projected when needed) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def make_model(cfg: dict) -> nn.Module:
    if cfg["kind"] == "mlp":
        layers: list[nn.Module] = []
        width = cfg["n_in"]
        for h in cfg["hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, N_CLASSES))
    widths = cfg["widths"]
    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(cfg["blocks"]):
            layers.append(BasicBlock(c, w, stride=2 if i > 0 and j == 0 else 1))
            c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, N_CLASSES))


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """What learnkit's mixed_precision='auto' picks: bf16 (fp16 without bf16) on CUDA, off elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------------------------------------- the two loops
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def run_hand(init: dict, cfg: dict, batches: list, device: torch.device, epochs: int,
             max_lr: float) -> tuple[float, int | None]:
    """The plain-PyTorch loop. Returns (seconds for all batches, peak bytes allocated)."""
    _fresh_memory(device)
    model = make_model(cfg)
    model.load_state_dict(init)
    model.to(device)
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for p in m.parameters(recurse=False)}
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in norm_params]
    no_decay = [p for p in model.parameters() if not (p.ndim > 1 and id(p) not in norm_params)]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=max_lr,
                            betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
                            fused=True if device.type == "cuda" else None)
    dtype = amp_dtype(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    _sync(device)
    start = time.perf_counter()
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=epochs * len(batches), pct_start=0.25, anneal_strategy="cos",
        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e5)
    for _ in range(epochs):
        for xb, yb in batches:
            with autocast:
                loss = loss_fn(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, _peak(device)


def run_learnkit(init: dict, cfg: dict, batches: list, device: torch.device, epochs: int, max_lr: float,
                 progress: bool) -> tuple[float, int | None]:
    """learnkit's Learner with its defaults. Returns (seconds for all batches, peak bytes allocated)."""
    _fresh_memory(device)
    model = make_model(cfg)
    model.load_state_dict(init)
    data = DataBunch(DeviceBatches(batches), DeviceBatches([]),
                     blocks=[TensorBlock(), CategoryBlock(list(range(N_CLASSES)))], device=device)
    learn = Learner(data, model, metrics=(), progress=progress)
    learn.create_opt()  # one-off per Learner, like the hand-written loop's optimizer: outside the clock
    learn.check()
    # The bar redraws at most every 0.5 s, so where its text goes does not change the timing; keep it off
    # the terminal so that the results stay readable.
    out = contextlib.redirect_stdout(io.StringIO()) if progress else contextlib.nullcontext()

    _sync(device)
    start = time.perf_counter()
    with out:
        learn.fit_one_cycle(epochs, max_lr)
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, _peak(device)


# ---------------------------------------------------------------------------------------------- driver
def measure_size(name: str, cfg: dict, device: torch.device, args: argparse.Namespace,
                 with_progress: bool) -> list[dict]:
    torch.manual_seed(args.seed)
    init = {k: v.clone() for k, v in make_model(cfg).state_dict().items()}
    batches = make_batches(cfg, args.batches, device, args.seed)
    warmup = batches[:max(1, args.warmup_batches)]
    n = args.epochs * len(batches)

    variants: dict[str, Callable[[list, int], tuple[float, int | None]]] = {
        "hand": lambda b, e: run_hand(init, cfg, b, device, e, args.max_lr),
        "learnkit": lambda b, e: run_learnkit(init, cfg, b, device, e, args.max_lr, progress=False),
    }
    if with_progress:
        variants["learnkit+progress"] = lambda b, e: run_learnkit(init, cfg, b, device, e, args.max_lr,
                                                                   progress=True)
    for fn in variants.values():
        fn(warmup, 1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, int | None] = {k: None for k in variants}
    for r in range(args.repeats):
        for key, fn in variants.items():
            seconds, peak = fn(batches, args.epochs)
            times[key].append(seconds * 1000 / n)
            if peak is not None:
                peaks[key] = max(peaks[key] or 0, peak)
        print(f"  [{name}] round {r + 1}/{args.repeats}: "
              + ", ".join(f"{k} {v[-1]:.3f} ms/batch" for k, v in times.items()), flush=True)

    hand = statistics.median(times["hand"])
    hand_best = min(times["hand"])
    rows = []
    for key in variants:
        ms = statistics.median(times[key])
        ratio = ms / hand
        # Noise (other processes, clocks) only ever adds time: the best round is the cleanest estimate
        # of the steady-state cost, so the overhead is also given best against best.
        best = min(times[key])
        rows.append({"size": name, "variant": key, "ms_per_batch": ms, "runs_ms_per_batch": times[key],
                     "best_ms_per_batch": best, "overhead_best_pct": (best / hand_best - 1) * 100,
                     "spread_pct": (max(times[key]) - min(times[key])) / ms * 100, "ratio": ratio,
                     "overhead_pct": (ratio - 1) * 100, "peak_mib": None if peaks[key] is None
                     else peaks[key] / 2**20, "batches": len(batches), "epochs": args.epochs,
                     "config": cfg})
    return rows


def print_table(rows: list[dict], header: dict) -> None:
    print()
    print(f"device: {header['device_name']} | torch {header['torch']} | python {header['python']} | "
          f"autocast: {header['amp']} | {header['batches']} batches x {header['epochs']} epoch(s), "
          f"median of {header['repeats']} rounds")
    cols = (f"{'size':<6} {'variant':<18} {'ms/batch':>9} {'spread%':>8} {'ratio':>7} {'overhead%':>10} "
            f"{'best ms':>8} {'best ovh%':>10} {'peak MiB':>9}")
    print(cols)
    print("-" * len(cols))
    for r in rows:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"{r['size']:<6} {r['variant']:<18} {r['ms_per_batch']:>9.3f} {r['spread_pct']:>8.1f} "
              f"{r['ratio']:>7.3f} {r['overhead_pct']:>+10.1f} {r['best_ms_per_batch']:>8.3f} "
              f"{r['overhead_best_pct']:>+10.1f} {peak:>9}")
    print("(ratio and overhead% are relative to 'hand' of the same size; spread% = (max - min) / median "
          "over the rounds;\n best = fastest round of each variant, best ovh% = best against the hand loop's best)")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["small", "large", "both"], default="both")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch (default 200; 10 with --quick)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; 2 with --quick)")
    parser.add_argument("--warmup-batches", type=int, default=None, help="default 20; 2 with --quick")
    parser.add_argument("--max-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny models and few batches (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="skip the progress=True variant")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 with --quick on the CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.batches = args.batches or (10 if args.quick else 200)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.warmup_batches = args.warmup_batches or (2 if args.quick else 20)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads is None and args.quick and device.type == "cpu":
        args.threads = 1  # a smoke run on a shared machine: several threads per process only add contention
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with_progress = not args.no_progress
    if with_progress and importlib.util.find_spec("fastprogress") is None:
        print("note: fastprogress is not installed, so Learner(progress=True) cannot run here; measuring "
              "progress=False only (install or carry the fastprogress wheel to measure the bar too).")
        with_progress = False
    sizes = QUICK_SIZES if args.quick else SIZES
    names = ["small", "large"] if args.size == "both" else [args.size]
    dtype = amp_dtype(device)
    header = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "torch": torch.__version__, "python": platform.python_version(),
              "amp": str(dtype).replace("torch.", "") if dtype else "off", "batches": args.batches,
              "epochs": args.epochs, "repeats": args.repeats, "quick": args.quick}
    if args.quick:
        print("note: --quick uses tiny models; the figures only show that the script runs.")
    rows: list[dict] = []
    for name in names:
        print(f"measuring '{name}': {sizes[name]}", flush=True)
        rows += measure_size(name, sizes[name], device, args, with_progress)
    print_table(rows, header)
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
