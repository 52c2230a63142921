"""Batch augmentation on the device: flip, rotation, zoom, random-resized crop and perspective warp compose
into one homography per image, applied with a single `grid_sample`; then fastai-style lighting.

Coordinates are `grid_sample`'s normalized ones (-1 and 1 are the outer edges of the image, pixel centres at
(2i+1)/n - 1, `align_corners=False`), so the identity and flips are exact at pixel centres. The homography
maps an output point to the input point it samples: ``M = Crop @ Flip @ Rotate @ Zoom @ Warp``. Read as what
happens to the picture: crop a window (resized to the output), flip, rotate about the centre, zoom in about a
random centre, then warp the perspective.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnkit.data.transforms import register_transform

__all__ = ["AugmentParams", "BatchAugment", "BatchResize", "Warp", "aug_transforms"]

_MODES = ("bilinear", "nearest", "bicubic")
_PAD_MODES = ("zeros", "border", "reflection")
_N_DRAWS = 19  # uniform numbers per image per batch, the same whatever the settings, so streams stay aligned


def _hw(size: int | Sequence[int] | None, where: str) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ValueError(f"{where}: size={size!r} must be a positive int or a (height, width) pair of positive "
                         "ints, e.g. size=224 or size=(224, 288)")
    return hw  # type: ignore[return-value]


def _check(name: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    if not (low <= value < high if high_open else low <= value <= high):
        interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"BatchAugment: {name}={value!r} must be in {interval}")


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _center_window(in_hw: Sequence[int], out_hw: Sequence[int]) -> tuple[float, float]:
    """(width, height) fractions of the largest centred window of the input with the output's aspect ratio."""
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    win_w = min(in_w, in_h * out_w / out_h)
    return win_w / in_w, min(in_h, win_w * out_h / out_w) / in_h


def _center_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = _to_float(x)
    (in_h, in_w), (h, w) = x.shape[-2:], size
    ch, cw = min(in_h, round(in_w * h / w)), min(in_w, round(in_h * w / h))
    top, left = (in_h - ch) // 2, (in_w - cw) // 2
    x = x[..., top:top + ch, left:left + cw]
    if (ch, cw) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < ch or w < cw)


@register_transform
class BatchResize(nn.Module):
    """Resize a batch (B, C, H, W) to `size`: centre crop to the target's aspect ratio, then bilinear resize
    (antialiased when shrinking). uint8 becomes float in [0, 1].

    Example:
        >>> BatchResize(224)(torch.zeros(8, 3, 256, 320, dtype=torch.uint8)).shape
        torch.Size([8, 3, 224, 224])
    """

    def __init__(self, size: int | Sequence[int]):
        super().__init__()
        self.size: tuple[int, int] = _hw(size, "BatchResize")  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _center_resize(x, self.size)

    def to_config(self) -> dict:
        return {"type": "BatchResize", "size": list(self.size)}

    def extra_repr(self) -> str:
        return f"size={self.size}"


@dataclass
class AugmentParams:
    """One batch's augmentation, one CPU tensor of shape (B,) per field; an identity value means 'not applied'.

    Attributes:
        flip, flip_vert: bool, mirror left-right / top-bottom.
        angle: degrees, positive turns the picture counterclockwise as displayed (0 = none).
        zoom: scale factor (1 = none); zoom_x, zoom_y: centre of the zoomed window in normalized coordinates.
        warp_x, warp_y: corner displacement (normalized) of the perspective warp (0 = none).
        crop_w, crop_h: window size as fractions of the input's width and height; crop_x, crop_y: its centre.
        brightness: fastai's 'change' in (0, 1), added in logit space as logit(change) (0.5 = none).
        contrast: scale of the logits (1 = none).
    """

    flip: torch.Tensor
    flip_vert: torch.Tensor
    angle: torch.Tensor
    zoom: torch.Tensor
    zoom_x: torch.Tensor
    zoom_y: torch.Tensor
    warp_x: torch.Tensor
    warp_y: torch.Tensor
    crop_w: torch.Tensor
    crop_h: torch.Tensor
    crop_x: torch.Tensor
    crop_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor

    def coord_mask(self) -> torch.Tensor:
        """Which images move their pixels (need sampling)."""
        return (self.flip | self.flip_vert | (self.angle != 0) | (self.zoom != 1) | (self.warp_x != 0)
                | (self.warp_y != 0) | (self.crop_w != 1) | (self.crop_h != 1))

    def lighting_mask(self) -> torch.Tensor:
        """Which images change brightness or contrast."""
        return (self.brightness != 0.5) | (self.contrast != 1)

    def homographies(self, out_hw: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, 3, 3) matrices (float32 unless `dtype`) mapping output to input normalized coordinates (see the
        module doc)."""
        p = {k: v.double() for k, v in vars(self).items()}
        n, (out_h, out_w) = len(self.angle), out_hw
        one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

        def mat(*rows: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.stack([torch.stack(list(r), -1) for r in rows], -2)

        crop = mat((p["crop_w"], zero, p["crop_x"]), (zero, p["crop_h"], p["crop_y"]), (zero, zero, one))
        flip = mat((1 - 2 * p["flip"], zero, zero), (zero, 1 - 2 * p["flip_vert"], zero), (zero, zero, one))
        # A rotation in pixel units (x scaled by W, y by H) so that it is rigid for non-square outputs.
        cos, sin = torch.cos(p["angle"] * math.pi / 180), torch.sin(p["angle"] * math.pi / 180)
        rotate = mat((cos, -sin * out_h / out_w, zero), (sin * out_w / out_h, cos, zero), (zero, zero, one))
        inv = 1 / p["zoom"]
        zoom = mat((inv, zero, p["zoom_x"]), (zero, inv, p["zoom_y"]), (zero, zero, one))
        # Perspective warp: the output's corners (sx, sy) sample the input at (sx, sy) - sx*sy*(warp_x, warp_y),
        # a unit square -> quadrilateral homography (Heckbert 1989) after mapping [-1, 1] onto [0, 1].
        wx, wy = p["warp_x"], p["warp_y"]
        (x0, y0), (x1, y1) = (-1 - wx, -1 - wy), (1 + wx, -1 + wy)
        (x2, y2), (x3, y3) = (1 - wx, 1 - wy), (-1 + wx, 1 + wy)
        dx1, dx2, dx3, dy1, dy2, dy3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3, y1 - y2, y3 - y2, y0 - y1 + y2 - y3
        den = dx1 * dy2 - dx2 * dy1
        g, h = (dx3 * dy2 - dx2 * dy3) / den, (dx1 * dy3 - dx3 * dy1) / den
        square = mat((x1 - x0 + g * x1, x3 - x0 + h * x3, x0), (y1 - y0 + g * y1, y3 - y0 + h * y3, y0), (g, h, one))
        to_unit = torch.tensor([[0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
        return (crop @ flip @ rotate @ zoom @ square @ to_unit).to(dtype)


def _pixel_grid(mats: torch.Tensor, out_hw: Sequence[int], projective: bool) -> torch.Tensor:
    """(B, h, w, 2) input coordinates sampled by each output pixel centre under the (B, 3, 3) matrices."""
    (h, w), dev = out_hw, mats.device
    ys = (torch.arange(h, device=dev, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=dev, dtype=torch.float32) * 2 + 1) / w - 1
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=dev)], -1)
    grid = base.view(1, h * w, 3) @ mats.transpose(1, 2)  # (B, h*w, 3)
    # w > 0 on the output square under a perspective warp below 0.5: the warped quad stays convex
    grid = grid[..., :2] / grid[..., 2:] if projective else grid[..., :2]
    return grid.reshape(-1, h, w, 2)


@dataclass
class Warp:
    """One batch's geometric transform, shared by the input and the targets that follow it (a mask, points): a
    target block's `warp(batch, warp)` moves its values with `sample` (pixels) or `points` (coordinates).

    Attributes:
        matrices: (B, 3, 3) float64 on the CPU, output → input normalized coordinates (see the module doc).
        grid: (B, h, w, 2) float32 on the device: the input coordinates each output pixel centre samples.
        in_hw, out_hw: the input's and the output's (height, width).
    """

    matrices: torch.Tensor
    grid: torch.Tensor
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @classmethod
    def from_matrices(cls, matrices: torch.Tensor, in_hw: Sequence[int], out_hw: Sequence[int],
                      device: torch.device, projective: bool = True) -> "Warp":
        mats = matrices.to(torch.float32).to(device, non_blocking=True)
        return cls(matrices.double(), _pixel_grid(mats, out_hw, projective), tuple(in_hw), tuple(out_hw))

    @classmethod
    def center(cls, batch_size: int, in_hw: Sequence[int], out_hw: Sequence[int], device: torch.device) -> "Warp":
        """The eval-mode centre crop + resize of `BatchResize` (the same rounded window) as a Warp."""
        (in_h, in_w), (h, w) = in_hw, out_hw
        ch, cw = min(in_h, round(in_w * h / w)), min(in_w, round(in_h * w / h))
        top, left = (in_h - ch) // 2, (in_w - cw) // 2
        m = torch.tensor([[cw / in_w, 0, (2 * left + cw) / in_w - 1], [0, ch / in_h, (2 * top + ch) / in_h - 1],
                          [0, 0, 1]], dtype=torch.float64)
        return cls.from_matrices(m.expand(batch_size, 3, 3), in_hw, out_hw, device, projective=False)

    def sample(self, x: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
        """`grid_sample` of a float batch (B, C, H, W) onto the output grid."""
        return F.grid_sample(x, self.grid, mode=mode, padding_mode=padding_mode, align_corners=False)

    def points(self, xy: torch.Tensor) -> torch.Tensor:
        """Input normalized coordinates (B, K, 2) → where they land in the output (the inverse homography).
        Points that leave the picture come out beyond [-1, 1]; they are not clamped."""
        inv = torch.linalg.inv(self.matrices).to(torch.float32).to(xy.device, non_blocking=True)
        p = torch.cat([xy.float(), torch.ones_like(xy[..., :1], dtype=torch.float32)], -1) @ inv.transpose(1, 2)
        return p[..., :2] / p[..., 2:]

    def mirrored(self) -> torch.Tensor:
        """(B,) bool: the transform mirrors the picture (one flip, not two): left and right swap."""
        return torch.linalg.det(self.matrices) < 0


class BatchAugment(nn.Module):
    """fastai's `aug_transforms` on whole batches on the device, coordinate transforms in one `grid_sample`.

    In training mode each image independently gets: a horizontal flip (probability `p_flip`), a vertical flip
    (`p_flip_vert`), a rotation uniform in +-`max_rotate` degrees, a zoom uniform in [`min_zoom`, `max_zoom`]
    about a random centre and a perspective warp uniform in +-`max_warp` (each with probability `p_affine`),
    a random-resized crop when `min_scale` < 1 (area in [min_scale, 1], aspect ratio log-uniform in `ratio`,
    clipped to the image), then brightness and contrast (each with probability `p_lighting`). uint8 input is
    scaled to [0, 1]; float input is taken as already in [0, 1]. Output: float32, (B, C, *size).

    In eval mode it is the identity when `size` is None or the input's size (uint8 stays uint8, for a
    following `Normalize`), otherwise a centre crop + resize like `BatchResize(size)`; `to_config` records
    exactly that (None when the identity): augmentation is not replayed at inference.

    Parameters come from the CPU generator `self.generator` (seeded with `seed`, or from the global torch RNG
    when None, so `learnkit.set_seed` makes it reproducible): the same seed augments identically on CPU and
    GPU, and saving `generator.get_state()` makes a resume bit-exact. `draw_params` + `augment` expose the
    two halves, e.g. to apply one draw to an image batch and its masks.

    Example:
        >>> aug = BatchAugment(size=224, max_rotate=15.0, seed=0)
        >>> aug(torch.zeros(8, 3, 256, 256, dtype=torch.uint8)).shape
        torch.Size([8, 3, 224, 224])
    """

    def __init__(self, size: int | Sequence[int] | None = None, p_flip: float = 0.5, p_flip_vert: float = 0.0,
                 max_rotate: float = 10.0, min_zoom: float = 1.0, max_zoom: float = 1.1, max_warp: float = 0.2,
                 max_lighting: float = 0.2, p_affine: float = 0.75, p_lighting: float = 0.75,
                 min_scale: float = 1.0, ratio: Sequence[float] = (3 / 4, 4 / 3), mode: str = "bilinear",
                 pad_mode: str = "reflection", seed: int | None = None):
        super().__init__()
        for name, value in [("p_flip", p_flip), ("p_flip_vert", p_flip_vert), ("p_affine", p_affine),
                            ("p_lighting", p_lighting)]:
            _check(name, value, 0.0, 1.0)
        _check("max_rotate", max_rotate, 0.0, 180.0)
        _check("max_warp", max_warp, 0.0, 0.5, high_open=True)  # from 0.5 the warped square can fold over
        _check("max_lighting", max_lighting, 0.0, 1.0, high_open=True)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"BatchAugment: need 0 < min_zoom <= max_zoom, got min_zoom={min_zoom!r}, "
                             f"max_zoom={max_zoom!r}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"BatchAugment: min_scale={min_scale!r} must be in (0, 1] (1 turns the random "
                             "resized crop off)")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"BatchAugment: ratio={tuple(ratio)!r} must be (low, high) with 0 < low <= high")
        if mode not in _MODES or pad_mode not in _PAD_MODES:
            raise ValueError(f"BatchAugment: mode={mode!r} must be one of {_MODES} and pad_mode={pad_mode!r} "
                             f"one of {_PAD_MODES}")
        self.size = _hw(size, "BatchAugment")
        self.p_flip, self.p_flip_vert, self.p_affine, self.p_lighting = p_flip, p_flip_vert, p_affine, p_lighting
        self.max_rotate, self.min_zoom, self.max_zoom, self.max_warp = max_rotate, min_zoom, max_zoom, max_warp
        self.max_lighting, self.min_scale, self.ratio = max_lighting, min_scale, (float(ratio[0]), float(ratio[1]))
        self.mode, self.pad_mode = mode, pad_mode
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        self.generator = torch.Generator().manual_seed(self.seed)

    def draw_params(self, batch_size: int, in_hw: Sequence[int]) -> AugmentParams:
        """Draw one batch's parameters (CPU tensors) from `self.generator` for inputs of size `in_hw`."""
        u = torch.rand(batch_size, _N_DRAWS, generator=self.generator, dtype=torch.float64).unbind(1)
        out_hw = self.size or tuple(in_hw)
        one, zero = torch.ones(batch_size, dtype=torch.float64), torch.zeros(batch_size, dtype=torch.float64)

        def maybe(gate: torch.Tensor, p: float, value: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
            return torch.where(gate < p, value, identity)

        def symmetric(v: torch.Tensor, magnitude: float) -> torch.Tensor:
            return (2 * v - 1) * magnitude

        zoom = maybe(u[4], self.p_affine, self.min_zoom + (self.max_zoom - self.min_zoom) * u[5], one)
        if self.min_scale < 1:  # random-resized crop; the ratio is the window's width/height in input pixels
            (in_h, in_w), (lo, hi) = in_hw, (math.log(self.ratio[0]), math.log(self.ratio[1]))
            area, ratio = self.min_scale + (1 - self.min_scale) * u[11], torch.exp(lo + (hi - lo) * u[12])
            crop_w = torch.sqrt(area * ratio * in_h / in_w).clamp(max=1)
            crop_h = torch.sqrt(area * in_w / (ratio * in_h)).clamp(max=1)
        else:  # the centred window with the output's aspect ratio, as in eval mode
            fw, fh = _center_window(in_hw, out_hw)
            crop_w, crop_h = one * fw, one * fh
        lo_c = math.log(1 - self.max_lighting)
        return AugmentParams(
            flip=u[0] < self.p_flip, flip_vert=u[1] < self.p_flip_vert,
            angle=maybe(u[2], self.p_affine, symmetric(u[3], self.max_rotate), zero),
            zoom=zoom, zoom_x=(1 - 1 / zoom) * (2 * u[6] - 1), zoom_y=(1 - 1 / zoom) * (2 * u[7] - 1),
            warp_x=maybe(u[8], self.p_affine, symmetric(u[9], self.max_warp), zero),
            warp_y=maybe(u[8], self.p_affine, symmetric(u[10], self.max_warp), zero),
            crop_w=crop_w, crop_h=crop_h, crop_x=(1 - crop_w) * (2 * u[13] - 1), crop_y=(1 - crop_h) * (2 * u[14] - 1),
            brightness=maybe(u[15], self.p_lighting, 0.5 * (1 + symmetric(u[16], self.max_lighting)), one / 2),
            contrast=maybe(u[17], self.p_lighting, torch.exp(lo_c - 2 * lo_c * u[18]), one))

    def augment(self, x: torch.Tensor, params: AugmentParams, warp: Warp | None = None) -> torch.Tensor:
        """Apply drawn `params` to a batch (B, C, H, W): one `grid_sample` (skipped when nothing moves and the
        size is kept), then lighting (skipped when none was drawn). Returns float32 in [0, 1]. `warp`: the
        batch's `Warp` when the caller built it already (to move targets with it)."""
        with torch.autocast(x.device.type, enabled=False):  # the grid must stay float32 under mixed precision
            x = _to_float(x)
            if warp is None:
                warp = self.warp_of(params, tuple(x.shape[-2:]), x.device)
            if warp is not None:
                x = warp.sample(x, self.mode, self.pad_mode)
                x = x.clamp(0, 1) if self.mode == "bicubic" else x
            light = params.lighting_mask()
            if bool(light.any()):
                x = self._lighting(x, params, light)
            return x

    def warp_of(self, params: AugmentParams, in_hw: tuple[int, int], device: torch.device) -> Warp | None:
        """The batch's `Warp` for drawn `params`, or None when nothing moves and the size is kept."""
        out_hw = self.size or in_hw
        if not bool(params.coord_mask().any()) and out_hw == in_hw:
            return None
        # Matrices are built on the CPU (tiny, and identical on every device) and sent over without a sync.
        projective = bool(((params.warp_x != 0) | (params.warp_y != 0)).any())
        return Warp.from_matrices(params.homographies(out_hw, torch.float64), in_hw, out_hw, device, projective)

    def transform_batch(self, batch: Sequence[torch.Tensor], blocks: Sequence, n_inp: int) -> tuple:
        """The whole batch (called by `DataBunch.transfer`): the first input as `forward` does, and every target
        whose block follows the input (`block.follows_input`: MaskBlock, PointBlock) moved by the same `Warp`
        through `block.warp(target, warp)` (masks: nearest, never blending labels; points: the same transform
        applied to their coordinates). Other inputs and targets (labels) pass unchanged."""
        followers = [i for i in range(n_inp, min(len(batch), len(blocks)))
                     if getattr(blocks[i], "follows_input", False)]
        x = batch[0]
        if not followers:
            return (self(x),) + tuple(batch[1:])
        in_hw = (int(x.shape[-2]), int(x.shape[-1]))
        if not self.training:
            if self.size is None or in_hw == self.size:
                return tuple(batch)
            warp: Warp | None = Warp.center(len(x), in_hw, self.size, x.device)
            x = _center_resize(x, self.size)
        else:
            params = self.draw_params(x.shape[0], in_hw)
            warp = self.warp_of(params, in_hw, x.device)
            x = self.augment(x, params, warp)
        out = list(batch)
        out[0] = x
        if warp is not None:
            for i in followers:
                out[i] = blocks[i].warp(batch[i], warp)
        return tuple(out)

    @staticmethod
    def _lighting(x: torch.Tensor, params: AugmentParams, mask: torch.Tensor) -> torch.Tensor:
        # fastai: sigmoid((logit(x) + logit(change)) * scale), with logit clamped at 1e-7.
        to = dict(device=x.device, dtype=torch.float32, non_blocking=True)
        shift = torch.logit(params.brightness).to(**to).view(-1, 1, 1, 1)
        scale = params.contrast.to(**to).view(-1, 1, 1, 1)
        lit = torch.sigmoid((torch.logit(x, eps=1e-7) + shift) * scale).clamp_(0, 1)
        return torch.where(mask.to(x.device, non_blocking=True).view(-1, 1, 1, 1), lit, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            if self.size is None or tuple(x.shape[-2:]) == self.size:
                return x
            return _center_resize(x, self.size)
        return self.augment(x, self.draw_params(x.shape[0], x.shape[-2:]))

    def to_config(self) -> dict | None:
        """What eval mode does, for exports: None (identity) without `size`, else `BatchResize(size)`'s config."""
        return None if self.size is None else BatchResize(self.size).to_config()

    def extra_repr(self) -> str:
        return (f"size={self.size}, p_flip={self.p_flip}, p_flip_vert={self.p_flip_vert}, "
                f"max_rotate={self.max_rotate}, zoom=({self.min_zoom}, {self.max_zoom}), max_warp={self.max_warp}, "
                f"max_lighting={self.max_lighting}, p_affine={self.p_affine}, p_lighting={self.p_lighting}, "
                f"min_scale={self.min_scale}, ratio={self.ratio}, mode={self.mode!r}, pad_mode={self.pad_mode!r}, "
                f"seed={self.seed}")


def aug_transforms(size: int | Sequence[int] | None = None, flip: bool = True, flip_vert: bool = False,
                   max_rotate: float = 10.0, min_zoom: float = 1.0, max_zoom: float = 1.1, max_warp: float = 0.2,
                   max_lighting: float = 0.2, p_affine: float = 0.75, p_lighting: float = 0.75,
                   min_scale: float = 1.0, ratio: Sequence[float] = (3 / 4, 4 / 3), mode: str = "bilinear",
                   pad_mode: str = "reflection", seed: int | None = None) -> list[nn.Module]:
    """fastai's default augmentation as a list of batch transforms: `[BatchAugment(...)]`.

    `flip` / `flip_vert` flip with probability 0.5 (vertical flips independently; fastai's `flip_vert` also
    transposes). `min_scale` < 1 adds a random-resized crop to `size` in the same `grid_sample`. Append a
    `Normalize` after it.

    Example:
        >>> tfms = aug_transforms(size=224, min_scale=0.35) + [Normalize.from_batches([xb])]
    """
    return [BatchAugment(size=size, p_flip=0.5 if flip else 0.0, p_flip_vert=0.5 if flip_vert else 0.0,
                         max_rotate=max_rotate, min_zoom=min_zoom, max_zoom=max_zoom, max_warp=max_warp,
                         max_lighting=max_lighting, p_affine=p_affine, p_lighting=p_lighting, min_scale=min_scale,
                         ratio=ratio, mode=mode, pad_mode=pad_mode, seed=seed)]
