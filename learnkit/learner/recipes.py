"""The fit recipes, each a short method over `Learner.fit` (one cycle, also budgeted; flat then cosine; warm
restarts; `fine_tune`; `lr_find`), and what they work with: the optimizer's param groups, learning rates and
weight decay per layer group, freezing. `Recipes` is a base class of `Learner` (plain inheritance): the loop
itself stays in learner.py, the schedules in optim/schedules.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from learnkit.learner.events import Callback
from learnkit.learner.names import take_fastai_names
from learnkit.optim.optimizer import lrs_per_group, param_groups, set_trainable
from learnkit.optim.schedules import flat_cos, one_cycle, sgdr

__all__ = ["Recipes"]

Lr = float | slice | Sequence[float]  # one rate, slice(lo, hi) over the layer groups, or one per group


class Recipes:
    """`fit_one_cycle`, `fit_flat_cos`, `fit_sgdr`, `fine_tune`, `lr_find`, layer groups: methods of every `Learner`.
    Each takes `epochs`, an `lr` of any type (float | slice | one per layer group), `final_div_factor`,
    `weight_decay` and `callbacks`; fastai's spellings (`n_epoch`, `lr_max`, `div_final`, `wd`, `cbs`) warn and work."""

    def fit_one_cycle(self, epochs: int | None = None, max_lr: Lr = 1e-3, div_factor: float = 25.0,
                      final_div_factor: float = 1e5, pct_start: float = 0.25,
                      moms: Sequence[float] | None = (0.95, 0.85, 0.95), budget: str | float | None = None,
                      weight_decay: float | None = None, callbacks: Iterable[Callback] = (),
                      resume_from: str | Path | None = None, **fastai_names: Any) -> None:
        """`fit` with the one-cycle policy (cosine warm-up then cosine annealing of lr; momentum inverse).
        budget='60s' instead of epochs: sized to end, annealed, in that time (learner/budget.py).

        Example:
            >>> learn.fit_one_cycle(5, max_lr=slice(1e-4, 1e-2))
        """
        if fastai_names:
            epochs, max_lr, final_div_factor, weight_decay, callbacks = take_fastai_names(
                "fit_one_cycle", Recipes.fit_one_cycle, fastai_names, {
                    "epochs": epochs, "max_lr": max_lr, "final_div_factor": final_div_factor,
                    "weight_decay": weight_decay, "callbacks": callbacks}).values()
        if (epochs is None) == (budget is None):
            raise ValueError("fit_one_cycle: give epochs or budget (e.g. budget='60s'), not both or neither")
        total = epochs * len(self.data.train_dl) if epochs is not None else 0
        max_batches = None
        if budget is not None:
            from learnkit.learner.budget import plan_budget
            self.budget_plan = plan_budget(self, budget)
            epochs, total = self.budget_plan["epochs"], self.budget_plan["total_batches"]
            max_batches = total  # the loop cuts the last epoch short (fit's max_batches)
        per_group = [one_cycle(v, total, div_factor, final_div_factor, pct_start, moms)
                     for v in self.lr_per_group(max_lr)]
        self.fit(epochs, schedules={k: [s[k] for s in per_group] for k in per_group[0]}, callbacks=callbacks,
                 resume_from=resume_from, weight_decay=weight_decay, max_batches=max_batches)

    def fit_flat_cos(self, epochs: int | None = None, lr: Lr = 1e-3, pct_start: float = 0.75,
                     final_div_factor: float = 1e5, weight_decay: float | None = None,
                     callbacks: Iterable[Callback] = (), resume_from: str | Path | None = None,
                     **fastai_names: Any) -> None:
        """`fit` with lr flat, then cosine-annealed to lr / final_div_factor over the last (1 - pct_start).
        (fastai's `div_final` is accepted, with a deprecation warning.)"""
        if fastai_names:
            epochs, final_div_factor, weight_decay, callbacks = take_fastai_names(
                "fit_flat_cos", Recipes.fit_flat_cos, fastai_names, {
                    "epochs": epochs, "final_div_factor": final_div_factor, "weight_decay": weight_decay,
                    "callbacks": callbacks}).values()
        total = epochs * len(self.data.train_dl) if isinstance(epochs, int) else 0
        self.fit(epochs, schedules={"lr": [flat_cos(v, total, pct_start, final_div_factor)["lr"]
                                           for v in self.lr_per_group(lr)]},
                 callbacks=callbacks, resume_from=resume_from, weight_decay=weight_decay)

    def fit_sgdr(self, n_cycles: int, cycle_len: int, max_lr: Lr = 1e-3, cycle_mult: int = 2,
                 final_div_factor: float = float("inf"), weight_decay: float | None = None,
                 callbacks: Iterable[Callback] = (), resume_from: str | Path | None = None,
                 **fastai_names: Any) -> None:
        """Cosine annealing with warm restarts: cycle i lasts cycle_len * cycle_mult**i epochs and anneals from
        max_lr to max_lr / final_div_factor (default: to 0)."""
        if fastai_names:
            max_lr, final_div_factor, weight_decay, callbacks = take_fastai_names(
                "fit_sgdr", Recipes.fit_sgdr, fastai_names, {
                    "max_lr": max_lr, "final_div_factor": final_div_factor, "weight_decay": weight_decay,
                    "callbacks": callbacks}).values()
        lengths = [cycle_len * cycle_mult ** i for i in range(n_cycles)]
        self.fit(sum(lengths), schedules={"lr": [sgdr(v, lengths, v / final_div_factor)["lr"]
                                                 for v in self.lr_per_group(max_lr)]},
                 callbacks=callbacks, resume_from=resume_from, weight_decay=weight_decay)

    def fine_tune(self, epochs: int | None = None, base_lr: float = 2e-3, freeze_epochs: int = 1,
                  lr_mult: float = 100, pct_start: float = 0.3, div_factor: float = 5.0, strategy: str = "freeze",
                  group_factor: float = 2.6, final_div_factor: float = 1e5,
                  moms: Sequence[float] | None = (0.95, 0.85, 0.95), weight_decay: float | None = None,
                  callbacks: Iterable[Callback] = (), **fastai_names: Any) -> None:
        """Transfer learning in one call.

        strategy='freeze' (fastai's): train the last layer group `freeze_epochs` with the rest frozen, then
        everything for `epochs` with rates from base_lr/2/lr_mult to base_lr/2.
        strategy='gradual' (ULMFiT): unfreeze one more layer group per stage (`freeze_epochs` each, lr halved
        per stage, rates falling by `group_factor` per group), then everything for `epochs`.
        `final_div_factor`, `moms`, `weight_decay` and `callbacks` go to every one-cycle stage.

        Example:
            >>> learn.fine_tune(3, base_lr=2e-3, freeze_epochs=1)
        """
        if fastai_names:
            epochs, final_div_factor, weight_decay, callbacks = take_fastai_names(
                "fine_tune", Recipes.fine_tune, fastai_names, {
                    "epochs": epochs, "final_div_factor": final_div_factor, "weight_decay": weight_decay,
                    "callbacks": callbacks}).values()
        if strategy not in ("freeze", "gradual"):
            raise ValueError(f"fine_tune(strategy={strategy!r}): use 'freeze' or 'gradual'")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"fine_tune(epochs={epochs!r}): epochs must be a positive int, e.g. fine_tune(3)")
        common = dict(final_div_factor=final_div_factor, moms=moms, weight_decay=weight_decay,
                      callbacks=list(callbacks))
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99 if strategy == "freeze" else 0.25,
                           **common)
        n = len(self.layer_groups)
        if strategy == "gradual":
            for k in range(2, n):
                base_lr /= 2
                self.freeze_to(-k)
                self.fit_one_cycle(freeze_epochs, slice(base_lr / group_factor ** (n - 1), base_lr), **common)
            base_lr /= 2
            self.unfreeze()
            self.fit_one_cycle(epochs, slice(base_lr / group_factor ** (n - 1), base_lr), **common)
            return
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div_factor=div_factor,
                           **common)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10, num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True) -> Any:
        """Exponential lr sweep; returns suggestions (valley, minimum, steepest). Leaves no trace."""
        from learnkit.learner.lr_find import lr_find
        # under torchrun: rank 0 sweeps on its shard; every rank gets the suggestions
        return self._on_main(lambda: lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot))

    def plot_lr_find(self, **kwargs: Any) -> Any:
        from learnkit.learner.lr_find import plot_lr_find
        return plot_lr_find(self, **kwargs)

    # ------------------------------------------------------------------ parameters and layer groups
    def lr_per_group(self, lr: float | slice | Sequence[float]) -> list[float]:
        """One learning rate per layer group: slice(lo, hi) is geometric from lo to hi; slice(hi) gives
        hi/10 to all groups but the last."""
        return lrs_per_group(lr, len(self.layer_groups))

    def create_opt(self) -> torch.optim.Optimizer:
        """Build `self.opt` with one (or two, decay/no-decay) param groups per layer group; `group['decay']`
        says which, and the decay groups get `self.weight_decay` when it is set."""
        groups = param_groups(self.layer_groups)
        for group in groups:
            group["decay"] = "weight_decay" not in group  # param_groups gives the no-decay groups weight_decay=0
            if group["decay"] and self.weight_decay is not None:
                group["weight_decay"] = self.weight_decay
        self.opt = self.opt_fn(groups, lr=1e-3)
        return self.opt

    def _decay_groups(self) -> list[dict]:
        # An optimizer state saved before groups carried 'decay': a group with weight decay is a decay group.
        return [g for g in self.opt.param_groups if g.get("decay", g.get("weight_decay", 0) != 0)]

    def _set_weight_decay(self, value: float | None) -> list[float]:
        """Give the decay param groups weight decay `value` (None: no change); returns their previous values."""
        if value is None:
            return []
        groups = self._decay_groups()
        before = [g["weight_decay"] for g in groups]
        for g in groups:
            g["weight_decay"] = value
        return before

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [:n] (normalization layers stay trainable when train_bn), unfreeze the rest."""
        set_trainable(self.layer_groups, n, self.train_bn)

    def freeze(self) -> None:
        """Freeze every layer group but the last."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        self.freeze_to(0)
