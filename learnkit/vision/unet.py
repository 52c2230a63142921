"""U-Net over any body of the vision zoo (`unet_model`: registered, never downloads, so exports rebuild it).

How the stages are found: torchvision / learnkit bodies (and callables) are cut at their pooling layer as
`vision_model` cuts them, an `nn.Sequential` whose children run one after the other; the Sequentials are opened
into units (`models._units`), a dry forward records each unit's output size, and the skips are the last unit
before each halving of the resolution (fastai's rule). The forward then runs the units itself and keeps those
outputs: no forward hooks (hooks hide state from `torch.export`/ONNX and leak when a model is copied). timm bodies
come from `timm.create_model(name, features_only=True)`, which already returns one feature map per stage.

Decoder: fastai's DynamicUnet. Middle convs on the bottleneck; per skip an upsampling by pixel shuffle with ICNR
init (each output pixel of a 2x2 group starts from the same kernel, so the first upsampling is a nearest-neighbour
one and shows no checkerboard; a blur is not needed), the batch-normalized skip concatenated, two 3x3 convs; then up
to the input resolution, the input itself concatenated (fastai's `last_cross`), a residual block and a 1x1 conv to
`n_out` classes. With `channel_multiple=8` (what `unet_learner` builds) that full-resolution cross is widened with
zero channels to a multiple of 8: fastai's width (96 + 3 = 99 for resnet34) made cuDNN pad every tensor of the
costliest block to 104 channels on each pass (a resnet34 step at 128 px: 30.5 → 26.2 ms on an H200, bf16). Output (N, n_out, H, W) at the input's size, for any H, W divisible by the body's total stride
(32 for the ImageNet bodies); other sizes are a ValueError saying which sizes work.

Example: `model = create_model("unet_model", arch="resnet34", n_out=5)`; `model(torch.zeros(2, 3, 64, 96)).shape`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from learnkit.core.registry import register_model
from learnkit.vision.models import (PretrainedWeightsNotFound, _cut, _resolve, _set_in_channels, _timm, _units,
                                    load_pretrained, pretrained_stats)

__all__ = ["DynamicUnet", "PixelShuffleICNR", "icnr_", "load_unet_pretrained", "unet_model", "unet_splitter"]


def icnr_(weight: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """ICNR init in place (Aitken et al. 2017): a Kaiming kernel for out/scale² channels, repeated so that the
    scale² sub-pixels of every pixel shuffle group start equal (the upsampling starts as nearest-neighbour)."""
    out_c, in_c, kh, kw = weight.shape
    sub = torch.empty(out_c // scale ** 2, in_c, kh, kw)
    nn.init.kaiming_normal_(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale ** 2, dim=0))
    return weight


def _conv(c_in: int, c_out: int, kernel: int = 3, act: bool = True, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    if act:
        layers.append(nn.ReLU(inplace=True))
    nn.init.kaiming_normal_(layers[0].weight)
    return nn.Sequential(*layers)


class PixelShuffleICNR(nn.Module):
    """(N, c_in, H, W) → (N, c_out, sH, sW): 1x1 conv to s²·c_out channels (ICNR init), ReLU, pixel shuffle."""

    def __init__(self, c_in: int, c_out: int, scale: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * scale ** 2, 1)
        icnr_(self.conv.weight, scale)
        nn.init.zeros_(self.conv.bias)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(F.relu(self.conv(x)))


class _UnetBlock(nn.Module):
    """Upsample x2, concatenate the batch-normalized skip, two 3x3 convs (fastai's UnetBlock)."""

    def __init__(self, c_up: int, c_skip: int, c_out: int):
        super().__init__()
        self.up = PixelShuffleICNR(c_up, c_up // 2)
        self.bn = nn.BatchNorm2d(c_skip)
        self.conv1 = _conv(c_up // 2 + c_skip, c_out)
        self.conv2 = _conv(c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd-sized stages (a stem without padding): match the skip
            x = F.interpolate(x, skip.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(F.relu(torch.cat([x, self.bn(skip)], 1))))


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.convs = nn.Sequential(_conv(c_in, c_out), _conv(c_out, c_out, act=False))
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.convs(x) + self.shortcut(x))


class DynamicUnet(nn.Module):
    """`body` (an encoder returning its stage features) + a U-Net decoder; see the module docstring.

    Attributes: `body` (torchvision/learnkit: the cut `nn.Sequential` with the original child names, so pretrained
    state dicts load unchanged; timm: its `features_only` network), `n_in`, `n_out`, `stride` (the body's total
    stride: inputs must be multiples of it), `skip_channels`, and after `load_pretrained` `pretrained_source` and
    `input_stats`.
    """

    def __init__(self, body: nn.Module, n_out: int, n_in: int = 3, timm_features: bool = False,
                 channel_multiple: int = 1):
        super().__init__()
        self.body, self.n_in, self.n_out, self.timm_features = body, n_in, n_out, timm_features
        self.pretrained_source, self.input_stats = None, None  # set by load_pretrained
        probe = 224
        was_training = body.training
        body.eval()
        with torch.no_grad():
            if timm_features:
                self._units, self._keep = [], []
                feats = body(torch.zeros(1, n_in, probe, probe))
            else:
                self._units = [m for _, m in _units(body)]  # plain list: the modules stay registered in body only
                x, sizes, outs = torch.zeros(1, n_in, probe, probe), [], []
                for m in self._units:
                    x = m(x)
                    sizes.append(x.shape[-1])
                    outs.append(x)
                # the last unit before each halving of the resolution, and the final unit (the bottleneck)
                self._keep = [i for i in range(len(sizes) - 1) if sizes[i + 1] < sizes[i] and sizes[i] < probe]
                self._keep.append(len(sizes) - 1)
                feats = [outs[i] for i in self._keep]
        body.train(was_training)
        if any(f.ndim != 4 for f in feats):
            raise ValueError("unet_model: the body gives no (B, C, H, W) feature maps; a U-Net needs a "
                             "convolutional network (e.g. resnet34, efficientnet_b0, convnext_tiny)")
        sizes = [int(f.shape[-1]) for f in feats]
        if len(feats) < 2 or any(a <= b for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"unet_model: the body's stage outputs have widths {sizes} at a {probe} px input, not a "
                             "pyramid that halves from stage to stage; a U-Net needs a convolutional network (e.g. "
                             "resnet34, efficientnet_b0, convnext_tiny), not a vision transformer")
        self.skip_channels = [int(f.shape[1]) for f in feats[:-1]]
        self.stride = probe // int(feats[-1].shape[-1])
        c = int(feats[-1].shape[1])
        # fastai's middle (c → 2c → c); capped at 1024 → 512 so that a body ending in a wide 1x1 conv
        # (efficientnet's 1280 channels) does not give a decoder ten times the body's size.
        c_mid = min(c, 512)
        self.middle = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), _conv(c, 2 * c_mid), _conv(2 * c_mid, c_mid))
        blocks, c_up = [], c_mid
        for i, c_skip in enumerate(reversed(self.skip_channels)):
            c_cat = c_up // 2 + c_skip  # fastai's widths: a block keeps its concatenation's width, the last halves it
            c_out = c_cat if i < len(self.skip_channels) - 1 else c_cat // 2
            blocks.append(_UnetBlock(c_up, c_skip, c_out))
            c_up = c_out
        self.blocks = nn.ModuleList(blocks)
        final_up = probe // int(feats[0].shape[-1])  # the shallowest skip's stride (2 for most bodies, convnext 4)
        self.up = PixelShuffleICNR(c_up, c_up, final_up) if final_up > 1 else nn.Identity()
        self.cross_pad = -(c_up + n_in) % max(1, int(channel_multiple))  # zero channels (module docstring)
        c_cross = c_up + n_in + self.cross_pad
        self.res = _ResBlock(c_cross, c_cross)
        self.head = nn.Conv2d(c_cross, n_out, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The body's stage outputs, shallow to deep (the last one is the bottleneck)."""
        if self.timm_features:
            return list(self.body(x))
        feats = []
        for i, m in enumerate(self._units):
            x = m(x)
            if i in self._keep:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"DynamicUnet: input size {h}x{w} is not a multiple of the body's stride {self.stride}; "
                             f"resize or pad the images to multiples of {self.stride} (e.g. "
                             f"{-(-h // self.stride) * self.stride}x{-(-w // self.stride) * self.stride})")
        feats = self.features(x)
        y = self.middle(feats[-1])
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            y = block(y, skip)
        y = self.up(y)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False)
        cross = [y, x.to(y.dtype)]
        if self.cross_pad:
            layout = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            cross.append(torch.empty((y.shape[0], self.cross_pad, *y.shape[2:]), dtype=y.dtype, device=y.device,
                                     memory_format=layout).zero_())  # y's layout, or cat would copy to NCHW
        return self.head(self.res(torch.cat(cross, 1)))

    def layer_groups(self) -> list[nn.Module]:
        """[early body, late body, decoder + head]: the body split where its parameter counts are closest to
        halves (resnets at layer3, as `VisionModel`), the decoder and head new and trained at the highest rate."""
        decoder = nn.ModuleList([self.middle, self.blocks, self.up, self.res, self.head])
        units = _units(self.body)
        counts = [sum(p.numel() for p in m.parameters()) for _, m in units]
        total, names = sum(counts), [n for n, _ in units]
        cuts = [k for k in range(1, len(units)) if 0 < sum(counts[:k]) < total]
        if not cuts:
            return [self.body, decoder]
        k = names.index("layer3") if "layer3" in names and names.index("layer3") in cuts else \
            min(cuts, key=lambda k: abs(2 * sum(counts[:k]) - total))
        groups: list[nn.Module] = [nn.ModuleList([m for _, m in units[:k]]), nn.ModuleList([m for _, m in units[k:]])]
        covered = {id(p) for g in groups for p in g.parameters()}
        left = [p for p in self.body.parameters() if id(p) not in covered]
        if left:  # parameters set on a container, not a unit
            groups[0].append(nn.ParameterList(left))
        return [*groups, decoder]


def unet_splitter(model: nn.Module) -> list[nn.Module]:
    """`Learner(splitter=unet_splitter)`: the layer groups of a `DynamicUnet` (see `DynamicUnet.layer_groups`)."""
    if not isinstance(model, DynamicUnet):
        raise TypeError(f"unet_splitter: expected a DynamicUnet, got {type(model).__name__}; pass your splitter")
    return model.layer_groups()


def _body(arch: str | Callable[..., nn.Module], n_in: int, arch_kwargs: dict[str, Any]) -> tuple[nn.Module, bool]:
    family, name = _resolve(arch)
    if family == "timm":
        try:
            return _timm().create_model(name, pretrained=False, features_only=True, in_chans=n_in, **arch_kwargs), True
        except (RuntimeError, AttributeError, ValueError) as e:
            raise ValueError(f"unet_model: timm model {name!r} cannot return stage features (features_only=True "
                             f"failed: {e}); pick a convolutional timm model (resnet*, efficientnet*, convnext*)") from e
    if family == "lite0":
        from learnkit.vision.efficientnet import EfficientNetLite0
        full: nn.Module = EfficientNetLite0(n_in=n_in, **arch_kwargs)
    elif family == "callable":
        full = arch(**arch_kwargs)  # type: ignore[operator]
    else:
        full = torchvision.models.get_model(name, weights=None, **arch_kwargs)
    body = _cut(full)
    _set_in_channels(body, n_in)
    return body, False


@register_model("unet_model", limits={"n_out": (1, 10_000), "n_in": (1, 64)})
def unet_model(arch: str | Callable[..., nn.Module], n_out: int, n_in: int = 3,
               arch_kwargs: dict[str, Any] | None = None, channel_multiple: int = 1) -> DynamicUnet:
    """A U-Net over the body of `arch`, with random weights (never downloads; `load_pretrained` fills the body).

    Args:
        arch: a torchvision classification model name ('resnet34', 'efficientnet_b0', 'convnext_tiny', ...),
            'efficientnet_lite0', 'timm:<name>' (features_only), or a callable returning a torchvision-style
            model (not exportable by name).
        n_out: classes (output channels per pixel); n_in: input channels.
        arch_kwargs: for the architecture's constructor.
        channel_multiple: widen the full-resolution block with zero channels to a multiple of this (8 is faster on
            tensor cores; 1, the default, keeps fastai's widths and the models exported before this option).

    Example:
        >>> unet_model("resnet18", n_out=3)(torch.zeros(1, 3, 64, 64)).shape   # torch.Size([1, 3, 64, 64])
    """
    if n_out < 1 or n_in < 1:
        raise ValueError(f"unet_model: n_out={n_out} and n_in={n_in} must be >= 1")
    body, timm_features = _body(arch, n_in, dict(arch_kwargs or {}))
    return DynamicUnet(body, n_out, n_in, timm_features, channel_multiple)


def load_unet_pretrained(model: DynamicUnet, arch: str | Callable[..., nn.Module], weights: str | Path | None = None) -> str:
    """Pretrained weights into `model.body` (the decoder keeps its init); returns where they came from.

    torchvision and learnkit bodies go through `models.load_pretrained` (the same cache, files and errors as
    `vision_learner`); a timm body with `weights=None` is filled from `timm.create_model(name, pretrained=True)`,
    whose state dict holds the `features_only` network's keys.
    """
    family, name = _resolve(arch)
    if family != "timm" or weights is not None:
        return load_pretrained(model, arch, weights)  # type: ignore[arg-type]  # reads .body, .n_in only
    try:
        full = _timm().create_model(name, pretrained=True, num_classes=0, global_pool="", in_chans=model.n_in)
    except Exception as e:  # hub, network and cache errors come in many types
        raise PretrainedWeightsNotFound(f"timm could not load pretrained weights for {name!r} ({e!r}). Offline? Load "
                                        "them on a machine with internet and copy its Hugging Face cache (HF_HOME) "
                                        "here, or pass weights=<file>") from e
    own = model.body.state_dict()
    model.body.load_state_dict({k: v for k, v in full.state_dict().items() if k in own}, strict=True)
    model.pretrained_source, model.input_stats = f"timm:{name}", pretrained_stats(arch, model.n_in)
    return f"timm:{name} pretrained weights"
