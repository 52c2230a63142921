"""A target or prediction drawn over its image, for `show_results` and `SegmentationInterpretation`: the image,
then the mask or the points drawn by targets.py's `show_mask` / `show_points` (the same drawing as `show_batch`)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from learnkit.vision.targets import show_mask, show_points

__all__ = ["show_mask_overlay", "show_points_overlay"]


def _image(ax: Any, image: torch.Tensor) -> tuple[int, int]:
    t = image.detach().float().cpu()
    if t.ndim == 3:
        t = t.permute(1, 2, 0)
        t = (t - t.min()) / (t.max() - t.min() + 1e-8)  # a normalized batch: stretched back to [0, 1] for display
        ax.imshow(t.squeeze(-1).numpy(), cmap="gray" if t.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    return int(image.shape[-2]), int(image.shape[-1])


def show_mask_overlay(ax: Any, image: torch.Tensor, mask: torch.Tensor, codes: Sequence[Any] | None = None,
                      alpha: float = 0.5, ignore_index: int = 255) -> None:
    """`image` (C, H, W) with `mask` (H, W) class indices over it, a colour per code (code 0 and `ignore_index`
    left clear)."""
    _image(ax, image)
    m = mask.detach().cpu().long()
    kept = m[m != ignore_index]
    n = max(len(codes) if codes is not None else 0, int(kept.max()) + 1 if kept.numel() else 1)
    show_mask(m, ax, n, ignore_index=ignore_index, alpha=alpha)


def show_points_overlay(ax: Any, image: torch.Tensor, points: torch.Tensor, color: str = "red",
                        marker: str = "x") -> None:
    """`image` (C, H, W) with `points` (K, 2) as (x, y) in [-1, 1] (-1: the left/top edge, 1: the right/bottom)."""
    h, w = _image(ax, image)
    p = points.detach().float().cpu().reshape(-1, 2)
    show_points(torch.stack([(p[:, 0] + 1) * w / 2, (p[:, 1] + 1) * h / 2], 1), ax, color=color, marker=marker,
                numbers=False)
