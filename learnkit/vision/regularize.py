"""Regularizers that change the training targets: MixUp and CutMix (callbacks that blend pairs of
training items and their labels) and label-smoothing cross-entropy."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from learnkit.learner.events import Callback

__all__ = ["MixUp", "CutMix", "LabelSmoothingCrossEntropy"]

_SOFT_LOSSES = (nn.CrossEntropyLoss, nn.BCEWithLogitsLoss)


class LabelSmoothingCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy against targets smoothed towards uniform: `nn.CrossEntropyLoss(label_smoothing=eps)`.

    For class-index targets the loss per item is `(1 - eps) * nll + eps * mean_c(-log p_c)`; probability
    targets q (e.g. from MixUp) are smoothed the same way, to `(1 - eps) * q + eps / n_classes`.

    Args:
        eps: how much of the target mass is spread evenly over all classes.
        reduction: 'mean', 'sum' or 'none'.
        weight: optional per-class weights, as in `nn.CrossEntropyLoss`.

    Example:
        >>> learn = Learner(data, model, loss_fn=LabelSmoothingCrossEntropy(eps=0.1))
    """

    accepts_soft_targets = True

    def __init__(self, eps: float = 0.1, reduction: str = "mean", weight: torch.Tensor | None = None):
        if not 0 <= eps < 1:
            raise ValueError(f"LabelSmoothingCrossEntropy(eps={eps}): eps must be in [0, 1), e.g. 0.1")
        super().__init__(weight=weight, reduction=reduction, label_smoothing=eps)
        self.eps = eps

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}"


class _MixCallback(Callback):
    """What MixUp and CutMix share: their own CPU generator, Beta draws from it, soft targets, the loss check."""

    def __init__(self, alpha: float, seed: int | None):
        if not alpha > 0:
            raise ValueError(f"{type(self).__name__}(alpha={alpha}): alpha must be positive, e.g. 0.4")
        self.alpha = alpha
        self.generator = torch.Generator()
        # Without a seed, draw one from the global torch RNG, so set_seed(...) still makes runs repeatable.
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
        self.lam: torch.Tensor | None = None
        self.perm: torch.Tensor | None = None

    def _beta(self, n: int) -> torch.Tensor:
        # torch's Beta sampler only draws from the global CPU generator: run it on a copy of our own
        # generator's state inside fork_rng, so the global RNG is untouched and our generator advances.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            lam = torch.distributions.Beta(float(self.alpha), float(self.alpha)).sample((n,))
            self.generator.set_state(torch.get_rng_state())
        return lam

    def before_fit(self, learn: Any) -> None:
        loss_fn = learn.loss_fn
        if isinstance(loss_fn, _SOFT_LOSSES) or getattr(loss_fn, "accepts_soft_targets", False):
            return
        name = getattr(loss_fn, "__name__", None) or type(loss_fn).__name__
        raise TypeError(
            f"{type(self).__name__} turns the targets into class probabilities (soft targets), but the learner's "
            f"loss_fn {name} ({loss_fn!r}) is not known to accept them. Fix: use nn.CrossEntropyLoss() or "
            f"LabelSmoothingCrossEntropy() for single-label data, nn.BCEWithLogitsLoss() for multi-label data, "
            f"or, if your loss handles (batch, n_classes) probability targets, set its attribute "
            f"accepts_soft_targets = True.")

    def _soft(self, learn: Any, y: torch.Tensor) -> torch.Tensor:
        if y.is_floating_point():
            return y  # multi-hot (or already soft) targets are mixed as they are
        if y.ndim != 1:
            raise ValueError(f"{type(self).__name__}: integer targets must be class indices of shape (batch,); got "
                             f"{tuple(y.shape)}. Dense (e.g. per-pixel) targets are not supported.")
        n_classes = learn.data.n_classes
        if n_classes is None:
            raise ValueError(f"{type(self).__name__}: the data does not say how many classes there are "
                             f"(learn.data.n_classes is None); use a CategoryBlock target")
        return F.one_hot(y, n_classes).float()

    def _mix_targets(self, learn: Any, lam: torch.Tensor) -> None:
        """learn.yb[0] becomes lam * y + (1 - lam) * y[perm]; lam is (batch,) or a scalar."""
        y = self._soft(learn, learn.yb[0])
        lam = lam.to(y.device, y.dtype).reshape((-1,) + (1,) * (y.ndim - 1))
        perm = self.perm.to(y.device)
        learn.yb = (lam * y + (1 - lam) * y[perm],) + tuple(learn.yb[1:])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class MixUp(_MixCallback):
    """MixUp (Zhang et al. 2018): each training input becomes `lam * x + (1 - lam) * x[perm]` and its
    target `lam * y + (1 - lam) * y[perm]`, with `perm` a random permutation of the batch.

    `lam` is drawn per item from Beta(alpha, alpha) and replaced by max(lam, 1 - lam) (as fastai does), so
    each item stays mostly itself. Class indices become one-hot vectors before mixing; multi-hot targets
    are mixed as they are. The loss must accept probability targets: `nn.CrossEntropyLoss`,
    `nn.BCEWithLogitsLoss`, `LabelSmoothingCrossEntropy`, or any loss with `accepts_soft_targets = True`
    (checked at `before_fit`). Validation batches are left alone. Inputs must be float (they are after
    `Normalize`). The draws come from the callback's own CPU `generator` (seeded by `seed`, or from the
    global torch RNG at construction); the last batch's `lam` (batch,) and `perm` are kept as attributes.

    Example:
        >>> learn = Learner(data, model, callbacks=[MixUp(alpha=0.4)])
        >>> learn.fit_one_cycle(10, 3e-3)
    """

    def __init__(self, alpha: float = 0.4, seed: int | None = None):
        super().__init__(alpha, seed)

    def before_batch(self, learn: Any) -> None:
        if not learn.training:
            return
        x = learn.xb[0]
        if not x.is_floating_point():
            raise TypeError(f"MixUp: inputs must be float to be blended, got {x.dtype}; add a Normalize batch "
                            f"transform (it converts uint8 images to float) or convert the inputs to float")
        bs = x.shape[0]
        lam = self._beta(bs)
        self.lam = torch.maximum(lam, 1 - lam)
        self.perm = torch.randperm(bs, generator=self.generator)
        lam_x = self.lam.to(x.device, x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        learn.xb = (lam_x * x + (1 - lam_x) * x[self.perm.to(x.device)],) + tuple(learn.xb[1:])
        self._mix_targets(learn, self.lam)


class CutMix(_MixCallback):
    """CutMix (Yun et al. 2019): paste a random box of each training image's partner (a random permutation
    of the batch) into it, and mix the targets in proportion to the pasted area.

    Per batch, lam ~ Beta(alpha, alpha) sets the box size (area about (1 - lam) of the image, at a uniformly
    random centre, clipped at the borders); lam is then corrected to the exact area kept, and the targets
    become `lam * y + (1 - lam) * y[perm]` (soft targets, as in `MixUp`; the same loss requirement holds).
    Only 4-D image batches (batch, channels, height, width); validation batches are left alone. The last
    batch's `lam` (a 0-d tensor), `perm` and `box` = (top, bottom, left, right) are kept as attributes.

    Example:
        >>> learn = Learner(data, model, callbacks=[CutMix(alpha=1.0)])
    """

    def __init__(self, alpha: float = 1.0, seed: int | None = None):
        super().__init__(alpha, seed)
        self.box: tuple[int, int, int, int] | None = None

    def before_batch(self, learn: Any) -> None:
        if not learn.training:
            return
        x = learn.xb[0]
        if x.ndim != 4:
            raise ValueError(f"CutMix needs image batches of shape (batch, channels, height, width); got input "
                             f"of shape {tuple(x.shape)}. Use MixUp for other inputs.")
        bs, _, h, w = x.shape
        lam = float(self._beta(1)[0])
        self.perm = torch.randperm(bs, generator=self.generator)
        cut = (1 - lam) ** 0.5
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy = int(torch.randint(0, h, (1,), generator=self.generator))
        cx = int(torch.randint(0, w, (1,), generator=self.generator))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        self.box = (top, bottom, left, right)
        mixed = x.clone()  # never write into the loader's tensor (a GPU-resident dataset would be corrupted)
        mixed[:, :, top:bottom, left:right] = x[self.perm.to(x.device), :, top:bottom, left:right]
        self.lam = torch.tensor(1 - (bottom - top) * (right - left) / (h * w))
        learn.xb = (mixed,) + tuple(learn.xb[1:])
        self._mix_targets(learn, self.lam)
