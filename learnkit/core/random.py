"""Seeding and capturing/restoring every random number generator learnkit touches.

`get_rng_state`/`set_rng_state` let `lr_find` and checkpoints put the world back bit-exactly.
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterable

import numpy as np
import torch


_CURRENT_SEED: int | None = None


def current_seed() -> int | None:
    """The seed last given to `set_seed` (recorded in exports and run records), or None."""
    return _CURRENT_SEED


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    A DataBunch built with its own `seed=` shuffles from its own generator, which this does not touch:
    reseed it with `data.train_dl.generator.manual_seed(n)` to repeat the same order.

    Args:
        seed: any integer.
        deterministic: also ask torch for deterministic kernels (slower on GPU; CPU training with
            the same seed is already bit-identical without it).

    Example:
        >>> set_seed(42)
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"set_seed(seed={seed!r}): seed must be an int, e.g. set_seed(42)")
    global _CURRENT_SEED
    _CURRENT_SEED = seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def get_rng_state(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Snapshot Python, NumPy, torch CPU/CUDA generators, plus any extra `torch.Generator`s given."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "extra": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Restore a snapshot made by `get_rng_state` (with the same extra generators, in the same order)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state.get("extra", [])):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Turn a `get_rng_state` snapshot into tensors, ints and strings only, so that it can be stored in a
    checkpoint read back with `torch.load(weights_only=True)`."""
    py_version, py_state, py_gauss = state["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    out = {
        "python": [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": state["torch"],
        "extra": list(state["extra"]),
    }
    if "cuda" in state:
        out["cuda"] = list(state["cuda"])
    return out


def rng_state_from_tensors(stored: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `rng_state_to_tensors`."""
    py_version, py_state, py_gauss = stored["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = stored["numpy"]
    state = {
        "python": (py_version, tuple(int(v) for v in py_state.tolist()), py_gauss),
        "numpy": (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss),
        "torch": stored["torch"],
        "extra": list(stored["extra"]),
    }
    if "cuda" in stored:
        state["cuda"] = list(stored["cuda"])
    return state
