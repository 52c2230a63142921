"""Item transforms: resizing and random crops of one uint8 image (C,H,W), run per item in the loader.

Random in training, deterministic in evaluation: an item transform does not know which split its item comes
from, so each one offers `eval_transform()`, the deterministic version for validation, test and inference:

- `Resize(size, 'crop', random=True)` crops at a random position; its eval version crops the centre.
  `Resize(...)` with the default `random=False` is already deterministic (its eval version is itself).
- `RandomResizedCrop(size)` crops a random area and aspect; its eval version is `Resize(size, 'crop')`,
  a centre crop of the largest region with the final aspect.

The image data builder (`learnkit.vision.data`) runs the training versions on the training set and the eval
versions everywhere else, and exports record the eval versions. `to_config()` records a transform as it is
(`random=True` included), so configs also tell whether a transform is random.

Presizing (fastai's idiom): resize each item once to a size larger than the final one, e.g.
`item_tfms=[Resize(460)]`, then make the random crop and the final size on the whole batch on the GPU, e.g.
`batch_tfms=aug_transforms(size=224, min_scale=0.75)` from `learnkit.vision.augment`. Items then share one
shape (so they batch), the per-item work on the CPU is small, and the augmented image is interpolated once
instead of several times.

Resizing is bilinear with antialiasing (`torch.nn.functional.interpolate`), on uint8 directly: uint8 in,
uint8 out; float in, float out.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learnkit.data.transforms import register_transform

__all__ = ["ItemTransform", "Resize", "RandomResizedCrop", "IntToFloat", "resize_images"]

_METHODS = ("crop", "squish", "pad")
_PAD_MODES = ("zeros", "reflection", "border")


def _size_pair(size: Any, where: str) -> tuple[int, int]:
    """An int or (height, width) of positive ints, as (height, width)."""
    pair = (size, size) if isinstance(size, int) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)):
        raise ValueError(f"{where}: size={size!r}; use a positive int (a square) or (height, width), e.g. 224 "
                         "or (224, 320)")
    return int(pair[0]), int(pair[1])


def _check_image(x: Any, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{where}: expected one image tensor (C,H,W), got {shape}; item transforms run after "
                         "ImageBlock.encode on single items (put transforms of whole batches in batch_tfms)")


def resize_images(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize with antialiasing of one image (C,H,W) or a batch (N,C,H,W) to (h, w), keeping the dtype.
    uint8 is interpolated directly on the CPU; elsewhere (CUDA has no uint8 kernel) through float32, rounded."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    batch = x if x.ndim == 4 else x[None]
    if batch.dtype == torch.uint8 and batch.device.type != "cpu":
        out = F.interpolate(batch.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out if x.ndim == 4 else out[0]


def pad_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Source indices for positions -before .. n+after-1: mirrored without repeating the edge ('reflection',
    as numpy's 'reflect'; works for any pad width), or the edge repeated ('border')."""
    i = torch.arange(-before, n + after)
    if mode == "border" or n == 1:
        return i.clamp(0, n - 1)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    if not (top or bottom or left or right):
        return x
    c, h, w = x.shape
    if mode == "zeros":
        out = x.new_zeros((c, h + top + bottom, w + left + right))
        out[:, top:top + h, left:left + w] = x
        return out
    rows, cols = pad_index(h, top, bottom, mode), pad_index(w, left, right, mode)
    return x.index_select(1, rows).index_select(2, cols)


class ItemTransform:
    """Base of learnkit's item transforms: `__call__(image) -> image`, `eval_transform()`, `to_config()`.

    Subclasses record their constructor arguments in `to_config()`; `from_config` passes them back.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def eval_transform(self) -> "ItemTransform":
        """The deterministic version used outside training (this transform itself when it is not random)."""
        return self

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ItemTransform":
        return cls(**{k: v for k, v in config.items() if k != "type"})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


@register_transform
class Resize(ItemTransform):
    """Resize one image to `size`.

    Args:
        size: an int (a square) or (height, width).
        method: 'crop' (scale so the image covers `size`, then crop the excess: nothing is distorted, the
            borders of the long side are lost), 'squish' (scale to exactly `size`, changing the aspect), or
            'pad' (scale so the image fits inside `size`, then pad: nothing is lost or distorted).
        pad_mode: 'reflection' (mirror the image), 'border' (repeat the edge pixels) or 'zeros' (black).
        random: crop at a random position (for 'crop') or place the image at a random position (for
            'pad') instead of the centre; use for training only (`eval_transform()` turns it off).

    Example:
        >>> item_tfms = [Resize(460)]                  # presizing, before batch augmentation
        >>> Resize((224, 320), method="pad", pad_mode="zeros")(img).shape
        torch.Size([3, 224, 320])
    """

    def __init__(self, size: int | tuple[int, int], method: str = "crop", pad_mode: str = "reflection",
                 random: bool = False):
        self.size = _size_pair(size, "Resize")
        if method not in _METHODS:
            raise ValueError(f"Resize: method={method!r}; use one of {list(_METHODS)}")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"Resize: pad_mode={pad_mode!r}; use one of {list(_PAD_MODES)}")
        self.method, self.pad_mode, self.random = method, pad_mode, bool(random)

    def _offset(self, room: int) -> int:
        return int(torch.randint(0, room + 1, ())) if self.random and room > 0 else room // 2

    def layout(self, height: int, width: int) -> tuple[tuple[int, int, int, int], tuple[int, int], tuple[int, int]]:
        """Where an input of `height` x `width` goes: ((top, left, crop height, crop width) of the region kept,
        (height, width) it is resized to, (top, left) padding before it in the output). Masks and keypoints
        follow an image's Resize through this (learnkit/vision/segment.py, points.py)."""
        h, w = self.size
        if self.method == "squish":
            return (0, 0, height, width), (h, w), (0, 0)
        if self.method == "crop":  # crop the source region first, then resize once: less work, same result
            scale = max(h / height, w / width)
            ch, cw = min(height, max(1, round(h / scale))), min(width, max(1, round(w / scale)))
            return (self._offset(height - ch), self._offset(width - cw), ch, cw), (h, w), (0, 0)
        scale = min(h / height, w / width)
        nh, nw = min(h, max(1, round(height * scale))), min(w, max(1, round(width * scale)))
        return (0, 0, height, width), (nh, nw), (self._offset(h - nh), self._offset(w - nw))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "Resize")
        (top, left, ch, cw), (nh, nw), (pad_top, pad_left) = self.layout(*x.shape[-2:])
        if (ch, cw) != tuple(x.shape[-2:]):
            x = x[:, top:top + ch, left:left + cw]
        x = resize_images(x, nh, nw)
        h, w = self.size
        return _pad(x, pad_top, h - nh - pad_top, pad_left, w - nw - pad_left, self.pad_mode)

    def eval_transform(self) -> "Resize":
        return Resize(self.size, self.method, self.pad_mode, random=False) if self.random else self

    def to_config(self) -> dict[str, Any]:
        return {"type": "Resize", "size": list(self.size), "method": self.method, "pad_mode": self.pad_mode,
                "random": self.random}


@register_transform
class RandomResizedCrop(ItemTransform):
    """Crop a random region (a random fraction of the area, a random aspect), then resize it to `size`.

    Uses torch's global RNG, which each DataLoader worker seeds differently. After 10 draws that do not
    fit the image, it falls back to a centre crop with the aspect clamped to `ratio` (as torchvision).

    Args:
        size: an int (a square) or (height, width).
        min_scale, max_scale: the range of the crop's area as a fraction of the image's.
        ratio: the range of the crop's aspect (width / height), sampled log-uniformly.

    Example:
        >>> tfm = RandomResizedCrop(224, min_scale=0.35)
        >>> tfm.eval_transform()
        Resize(size=[224, 224], method='crop', pad_mode='reflection', random=False)
    """

    def __init__(self, size: int | tuple[int, int], min_scale: float = 0.08,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), max_scale: float = 1.0):
        self.size = _size_pair(size, "RandomResizedCrop")
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"RandomResizedCrop: min_scale={min_scale!r}, max_scale={max_scale!r}; need "
                             "0 < min_scale <= max_scale <= 1 (fractions of the image's area), e.g. min_scale=0.35")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio={ratio!r}; use (low, high) aspects with 0 < low <= high, "
                             "e.g. (3/4, 4/3)")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "RandomResizedCrop")
        height, width = x.shape[-2:]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = height * width * float(torch.empty(()).uniform_(self.min_scale, self.max_scale))
            aspect = math.exp(float(torch.empty(()).uniform_(log_lo, log_hi)))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= width and 0 < ch <= height:
                top = int(torch.randint(0, height - ch + 1, ()))
                left = int(torch.randint(0, width - cw + 1, ()))
                return resize_images(x[:, top:top + ch, left:left + cw], *self.size)
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        cw, ch = (width, max(1, round(width / aspect))) if width / height < aspect else \
            (max(1, round(height * aspect)), height)
        cw, ch = min(cw, width), min(ch, height)
        top, left = (height - ch) // 2, (width - cw) // 2
        return resize_images(x[:, top:top + ch, left:left + cw], *self.size)

    def eval_transform(self) -> Resize:
        return Resize(self.size, "crop")

    def to_config(self) -> dict[str, Any]:
        return {"type": "RandomResizedCrop", "size": list(self.size), "min_scale": self.min_scale,
                "ratio": list(self.ratio), "max_scale": self.max_scale}


@register_transform
class IntToFloat(nn.Module):
    """Batch transform: uint8 images to float32 in [0, 1] (x / 255); float batches pass unchanged. The default
    batch transform of `ImageBlock`, so that a `DataBlock` hands the model floats; a `Normalize` after it gets
    floats in [0, 1] and normalizes them exactly as it would have normalized the uint8 batch (no double scaling).

    Example:
        >>> IntToFloat()(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)).max()
        tensor(1.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255 if x.dtype == torch.uint8 else x

    def to_config(self) -> dict[str, Any]:
        return {"type": "IntToFloat"}
