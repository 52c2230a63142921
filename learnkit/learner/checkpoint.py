"""Training checkpoints for resuming: model, optimizer, grad scaler, position in the schedule, RNG states
and callback states, written atomically and read with `torch.load(weights_only=True)`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch

from learnkit.core.random import rng_state_from_tensors, rng_state_to_tensors
from learnkit.core.serialization import atomic_write

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["write_checkpoint", "restore_checkpoint"]

FORMAT = "learnkit-checkpoint-1"


def write_checkpoint(learn: "Learner", path: str | Path, epoch: int, batches_done: int,
                     rng_epoch_start: dict | None) -> None:
    """Write the state needed to continue the current fit at (epoch, batches_done). Under torchrun only rank 0
    writes (every rank holds the same weights and optimizer state)."""
    if learn.dist is not None and not learn.dist.is_main:
        return
    state: dict[str, Any] = {
        "format": FORMAT,
        "model": learn.model.state_dict(),
        "opt": learn.opt.state_dict(),
        "scaler": learn.scaler.state_dict(),
        "n_iter": learn.n_iter, "n_epochs": learn.n_epochs, "iter": learn.iter, "opt_steps": learn.opt_steps,
        "epoch": epoch, "batches_done": batches_done,
        "rng_now": rng_state_to_tensors(learn.rng_state()),
        "rng_epoch_start": None if rng_epoch_start is None else rng_state_to_tensors(rng_epoch_start),
        "callbacks": {type(cb).__name__: cb.state_dict() for cb in learn.callbacks},
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def restore_checkpoint(learn: "Learner", path: str | Path) -> int:
    """Load a checkpoint into `learn` (whose fit has just been set up); returns the epoch to start at."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"resume_from={str(path)!r}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"resume_from={str(path)!r}: not a readable learnkit checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"resume_from={str(path)!r}: not a learnkit checkpoint (format {state.get('format')!r})"
                         if isinstance(state, dict) else f"resume_from={str(path)!r}: not a learnkit checkpoint")
    if state["n_iter"] != learn.n_iter:
        raise ValueError(f"resume_from={str(path)!r}: the checkpoint belongs to a fit of {state['n_epochs']} epochs "
                         f"({state['n_iter']} batches) but this fit has {learn.n_epochs} epochs ({learn.n_iter} "
                         f"batches); call the same fit method with the same arguments and data to resume.")
    learn.model.load_state_dict(state["model"])
    learn.opt.load_state_dict(state["opt"])
    learn.scaler.load_state_dict(state["scaler"])
    learn.iter, learn.opt_steps = state["iter"], state["opt_steps"]
    for cb in learn.callbacks:
        if type(cb).__name__ in state["callbacks"]:
            cb.load_state_dict(state["callbacks"][type(cb).__name__])
    rng_now = rng_state_from_tensors(state["rng_now"])
    if state["batches_done"]:
        # Mid-epoch: replay the epoch's shuffle from its start, skip the batches done, then continue.
        learn.set_rng_state(rng_state_from_tensors(state["rng_epoch_start"]))
        learn.resume_point = (state["batches_done"], rng_now)
    else:
        learn.set_rng_state(rng_now)
    return state["epoch"]
