"""Device choice and moving nested batches of tensors between devices."""
from __future__ import annotations

from typing import Any

import torch


def default_device() -> torch.device:
    """The device learnkit uses when none is given: the current CUDA device if any, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def to_device(obj: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move every tensor inside tuples, lists and dicts to `device`; other objects are returned as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device, non_blocking) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device, non_blocking) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    return obj
