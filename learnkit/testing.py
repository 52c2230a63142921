"""Tiny synthetic data and models shared by the tests (and handy in bug reports): `tiny_data(kind)` and
`tiny_learner(kind)` build the usual ones in one call, the functions below them give the pieces.

Example:
    >>> learn = tiny_learner(seed=0)                      # 8 features, 3 classes, a two-layer MLP, no progress bar
    >>> learn = tiny_learner("images", metrics=[accuracy])  # 8x8 quadrant images, simple_cnn
    >>> data = synthetic_classification(n=256, n_features=8, n_classes=3, seed=0)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from learnkit.core.registry import create_model
from learnkit.data.blocks import CategoryBlock, MultiCategoryBlock, RegressionBlock, TensorBlock
from learnkit.data.bunch import DataBunch
from learnkit.data.datablock import DataBlock
from learnkit.data.splitters import RandomSplitter
from learnkit.data.transforms import Normalize
from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner
from learnkit.optim.optimizer import AdamW

__all__ = ["tiny_data", "tiny_learner", "synthetic_classification", "synthetic_regression", "classification_items",
           "quadrant_image_items", "quadrant_images", "InterruptAt", "tiny_mlp", "tiny_bn_mlp"]

KINDS = ("classification", "regression", "images")
QUADRANT_STATS = (0.25, 0.3)  # mean and std of quadrant_image_items' pixels after scaling to [0, 1], roughly


def tiny_data(kind: str = "classification", n: int | None = None, n_features: int | None = None,
              n_classes: int = 3, batch_size: int | None = None, seed: int = 0, valid_pct: float | None = None,
              channels: int = 1, multi: bool = False, batch_tfms: Sequence[nn.Module] = (),
              device: Any = "cpu") -> DataBunch:
    """The shared tiny DataBunch of each kind, on the CPU by default.

    Args:
        kind: 'classification' (`synthetic_classification`: 256 items, 8 features, 3 classes, batches of 32),
            'regression' (`synthetic_regression`: 256 items, 4 features) or 'images' (`quadrant_images`: 160
            uint8 8x8 images, 4 classes q0..q3, batches of 16, 40% validation, `Normalize` then `batch_tfms`).
        n, n_features, n_classes, batch_size, valid_pct: override the kind's defaults.
        channels, multi, batch_tfms: images only (multi: multi-label targets).

    Example:
        >>> data = tiny_data("regression", n=128)
    """
    if kind == "classification":
        return synthetic_classification(n or 256, n_features or 8, n_classes, seed, batch_size or 32,
                                        0.25 if valid_pct is None else valid_pct, device)
    if kind == "regression":
        return synthetic_regression(n or 256, n_features or 4, seed, batch_size or 32,
                                    0.25 if valid_pct is None else valid_pct, device)
    if kind == "images":
        return quadrant_images(n or 160, channels, seed, batch_size or 16, 0.4 if valid_pct is None else valid_pct,
                               multi, batch_tfms, device)
    raise ValueError(f"tiny_data(kind={kind!r}): use one of {KINDS}")


def tiny_learner(kind: str = "classification", data: DataBunch | None = None, model: nn.Module | None = None,
                 seed: int = 0, n: int | None = None, n_features: int | None = None, n_classes: int = 3,
                 batch_size: int | None = None, bn: bool = False, path: str | Path = ".",
                 metrics: Sequence[Any] = (), callbacks: Iterable[Callback] = (), loss_fn: Callable | None = None,
                 opt_fn: Callable[..., torch.optim.Optimizer] = AdamW,
                 splitter: Callable[[nn.Module], Sequence[nn.Module]] | None = None, progress: bool = False,
                 preflight: bool = True, mixed_precision: Any = "auto", channels: int = 1) -> Learner:
    """A Learner on `tiny_data(kind)` (or `data`) with the kind's tiny model (or `model`), seeded: the same
    arguments give the same initial weights and batch order.

    The default model: classification `tiny_mlp(n_features, n_classes)` (`tiny_bn_mlp` with `bn=True`: BatchNorm
    and Dropout), regression `tiny_mlp(n_features, 1, hidden=32)`, images `simple_cnn(n_in=channels, n_out=4)`. The
    model is built after `torch.manual_seed(seed)`. `channels`: images only. The other arguments are `Learner`'s,
    with progress off.

    Example:
        >>> learn = tiny_learner(bn=True, callbacks=[EMA(0.9)], path=tmp_path)
        >>> learn.fit(2)
    """
    if data is None:
        data = tiny_data(kind, n=n, n_features=n_features, n_classes=n_classes, batch_size=batch_size, seed=seed,
                         channels=channels)
    if model is None:
        torch.manual_seed(seed)
        if kind == "classification":
            model = (tiny_bn_mlp if bn else tiny_mlp)(n_features or 8, n_classes)
        elif kind == "regression":
            model = tiny_mlp(n_features or 4, 1, 32)
        elif kind == "images":
            model = create_model("simple_cnn", n_in=channels, n_out=4)
        else:
            raise ValueError(f"tiny_learner(kind={kind!r}): use one of {KINDS}")
    return Learner(data, model, loss_fn=loss_fn, opt_fn=opt_fn, metrics=metrics, callbacks=callbacks, path=path,
                   splitter=splitter, mixed_precision=mixed_precision, progress=progress, preflight=preflight)


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


def quadrant_images(n: int = 160, channels: int = 1, seed: int = 0, batch_size: int = 16, valid_pct: float = 0.4,
                    multi: bool = False, batch_tfms: Sequence[nn.Module] = (), device: Any = "cpu") -> DataBunch:
    """A DataBunch of `quadrant_image_items` (uint8 TensorBlock → CategoryBlock, or MultiCategoryBlock with
    multi), normalized on the device with `QUADRANT_STATS`, then `batch_tfms`."""
    dblock = DataBlock(blocks=(TensorBlock(dtype=None), MultiCategoryBlock if multi else CategoryBlock),
                       splitter=RandomSplitter(valid_pct, seed=seed),
                       batch_tfms=[Normalize(*QUADRANT_STATS), *batch_tfms])
    return dblock.databunch(quadrant_image_items(n, channels, seed, multi=multi), batch_size=batch_size,
                            device=device, seed=seed)


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
