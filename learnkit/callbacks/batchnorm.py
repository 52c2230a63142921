"""`PreciseBatchNorm`: BatchNorm running statistics recomputed for the final weights before validation.

Why: BatchNorm's running mean and variance are an exponential average (momentum 0.1) of statistics of *earlier*
weights. After few steps, or while the weights still move fast, they lag: on pasted-item centres (issue 17) an
EfficientNet-Lite0 regressor reached 4.2 px with batch statistics and 7.0 px in eval mode, and 3.3 px once the
statistics were recomputed over the training set with the weights fixed ("precise BN", Wu & Johnson 2021).
"""
from __future__ import annotations

import torch
from torch import nn

from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner

__all__ = ["PreciseBatchNorm", "recompute_batchnorm"]


def recompute_batchnorm(learn: Learner, n_batches: int = 50) -> int:
    """Reset the running statistics of the model's BatchNorm layers that are in training mode and re-estimate them
    as the plain average over up to `n_batches` training batches (no augmentation, no grad). The RNG state (the
    loader's order included) is restored, so the rest of the fit is what it would have been. Returns the batches
    used (0 when the model has no BatchNorm in training mode).

    Example:
        >>> recompute_batchnorm(learn, n_batches=100); learn.validate()
    """
    layers = [m for m in learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
              and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    state = learn.rng_state()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    used = 0
    try:
        with torch.no_grad(), learn.autocast():
            for batch in learn.data.train_dl:
                if used >= n_batches:
                    break
                batch = learn.data.transfer(batch, training=False)
                learn.model(*batch[:learn.data.n_inp])
                used += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        learn.set_rng_state(state)
    return used


class PreciseBatchNorm(Callback):
    """Before the last validation of every fit (or every validation with `every_epoch=True`), recompute the
    BatchNorm statistics with `recompute_batchnorm`. `vision_learner` adds it for regression targets.

    Example:
        >>> learn.fit_one_cycle(4, callbacks=[PreciseBatchNorm(n_batches=100)])
    """

    order = -10  # before callbacks that read validation results

    def __init__(self, n_batches: int = 50, every_epoch: bool = False):
        self.n_batches, self.every_epoch = n_batches, every_epoch
        self.in_fit = False

    def before_fit(self, learn: Learner) -> None:
        self.in_fit = True

    def after_fit(self, learn: Learner) -> None:
        self.in_fit = False

    def before_validate(self, learn: Learner) -> None:
        last = learn.epoch == learn.n_epochs - 1 or learn.iter >= learn.n_iter
        if self.in_fit and (self.every_epoch or last):
            recompute_batchnorm(learn, self.n_batches)
