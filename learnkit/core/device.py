"""Device choice, moving nested batches of tensors between devices, the mixed-precision setting (one parser for
Learner and load_learner), the autocast context, and the versions dict every record carries."""
from __future__ import annotations

import contextlib
import os
import platform
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


# The one mixed-precision vocabulary, shared by `Learner(mixed_precision=...)` and `load_learner(...)`.
_PRECISION_WORDS = {"auto": "auto", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16",
                    "no": None, "off": None, "fp32": None, "float32": None}
_PRECISION_VALUES = {True: "auto", False: None, None: None, torch.bfloat16: "bf16", torch.float16: "fp16",
                     torch.float32: None}


def parse_mixed_precision(mixed_precision: Any, where: str = "Learner") -> str | None:
    """The canonical form of a `mixed_precision` setting: 'auto', 'bf16', 'fp16' or None (float32).

    Accepted: 'auto' or True; 'bf16', 'bfloat16' or torch.bfloat16; 'fp16', 'float16' or torch.float16;
    None, False, 'no', 'off', 'fp32', 'float32' or torch.float32 (off). Anything else is a ValueError that
    names `where` and the value.

    Example:
        >>> parse_mixed_precision(torch.bfloat16), parse_mixed_precision("no")
        ('bf16', None)
    """
    if isinstance(mixed_precision, str) and mixed_precision.lower() in _PRECISION_WORDS:
        return _PRECISION_WORDS[mixed_precision.lower()]
    if isinstance(mixed_precision, (bool, torch.dtype)) or mixed_precision is None:
        if mixed_precision in _PRECISION_VALUES:
            return _PRECISION_VALUES[mixed_precision]
    raise ValueError(f"{where}(mixed_precision={mixed_precision!r}): use 'auto', 'bf16', 'fp16' or None (also "
                     "accepted: True, False, 'no', 'float32', or the torch dtypes bfloat16, float16, float32)")


def amp_dtype(mixed_precision: Any, device: torch.device, trained: str | None = None,
              where: str = "Learner") -> torch.dtype | None:
    """The autocast dtype of a `mixed_precision` setting (see `parse_mixed_precision`) on `device`.

    'auto' is off on the CPU (CPU autocast is slow on most CPUs and changes results) and on CUDA is the
    precision training used (`trained`, a dtype name as recipes record it: 'float16' gives fp16), else bf16
    where supported, else fp16. 'bf16' and 'fp16' are honoured on any device, except that CUDA without bf16
    support gets fp16. None is off.

    Example:
        >>> amp_dtype("auto", torch.device("cpu")) is None
        True
    """
    choice = parse_mixed_precision(mixed_precision, where)
    if choice is None:
        return None
    if choice == "auto":
        if device.type != "cuda":
            return None
        choice = "fp16" if trained == "float16" else "bf16"
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16


def autocast(device_type: str, dtype: torch.dtype | None, cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """`torch.autocast(device_type, dtype)`, or a no-op context when `dtype` is None (mixed precision off).
    `cache_enabled=False` while a CUDA graph is recorded (autocast's cast cache must not outlive the capture).

    Example:
        >>> with autocast("cpu", None):
        ...     out = model(x)
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, cache_enabled=cache_enabled)


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The versions a run record, recipe or model card records: learnkit, torch and Python, then `extra`.

    Example:
        >>> sorted(versions())
        ['learnkit', 'python', 'torch']
    """
    from learnkit.version import __version__
    out = {"learnkit": __version__, "torch": torch.__version__, "python": platform.python_version()}
    return {**out, **(extra or {})}
