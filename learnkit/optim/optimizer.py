"""Optimizers with learnkit's defaults, parameter groups from layer groups, and setting any
hyper-parameter per layer group (what schedules call every step)."""
from __future__ import annotations

import math

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["AdamW", "SGD", "param_groups", "set_hyper", "get_hyper", "NORM_TYPES", "make_layer_groups",
           "lrs_per_group", "set_trainable"]

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
              nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


def _all_cuda(params: Iterable[Any]) -> bool:
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(tensors) and all(t.is_cuda and t.is_floating_point() for t in tensors)


def AdamW(params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-5,
          weight_decay: float = 0.01, fused: bool | None = None) -> torch.optim.AdamW:
    """`torch.optim.AdamW` with fastai's defaults (betas 0.9/0.99, eps 1e-5, decoupled weight decay 0.01);
    the fused CUDA kernel when every parameter is on a CUDA device."""
    params = list(params)
    if fused is None:
        fused = _all_cuda(params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)


def SGD(params: Iterable[Any], lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 0.0,
        nesterov: bool = False, fused: bool | None = None) -> torch.optim.SGD:
    """`torch.optim.SGD` with momentum 0.9 (scheduled as 'mom' like Adam's beta1); fused on CUDA (which also
    spares fp16 loss scaling a host sync per step)."""
    params = list(params)
    if fused is None:
        fused = _all_cuda(params)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                           fused=fused or None)


def param_groups(layer_groups: Sequence[nn.Module], decay_norm_and_bias: bool = False) -> list[dict]:
    """One or two optimizer param groups per layer group, tagged `group['layer_group'] = i`.

    Weights get the optimizer's weight decay; biases and normalization parameters get none (unless
    `decay_norm_and_bias`). A parameter shared by two layer groups belongs to the first.
    """
    seen: set[int] = set()
    groups = []
    for i, module in enumerate(layer_groups):
        no_decay_ids = set()
        for m in module.modules():
            if isinstance(m, NORM_TYPES):
                no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
        decay, no_decay = [], []
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if not decay_norm_and_bias and (p.ndim <= 1 or id(p) in no_decay_ids):
                no_decay.append(p)
            else:
                decay.append(p)
        if decay:
            groups.append({"params": decay, "layer_group": i})
        if no_decay:
            groups.append({"params": no_decay, "layer_group": i, "weight_decay": 0.0})
    return groups


def _key(group: dict, name: str) -> tuple[str, int | None]:
    if name == "mom":
        if "betas" in group:
            return "betas", 0
        if "momentum" in group:
            return "momentum", None
        raise KeyError("this optimizer has no momentum ('betas' or 'momentum') to schedule as 'mom'")
    if name == "sqr_mom" and "betas" in group:
        return "betas", 1
    if name not in group:
        raise KeyError(f"the optimizer has no hyper-parameter {name!r}; it has {sorted(k for k in group if k != 'params')}")
    return name, None


def set_hyper(opt: torch.optim.Optimizer, name: str, values: Sequence[float]) -> None:
    """Set hyper-parameter `name` ('lr', 'mom', 'weight_decay', 'eps', ...) to `values[layer_group]`."""
    for group in opt.param_groups:
        value = values[group.get("layer_group", 0)]
        if name == "lr" and not isinstance(group["lr"], torch.Tensor):  # the per-batch common case, fast
            group["lr"] = value
            continue
        key, slot = _key(group, name)
        if slot is None:
            if isinstance(group[key], torch.Tensor):  # e.g. a tensor lr for capturable/fused optimizers
                group[key].fill_(value)
            else:
                group[key] = value
        else:
            pair = list(group[key])
            pair[slot] = value
            group[key] = tuple(pair)


def get_hyper(opt: torch.optim.Optimizer, name: str) -> list[float]:
    """The current value of `name` for each layer group (first param group of each)."""
    out: dict[int, float] = {}
    for group in opt.param_groups:
        key, slot = _key(group, name)
        value = group[key] if slot is None else group[key][slot]
        out.setdefault(group.get("layer_group", 0), float(value))
    return [out[k] for k in sorted(out)]


def make_layer_groups(model: nn.Module, splitter: Callable[[nn.Module], Sequence[nn.Module]] | None) -> list[nn.Module]:
    """`splitter(model)` (default `[model]`), checked to cover every parameter of `model`."""
    groups = list(splitter(model)) if splitter is not None else [model]
    covered = {id(p) for g in groups for p in g.parameters()}
    missing = [n for n, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"Learner: the splitter's layer groups leave out parameters {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}; every parameter must be in one group")
    return groups


def lrs_per_group(lr: float | slice | Sequence[float], n: int) -> list[float]:
    """One learning rate per each of `n` layer groups: slice(lo, hi) is geometric from lo to hi; slice(hi)
    gives hi/10 to all groups but the last; a list gives one per group."""
    if isinstance(lr, slice):
        if lr.start is None:
            return [lr.stop / 10] * (n - 1) + [lr.stop]
        if n == 1:
            return [lr.stop]
        return [lr.start * (lr.stop / lr.start) ** (i / (n - 1)) for i in range(n)]
    if isinstance(lr, (list, tuple)):
        if len(lr) != n:
            raise ValueError(f"{len(lr)} learning rates given for {n} layer groups")
        return [float(v) for v in lr]
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate {lr!r} must be a positive number, a slice, or one per layer group")
    return [float(lr)] * n


def set_trainable(layer_groups: Sequence[nn.Module], n: int, train_bn: bool = True) -> None:
    """Freeze groups [:n] (their normalization layers stay trainable when `train_bn`), unfreeze the rest."""
    stop = n if n >= 0 else len(layer_groups) + n
    for i, group in enumerate(layer_groups):
        for p in group.parameters():
            p.requires_grad_(i >= stop)
        if i < stop and train_bn:
            for m in group.modules():
                if isinstance(m, NORM_TYPES):
                    for p in m.parameters(recurse=False):
                        p.requires_grad_(True)
