"""Device choice and moving nested batches of tensors between devices."""
from __future__ import annotations

import os
from typing import Any

import torch


def default_device() -> torch.device:
    """The device learnkit uses when none is given: the current CUDA device if any, else the CPU. Under
    torchrun (LOCAL_RANK set) each process takes its own GPU, cuda:LOCAL_RANK."""
    if torch.cuda.is_available():
        if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
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


def amp_dtype(mixed_precision: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `mixed_precision` setting: 'auto' = bf16 (fp16 where bf16 is not supported)
    on CUDA and off on the CPU; 'bf16', 'fp16'; None/False = off."""
    if mixed_precision in (None, False, "no", "off"):
        return None
    if mixed_precision in ("auto", True):
        if device.type != "cuda":
            return None  # CPU autocast is slow on most CPUs and changes results: off by default
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if mixed_precision not in choices:
        raise ValueError(f"Learner(mixed_precision={mixed_precision!r}): use 'auto', 'bf16', 'fp16' or None")
    return choices[mixed_precision]
