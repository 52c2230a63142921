"""Batch transforms that are not tied to a modality. Batch transforms are `nn.Module`s, applied to the
inputs on the device; `module.training` says whether the batch is a training batch."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """Convert to float (uint8 is first scaled to [0, 1]) and normalize per channel (dim 1).

    Example:
        >>> norm = Normalize(mean=[0.2860], std=[0.3530])   # Fashion-MNIST statistics
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.shape != std_t.shape:
            raise ValueError(f"Normalize: mean has {mean_t.numel()} values {mean_t.tolist()} but std has "
                             f"{std_t.numel()} {std_t.tolist()}; give one mean and one std per channel")
        if mean_t.numel() == 0:
            raise ValueError("Normalize: mean and std are empty; give one mean and one std per channel")
        if not torch.isfinite(mean_t).all():
            raise ValueError(f"Normalize: mean must be finite, got {mean_t.tolist()}; every input would become NaN. "
                             "Compute the statistics from clean inputs (Normalize.from_batches) or give them")
        for bad, what in ((~torch.isfinite(std_t), "finite"), (std_t <= 0, "positive")):
            if bad.any():  # a NaN, infinite, zero or negative std makes inputs NaN, all zero, inf or flipped
                raise ValueError(f"Normalize: std must be {what}, got {std_t.tolist()}. Compute the statistics "
                                 "from clean inputs (Normalize.from_batches) or give them")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @classmethod
    def from_batches(cls, batches: Sequence[torch.Tensor]) -> "Normalize":
        """Statistics per channel (dim 1) computed from a few input batches."""
        x = torch.cat([b.float() / 255 if b.dtype == torch.uint8 else b.float() for b in batches])
        dims = [d for d in range(x.ndim) if d != 1] if x.ndim > 2 else [0, 1]
        return cls(x.mean(dim=dims).reshape(-1).tolist(), x.std(dim=dims).clamp_min(1e-6).reshape(-1).tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if self.mean.numel() == 1:
            return (x - self.mean) / self.std
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def to_config(self) -> dict:
        return {"type": "Normalize", "mean": self.mean.tolist(), "std": self.std.tolist()}

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.tolist()]}, std={[round(v, 4) for v in self.std.tolist()]}"


_TRANSFORMS: dict[str, type] = {"Normalize": Normalize}


def register_transform(cls: type) -> type:
    """Let `transform_from_config` rebuild `cls` (a transform with `to_config`/`from_config`) from exports."""
    _TRANSFORMS[cls.__name__] = cls
    return cls


def transform_from_config(config: dict) -> nn.Module:
    """Rebuild a registered transform from its `to_config()` dict."""
    name = config.get("type")
    if name not in _TRANSFORMS:
        raise ValueError(f"unknown transform {name!r} in exported recipe; known: {sorted(_TRANSFORMS)}")
    cls = _TRANSFORMS[name]
    args = {k: v for k, v in config.items() if k != "type"}
    return cls.from_config(args) if hasattr(cls, "from_config") else cls(**args)
