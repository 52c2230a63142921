"""Training checkpoints for resuming: model, optimizer, grad scaler, position in the schedule, RNG states
and callback states, written atomically and read with `torch.load(weights_only=True)`. Loading (here and in
`Learner.load`) is all or nothing: every key and shape is checked before anything is copied, and a damaged
file is one sentence naming it."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping, TYPE_CHECKING

import torch
from torch import nn

from learnkit.core.random import rng_state_from_tensors, rng_state_to_tensors
from learnkit.core.serialization import atomic_write, check_regular_file, state_mismatch

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["write_checkpoint", "restore_checkpoint", "load_saved", "read_checkpoint", "check_model_state", "check_opt_state"]

FORMAT = "learnkit-checkpoint-1"
_PARAM_SHAPED = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg", "sum",
                 "acc_delta", "ax", "prev", "exp_inf"}


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


def read_checkpoint(path: Path, where: str, map_location: Any = "cpu") -> dict:
    """`torch.load(path, weights_only=True)` of a regular file, as a dict; any failure is one sentence naming
    the file (a truncated file is not a raw zip-reader enforce failure)."""
    check_regular_file(path, what="checkpoint")  # a FIFO or device would hang torch.load
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{where}: {path} holds objects that safe loading (weights_only) refuses ({first[:200]}); "
                         "it was not written by learnkit's save or Checkpoint") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise ValueError(f"{where}: {path} is truncated or damaged (not a complete torch checkpoint file); "
                         "use an earlier checkpoint or save it again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{where}: {path} holds a {type(state).__name__}, not a learnkit checkpoint (a dict)")
    return state


def check_model_state(model: nn.Module, state: Any, path: Path, where: str, strict: bool = True) -> None:
    """Raise, before anything is copied, unless `state` fits `model`: no missing or unexpected key (when strict),
    every tensor of the model's shape. Names the file and the first mismatching parameter with both shapes."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: {path} is damaged: its model entry is not a mapping of names to tensors")
    missing, extra, bad_shape = state_mismatch(model.state_dict(), state)
    if strict and (missing or extra):
        which = f"lacks parameter {missing[0]!r}" if missing else f"has parameter {extra[0]!r}, which the model lacks"
        raise ValueError(f"{where}: {path} does not fit the model: it {which} ({len(missing)} missing, "
                         f"{len(extra)} unexpected); the model was left unchanged. Load it into the architecture "
                         "it was saved from, or pass strict=False")
    if bad_shape is not None:
        key, got, want = bad_shape
        raise ValueError(f"{where}: {path} does not fit the model: parameter {key!r} has shape {got} in the file "
                         f"but {want} in the model; the model was left unchanged. Load it into the architecture it "
                         "was saved from")


def check_opt_state(opt: torch.optim.Optimizer, state: Any, path: Path, where: str) -> None:
    """Raise, before anything is copied, unless the saved optimizer state fits `opt`: the same parameter groups
    of the same sizes, and per-parameter state tensors (momenta) of each parameter's shape."""
    if not isinstance(state, Mapping) or not isinstance(state.get("param_groups"), list) \
            or not isinstance(state.get("state"), Mapping):
        raise ValueError(f"{where}: {path} is damaged: its optimizer entry is not an optimizer state_dict")
    groups = state["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            not isinstance(g, Mapping) or len(g.get("params", ())) != len(mine["params"])
            for g, mine in zip(groups, opt.param_groups)):
        saved = [len(g.get("params", ())) if isinstance(g, Mapping) else None for g in groups]
        raise ValueError(f"{where}: {path} holds optimizer state for parameter groups of sizes {saved}, but the "
                         f"optimizer has {[len(g['params']) for g in opt.param_groups]}; nothing was loaded. Load "
                         "with with_opt=False, or into the same set-up (layer groups, frozen state)")
    params = {pid: p for g, mine in zip(groups, opt.param_groups) for pid, p in zip(g["params"], mine["params"])}
    for pid, entry in state["state"].items():
        if pid not in params or not isinstance(entry, Mapping):
            raise ValueError(f"{where}: {path} is damaged: optimizer state for unknown parameter {pid!r}")
        current = opt.state.get(params[pid], {})
        for name, value in entry.items():
            # The shape to match: the optimizer's own entry if it has one, else the parameter's for the
            # entries that are parameter-shaped in torch's optimizers (factored states, as Adafactor's, are not).
            ref = current[name].shape if isinstance(current.get(name), torch.Tensor) else \
                params[pid].shape if name in _PARAM_SHAPED else None
            if isinstance(value, torch.Tensor) and ref is not None and value.shape != ref:
                raise ValueError(f"{where}: {path} does not fit the optimizer: its {name!r} of parameter {pid} has "
                                 f"shape {tuple(value.shape)} but the optimizer expects {tuple(ref)} (a parameter of "
                                 f"shape {tuple(params[pid].shape)}); nothing was loaded")


def load_saved(learn: "Learner", file: Path, with_opt: bool, strict: bool) -> None:
    """`Learner.load`'s work: read `file` (written by `learn.save`), check that model (and optimizer) state fit,
    then copy them in; a file that does not fit changes nothing."""
    state = read_checkpoint(file, "load", map_location=learn.device)
    if "model" not in state:
        raise ValueError(f"load: {file} is not a checkpoint written by learn.save() (it has no 'model' entry)")
    check_model_state(learn.model, state["model"], file, "load", strict)
    use_opt = with_opt and "opt" in state
    if use_opt:
        had_opt = learn.opt is not None
        if not had_opt:
            learn.create_opt()
        try:
            check_opt_state(learn.opt, state["opt"], file, "load")
        except ValueError:
            if not had_opt:
                learn.opt = None
            raise
    learn.model.load_state_dict(state["model"], strict=strict)
    if use_opt:
        learn.opt.load_state_dict(state["opt"])


def restore_checkpoint(learn: "Learner", path: str | Path) -> int:
    """Load a checkpoint into `learn` (whose fit has just been set up); returns the epoch to start at."""
    path = Path(path)
    where = f"resume_from={str(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"{where}: no such checkpoint file")
    state = read_checkpoint(path, where)
    if state.get("format") != FORMAT:
        raise ValueError(f"{where}: not a learnkit checkpoint (format {state.get('format')!r})")
    needed = ("model", "opt", "scaler", "n_iter", "n_epochs", "iter", "opt_steps", "epoch", "batches_done",
              "rng_now", "rng_epoch_start", "callbacks")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"{where}: {path} is damaged: it has no {missing[0]!r} entry; use an earlier checkpoint")
    if state["n_iter"] != learn.n_iter:
        raise ValueError(f"{where}: the checkpoint belongs to a fit of {state['n_epochs']} epochs "
                         f"({state['n_iter']} batches) but this fit has {learn.n_epochs} epochs ({learn.n_iter} "
                         f"batches); call the same fit method with the same arguments and data to resume.")
    check_model_state(learn.model, state["model"], path, where)
    check_opt_state(learn.opt, state["opt"], path, where)
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
