"""The fit recipes, each a short method over `Learner.fit` (one cycle, also budgeted; flat then cosine; warm
restarts; `fine_tune`; `lr_find`), and what they work with: the optimizer's param groups, learning rates and
weight decay per layer group, freezing. `Recipes` is a base class of `Learner` (plain inheritance): the loop
itself stays in learner.py, the schedules in optim/schedules.py."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from learnkit.learner.events import Callback
from learnkit.learner.names import take_fastai_names
from learnkit.optim.optimizer import lrs_per_group, param_groups, set_trainable
from learnkit.optim.schedules import flat_cos, one_cycle, sgdr

__all__ = ["HEAD_PHASE_STEPS", "Recipes"]

# fine_tune's default head phase: at least this many optimizer steps (1 to `epochs` epochs).
HEAD_PHASE_STEPS = 200

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

    def fine_tune(self, epochs: int | None = None, base_lr: float = 2e-3, freeze_epochs: int | None = None,
                  lr_mult: float | None = None, pct_start: float = 0.3, div_factor: float = 5.0, strategy: str = "freeze",
                  group_factor: float = 2.6, final_div_factor: float = 1e5,
                  moms: Sequence[float] | None = (0.95, 0.85, 0.95), weight_decay: float | None = None,
                  callbacks: Iterable[Callback] = (), keep_best: bool = True, lora: int | None = None,
                  lora_alpha: float | None = None, lora_targets: Sequence[str] | None = None,
                  **fastai_names: Any) -> None:
        """Transfer learning in one call.

        strategy='freeze' (fastai's): train the last layer group (the head) with the rest frozen, then everything
        for `epochs` with rates from base_lr/2/lr_mult to base_lr/2.
        strategy='gradual' (ULMFiT): unfreeze one more layer group per stage (`freeze_epochs` each, default 1, lr
        halved per stage, rates falling by `group_factor` per group), then everything for `epochs`.

        Args:
            lr_mult: the unfrozen phase's rates fall by this from the head to the first group. None: `self.
                fine_tune_defaults['lr_mult']` if set (vision_learner does, for regression), else 100 (fastai's).
            freeze_epochs: head-phase epochs. None: `self.fine_tune_defaults['freeze_epochs']` if set, else long
                enough for `HEAD_PHASE_STEPS` (200) optimizer steps (1 to `epochs` epochs, annealed): on a small
                folder one epoch left an untrained head whose gradients then disturbed the unfrozen body
                (benchmarks/transfer_defaults.py). An int: fastai's head phase (the rate rising over 99% of it).
            keep_best: when the unfrozen phase ends with a worse validation score than the head phase had (the
                first metric, else the loss), restore the head phase's weights and say so
                (`self.fine_tune_report` records both scores either way).
            lora: a rank r: instead of unfreezing the body, train rank-r adapters on the attention projections
                (`learnkit.learner.lora`: q/k/v under their usual names, or `lora_targets`) and the head, at
                base_lr/2, then merge the adapters into the weights, so the model is its own architecture again
                (save, export, `load_learner` unchanged). `lora_alpha`: the scale numerator (default: r).
            final_div_factor, moms, weight_decay, callbacks: go to every one-cycle stage.

        Example:
            >>> learn.fine_tune(3, base_lr=2e-3)
            >>> learn.fine_tune(3, base_lr=1e-3, lora=8)      # a transformer, low-rank adapters
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
        if lora is not None and (strategy != "freeze" or not isinstance(lora, int) or lora < 1):
            raise ValueError(f"fine_tune(lora={lora!r}, strategy={strategy!r}): lora is a rank >= 1 (e.g. 8), with "
                             "strategy='freeze'")
        defaults = self.fine_tune_defaults
        lr_mult = defaults.get("lr_mult", 100) if lr_mult is None else lr_mult
        freeze_epochs = defaults.get("freeze_epochs") if freeze_epochs is None else freeze_epochs
        common = dict(final_div_factor=final_div_factor, moms=moms, weight_decay=weight_decay,
                      callbacks=list(callbacks))
        self.freeze()
        if freeze_epochs is None and strategy == "freeze":
            steps = max(1, len(self.data.train_dl))
            head_epochs = max(1, min(epochs, math.ceil(HEAD_PHASE_STEPS / steps)))
            self.fit_one_cycle(head_epochs, slice(base_lr), **common)
        else:
            head_epochs = 1 if freeze_epochs is None else freeze_epochs
            self.fit_one_cycle(head_epochs, slice(base_lr), pct_start=0.99 if strategy == "freeze" else 0.25,
                               **common)
        head_results = dict(self.val_results)
        saved = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()} \
            if keep_best and head_results else None
        n = len(self.layer_groups)
        if strategy == "gradual":
            for k in range(2, n):
                base_lr /= 2
                self.freeze_to(-k)
                self.fit_one_cycle(freeze_epochs or 1, slice(base_lr / group_factor ** (n - 1), base_lr), **common)
            base_lr /= 2
            self.unfreeze()
            self.fit_one_cycle(epochs, slice(base_lr / group_factor ** (n - 1), base_lr), **common)
        elif lora is not None:
            self._fit_lora(epochs, base_lr / 2, lora, lora_alpha, lora_targets, pct_start, div_factor, common)
        else:
            base_lr /= 2
            self.unfreeze()
            self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start,
                               div_factor=div_factor, **common)
        self._keep_best(head_epochs, head_results if keep_best else {}, saved)

    def _keep_best(self, head_epochs: int, head_results: dict, saved: dict | None) -> None:
        """fine_tune's end: restore the head phase's weights when the last phase ended with a worse score."""
        after_head = _score(head_results) if head_results else None
        self.fine_tune_report = {"head_epochs": head_epochs, "after_head": after_head, "restored": False}
        if after_head is None or saved is None:
            return
        final = _score(self.val_results)
        self.fine_tune_report["final"] = final
        if _worse(final, after_head):
            self.model.load_state_dict(saved)
            self.val_results = head_results
            self.fine_tune_report["restored"] = True
            print(f"fine_tune: the unfrozen phase ended at {final[0]} {final[1]:.4f}, worse than the head phase's "
                  f"{after_head[1]:.4f}: restored the head phase's weights (keep_best=False keeps the last ones)")

    def _fit_lora(self, epochs: int, lr: float, rank: int, alpha: float | None, targets: Sequence[str] | None,
                  pct_start: float, div_factor: float, common: dict) -> None:
        """fine_tune's LoRA phase: adapters + head trainable, everything else frozen; merged at the end."""
        from learnkit.learner.lora import ATTENTION_PROJECTIONS, add_lora, lora_parameters, merge_lora
        add_lora(self.model, rank, alpha, targets=tuple(targets or ATTENTION_PROJECTIONS))
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in [*lora_parameters(self.model), *self.layer_groups[-1].parameters()]:
            p.requires_grad_(True)
        self.opt = None  # new parameters: the optimizer is rebuilt from the layer groups by fit
        self.lora_report = {"rank": rank, "trainable_params": sum(p.numel() for p in self.model.parameters()
                                                                   if p.requires_grad),
                            "total_params": sum(p.numel() for p in self.model.parameters())}
        try:
            self.fit_one_cycle(epochs, lr, pct_start=pct_start, div_factor=div_factor, **common)
        finally:
            merge_lora(self.model)
            self.opt = None
            self.unfreeze()

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


_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "perplexity")


def _score(results: dict[str, Any]) -> tuple[str, float, bool]:
    """(name, value, higher_is_better) of a validation result: its first metric, else the loss."""
    names = [k for k in results if k != "valid_loss"] or ["valid_loss"]
    name = names[0]
    return name, float(results[name]), not any(word in name.lower() for word in _LOWER_IS_BETTER)


def _worse(final: tuple[str, float, bool], before: tuple[str, float, bool]) -> bool:
    return final[1] < before[1] if final[2] else final[1] > before[1]
