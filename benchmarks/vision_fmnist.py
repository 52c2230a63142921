"""Fashion-MNIST from a folder of PNG files, end to end: a hand-written PyTorch loop, fastai and learnkit, in one run.

Command:
    python benchmarks/vision_fmnist.py --regime all --out results.json                 # on the GPU machine
    python benchmarks/vision_fmnist.py --regime all --pretrained --out results.json    # weights in TORCH_HOME
    python benchmarks/vision_fmnist.py --contenders hand --limit 512 --epochs 1        # CPU smoke run

What is measured:
    The full data set (60,000 train + 10,000 test images) as `FOLDER/train/<class>/<i>.png` and
    `FOLDER/test/<class>/<i>.png`, written first by `fmnist_png.write_png_folder` (skipped when complete;
    not part of any contender's time). Each contender then goes from that folder to a model trained with a
    one-cycle schedule and evaluated on the test folder:

    hand      decodes the folder once (a thread pool over torchvision.io) into a uint8 tensor on the GPU;
              torchvision resnet18/34 with a 1-channel first conv (pretrained: the RGB kernels summed) and a
              10-way fc; AdamW (betas 0.9/0.99, eps 1e-5, weight decay 0.01 except on biases and norms, fused)
              + OneCycleLR (max_lr, pct_start 0.25, div 25, final div 1e5, momentum 0.95-0.85-0.95), bf16
              autocast, channels_last, a fresh permutation per epoch, normalisation (and, at 224 px, a
              bilinear upsample with F.interpolate) on the GPU per batch; no augmentation.
    fastai    `ImageDataLoaders.from_folder(FOLDER, train="train", valid="test", bs=256, num_workers=...,
              img_cls=PILImageBW, item_tfms=Resize(224) at 224 px, or with --fastai-resize batch an
              AffineCoordTfm(size=224) on the GPU)`, `vision_learner(dls, resnet18|34,
              pretrained=..., metrics=accuracy, n_in=1)` (unfrozen when pretrained, so that every contender
              trains the whole network), `learn.to_channelslast(amp_mode="bf16")` (ChannelsLast + bf16
              MixedPrecision), `fit_one_cycle(epochs, max_lr)` and `validate()`, without progress bars.
    learnkit  `run_learnkit`: written by the lead as learnkit's vision API lands.

    All three validate on the test folder after every epoch inside fit (fastai's and learnkit's fit do; the
    hand loop does the same so that "fit seconds" means the same thing), then evaluate once more at the end.

    Figures per contender: end-to-end seconds (clock started with the folder on disk, stopped after the final
    evaluation; library imports excluded and reported apart), data seconds (folder to ready loaders or tensors),
    fit seconds, train seconds (the training phases only: per-epoch validation excluded), train images/s
    (images stepped on / train seconds), test accuracy and loss, peak GPU memory. Every clock read on CUDA is
    preceded by torch.cuda.synchronize(). Then the ratios learnkit / fastai and learnkit / hand.

Regimes:
    small     resnet18 from scratch, native 28 px, batch 256, 5 epochs, max_lr 1e-3.
    transfer  resnet34 at 224 px (hand: GPU upsample per batch; fastai: item Resize(224) on the CPU workers),
              batch 256, 2 epochs, max_lr 1e-3; ImageNet weights with --pretrained (read from TORCH_HOME's
              cache, torchvision's file name: no download is tried), else from scratch.

Normalisation: from scratch, Fashion-MNIST's training statistics (mean 0.2860, std 0.3530); pretrained, the
mean of ImageNet's channel statistics (0.449, 0.226), which is what the summed kernel expects of a grey image.
fastai gets the same through batch_tfms=Normalize (by itself it adds none for n_in=1).

The contenders run one after the other in one process, in the order given by --contenders; CUDA and cuDNN are
warmed up once before the first. `torch.backends.cudnn.benchmark` is on for all of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fmnist_png lives beside this file
if importlib.util.find_spec("learnkit") is None:  # not installed (the GPU machine): this checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmnist_png  # noqa: E402

REGIMES: dict[str, dict[str, Any]] = {
    "small": {"arch": "resnet18", "size": 28, "epochs": 5, "batch_size": 256, "max_lr": 1e-3},
    "transfer": {"arch": "resnet34", "size": 224, "epochs": 2, "batch_size": 256, "max_lr": 1e-3},
}
CONTENDERS = ("hand", "fastai", "learnkit", "learnkit_eager", "learnkit_compiled", "learnkit_cudagraphs")
FMNIST_STATS = (0.2860, 0.3530)      # Fashion-MNIST training pixels, scaled to [0, 1]
IMAGENET_GRAY_STATS = (0.449, 0.226)  # mean of ImageNet's RGB means and stds: a grey image through summed kernels
DEFAULT_FOLDER = Path("/tmp/fmnist-png")


@dataclass
class Setup:
    """Everything a contender needs to know; the same object for all three in a regime."""
    regime: str
    arch: str
    size: int
    epochs: int
    batch_size: int
    max_lr: float
    pretrained: bool
    valid_name: str
    device: torch.device
    workers: int
    seed: int
    fastai_channels: int = 1
    fastai_resize: str = "item"
    compile: str | None = None  # None: eager; 'default', 'reduce-overhead' (CUDA graphs), 'max-autotune'
    eager: bool = False  # learnkit_eager: cuda_graphs=False (learnkit's whole-step CUDA graphs off)

    @property
    def stats(self) -> tuple[float, float]:
        return IMAGENET_GRAY_STATS if self.pretrained else FMNIST_STATS

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"  # bf16 on the GPU; fp32 for a CPU smoke run


@dataclass
class Result:
    """One contender's figures in one regime (seconds; accuracy in 0..1)."""
    contender: str
    regime: str
    status: str = "ok"               # ok | skipped | error
    message: str = ""
    e2e_s: float | None = None
    data_s: float | None = None
    fit_s: float | None = None
    train_s: float | None = None
    train_images: int | None = None
    train_img_s: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    peak_gpu_bytes: int | None = None
    epochs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def clock(device: torch.device) -> float:
    """perf_counter after the device's queued work is done, so intervals measure work, not launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


# ------------------------------------------------------------------------------------------------ hand-written
def list_split(folder: Path, split: str, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """(file paths, labels, class names) of `folder/split/<class>/*`; classes sorted by name unless given."""
    root = folder / split
    if classes is None:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(e.name for e in os.scandir(root / name) if e.is_file() and not e.name.startswith("."))
        files += [str(root / name / n) for n in names]
        labels += [label] * len(names)
    if not files:
        raise FileNotFoundError(f"{root}: no image files under its class folders")
    return files, labels, classes


def decode_folder(files: list[str], workers: int, device: torch.device) -> torch.Tensor:
    """Decode image files into one (N, 1, H, W) uint8 tensor on `device`. torchvision.io's decoders run in C++
    without the GIL, so threads scale; chunks keep the per-task cost small."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    def work(chunk: list[str]) -> torch.Tensor:
        return torch.stack([decode_image(read_file(f), mode=ImageReadMode.GRAY) for f in chunk])

    chunks = [files[i:i + 1024] for i in range(0, len(files), 1024)]
    with ThreadPoolExecutor(workers) as pool:
        images = torch.cat(list(pool.map(work, chunks)))
    return images.to(device)


def pretrained_file(arch: str) -> Path:
    """Where torchvision keeps `arch`'s ImageNet weights (IMAGENET1K_V1) in TORCH_HOME's cache; fastai's
    vision_learner(pretrained=True) loads the same file. Raises when it is not there (no download is tried)."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.exists():
        raise FileNotFoundError(f"--pretrained: {path} is missing. Put torchvision's {arch} ImageNet weights "
                                f"({weights.url}) there (TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}), "
                                "or run without --pretrained")
    return path


def create_resnet(arch: str, n_in: int = 1, n_out: int = 10, pretrained: bool = False) -> nn.Module:
    """A torchvision ResNet with an `n_in`-channel first conv and an `n_out`-way fc. Pretrained and n_in=1: the
    first conv's RGB kernels are summed, so a grey image gives what its RGB copy gave the original net."""
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        model.load_state_dict(torch.load(pretrained_file(arch), map_location="cpu", weights_only=True))
    old = model.conv1
    model.conv1 = nn.Conv2d(n_in, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    if pretrained:
        if n_in != 1:
            raise ValueError(f"create_resnet(n_in={n_in}, pretrained=True): only n_in=1 (summed kernels) is done here")
        with torch.no_grad():
            model.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    model.fc = nn.Linear(model.fc.in_features, n_out)
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of rank >= 2 only (not on biases and norm parameters), as fastai and learnkit do."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def run_hand(regime: str, folder: Path, cfg: Setup) -> Result:
    """The hand-written loop: the data lives on the GPU as uint8; everything per batch happens there."""
    device, res = cfg.device, Result("hand", regime)
    seed_everything(cfg.seed)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.amp else contextlib.nullcontext
    res.notes.append("bf16 autocast" if cfg.amp else "fp32 (no autocast on CPU)")
    mean, std = cfg.stats

    t_start = clock(device)
    train_files, train_labels, classes = list_split(folder, "train")
    test_files, test_labels, _ = list_split(folder, cfg.valid_name, classes)
    x_train = decode_folder(train_files, cfg.workers, device)
    x_test = decode_folder(test_files, cfg.workers, device)
    y_train = torch.tensor(train_labels, device=device)
    y_test = torch.tensor(test_labels, device=device)
    res.data_s = clock(device) - t_start

    model = create_resnet(cfg.arch, n_in=1, n_out=len(classes), pretrained=cfg.pretrained)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=cfg.max_lr, betas=(0.9, 0.99), eps=1e-5,
                            fused=device.type == "cuda")
    steps = len(x_train) // cfg.batch_size  # the last partial batch is dropped, as fastai's train loader does
    if cfg.epochs * steps < 5:  # OneCycleLR divides by (warm-up steps - 1): 4 steps in all divide by zero
        raise ValueError(f"{len(x_train)} training images in batches of {cfg.batch_size} give {steps} steps per "
                         f"epoch, {cfg.epochs * steps} in all; one-cycle needs at least 5: use a larger --limit, "
                         "more --epochs or a smaller --batch-size")
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.max_lr, total_steps=cfg.epochs * steps, pct_start=0.25, div_factor=25.0,
        final_div_factor=1e5, base_momentum=0.85, max_momentum=0.95)

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        x = (xb.float() / 255.0 - mean) / std
        if x.shape[-1] != cfg.size:
            x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
        return x.contiguous(memory_format=torch.channels_last)

    def evaluate() -> tuple[float, float]:
        model.eval()
        correct = torch.zeros((), device=device)
        loss_sum = torch.zeros((), device=device)
        eval_bs = 1024 if cfg.size <= 64 else 512
        with torch.inference_mode(), autocast():
            for i in range(0, len(x_test), eval_bs):
                out = model(prepare(x_test[i:i + eval_bs])).float()
                yb = y_test[i:i + eval_bs]
                loss_sum += F.cross_entropy(out, yb, reduction="sum")
                correct += (out.argmax(dim=1) == yb).sum()
        return loss_sum.item() / len(x_test), correct.item() / len(x_test)  # .item(): one sync per evaluation

    t_fit = clock(device)
    train_s = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        t0 = clock(device)
        perm = torch.randperm(len(x_train), device=device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            with autocast():
                loss = F.cross_entropy(model(prepare(x_train[idx])), y_train[idx])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()  # no .item() in the loop: nothing waits for the GPU
        epoch_train_s = clock(device) - t0
        train_s += epoch_train_s
        test_loss, test_acc = evaluate()
        res.epochs.append({"epoch": epoch, "train_loss": loss_sum.item() / steps, "test_loss": test_loss,
                           "test_accuracy": test_acc, "train_s": epoch_train_s})
        print(f"  hand epoch {epoch}: train_loss {res.epochs[-1]['train_loss']:.4f} test_acc {test_acc:.4f} "
              f"({epoch_train_s:.1f} s train)", flush=True)
    res.fit_s = clock(device) - t_fit
    res.test_loss, res.test_accuracy = evaluate()
    res.e2e_s = clock(device) - t_start
    res.train_s, res.train_images = train_s, cfg.epochs * steps * cfg.batch_size
    return res


# ---------------------------------------------------------------------------------------------------- fastai
def import_fastai() -> float:
    """Import fastai.vision.all (outside every clock); returns the seconds it took."""
    t0 = time.perf_counter()
    import fastai.vision.all  # noqa: F401
    return time.perf_counter() - t0


def run_fastai(regime: str, folder: Path, cfg: Setup) -> Result:
    """fastai 2.8 as its documentation would have it, plus bf16 and channels_last (its `to_channelslast`)."""
    import fastai
    from fastai.vision.all import (AffineCoordTfm, Callback, ImageDataLoaders, Normalize, PILImage, PILImageBW,
                                   Resize, accuracy, resnet18, resnet34, set_seed, vision_learner)

    device, res = cfg.device, Result("fastai", regime)
    res.notes.append(f"fastai {fastai.__version__}")

    class TrainClock(Callback):
        """Seconds spent in the training phases (per-epoch validation excluded), synchronised."""
        order = 99

        def before_fit(self):
            self.train_seconds, self.train_batches = 0.0, 0

        def before_train(self):
            self.started = clock(device)

        def after_batch(self):
            if self.training:
                self.train_batches += 1

        def after_train(self):
            self.train_seconds += clock(device) - self.started

    set_seed(cfg.seed)
    channels = cfg.fastai_channels
    item_tfms, batch_tfms = None, []
    if channels == 1:  # fastai adds no Normalize for n_in=1 (its stats are RGB): give it the hand loop's
        batch_tfms.append(Normalize.from_stats([cfg.stats[0]], [cfg.stats[1]]))
    res.notes.append(f"{channels}-channel input ({'PILImageBW' if channels == 1 else 'PILImage'})")
    if cfg.size != 28 and cfg.fastai_resize == "item":  # the documented way: PIL resizes each item on the workers
        item_tfms = Resize(cfg.size)
        res.notes.append(f"item_tfms=Resize({cfg.size})")
    elif cfg.size != 28:  # on the GPU: an identity affine resampled to the new size (one grid_sample per batch)
        batch_tfms.insert(0, AffineCoordTfm(size=cfg.size))
        res.notes.append(f"batch_tfms=AffineCoordTfm(size={cfg.size})")

    t_start = clock(device)
    dls = ImageDataLoaders.from_folder(
        folder, train="train", valid=cfg.valid_name, bs=cfg.batch_size, num_workers=cfg.workers,
        item_tfms=item_tfms, batch_tfms=batch_tfms or None,
        img_cls=PILImageBW if channels == 1 else PILImage, device=device)
    res.data_s = clock(device) - t_start
    timer = TrainClock()
    learn = vision_learner(dls, {"resnet18": resnet18, "resnet34": resnet34}[cfg.arch], pretrained=cfg.pretrained,
                           metrics=accuracy, n_in=channels, cbs=[timer])
    if cfg.pretrained:
        learn.unfreeze()  # vision_learner freezes the body; the other contenders train everything
    if cfg.amp:
        learn.to_channelslast(amp_mode="bf16")  # ChannelsLast + MixedPrecision(bf16): no GradScaler for bf16
        res.notes.append("learn.to_channelslast(amp_mode='bf16')")
    else:
        res.notes.append("fp32 (no MixedPrecision on CPU)")

    t_fit = clock(device)
    with learn.no_bar():  # the bar's per-batch comment calls .item() on the loss: a sync every batch
        learn.fit_one_cycle(cfg.epochs, cfg.max_lr)
    res.fit_s = clock(device) - t_fit
    # Read before validate(): its before_fit event resets the recorder and the timer.
    res.train_s, res.train_images = timer.train_seconds, timer.train_batches * cfg.batch_size
    for epoch, values in enumerate(learn.recorder.values):  # [train_loss, valid_loss, accuracy]
        res.epochs.append({"epoch": epoch, "train_loss": float(values[0]), "test_loss": float(values[1]),
                           "test_accuracy": float(values[2])})
    with learn.no_bar():
        res.test_loss, res.test_accuracy = (float(v) for v in learn.validate())
    res.e2e_s = clock(device) - t_start
    return res


# --------------------------------------------------------------------------------------------------- learnkit
def run_learnkit(regime: str, folder: Path, cfg: Setup) -> Result:
    """learnkit's one-liner on the same folder: the GPU-resident path (decode once, uint8 on the GPU), the
    resize to cfg.size done on the GPU batch, bf16 + channels_last chosen by the library."""
    from learnkit import Callback, set_seed
    from learnkit.vision import BatchResize, ImageDataBunch, vision_learner

    device, res = cfg.device, Result("learnkit", regime)

    class TrainClock(Callback):
        """Seconds spent in the training phases (validation excluded), synchronised."""

        def before_fit(self, learn):
            self.train_seconds, self.train_batches = 0.0, 0

        def before_train(self, learn):
            self.started = clock(device)

        def after_batch(self, learn):
            if learn.training:
                self.train_batches += 1

        def after_train(self, learn):
            self.train_seconds += clock(device) - self.started

    set_seed(cfg.seed)
    t_start = clock(device)
    data = ImageDataBunch.from_folder(folder, train="train", valid=cfg.valid_name, batch_size=cfg.batch_size,
                                      mode="L", seed=cfg.seed, device=device,
                                      batch_tfms=[BatchResize(cfg.size)] if cfg.size != 28 else [])
    res.data_s = clock(device) - t_start
    res.notes.append(data.loader_report)
    timer = TrainClock()
    learn = vision_learner(data, cfg.arch, pretrained=cfg.pretrained, progress=False, callbacks=[timer])
    if cfg.pretrained:
        learn.unfreeze()  # the other contenders train everything
    if cfg.compile or cfg.eager:
        learn.cuda_graphs = False  # learnkit_eager: the step as it ran before whole-step graphs (or torch.compile's)
    res.notes.append(f"amp {learn.amp_dtype}")
    if cfg.compile:
        # A fresh dynamo cache: an earlier contender's compiled variants of the same forward code would count
        # against dynamo's recompile limit and leave this one eager.
        torch._dynamo.reset()
        seconds = learn.compile(**({} if cfg.compile == "default" else {"mode": cfg.compile}))
        res.notes.append(f"compile mode {cfg.compile}: compiled in {seconds:.1f} s (inside e2e, outside fit)")
    t_fit = clock(device)
    learn.fit_one_cycle(cfg.epochs, cfg.max_lr)
    res.fit_s = clock(device) - t_fit
    graphs = learn.cuda_graph_report or {}
    res.notes.append(f"cuda graphs: {'on, captured in %.2f s, %d replays, %d eager batches' % (graphs['capture_seconds'], graphs['replays'], graphs['eager_batches']) if graphs.get('used') else 'off (' + str(graphs.get('reason')) + ')'}")
    res.train_s, res.train_images = timer.train_seconds, timer.train_batches * cfg.batch_size
    for record in learn.history.epoch_records:
        res.epochs.append({"epoch": record["epoch"], "train_loss": record["train_loss"],
                           "test_loss": record["valid_loss"], "test_accuracy": record["accuracy"]})
    values = learn.validate()
    res.test_loss, res.test_accuracy = values["valid_loss"], values["accuracy"]
    res.e2e_s = clock(device) - t_start
    return res


def run_learnkit_mode(mode: str) -> Callable[[str, Path, Setup], Result]:
    """The learnkit contender with learn.compile(mode=...) forced (so eager and compiled run side by side)."""
    def run(regime: str, folder: Path, cfg: Setup) -> Result:
        res = run_learnkit(regime, folder, dataclasses.replace(cfg, compile=mode))
        res.contender = "learnkit_" + ("compiled" if mode == "default" else "cudagraphs")
        return res
    return run


RUNNERS: dict[str, Callable[[str, Path, Setup], Result]] = {
    "hand": run_hand, "fastai": run_fastai, "learnkit": run_learnkit,
    "learnkit_eager": lambda regime, folder, cfg: dataclasses.replace(
        run_learnkit(regime, folder, dataclasses.replace(cfg, eager=True)), contender="learnkit_eager"),
    "learnkit_compiled": run_learnkit_mode("default"), "learnkit_cudagraphs": run_learnkit_mode("reduce-overhead")}


# ------------------------------------------------------------------------------------------------------ driver
def limited_folder(folder: Path, valid_name: str, limit: int) -> Path:
    """A class-balanced copy of `folder` with about `limit` training and limit // 4 test images (smoke runs)."""
    out = folder.parent / f"{folder.name}-limit{limit}"
    shutil.rmtree(out, ignore_errors=True)
    for split, n in (("train", limit), (valid_name, max(limit // 4, 1))):
        classes = sorted(e.name for e in os.scandir(folder / split) if e.is_dir())
        per_class = max(math.ceil(n / len(classes)), 1)
        for name in classes:
            (out / split / name).mkdir(parents=True)
            files = sorted(e.name for e in os.scandir(folder / split / name) if e.is_file())[:per_class]
            for f in files:
                shutil.copyfile(folder / split / name / f, out / split / name / f)
    return out


def warm_up(device: torch.device) -> None:
    """CUDA context, cuBLAS/cuDNN handles and the autocast path, once, so the first contender pays no more."""
    if device.type != "cuda":
        return
    conv = nn.Conv2d(1, 8, 3).to(device, memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        conv(torch.randn(8, 1, 28, 28, device=device)).float().sum().backward()
    torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "cpus": len(os.sched_getaffinity(0)), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(ImportError):
        import fastai
        env["fastai"] = fastai.__version__
    with contextlib.suppress(ImportError, AttributeError):
        import learnkit
        env["learnkit"] = getattr(learnkit, "__version__", "?")
    return env


def run_one(name: str, regime: str, folder: Path, cfg: Setup) -> Result:
    """One contender, its failures turned into a Result so that the others still run."""
    device = cfg.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        res = RUNNERS[name](regime, folder, cfg)
    except NotImplementedError as e:
        res = Result(name, regime, status="skipped", message=f"not implemented: {e}")
    except ImportError as e:
        res = Result(name, regime, status="skipped", message=f"cannot import: {e}")
    except Exception as e:  # noqa: BLE001 - a benchmark run on lent time reports and goes on
        traceback.print_exc()
        res = Result(name, regime, status="error", message=f"{type(e).__name__}: {e}")
    if res.status == "ok":
        res.train_img_s = res.train_images / res.train_s if res.train_s else None
        if device.type == "cuda":
            res.peak_gpu_bytes = torch.cuda.max_memory_allocated(device)
    gc.collect()
    return res


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(regime: str, results: list[Result]) -> dict[str, float]:
    """Print the regime's table and ratios; returns the ratios."""
    print(f"\n== {regime}")
    print(f"{'contender':<20} {'e2e s':>8} {'data s':>8} {'fit s':>8} {'train s':>8} {'train img/s':>12} "
          f"{'test acc':>9} {'peak GiB':>9}  notes")
    for r in results:
        if r.status != "ok":
            print(f"{r.contender:<20} {r.status}: {r.message}")
            continue
        peak = r.peak_gpu_bytes / 2**30 if r.peak_gpu_bytes else None
        print(f"{r.contender:<20} {fmt(r.e2e_s, '8.1f')} {fmt(r.data_s, '8.1f')} {fmt(r.fit_s, '8.1f')} "
              f"{fmt(r.train_s, '8.1f')} {fmt(r.train_img_s, '12,.0f')} {fmt(r.test_accuracy, '9.4f')} "
              f"{fmt(peak, '9.2f')}  {'; '.join(r.notes)}")
    ok = {r.contender: r for r in results if r.status == "ok"}
    ratios = {}
    for mine in ("learnkit", "learnkit_eager", "learnkit_compiled", "learnkit_cudagraphs"):
        for other in ("fastai", "hand", "learnkit_eager"):
            if mine == other:
                continue
            if mine in ok and other in ok:
                for key in ("e2e_s", "fit_s"):
                    ratios[f"{mine}/{other} {key}"] = getattr(ok[mine], key) / getattr(ok[other], key)
    if "hand" in ok and "fastai" in ok:
        ratios["fastai/hand e2e_s"] = ok["fastai"].e2e_s / ok["hand"].e2e_s
    for key, value in ratios.items():
        print(f"  {key}: {value:.2f}  ({1 / value:.2f}x {'faster' if value < 1 else 'as fast'})")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=["small", "transfer", "all"], default="all")
    parser.add_argument("--contenders", default="hand,fastai,learnkit",
                        help="comma-separated, run in this order (default: hand,fastai,learnkit)")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help=f"the PNG folder; written from --source when --valid-name is 'test' and it is not "
                             f"complete (default: {DEFAULT_FOLDER})")
    parser.add_argument("--source", type=Path, default=fmnist_png.DEFAULT_SOURCE,
                        help=f"folder with the four upstream IDX files (default: {fmnist_png.DEFAULT_SOURCE})")
    parser.add_argument("--valid-name", default="test",
                        help="the test split's folder name (default: test; 'valid' for datasets/fashion-mnist-sample/png)")
    parser.add_argument("--epochs", type=int, default=None, help="override the regime's epochs (5 small, 2 transfer)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch size (256)")
    parser.add_argument("--pretrained", action="store_true",
                        help="transfer regime: ImageNet weights from TORCH_HOME's cache (no download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="decode threads (hand), DataLoader workers (fastai), PNG writers (default: all CPUs)")
    parser.add_argument("--fastai-channels", type=int, choices=[1, 3], default=1,
                        help="1: PILImageBW + n_in=1 (default); 3: fastai's default RGB PILImage")
    parser.add_argument("--fastai-resize", choices=["item", "batch"], default="item",
                        help="transfer regime: item_tfms=Resize(224) on the CPU workers (default), or batch: "
                             "AffineCoordTfm(size=224) on the GPU")
    parser.add_argument("--compile", nargs="?", const="default", default=None,
                        choices=["default", "reduce-overhead", "max-autotune"],
                        help="learnkit: learn.compile(mode=...) before fit (torch.compile, inductor; 'reduce-overhead' "
                             "adds CUDA graphs); its time counts in e2e. Bare --compile = default mode")
    parser.add_argument("--limit", type=int, default=None,
                        help="smoke run: a class-balanced copy with about N train and N/4 test images")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"--contenders: unknown {unknown}; choose from {','.join(CONTENDERS)}")
    regimes = ["small", "transfer"] if args.regime == "all" else [args.regime]
    if args.limit and not args.batch_size:  # a smoke run still takes a few steps, so the schedule has a shape
        args.batch_size = max(8, min(256, args.limit // 8))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = args.workers or len(os.sched_getaffinity(0))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels, for everyone
    if args.pretrained and "transfer" in regimes:
        pretrained_file(REGIMES["transfer"]["arch"])  # fail now, not after the first regime's minutes

    t0 = time.perf_counter()
    folder = args.folder
    if args.valid_name == "test":
        fmnist_png.write_png_folder(folder, args.source, workers)
    prepare_s = time.perf_counter() - t0
    if args.limit:
        folder = limited_folder(folder, args.valid_name, args.limit)
        print(f"smoke run on {folder}")

    import_s = {}  # imports are timed apart, before every clock; a failure shows again in the contender's row
    if "fastai" in contenders:
        try:
            import_s["fastai"] = import_fastai()
        except Exception as e:  # noqa: BLE001
            print(f"fastai does not import: {type(e).__name__}: {e}")
    if "learnkit" in contenders:
        t = time.perf_counter()
        try:
            import learnkit.vision  # noqa: F401
            import_s["learnkit"] = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001
            print(f"learnkit.vision does not import: {type(e).__name__}: {e}")
    warm_up(device)

    payload: dict[str, Any] = {"environment": environment(device), "args": {k: str(v) for k, v in vars(args).items()},
                               "folder": str(folder), "prepare_folder_s": prepare_s, "import_s": import_s,
                               "regimes": {}}
    print(json.dumps(payload["environment"]), flush=True)
    for regime in regimes:
        spec = REGIMES[regime]
        cfg = Setup(regime=regime, arch=spec["arch"], size=spec["size"], epochs=args.epochs or spec["epochs"],
                    batch_size=args.batch_size or spec["batch_size"], max_lr=spec["max_lr"],
                    pretrained=args.pretrained and regime == "transfer", valid_name=args.valid_name, device=device,
                    workers=workers, seed=args.seed, fastai_channels=args.fastai_channels,
                    fastai_resize=args.fastai_resize, compile=args.compile)
        results = []
        for name in contenders:
            print(f"-- {regime} / {name}: {cfg.arch} {cfg.size} px, {cfg.epochs} epochs, batch {cfg.batch_size}, "
                  f"max_lr {cfg.max_lr}, pretrained {cfg.pretrained}", flush=True)
            results.append(run_one(name, regime, folder, replace(cfg)))
            r = results[-1]
            print(f"   {name}: {r.status} {r.message} e2e {fmt(r.e2e_s, '.1f')} s, acc {fmt(r.test_accuracy, '.4f')}",
                  flush=True)
        ratios = report(regime, results)
        setup = {k: v for k, v in asdict(cfg).items() if k != "device"}
        payload["regimes"][regime] = {"setup": setup, "results": [asdict(r) for r in results], "ratios": ratios}
        if args.out:  # after every regime, so that a run cut short keeps what it finished
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if args.out:
        print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
