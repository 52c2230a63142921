"""`learn.compile()`: torch.compile the model in place, compile it now on one training batch (so the compile
time is measured apart from training), and fall back to eager with one warning when compilation fails."""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from learnkit.data.bunch import n_items

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["compile_model"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_static_batches(dl: Any, mode: Any) -> None:
    """CUDA graphs replay one recorded shape: a last training batch of another size would record a second graph
    every epoch (and torch may mark the batch dimension dynamic). Ask for equal batches instead."""
    n, bs = n_items(dl), getattr(dl, "batch_size", None)
    if bs and not getattr(dl, "drop_last", False) and n % bs:
        raise ValueError(f"learn.compile(mode={mode!r}) uses CUDA graphs, which need every training batch the same "
                         f"size; {n} training items in batches of {bs} leave a last batch of {n % bs}. Build the "
                         f"data with drop_last=True (or a batch_size that divides {n}).")


def compile_model(learn: "Learner", **kwargs: Any) -> float:
    """Compile `learn.model` in place (`nn.Module.compile`: the same module, parameters, state_dict and exports)
    and run one forward + backward on a training batch now. Returns the compile seconds (also kept in
    `learn.compile_seconds`; None when compilation failed and the model stayed eager).

    Nothing the warm-up touches survives it: the model's state (BatchNorm statistics), the gradients and every
    random generator (global and the data's) are put back, so a compiled fit sees what an eager one would.
    Freezing and unfreezing later is safe: the compiled graph is guarded on `requires_grad` and recompiled.
    """
    model, data = learn.model, learn.data
    if kwargs.get("mode") in ("reduce-overhead", "max-autotune") or (kwargs.get("options") or {}).get("triton.cudagraphs"):
        _check_static_batches(data.train_dl, kwargs.get("mode"))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = learn.rng_state()
    was_training = model.training
    model.compile(**kwargs)
    start = time.perf_counter()
    try:
        batch = data.transfer(next(iter(data.train_dl)), training=True)
        model.train()
        with learn.autocast():
            out = model(*batch[:data.n_inp])
        loss = learn.loss_fn(out, *batch[data.n_inp:])
        loss.backward()
        _sync(learn.device)
        seconds: float | None = time.perf_counter() - start
    except Exception as e:  # a graph break is not an error; a backend that cannot compile this model is
        # nn.Module.compile has no public undo: dropping the compiled call puts the plain __call__ back.
        model._compiled_call_impl = None
        detail = " ".join(str(e).split())[:300]
        warnings.warn(f"learn.compile: torch.compile failed ({type(e).__name__}: {detail}); "
                      "training stays eager. Pass other options (e.g. mode=None, dynamic=False) or file a bug "
                      "with torch's error.", stacklevel=3)
        seconds = None
    finally:
        for p in model.parameters():
            p.grad = None
        model.load_state_dict(state)
        model.train(was_training)
        learn.set_rng_state(rng)
    learn.compile_seconds = seconds
    return seconds if seconds is not None else 0.0
