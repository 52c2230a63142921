"""timm bodies for `vision.models`: names (and their pretrained tags) resolved, the model built without its
classifier, its normalization statistics, and its pretrained weights from the Hugging Face cache or a given file.

Only `models.py` imports this module (imports point from models to here, never back), so its errors are plain
ones (`ModelNotCached` for weights that are not there) that `models.py` turns into its own.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from learnkit.core.hub import ModelNotCached, cached_snapshot, not_cached_error, offline_flag

_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from its hub repos
_PREFIXES = ("timm:", "timm/")  # 'timm/<name>' is timm's hub repo id; 'timm:<name>' is accepted too


def timm_module() -> ModuleType | None:
    """timm, or None when it is not installed."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        return None


def timm_name(arch: str) -> str | None:
    """The timm model name `arch` stands for ('timm/' or 'timm:' removed), or None when timm has no such model.

    Raises:
        ImportError: `arch` asks for timm ('timm/<name>'), which is not installed.
        ValueError: a known model with an unknown pretrained tag ('resnet18.not_a_tag'); the message lists the tags.
    """
    timm, name = timm_module(), arch.removeprefix(_PREFIXES[0]).removeprefix(_PREFIXES[1])
    if timm is None:
        if arch.startswith(_PREFIXES):
            raise ImportError(f"arch={arch!r} needs timm, which is not installed: pip install timm")
        return None
    if not timm.is_model(name):
        return None
    base, _, tag = name.partition(".")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")] if tag else []
    if tag and tag not in tags:
        raise ValueError(f"arch {arch!r}: timm's {base!r} has no pretrained tag {tag!r}; its tags: "
                         f"{', '.join(tags) or 'none'}. Use e.g. 'timm/{base}.{tags[0] if tags else '<tag>'}', or "
                         f"'timm/{base}' for its default weights")
    return name


def timm_names() -> list[str]:
    """timm's model names (none without timm), for suggestions."""
    timm = timm_module()
    return [] if timm is None else list(timm.list_models())


def timm_body(name: str, n_in: int, kwargs: dict[str, Any], pretrained: bool,
              weights_file: Path | None = None) -> tuple[nn.Module, bool, tuple[int, int] | None]:
    """(body, pooled, input_size): timm's model without its classifier. Convolutional models keep their unpooled
    feature map (timm adapts `in_chans` itself). Patch-embedding models (ViT, DeiT, Swin, ...) pool themselves
    (class token, or the mean of DeiT's class and distillation tokens) and get `dynamic_img_size` (+
    `dynamic_img_pad`) where their constructor takes them: any image size works, padded up to a multiple of the
    patch size, the position embeddings interpolated. `input_size` is the (H, W) a body was built for when timm's
    config says its size is fixed and no dynamic option applies (PiT, BEiT, CoAtNet, Hiera), else None: at another
    size `VisionModel` turns a failure into an error that says what to do."""
    timm = timm_module()
    if weights_file is not None:
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(weights_file)}}
    common = {"pretrained": pretrained, "num_classes": 0, "in_chans": n_in, **kwargs}
    try:
        body = timm.create_model(name, global_pool="", **common)
        if not hasattr(body, "patch_embed"):  # attention inside (CoAtNet, MaxViT) can still fix the size
            return body, False, _fixed_size(body, None)
    except (AssertionError, ValueError):  # a token-pooled model refusing global_pool='' (distilled DeiT)
        pass
    for extra in ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True}, {}):
        try:  # an unknown keyword fails when the constructor is called, before anything is built
            body = timm.create_model(name, **extra, **common)
            break
        except TypeError:
            if not extra:
                raise
    # what the built embedding enforces, not what the constructor took (timm 1.0.29's Swin takes dynamic_img_size
    # and still asserts the native size); PiT's embedding has no such flag and no dynamic option
    strict = getattr(body.patch_embed, "strict_img_size", not extra) and not getattr(body, "dynamic_img_size", False)
    return body, True, _fixed_size(body, getattr(body.patch_embed, "img_size", None)) if strict else None


def _fixed_size(body: nn.Module, built: Any) -> tuple[int, int] | None:
    """The (H, W) a body was built for when timm's config says its input size is fixed (`fixed_input_size`): the
    embedding's own `img_size` where it has one (it follows an img_size argument), else the config's."""
    cfg = getattr(body, "pretrained_cfg", None) or {}
    size = built if built is not None else cfg.get("input_size") if cfg.get("fixed_input_size") else None
    if size is None:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    return int(size[0]), int(size[-1])


def timm_hub_id(name: str) -> str | None:
    """The Hugging Face repo timm downloads `name`'s weights from ('timm/<name>.<tag>'), when it says."""
    return _cfg_value(name, "hf_hub_id")


def timm_url(name: str) -> str | None:
    """The URL of `name`'s weights when timm has them only there (no hub repo: gcvit, legacy_seresnet18, ...)."""
    return None if timm_hub_id(name) else _cfg_value(name, "url")


def _cfg_value(name: str, key: str) -> str | None:
    try:
        cfg = timm_module().models.get_pretrained_cfg(name)
    except Exception:  # an unknown tag or an old timm: timm itself will say what is wrong
        return None
    value = cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
    return value if isinstance(value, str) and value else None


def timm_stats(name: str, default: tuple[Any, Any]) -> tuple[Any, Any]:
    """(mean, std) from `name`'s pretrained_cfg, or `default` when it has none."""
    cfg = timm_module().models.get_pretrained_cfg(name)
    if not cfg:
        return default
    return (cfg["mean"], cfg["std"]) if isinstance(cfg, dict) else (cfg.mean, cfg.std)


def timm_pretrained_body(name: str, n_in: int, weights_file: Path | None = None) -> tuple[nn.Module, str]:
    """(body with timm's pretrained weights, where they came from). Without `weights_file` a cached hub file is
    handed to timm directly: the cache and the offline flag are read now, not when huggingface_hub was imported.

    Raises:
        ModelNotCached: offline and not cached, or timm could not get the weights; the message says what to do.
    """
    hub_id = timm_hub_id(name)
    if weights_file is None and hub_id:
        snapshot = cached_snapshot(hub_id, required=())
        weights_file = next((snapshot / f for f in _TIMM_FILES if snapshot and (snapshot / f).is_file()), None)
        flag = offline_flag()
        if weights_file is None and flag is not None:
            raise ModelNotCached(f"{not_cached_error(hub_id, f'{flag} is set', 'timm weights')} Or pass weights=<file>.")
    try:
        body, _, _ = timm_body(name, n_in, {}, pretrained=True, weights_file=weights_file)
    except Exception as e:  # hub, network and cache errors come in many types
        why = f"timm failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        raise ModelNotCached((f"{not_cached_error(hub_id, why, 'timm weights')} " if hub_id else
                              f"timm could not load pretrained weights for {name!r}: {why}. ")
                             + "Or pass weights=<file>.") from e
    return body, f"timm:{name} pretrained weights ({(getattr(body, 'pretrained_cfg', None) or {}).get('hf_hub_id')})"
