"""Keyword-argument hygiene shared by every public constructor: fastai's spellings accepted with a one-line
deprecation warning naming the new word, and unknown names refused at once with the nearest valid one."""
from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from typing import Any, Callable, Iterable, Mapping

__all__ = ["FASTAI_SPELLINGS", "checked_keywords", "rename_kwargs", "reject_unknown", "nearest"]

# fastai's (or an older learnkit's) word -> learnkit's word. One table, so every constructor agrees.
FASTAI_SPELLINGS: dict[str, str] = {
    "bs": "batch_size", "loss_func": "loss_fn", "opt_func": "opt_fn", "cbs": "callbacks", "wd": "weight_decay",
    "lr_max": "max_lr", "n_epoch": "epochs", "n_epochs": "epochs", "pat": "pattern", "div_final": "final_div_factor",
    "dls": "data", "dataloaders": "data", "vocab": "classes", "memory_budget_bytes": "memory_budget",
}


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to `name` (None when nothing is close)."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def reject_unknown(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise TypeError for the first name in `given` that is not in `valid`, naming the nearest valid one."""
    valid = list(valid)
    for name in given:
        if name not in valid:
            close = nearest(name, valid)
            hint = f"; did you mean {close!r}?" if close else f"; valid names: {sorted(valid)}"
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")


def rename_kwargs(where: str, kwargs: dict[str, Any], renames: Mapping[str, str] | None = None,
                  stacklevel: int = 3) -> dict[str, Any]:
    """Return `kwargs` with old spellings (default: FASTAI_SPELLINGS) replaced by learnkit's, warning once per
    name with a DeprecationWarning that names the new one. Giving both spellings is an error."""
    renames = FASTAI_SPELLINGS if renames is None else renames
    out = dict(kwargs)
    for old, new in renames.items():
        if old == new or old not in out:
            continue
        if new in out:
            raise TypeError(f"{where}(): got both {old!r} and {new!r}; {old!r} is the old spelling of {new!r}, "
                            f"pass only {new}=")
        warnings.warn(f"{where}({old}=...) is deprecated: use {new}= (learnkit's name for it)", DeprecationWarning,
                      stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


def checked_keywords(fn: Callable) -> Callable:
    """Decorator for public constructors with explicit keyword parameters: fastai's spellings (FASTAI_SPELLINGS)
    are renamed with a DeprecationWarning when the new name is a parameter of `fn`, and any other unknown keyword
    fails at once, before any work, with the nearest valid name. `help()` still shows `fn`'s own signature."""
    params = inspect.signature(fn).parameters
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    renames = {old: new for old, new in FASTAI_SPELLINGS.items() if new in names and old not in names}
    where = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            kwargs = rename_kwargs(where, kwargs, renames)
            reject_unknown(where, kwargs, names)
        return fn(*args, **kwargs)
    return wrapper
