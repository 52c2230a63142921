"""EMA: an exponential moving average of the model's weights, updated after every optimizer step,
used for validation during the fit and copied into the model when the fit ends."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner

__all__ = ["EMA"]


class EMA(Callback):
    """Keep `shadow = decay_t * shadow + (1 - decay_t) * weights` after every `every` optimizer steps.

    The average covers every entry of `learn.model.state_dict()`: floating-point parameters and buffers
    (BatchNorm running stats) are averaged with the same decay, integer buffers (`num_batches_tracked`)
    are copied. It starts as a copy of the model at each fit, unless `load_state_dict` was called since
    the last fit (a `Checkpoint` resume does that), in which case the loaded average continues.

    Args:
        decay: the decay, in (0, 1); 0.999 averages over roughly the last 1000 updates.
        warmup: use `decay_t = min(decay, (1 + n) / (10 + n))` after n updates (TF's num_updates), so
            that early updates are not dominated by the random initialization.
        validate_with_ema: validate the average during the fit (the live weights are kept aside and put
            back after validation; parameters are copied into, never re-bound, so the optimizer is unaffected).
        apply_at_end: when the fit ends normally (also by `CancelFit`, e.g. EarlyStopping), copy the average
            into the model so that `save`, `export` and `get_preds` use it; not when an error or
            KeyboardInterrupt ends the fit. `ema.restore_live(learn)` puts the trained weights back.
        every: update the average every `every` optimizer steps.

    The average has the model's dtype: with bf16/fp16 weights, 1 - decay may be below their resolution.
    Callbacks that save the model at `after_epoch` (SaveBestModel, Checkpoint) see the live weights,
    while `valid_loss` is that of the average. `learn.validate()` outside a fit uses the model as it is.
    A later fit continues from the model as it is (the average, after apply_at_end): for several fits in a
    row (fine_tune, repeated `fit(1)`), prefer apply_at_end=False and `ema.apply_to(learn.model)` at the end.

    Example:
        >>> ema = EMA(0.999)
        >>> learn.fit_one_cycle(5, 1e-3, callbacks=[ema])
        >>> learn.export("model")  # exports the averaged weights
    """

    order = 20

    def __init__(self, decay: float = 0.999, warmup: bool = True, validate_with_ema: bool = True,
                 apply_at_end: bool = True, every: int = 1):
        if not 0 < decay < 1:
            raise ValueError(f"EMA(decay={decay!r}): decay must be in the open interval (0, 1), e.g. 0.999")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"EMA(every={every!r}): every must be an int >= 1 (optimizer steps per update)")
        self.decay, self.warmup, self.every = float(decay), warmup, every
        self.validate_with_ema, self.apply_at_end = validate_with_ema, apply_at_end
        self.shadow: dict[str, torch.Tensor] = {}  # state_dict name -> averaged tensor
        self.num_updates = 0
        self._restored = self._fitting = self._holding_live = False
        self._tensors: list[torch.Tensor] = []  # the model's state tensors, aligned with _backup

    def decay_at(self, n: int) -> float:
        """The decay of update number n (0-based)."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def before_fit(self, learn: Learner) -> None:
        self._holding_live = False  # this fit continues from the model as it is (after apply_at_end: the average)
        state = learn.model.state_dict(keep_vars=True)
        if self._restored:
            if self.shadow.keys() != state.keys():
                raise ValueError(f"EMA: the loaded average does not match the model: missing "
                                 f"{sorted(state.keys() - self.shadow.keys())[:5]}, unexpected "
                                 f"{sorted(self.shadow.keys() - state.keys())[:5]}; load the state of an EMA "
                                 f"of this model")
            self.shadow = {k: self.shadow[k].to(device=t.device, dtype=t.dtype) for k, t in state.items()}
        else:
            self.shadow = {k: t.detach().clone() for k, t in state.items()}
            self.num_updates = 0
        self._restored, self._fitting = False, True
        self._tensors = [t.detach() for t in state.values()]
        shadow = list(self.shadow.values())
        floating = [t.is_floating_point() for t in self._tensors]
        self._avg = ([s for s, f in zip(shadow, floating) if f], [t for t, f in zip(self._tensors, floating) if f])
        self._copy = ([s for s, f in zip(shadow, floating) if not f],
                      [t for t, f in zip(self._tensors, floating) if not f])
        need_backup = self.validate_with_ema or self.apply_at_end
        self._backup = [torch.empty_like(t) for t in self._tensors] if need_backup else []

    def after_step(self, learn: Learner) -> None:
        if learn.opt_steps % self.every:
            return
        with torch.no_grad():  # one fused kernel per dtype/device group; no host sync
            torch._foreach_lerp_(self._avg[0], self._avg[1], 1.0 - self.decay_at(self.num_updates))
            if self._copy[0]:
                torch._foreach_copy_(self._copy[0], self._copy[1])
        self.num_updates += 1

    def before_validate(self, learn: Learner) -> None:
        if self._fitting and self.validate_with_ema and not self._holding_live:
            self._swap_in()

    def after_validate(self, learn: Learner) -> None:
        if self._fitting:
            self.restore_live(learn)

    def after_fit(self, learn: Learner) -> None:
        if not self._fitting:  # before_fit did not run (e.g. an earlier callback's before_fit raised)
            return
        self._fitting = False
        self.restore_live(learn)  # validation may have ended in an error with the average swapped in
        if self.apply_at_end and learn.fit_error is None:  # the loop says whether this fit failed
            self._swap_in()

    def _swap_in(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._backup, self._tensors)
            torch._foreach_copy_(self._tensors, list(self.shadow.values()))
        self._holding_live = True

    def restore_live(self, learn: Learner) -> None:
        """Put the live (trained) weights back after `apply_at_end`; a no-op when the model has them."""
        if self._holding_live:
            tensors = [t.detach() for t in learn.model.state_dict(keep_vars=True).values()]
            with torch.no_grad():
                torch._foreach_copy_(tensors, self._backup)
            self._holding_live = False

    def apply_to(self, model: nn.Module) -> None:
        """Copy the average into `model` (in place: its Parameters stay the same objects)."""
        if not self.shadow:
            raise ValueError("EMA.apply_to: there is no average yet; fit with this callback or load_state_dict first")
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = {k: v.detach().clone() for k, v in state["shadow"].items()}
        self.num_updates = int(state["num_updates"])
        self._restored = bool(self.shadow)
