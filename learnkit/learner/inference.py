"""The one inference forward: a model applied to a batch's inputs without autograd, under the mixed-precision
setting, outputs in float32. `Learner.get_preds`, `Predictor`, interpretation, `tta`, `show_results`, the
pre-flight check and the budget's validation timing all call it, so inference means the same everywhere."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from learnkit.core.device import autocast

__all__ = ["inference_forward"]


def _float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):  # a model with several outputs: each one
        return type(out)(_float(o) for o in out)
    return out


def inference_forward(model: nn.Module, inputs: Sequence[torch.Tensor], amp_dtype: torch.dtype | None = None,
                      activation: Callable[[Any], Any] | None = None) -> Any:
    """`model(*inputs)` under `torch.no_grad()` and autocast (`amp_dtype`; None = float32), the output cast to
    float32 (each output of a tuple), then `activation` (e.g. the target block's softmax) if given.

    The caller puts the model in eval mode (once per loop, not per batch) and the inputs on its device.
    Computing the activation in float32 keeps probabilities exact under bf16/fp16 autocast.

    Example:
        >>> model.eval()
        >>> probs = inference_forward(model, (xb,), learn.amp_dtype, data.y_block.activation)
    """
    with torch.no_grad(), autocast(inputs[0].device.type if inputs else "cpu", amp_dtype):
        out = model(*inputs)
    out = _float(out)
    return activation(out) if activation is not None else out
