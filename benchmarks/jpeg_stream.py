"""A JPEG folder too large to be made resident, resnet34 at 224 px: images per second and GPU utilisation of
learnkit's default path (device decode: nvJPEG), learnkit on Pillow workers, fastai's `from_folder`, and a
hand-written torch DataLoader with Pillow workers. Issue #18.

Command (on the GPU; ~8 minutes on an H200 with 16 cores at the defaults):
    python benchmarks/jpeg_stream.py --out benchmarks/results/jpeg_stream_h200.json
    python benchmarks/jpeg_stream.py --quick            # CPU smoke run (device_decode=True on the CPU), ~1 min

Data: `--n` training images (default 100,000) + n/20 validation images, written once to `--data` as
`train/<class>/<i>.jpg` and `valid/<class>/<i>.jpg`: Fashion-MNIST items (read from `--source`, default
`.whl/fashion-mnist/`, else the sample that ships with learnkit) upsampled (bicubic) to a random 256-320 px, a random
256 px crop, a random colour tint and Gaussian noise (sigma 8), RGB, JPEG quality 90; image i is a pure function of
(seed, i), written by a process pool over all cores. A folder that holds a matching `_done` marker is reused.

Contenders, each in a fresh subprocess (its own CUDA context, page cache as the previous one left it):
- learnkit: `ImageDataBunch.from_folder(item_tfms=Resize(224), batch_size=256, resident=False, device_decode=True)` (resident=False
  stands for "does not fit": at 100,000 images the uint8 tensor would fit an H200), `vision_learner(resnet34,
  pretrained=False)` (bf16, channels_last), `fit_one_cycle(1)`; the path `data.loader_report` names is recorded.
- learnkit-cold: the same, with the page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`) after the data is built
  and before the clock starts; whether the drop worked is recorded.
  On CUDA with 8+ cores its batches are decoded on the host by worker processes (`DecodeLoader(num_workers=cores-1)`).
- learnkit-nvjpeg: the same with `num_workers=0`: reader threads and nvJPEG on the GPU (the default until the
  worker processes measured faster while a model trains: jpeg_stream_variants.py).
- learnkit-workers: the same with `device_decode=False` (Pillow in DataLoader workers). 'auto' chose these until
  the reader threads were chunked (the first H200 run measured them faster: 4,579 vs 3,259 images/s); since then
  'auto' on CUDA is the device-decode path (5,638 vs 3,859, results/jpeg_stream_h200_stop23.json).
- fastai: 2.8.12 `ImageDataLoaders.from_folder(item_tfms=Resize(224), bs=256, num_workers=cores)`,
  `vision_learner(dls, resnet34, pretrained=False)`, bf16 (`to_bf16`, else `to_fp16`), channels_last when
  fastai has it, `fit_one_cycle(1)` without bars or logging.
- torch: ImageFolder-style dataset, Pillow `Resize(224)` + `ToTensor`, DataLoader(workers = cores, pin_memory,
  persistent), torchvision resnet34, AdamW + OneCycleLR, bf16 autocast, channels_last.

Timing: training batches after `--warmup` (default 20) up to `--limit-batches` (default 150), bracketed by
`torch.cuda.synchronize()`; validation is skipped. GPU utilisation: `pynvml` sampled every 0.2 s over the timed
region (mean). "data only": the same loader iterated for the same batches without the model (batch moved to the GPU
and normalized there), the loader's ceiling. The table is printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTENDERS = ("learnkit", "learnkit-cold", "learnkit-nvjpeg", "learnkit-workers", "fastai", "torch")


# ----------------------------------------------------------------------------------------------- the data
def _source(arg: str | None) -> Path:
    for p in ([Path(arg)] if arg else [ROOT / ".whl" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"),
                                       ROOT / "learnkit" / "datasets" / "samples" / "fashion-mnist-sample"]):
        if (p / "train-images-idx3-ubyte.gz").exists():
            return p
    raise FileNotFoundError("no Fashion-MNIST idx files: pass --source DIR (train-images-idx3-ubyte.gz ...)")


_ARRAYS: dict = {}


def _init_worker(source: str) -> None:
    sys.path.insert(0, str(HERE))
    from fmnist_png import read_idx_u8  # the IDX reader of the PNG benchmark

    src = Path(source)
    _ARRAYS["images"] = read_idx_u8(src / "train-images-idx3-ubyte.gz")
    _ARRAYS["labels"] = read_idx_u8(src / "train-labels-idx1-ubyte.gz")


def _write(task: tuple[str, int, int, int, int, int]) -> int:
    """Worker: write images start..stop-1 of one split (image i depends only on (seed, split, i))."""
    import numpy as np
    from PIL import Image

    out, start, stop, seed, size, offset = task
    images, labels = _ARRAYS["images"], _ARRAYS["labels"]
    for i in range(start, stop):
        rng = np.random.default_rng([seed, offset, i])
        k = (i + offset) % len(images)
        big = int(rng.integers(size, int(size * 1.25) + 1))
        im = Image.fromarray(images[k]).resize((big, big), Image.BICUBIC)
        top, left = (int(v) for v in rng.integers(0, big - size + 1, 2))
        a = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32)
        tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
        rgb = a[..., None] * tint + 8 * rng.standard_normal((size, size, 3), dtype=np.float32)
        path = os.path.join(out, f"c{labels[k]}", f"{i}.jpg")
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
    return stop - start


def generate(data: Path, n: int, size: int, source: Path, seed: int = 0) -> dict:
    """Write the folder (or reuse it); returns {'images', 'seconds', 'per_second', 'reused'}."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    marker = data / "_done"
    want = {"n": n, "size": size, "seed": seed, "source": str(source)}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return {"images": n + n // 20, "seconds": 0.0, "per_second": None, "reused": True}
    splits = {"train": (n, 0), "valid": (n // 20, 1_000_000)}
    for split in splits:
        for c in range(10):
            (data / split / f"c{c}").mkdir(parents=True, exist_ok=True)
    tasks = [(str(data / split), s, min(s + 500, count), seed, size, offset)
             for split, (count, offset) in splits.items() for s in range(0, count, 500)]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(source),)) as pool:
        total = sum(pool.map(_write, tasks))
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(want))
    return {"images": total, "seconds": round(seconds, 1), "per_second": round(total / seconds), "reused": False}


# ----------------------------------------------------------------------------------------------- measuring
class GpuSampler:
    """Mean GPU utilisation (pynvml, every 0.2 s) between start() and stop(); None without pynvml or CUDA."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml
            pynvml.nvmlInit()
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(index), pynvml
        except Exception:
            self._handle = None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def start(self) -> None:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


class Clock:
    """Counts images between batch `warmup` and batch `limit` (then asks the caller to stop)."""

    def __init__(self, warmup: int, limit: int, sync) -> None:
        self.warmup, self.limit, self.sync = warmup, limit, sync
        self.batches, self.images, self.t0, self.seconds, self.gpu = 0, 0, None, None, None
        self.sampler = GpuSampler()

    def batch_done(self, n: int) -> bool:
        """Call after each training batch; True when the timed region is over."""
        self.batches += 1
        if self.batches == self.warmup:
            self.sync()
            self.t0 = time.perf_counter()
            self.sampler.start()
        elif self.batches > self.warmup:
            self.images += n
        if self.batches >= self.limit:
            self.finish()
            return True
        return False

    def finish(self) -> None:
        if self.t0 is not None and self.seconds is None:
            self.sync()
            self.seconds = time.perf_counter() - self.t0
            self.gpu = self.sampler.stop()

    def result(self) -> dict:
        self.finish()
        ips = self.images / self.seconds if self.seconds else None
        return {"images_per_s": round(ips, 1) if ips else None, "timed_images": self.images,
                "timed_s": round(self.seconds, 2) if self.seconds else None, "gpu_util_pct": self.gpu}


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _drop_caches() -> str:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "dropped"
    except OSError as e:
        return f"not dropped ({e.strerror})"


def _data_only(batches, args, transfer) -> dict:
    clock = Clock(args.warmup, args.limit_batches, _sync)
    for batch in batches:
        x = transfer(batch)
        if clock.batch_done(len(x)):
            break
    return clock.result()


# ----------------------------------------------------------------------------------------------- contenders
def run_learnkit(args, name: str) -> dict:
    import torch
    from learnkit import Callback, CancelTrain, CancelValidate
    from learnkit.vision import ImageDataBunch, Resize, vision_learner

    start = time.perf_counter()
    data = ImageDataBunch.from_folder(args.data, item_tfms=Resize(args.size), batch_size=args.batch_size, seed=0,
                                      resident=False,
                                      device_decode=False if name == "learnkit-workers" else args.device_decode,
                                      num_workers=0 if name == "learnkit-nvjpeg" else None,
                                      verbose=False)
    out = {"loader_kind": data.loader_kind, "loader_report": data.loader_report,
           "setup_s": round(time.perf_counter() - start, 1)}
    learn = vision_learner(data, args.arch, pretrained=False, progress=False, metrics=[])
    out["cache"] = _drop_caches() if name == "learnkit-cold" else "warm"
    clock = Clock(args.warmup, args.limit_batches, _sync)

    class Timer(Callback):
        def after_batch(self, learn):
            if learn.training and clock.batch_done(args.batch_size):
                raise CancelTrain

        def before_validate(self, learn):
            raise CancelValidate

    learn.fit_one_cycle(1, 1e-3, callbacks=[Timer()])
    out.update(clock.result())
    if name == "learnkit-cold":
        out["data_only"] = None  # the cache is warm again by now
    else:
        view = learn.data
        out["data_only"] = _data_only(view.train_dl, args, lambda b: view.transfer(b, True)[0])
    out["amp"] = str(learn.amp_dtype)
    out["channels_last"] = bool(learn.model.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)) \
        if hasattr(learn.model, "body") else None
    return out


def run_fastai(args, name: str) -> dict:
    import fastai
    from fastai.callback.core import Callback, CancelTrainException, CancelValidException
    from fastai.vision.all import ImageDataLoaders, Resize, resnet34, vision_learner

    workers = os.cpu_count() or 1
    start = time.perf_counter()
    dls = ImageDataLoaders.from_folder(args.data, train="train", valid="valid", item_tfms=Resize(args.size),
                                       bs=args.batch_size, num_workers=workers)
    out = {"fastai": fastai.__version__, "num_workers": workers, "setup_s": round(time.perf_counter() - start, 1)}
    learn = vision_learner(dls, resnet34, pretrained=False, metrics=[])
    learn = learn.to_bf16() if hasattr(learn, "to_bf16") else learn.to_fp16()
    out["amp"] = "bf16" if hasattr(learn, "to_bf16") else "fp16"
    if hasattr(learn, "to_channelslast"):
        learn = learn.to_channelslast()
        out["channels_last"] = True
    clock = Clock(args.warmup, args.limit_batches, _sync)

    class Timer(Callback):
        order = 100

        def after_batch(self):
            if self.training and clock.batch_done(args.batch_size):
                raise CancelTrainException

        def before_validate(self):
            raise CancelValidException

    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 1e-3, cbs=[Timer()])
    out.update(clock.result())
    out["data_only"] = _data_only(dls.train, args, lambda b: b[0])  # fastai's batches come normalized on the GPU
    return out


def run_torch(args, name: str) -> dict:
    import torch
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    class Folder(Dataset):
        def __init__(self, root: Path):
            classes = sorted(d.name for d in root.iterdir() if d.is_dir())
            self.items = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())]
            self.tfm = T.Compose([T.Resize(args.size), T.ToTensor()])

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            f, c = self.items[i]
            with Image.open(f) as im:
                return self.tfm(im.convert("RGB")), c

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = os.cpu_count() or 1
    ds = Folder(Path(args.data) / "train")
    dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                    persistent_workers=True, drop_last=True)
    model = getattr(torchvision.models, args.arch)(num_classes=10).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=len(dl))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def transfer(batch):
        x = batch[0].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return (x - mean) / std

    clock = Clock(args.warmup, args.limit_batches, _sync)
    model.train()
    for batch in dl:
        x, y = transfer(batch), batch[1].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if clock.batch_done(len(x)):
            break
    out = {"num_workers": workers, **clock.result(), "amp": "bf16", "channels_last": True}
    out["data_only"] = _data_only(dl, args, transfer)
    return out


RUNNERS = {"learnkit": run_learnkit, "learnkit-cold": run_learnkit, "learnkit-nvjpeg": run_learnkit,
           "learnkit-workers": run_learnkit,
           "fastai": run_fastai, "torch": run_torch}


# ----------------------------------------------------------------------------------------------- driver
def _child(args) -> None:
    sys.path.insert(0, str(ROOT))
    result = RUNNERS[args.run](args, args.run)
    print("RESULT " + json.dumps(result), flush=True)


def _table(rows: dict) -> str:
    lines = [f"{'contender':18} {'img/s':>9} {'GPU %':>6} {'data-only img/s':>16}  path",
             "-" * 90]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"{name:18} {'-':>9} {'-':>6} {'-':>16}  FAILED: {r['error'][:60]}")
            continue
        only = (r.get("data_only") or {}).get("images_per_s")
        path = {"fastai": f"fastai {r.get('fastai', '')}", "torch": "hand-written DataLoader"}.get(
            name, r.get("loader_kind", ""))
        extra = f" [{r['cache']}]" if r.get("cache") not in (None, "warm") else ""
        lines.append(f"{name:18} {r.get('images_per_s') or 0:9.0f} {r.get('gpu_util_pct') or 0:6.1f} "
                     f"{only or 0:16.0f}  {path}{extra}")
    base = rows.get("fastai", {}).get("images_per_s")
    for name in ("learnkit", "learnkit-nvjpeg", "learnkit-workers"):
        lk = rows.get(name, {}).get("images_per_s")
        if base and lk:
            lines.append(f"{name} / fastai: {lk / base:.2f}x")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="training images (validation: n/20)")
    p.add_argument("--data", default="/tmp/learnkit-jpeg-stream", help="folder for the JPEGs")
    p.add_argument("--source", default=None, help="folder with Fashion-MNIST's idx .gz files")
    p.add_argument("--only", default=",".join(CONTENDERS), help=f"comma-separated subset of {CONTENDERS}")
    p.add_argument("--limit-batches", type=int, default=150, help="training batches per contender (warm-up included)")
    p.add_argument("--warmup", type=int, default=20, help="batches before the clock starts")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--size", type=int, default=224, help="Resize size (the model's input)")
    p.add_argument("--image-size", type=int, default=256, help="stored JPEG size")
    p.add_argument("--arch", default="resnet34")
    p.add_argument("--device-decode", default=True, type=lambda v: True if v == "true" else v,
                   help="device_decode= of the learnkit and learnkit-cold contenders: true (default: the GPU path, "
                        "which 'auto' also chooses on CUDA) or auto")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run: 512 images at 64 px, resnet18 at 32 px, batch 16, 6 batches, device_decode=True")
    p.add_argument("--timeout", type=int, default=240, help="seconds per contender")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: run one contender in this process
    args = p.parse_args()
    if args.quick:
        args.n, args.image_size, args.size, args.batch_size, args.arch = 512, 64, 32, 16, "resnet18"
        args.limit_batches, args.warmup, args.device_decode = 6, 2, True
        if args.data == p.get_default("data"):
            args.data = "/tmp/learnkit-jpeg-stream-quick"
        if args.only == p.get_default("only"):
            args.only = "learnkit,learnkit-workers,torch"
    if args.run:
        return _child(args)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CONTENDERS))
    if unknown:
        p.error(f"--only: unknown contender(s) {unknown}; choose from {CONTENDERS}")
    data = Path(args.data)
    gen = generate(data, args.n, args.image_size, _source(args.source))
    print(f"data: {data} ({gen})", flush=True)
    results = {"generation": gen, "args": {k: v for k, v in vars(args).items() if k != "run"}, "contenders": {}}
    forward = ["--data", str(data), "--limit-batches", str(args.limit_batches), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--size", str(args.size), "--arch", args.arch,
               "--device-decode", "true" if args.device_decode is True else str(args.device_decode)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in only:
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--run", name, *forward], capture_output=True, text=True,
                                  timeout=args.timeout, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            r = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            if line is None:
                r["stderr_tail"] = proc.stderr[-2000:]
        except subprocess.TimeoutExpired:
            r = {"error": f"timed out after {args.timeout} s"}
        r["wall_s"] = round(time.perf_counter() - start, 1)
        results["contenders"][name] = r
        print(f"{name}: {json.dumps(r)}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    print("\n" + _table(results["contenders"]))


if __name__ == "__main__":
    main()
