"""A registry of model builders, so that an exported model can be rebuilt from its name and arguments
(no pickle, no user code on the load path), plus two small generic models every test can use."""
from __future__ import annotations

import inspect
import json
import math
import weakref
from typing import Any, Callable, Collection, Mapping

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# What a recipe may pass to each builder beyond plain scalars and lists (see `check_model_kwargs`).
_LIMITS: dict[str, dict[str, tuple[float, float]]] = {}
_DICT_PARAMS: dict[str, dict[str, frozenset[str] | None]] = {}
MAX_INT_KWARG = 10**6  # any int in a recipe's model arguments, unless the builder declares a wider range
# Spec of each model made by `create_model`, keyed weakly by the module itself (no attribute patched on it).
_SPECS: "weakref.WeakKeyDictionary[nn.Module, dict[str, Any]]" = weakref.WeakKeyDictionary()


def register_model(name: str, limits: Mapping[str, tuple[float, float]] | None = None,
                   dict_params: Mapping[str, Collection[str] | None] | None = None,
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a function that returns an `nn.Module` under `name`.

    Its keyword arguments must be JSON values (numbers, strings, lists, dicts) so that `learn.export()`
    can record them. `load_learner` checks a recipe's arguments before building (`check_model_kwargs`):
    only parameters of the builder's signature, scalars and lists, ints within +-1e6.

    Args:
        name: the name `create_model` and recipes use.
        limits: inclusive (low, high) ranges of numeric arguments (all numbers inside a list argument too).
        dict_params: arguments that may hold a dict in a recipe, each with the keys allowed inside
            (None: any key, for dicts read by your own code only). Other dict arguments must be empty in
            a recipe, so that nothing a recipe says reaches a third-party constructor unchecked.

    Example:
        >>> @register_model("my_mlp", limits={"width": (1, 4096)})
        ... def my_mlp(n_in: int, n_out: int, width: int = 64) -> nn.Module:
        ...     return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, n_out))
    """
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"register_model: a builder named {name!r} is already registered "
                             f"({_BUILDERS[name].__module__}.{_BUILDERS[name].__qualname__}); pick another name")
        _BUILDERS[name] = fn
        _LIMITS[name] = dict(limits or {})
        _DICT_PARAMS[name] = {k: None if v is None else frozenset(v) for k, v in (dict_params or {}).items()}
        return fn
    return deco


def _check_value(value: Any, where: str, limit: tuple[float, float] | None, keys: frozenset[str] | None | bool,
                 depth: int = 0) -> None:
    """Scalars, lists of values, and (when `keys` allows) dicts; numbers within `limit` or +-MAX_INT_KWARG."""
    if depth > 8:
        raise ValueError(f"{where} is nested more than 8 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} = {value!r} is not a finite number")
        low, high = limit if limit is not None else (-MAX_INT_KWARG, MAX_INT_KWARG)
        if (limit is not None or isinstance(value, int)) and not low <= value <= high:
            raise ValueError(f"{where} = {value!r} is outside the allowed range [{low:g}, {high:g}]")
        return
    if isinstance(value, list):
        if len(value) > 10_000:
            raise ValueError(f"{where} is a list of {len(value)} values (at most 10000)")
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", limit, False, depth + 1)
        return
    if isinstance(value, dict) and keys is not False:
        for k, v in value.items():
            if keys is not None and k not in keys:
                raise ValueError(f"{where} has key {k!r}, which this builder does not accept in a recipe "
                                 f"(allowed: {sorted(keys)})")
            _check_value(v, f"{where}[{k!r}]", None, None if keys is None else False, depth + 1)
        return
    kind = "a dict (only lists and scalars are allowed here)" if isinstance(value, dict) else type(value).__name__
    raise ValueError(f"{where} is {kind}: a recipe's model arguments are JSON numbers, strings, booleans and lists")


def check_model_kwargs(name: Any, kwargs: Any) -> None:
    """Check a recipe's model builder and arguments before anything is built.

    The builder must be registered; every argument must be a parameter of its signature (for a builder that
    takes `**kwargs`: a valid identifier); values are JSON scalars or lists, ints within +-1e6 and numbers within
    the ranges the builder declares (`register_model(limits=...)`); a dict only for an argument declared in
    `register_model(dict_params=...)`, with the keys declared there. Raises ValueError saying what is wrong.

    Example:
        >>> check_model_kwargs("mlp", {"n_in": 8, "n_out": 3, "hidden": [16]})      # fine
        >>> check_model_kwargs("mlp", {"n_in": 8, "n_out": 3, "checkpoint_path": "x"})
        Traceback (most recent call last):
        ValueError: model 'mlp' has no parameter 'checkpoint_path' (its parameters: [...])
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"model builder {name!r} is not registered (known: {', '.join(list_models())}); import "
                         "the module that registers it (@register_model) before loading")
    if not isinstance(kwargs, dict):
        raise ValueError(f"the arguments of model {name!r} are a {type(kwargs).__name__}, not a JSON object")
    params = inspect.signature(_BUILDERS[name]).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {k for k, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)}
    for key, value in kwargs.items():
        if key not in named and not (var_kw and key.isidentifier()):
            raise ValueError(f"model {name!r} has no parameter {key!r} (its parameters: {sorted(named)})")
        dicts = _DICT_PARAMS.get(name, {})
        if isinstance(value, dict) and value and key not in dicts:
            raise ValueError(f"argument {key!r} of model {name!r} holds {sorted(value)[:5]}: this builder accepts "
                             "no dict entries in a recipe (they would reach a constructor unchecked)")
        _check_value(value, f"argument {key!r} of model {name!r}", _LIMITS.get(name, {}).get(key),
                     dicts.get(key) if key in dicts else False if value else None)


def builder_module(name: str) -> str | None:
    """The module that registered builder `name` (recorded in exports so loading can import it)."""
    return _BUILDERS[name].__module__ if name in _BUILDERS else None


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(_BUILDERS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model and remember (name, kwargs) so that `learn.export()` can record it.

    Example:
        >>> model = create_model("mlp", n_in=4, n_out=3, hidden=(16,))
    """
    if name not in _BUILDERS:
        raise KeyError(f"create_model: no model named {name!r}; known: {', '.join(list_models())}. "
                       "Register your own with @register_model(name).")
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise TypeError(f"create_model({name!r}): arguments must be JSON values so that exports can record "
                        f"them ({e})") from None
    model = _BUILDERS[name](**kwargs)
    _SPECS[model] = {"name": name, "kwargs": kwargs}
    return model


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """The {'name', 'kwargs'} a model was built from by `create_model`, or None for any other module."""
    spec = _SPECS.get(model)
    return dict(spec) if spec is not None else None


_WIDTH = (0, 65536)


@register_model("mlp", limits={"n_in": (1, 2**24), "n_out": (1, 2**20), "hidden": _WIDTH, "dropout": (0, 1)})
def mlp(n_in: int, n_out: int, hidden: tuple[int, ...] | list[int] = (128,), dropout: float = 0.0,
        batch_norm: bool = False) -> nn.Module:
    """A multi-layer perceptron that flattens its input: Linear → (BatchNorm) → ReLU → (Dropout), then a head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@register_model("simple_cnn", limits={"n_in": (1, 4096), "n_out": (1, 2**20), "widths": _WIDTH})
def simple_cnn(n_in: int, n_out: int, widths: tuple[int, ...] | list[int] = (16, 32, 64)) -> nn.Module:
    """A small conv net (stride-2 conv → BN → ReLU blocks, global average pool, linear head).

    Its two layer groups (body, head) are its first and second children.
    """
    body: list[nn.Module] = []
    c = n_in
    for w in widths:
        body += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(nn.Sequential(*body),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out)))
