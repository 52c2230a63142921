"""Tiny synthetic data and models shared by the tests (and handy in bug reports).

Example:
    >>> data = synthetic_classification(n=256, n_features=8, n_classes=3, seed=0)
    >>> learn = Learner(data, tiny_mlp(8, 3), progress=False)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learnkit.core.registry import create_model
from learnkit.data.blocks import CategoryBlock, RegressionBlock, TensorBlock
from learnkit.data.bunch import DataBunch
from learnkit.data.datablock import DataBlock
from learnkit.data.splitters import RandomSplitter
from learnkit.learner.events import Callback

__all__ = ["synthetic_classification", "synthetic_regression", "classification_items", "quadrant_image_items",
           "InterruptAt", "tiny_mlp", "tiny_bn_mlp"]


def classification_items(n: int = 256, n_features: int = 8, n_classes: int = 3, seed: int = 0,
                         noise: float = 0.3) -> list[tuple[torch.Tensor, str]]:
    """(x, label) pairs; the label is the arg-max of a fixed random linear map of x (learnable to ~95%+)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    w = torch.randn(n_features, n_classes, generator=g)
    y = (x @ w + noise * torch.randn(n, n_classes, generator=g)).argmax(1)
    names = [f"class_{i}" for i in range(n_classes)]
    return [(x[i], names[int(y[i])]) for i in range(n)]


def quadrant_image_items(n: int = 160, channels: int = 1, seed: int = 0,
                         multi: bool = False) -> list[tuple[torch.Tensor, Any]]:
    """(uint8 (channels, 8, 8) image with dim noise, label) pairs; the label is the bright quadrant 'q0'..'q3'
    (with multi: a list of every bright quadrant, each bright with probability 0.5). Learnable by a tiny CNN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, channels, 8, 8), generator=g).to(torch.uint8)
    if multi:
        bright = torch.rand(n, 4, generator=g) < 0.5
    else:
        bright = nn.functional.one_hot(torch.randint(0, 4, (n,), generator=g), 4).bool()
    for i in range(n):
        for q in torch.nonzero(bright[i]).flatten().tolist():
            r, c = divmod(q, 2)
            x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
    labels = [[f"q{q}" for q in torch.nonzero(b).flatten().tolist()] if multi else f"q{int(b.float().argmax())}"
              for b in bright]
    return [(x[i], labels[i]) for i in range(n)]


def synthetic_classification(n: int = 256, n_features: int = 8, n_classes: int = 3, seed: int = 0,
                             batch_size: int = 32, valid_pct: float = 0.25, device: Any = "cpu",
                             **kwargs: Any) -> DataBunch:
    """A DataBunch of `classification_items` (TensorBlock → CategoryBlock), on the CPU by default."""
    dblock = DataBlock(blocks=(TensorBlock, CategoryBlock), splitter=RandomSplitter(valid_pct, seed=seed))
    return dblock.databunch(classification_items(n, n_features, n_classes, seed), batch_size=batch_size,
                            device=device, seed=seed, **kwargs)


def synthetic_regression(n: int = 256, n_features: int = 4, seed: int = 0, batch_size: int = 32,
                         valid_pct: float = 0.25, device: Any = "cpu", noise: float = 0.05, **kwargs: Any) -> DataBunch:
    """y = x @ w + b + noise, as (x, float) pairs through TensorBlock → RegressionBlock (targets (B, 1))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    w = torch.randn(n_features, generator=g)
    y = x @ w + 0.5 + noise * torch.randn(n, generator=g)
    items = [(x[i], float(y[i])) for i in range(n)]
    dblock = DataBlock(blocks=(TensorBlock, RegressionBlock), splitter=RandomSplitter(valid_pct, seed=seed))
    return dblock.databunch(items, batch_size=batch_size, device=device, seed=seed, **kwargs)


def tiny_mlp(n_in: int = 8, n_out: int = 3, hidden: int = 16) -> nn.Module:
    """A registered (exportable) two-layer MLP."""
    return create_model("mlp", n_in=n_in, n_out=n_out, hidden=[hidden])


def tiny_bn_mlp(n_in: int = 8, n_out: int = 3, hidden: int = 16) -> nn.Module:
    """An MLP with BatchNorm and Dropout, for tests of running stats and RNG."""
    return create_model("mlp", n_in=n_in, n_out=n_out, hidden=[hidden, hidden], batch_norm=True, dropout=0.1)


class InterruptAt(Callback):
    """Raise KeyboardInterrupt after training batch `batch` of epoch `epoch`, as a user pressing Ctrl-C would:
    for resume tests. Its order (100) runs it after Checkpoint has written that batch."""

    order = 100

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def after_batch(self, learn: Any) -> None:
        if learn.training and (learn.epoch, learn.batch_idx) == self.at:
            raise KeyboardInterrupt
