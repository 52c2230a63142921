"""LoRA (Hu et al. 2021): low-rank adapters beside a model's attention projections, trained while everything else
but the head stays frozen, then merged back into the plain `nn.Linear` weights. Written here (about 100 lines)
rather than through `peft`: it works on any `nn.Module` (the built-in BERT as well as transformers models), the
model keeps its own classes and state-dict names after merging (so save, export and `load_learner` are
unchanged), and there is no wrapper model whose attributes forward to the original.

Example:
    >>> adapters = add_lora(model, rank=8)          # model.encoder...query is now a LoRALinear
    >>> ...train...
    >>> merge_lora(model)                           # plain nn.Linear again, W + B @ A * alpha / rank
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["ATTENTION_PROJECTIONS", "LoRALinear", "add_lora", "lora_parameters", "merge_lora"]

# The query/key/value projections under the names the common encoders give them: the built-in BERT and
# BERT/RoBERTa/ELECTRA/XLM-R (query, key, value), DistilBERT (q_lin, k_lin, v_lin), DeBERTa-v2/v3 (query_proj,
# key_proj, value_proj), ModernBERT (Wqkv, fused), GPT/LLaMA-style (q_proj, k_proj, v_proj, qkv).
ATTENTION_PROJECTIONS = ("query", "key", "value", "q_lin", "k_lin", "v_lin", "query_proj", "key_proj",
                         "value_proj", "Wqkv", "q_proj", "k_proj", "v_proj", "qkv")


class LoRALinear(nn.Module):
    """`base(x) + dropout(x) @ A.T @ B.T * (alpha / rank)`: `base` frozen, A (rank, in) Kaiming-uniform, B (out, rank)
    zero, so the wrapped layer starts out exactly equal to `base`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRALinear: rank={rank} must be >= 1")
        self.base, self.rank = base, int(rank)
        self.scale = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device,
                                               dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device,
                                               dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own init, and the paper's code
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        """`base` with the adapter folded into its weight (in place), the update computed in float32."""
        with torch.no_grad():
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            self.base.weight.add_(delta.to(self.base.weight.dtype))
        return self.base


def add_lora(model: nn.Module, rank: int = 8, alpha: float | None = None, dropout: float = 0.0,
             targets: Sequence[str] = ATTENTION_PROJECTIONS) -> list[LoRALinear]:
    """Wrap every `nn.Linear` whose attribute name is in `targets` in a `LoRALinear`, in place; returns them.

    Raises:
        ValueError: no Linear of the model has one of those names (the message lists the names it has).
    """
    wrapped, linear_names = [], set()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                linear_names.add(child_name)
                if child_name in targets:
                    layer = LoRALinear(child, rank, alpha, dropout)
                    setattr(module, child_name, layer)
                    wrapped.append(layer)
    if not wrapped:
        raise ValueError(f"add_lora: no nn.Linear named {list(targets)[:6]}... in {type(model).__name__}; its Linear "
                         f"layers are named {sorted(linear_names)}: pass lora_targets=[...] with the attention "
                         "projections among them")
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' A and B matrices."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


def merge_lora(model: nn.Module) -> int:
    """Fold every `LoRALinear` back into its `nn.Linear` (in place); returns how many were merged."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
                count += 1
    return count
