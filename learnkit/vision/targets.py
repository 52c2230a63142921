"""What masks and keypoints share: the size of the image a target belongs to (`image_size`), following an image's
deterministic item transforms (anything with a `layout`, i.e. `Resize`), the colours of mask codes, and drawing
masks and points over an image already shown on a matplotlib axis (`show_mask`, `show_points`; reused by
`show_batch` and `show_results`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from learnkit.data.pipeline import step_name
from learnkit.vision.image import ImageLoadError
from learnkit.vision.transforms import pad_index

__all__ = ["image_size", "code_colors", "show_mask", "show_points", "mask_legend"]


def image_size(source: Any) -> tuple[int, int]:
    """(height, width) of an image as `load_image` decodes it: from the file's header only (an EXIF rotation by
    90 degrees swaps them), from an array's (H,W[,C]) / a tensor's ([C,]H,W) shape, or a given (height, width).

    Example:
        >>> image_size("datasets/segmentation-sample/segmentation/images/00000.png")
        (64, 64)
    """
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(v, int) for v in source):
        return int(source[0]), int(source[1])  # already a (height, width)
    if isinstance(source, torch.Tensor):
        return int(source.shape[-2]), int(source.shape[-1])
    if isinstance(source, np.ndarray):
        return int(source.shape[0]), int(source.shape[1])
    if isinstance(source, Image.Image):
        return source.size[1], source.size[0]
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"image_size: cannot read the size of a {type(source).__name__}; pass a path, a PIL image, "
                        "an array (H,W[,C]) or a tensor (C,H,W)")
    name = Path(source)
    if not name.is_file():
        raise ImageLoadError(name, "file not found", f"check the path (relative to {Path.cwd()})")
    try:
        with Image.open(name) as im:
            w, h = im.size
            try:
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # rotated by 90 degrees: W and H swap
            except Exception:
                turned = False
    except Exception as e:
        raise ImageLoadError(name, f"its header cannot be read ({type(e).__name__}: {e})") from None
    return (w, h) if turned else (h, w)


def layout_of(tfm: Any, what: str) -> Callable[[int, int], Any]:
    """The `layout(height, width)` of an item transform a mask or points must follow, or a clear error."""
    layout = getattr(tfm, "layout", None)
    if layout is None:
        raise ValueError(f"the item transform {step_name(tfm)} does not say where it moves pixels (no `layout`), so "
                         f"{what} cannot follow it. Fix: use Resize(...) as the item transform and do the rest in the "
                         "batch (batch_tfms=aug_transforms(...), which moves masks and points with the image)")
    return layout


class FollowMask:
    """An image item transform's geometry applied to a uint8 mask (H,W): the same crop, a nearest resize (labels
    are never blended) and the same padding (reflected or repeated labels where the image reflects or repeats its
    pixels; `ignore_index` where the image is padded with zeros). Picklable for DataLoader workers."""

    def __init__(self, tfm: Any, ignore_index: int):
        self.tfm, self.ignore_index = tfm, ignore_index
        self.layout = layout_of(tfm, "a mask")
        self.__qualname__ = f"{step_name(tfm)} (nearest, on the mask)"

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        (top, left, ch, cw), (nh, nw), (pad_top, pad_left) = self.layout(*mask.shape[-2:])
        m = mask[top:top + ch, left:left + cw]
        if (ch, cw) != (nh, nw):  # 'nearest-exact' samples at pixel centres, as the image's bilinear resize does
            m = F.interpolate(m[None, None].float(), size=(nh, nw), mode="nearest-exact")[0, 0].to(mask.dtype)
        h, w = getattr(self.tfm, "size", (nh, nw))
        bottom, right = h - nh - pad_top, w - nw - pad_left
        if not (pad_top or bottom or pad_left or right):
            return m.contiguous()
        mode = getattr(self.tfm, "pad_mode", "zeros")
        if mode == "zeros":
            out = m.new_full((h, w), self.ignore_index)
            out[pad_top:pad_top + nh, pad_left:pad_left + nw] = m
            return out
        rows, cols = pad_index(nh, pad_top, bottom, mode), pad_index(nw, pad_left, right, mode)  # the image's own
        return m.index_select(0, rows).index_select(1, cols)


class FollowPoints:
    """An image item transform's geometry applied to points: ((K,2) pixel coordinates, (H,W)) → the same after
    the crop, resize and padding. Picklable for DataLoader workers."""

    def __init__(self, tfm: Any):
        self.layout = layout_of(tfm, "keypoints")
        self.size = getattr(tfm, "size", None)
        self.__qualname__ = f"{step_name(tfm)} (on the points)"

    def __call__(self, value: tuple[torch.Tensor, tuple[int, int]]) -> tuple[torch.Tensor, tuple[int, int]]:
        xy, (height, width) = value
        (top, left, ch, cw), (nh, nw), (pad_top, pad_left) = self.layout(height, width)
        scale = torch.tensor([nw / cw, nh / ch], dtype=xy.dtype)
        shift = torch.tensor([pad_left - left * nw / cw, pad_top - top * nh / ch], dtype=xy.dtype)
        out_hw = tuple(self.size) if self.size is not None else (nh, nw)
        return xy * scale + shift, (int(out_hw[0]), int(out_hw[1]))


def code_colors(n: int) -> np.ndarray:
    """(n, 3) RGB colours in [0, 1], one per mask code: matplotlib's tab10 (ten distinct hues), then tab20b and
    tab20c for more codes."""
    import matplotlib

    table = np.concatenate([np.asarray(matplotlib.colormaps[name].colors)[:, :3] for name in ("tab10", "tab20b",
                                                                                                "tab20c")])
    return table[np.arange(n) % len(table)]


def show_mask(mask: torch.Tensor, ax: Any, n_codes: int, ignore_index: int | None = None, alpha: float = 0.5,
              background: bool = False) -> None:
    """Draw a mask (H,W) of class indices over whatever `ax` shows: a colour per code (`code_colors`) at `alpha`;
    code 0 (the background) and `ignore_index` are left clear unless `background=True`."""
    m = mask.detach().cpu().long().numpy()
    rgba = np.zeros((*m.shape, 4))
    colors = code_colors(n_codes)
    valid = (m >= 0) & (m < n_codes)
    rgba[valid, :3] = colors[m[valid]]
    rgba[valid, 3] = alpha
    if not background:
        rgba[m == 0, 3] = 0
    if ignore_index is not None:
        rgba[m == ignore_index, 3] = 0
    ax.imshow(rgba, interpolation="nearest")
    ax.set(xticks=[], yticks=[])


def mask_legend(fig: Any, masks: torch.Tensor, codes: Sequence[str], background: bool = False) -> None:
    """A figure legend with one colour patch per code present in `masks` (code 0 only when `background`)."""
    from matplotlib.patches import Patch

    present = sorted(int(v) for v in torch.unique(masks.cpu()).tolist() if 0 <= int(v) < len(codes))
    present = [v for v in present if background or v != 0]
    if not present:
        return
    colors = code_colors(len(codes))
    rows = -(-len(present) // 5)
    fig.subplots_adjust(bottom=0.04 + 0.035 * rows)  # room under the grid for the legend's rows
    fig.legend(handles=[Patch(color=colors[v], label=str(codes[v])) for v in present], loc="lower center",
               ncol=min(len(present), 5), fontsize=8, frameon=False)


def show_points(xy: torch.Tensor, ax: Any, color: Any = None, marker: str = "o", size: float = 20,
                numbers: bool = True) -> None:
    """Draw (K,2) pixel coordinates (x right, y down, 0 at the left/top edge) over what `ax` shows, numbered in
    order (point k has colour k unless `color`). Points outside the picture are drawn where they are."""
    pts = xy.detach().cpu().float().numpy()
    limits = (ax.get_xlim(), ax.get_ylim()) if ax.get_images() else None  # the picture's frame, not the points'
    colors = code_colors(len(pts)) if color is None else [color] * len(pts)
    # imshow puts pixel centres at integers (the edge at -0.5): shift the continuous coordinates by half a pixel
    ax.scatter(pts[:, 0] - 0.5, pts[:, 1] - 0.5, c=colors, s=size, marker=marker, edgecolors="white", linewidths=0.5)
    if numbers:
        for k, (x, y) in enumerate(pts):
            ax.annotate(str(k), (x - 0.5, y - 0.5), xytext=(3, 3), textcoords="offset points", fontsize=6,
                        color="white", annotation_clip=True)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.set(xticks=[], yticks=[])
