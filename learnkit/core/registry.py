"""A registry of model builders, so that an exported model can be rebuilt from its name and arguments
(no pickle, no user code on the load path), plus two small generic models every test can use."""
from __future__ import annotations

import json
import weakref
from typing import Any, Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# Spec of each model made by `create_model`, keyed weakly by the module itself (no attribute patched on it).
_SPECS: "weakref.WeakKeyDictionary[nn.Module, dict[str, Any]]" = weakref.WeakKeyDictionary()


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a function that returns an `nn.Module` under `name`.

    Its keyword arguments must be JSON values (numbers, strings, lists, dicts) so that `learn.export()`
    can record them.

    Example:
        >>> @register_model("my_mlp")
        ... def my_mlp(n_in: int, n_out: int) -> nn.Module:
        ...     return nn.Sequential(nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, n_out))
    """
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"register_model: a builder named {name!r} is already registered "
                             f"({_BUILDERS[name].__module__}.{_BUILDERS[name].__qualname__}); pick another name")
        _BUILDERS[name] = fn
        return fn
    return deco


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


@register_model("mlp")
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


@register_model("simple_cnn")
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
