"""fastai's spellings and typos at the learner's door: `take_fastai_names` turns fastai's keyword names
(`loss_func`, `cbs`, `wd`, `n_epoch`, `dls`, ...) into learnkit's with one DeprecationWarning each, and refuses any
other unknown keyword at once, naming the nearest parameter (or saying that it belongs to the data)."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from learnkit.core.args import FASTAI_SPELLINGS, nearest, reject_unknown, rename_kwargs

__all__ = ["take_fastai_names", "DATA_ARGUMENTS"]

# Names users pass to a learner that belong where the data is built: the error says so instead of guessing.
DATA_ARGUMENTS = ("batch_size", "bs", "item_tfms", "batch_tfms", "num_workers", "valid_pct", "seed", "device",
                  "shuffle", "drop_last", "size")


def take_fastai_names(where: str, fn: Callable, fastai_names: dict[str, Any], current: dict[str, Any],
                      stacklevel: int = 4) -> dict[str, Any]:
    """`current` (the values of `fn`'s parameters that fastai spells differently) updated from the fastai
    spellings in `fastai_names` (`loss_func`, `cbs`, `wd`, `n_epoch`, ...; each warns once with a
    DeprecationWarning naming learnkit's word). Any other name raises TypeError at once, naming the nearest
    parameter of `fn` (or saying that it belongs to the data); both spellings of one parameter is a TypeError.

    Example:
        >>> new = take_fastai_names("fit", Learner.fit, {"n_epoch": 3}, {"epochs": None})
        >>> new["epochs"]  # with a DeprecationWarning: use epochs=
        3
    """
    params = {n: p for n, p in inspect.signature(fn).parameters.items()
              if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for name in fastai_names:
        if FASTAI_SPELLINGS.get(name) in current:
            continue
        data_name = FASTAI_SPELLINGS.get(name, name)
        if nearest(name, params) is None and (data_name in DATA_ARGUMENTS or nearest(name, DATA_ARGUMENTS)):
            data_name = data_name if data_name in DATA_ARGUMENTS else nearest(name, DATA_ARGUMENTS)
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}: {data_name!r} belongs to the "
                            f"data, not the learner; pass it where the data is built (e.g. "
                            f"ImageDataBunch.from_folder(path, {data_name}=...) or DataBlock.databunch(source, "
                            f"{data_name}=...))")
        reject_unknown(where, [name], params)
    for old, new in ((k, FASTAI_SPELLINGS[k]) for k in fastai_names):  # both spellings: refused before any warning
        default, given = params[new].default, current[new]
        if given is not default and not (type(given) is type(default) and given == default):
            raise TypeError(f"{where}(): got both {old!r} and {new!r}; {old!r} is the old spelling of {new!r}, "
                            f"pass only {new}=")
    return {**current, **rename_kwargs(where, fastai_names, stacklevel=stacklevel)}
