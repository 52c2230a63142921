"""Minimal drawing of dense and point targets on a matplotlib axis: a class mask over its image, keypoints in [-1, 1]
coordinates. (The data side of issue 17 brings the overlays `show_batch` uses; these two are the names
`show_results` calls, to be merged with those.)"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["show_mask_overlay", "show_points"]


def _image(ax: Any, image: torch.Tensor) -> tuple[int, int]:
    t = image.detach().float().cpu()
    if t.ndim == 3:
        t = t.permute(1, 2, 0)
        t = (t - t.min()) / (t.max() - t.min() + 1e-8)
        ax.imshow(t.squeeze(-1).numpy(), cmap="gray" if t.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    return int(image.shape[-2]), int(image.shape[-1])


def show_mask_overlay(ax: Any, image: torch.Tensor, mask: torch.Tensor, codes: Sequence[Any] | None = None,
                      alpha: float = 0.5, ignore_index: int = 255) -> None:
    """`image` (C, H, W) with `mask` (H, W) class indices drawn over it in a qualitative colour map (class 0 and
    `ignore_index` left clear)."""
    import numpy as np

    _image(ax, image)
    m = mask.detach().cpu().long().numpy()
    n = max(len(codes) if codes is not None else 0, int(m[m != ignore_index].max(initial=0)) + 1)
    shown = np.ma.masked_where((m == 0) | (m == ignore_index), m)
    ax.imshow(shown, cmap="tab20", vmin=0, vmax=max(n - 1, 1), alpha=alpha, interpolation="nearest")


def show_points(ax: Any, image: torch.Tensor, points: torch.Tensor, color: str = "red", marker: str = "x") -> None:
    """`image` (C, H, W) with `points` (K, 2) as (x, y) in [-1, 1] (-1: the left/top edge, 1: the right/bottom)."""
    h, w = _image(ax, image)
    p = points.detach().float().cpu().reshape(-1, 2)
    ax.scatter((p[:, 0] + 1) * w / 2 - 0.5, (p[:, 1] + 1) * h / 2 - 0.5, c=color, marker=marker, s=30)
