"""The bundle's `recipe.json`: its schema, checked before anything is built, and the hash of its meaning (the
fields that decide what the bundle predicts), so that an edited class name or normalization stat is reported as
tampering rather than loaded."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from learnkit.core.serialization import DTYPE_NAMES

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_RECIPE_BYTES", "MEANING_FIELDS", "check_meaning", "check_recipe",
           "meaning_sha256"]

FORMAT, FORMAT_VERSION = "learnkit-export", 2
MAX_RECIPE_BYTES = 64 * 2**20  # a Hugging Face tokenizer.json rides inside (XLM-R's is 17 MB)
MAX_WEIGHTS_BYTES = 2**40
# What the bundle predicts depends on these: each is hashed (canonical JSON) into `meaning_sha256`.
MEANING_FIELDS = ("model", "blocks", "n_inp", "item_tfms", "batch_tfms", "classes", "weights")
_NONE = type(None)
_REQUIRED: dict[str, tuple[type, ...]] = {
    "format": (str,), "format_version": (int,), "model": (dict,), "requires": (list,), "blocks": (list,),
    "n_inp": (int,), "item_tfms": (list,), "batch_tfms": (list,), "classes": (list, _NONE), "weights": (dict,),
    "meaning_sha256": (dict,)}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "mixed_precision": (str, _NONE), "versions": (dict,), "seed": (int, _NONE), "training": (dict,)}
_MIXED_PRECISION = (None, "float16", "bfloat16", "float32")
_MODULE = re.compile(r"^learnkit(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def meaning_sha256(recipe: dict[str, Any]) -> dict[str, str]:
    """{field: sha256 of its canonical JSON} for every field in `MEANING_FIELDS` (of the recipe as written)."""
    return {field: hashlib.sha256(_canonical(recipe.get(field))).hexdigest() for field in MEANING_FIELDS}


def check_meaning(recipe: dict[str, Any], recipe_file: Path) -> None:
    """Raise if a field that decides the predictions was edited after export."""
    recorded = recipe["meaning_sha256"]
    edited = [f for f, digest in meaning_sha256(recipe).items() if recorded.get(f) != digest]
    if edited:
        raise ValueError(f"load_learner: {recipe_file} was edited after export: its {', '.join(edited)} no longer "
                         "match the sha256 recorded in its meaning_sha256 (tampering or damage), so the bundle "
                         "would not predict what was trained. Re-export the model (learn.export()).")


def _type_error(recipe_file: Path, where: str, value: Any, types: tuple[type, ...]) -> ValueError:
    names = " or ".join("null" if t is _NONE else {dict: "object", list: "list", str: "string"}.get(t, t.__name__)
                        for t in types)
    return ValueError(f"load_learner: {recipe_file} is damaged: {where} is {type(value).__name__} "
                      f"{json.dumps(value, default=str)[:60]}, expected {names}. Re-export the model.")


def _check_type(recipe_file: Path, where: str, value: Any, types: tuple[type, ...]) -> None:
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise _type_error(recipe_file, where, value, types)


def _check_configs(recipe_file: Path, key: str, configs: list) -> None:
    """Each block / transform config: an object with a string "type"; any "dtype" from the allow-list."""
    for i, cfg in enumerate(configs):
        _check_type(recipe_file, f"{key}[{i}]", cfg, (dict,))
        _check_type(recipe_file, f"{key}[{i}].type", cfg.get("type"), (str,))
        if "dtype" in cfg and cfg["dtype"] is not None and cfg["dtype"] not in DTYPE_NAMES:
            raise ValueError(f"load_learner: {recipe_file}: {key}[{i}] asks for dtype {cfg['dtype']!r}; allowed: "
                             f"{sorted(DTYPE_NAMES)}. The recipe is damaged or tampered with: re-export the model.")


def check_recipe(recipe: Any, recipe_file: Path) -> None:
    """Check the structure of a parsed recipe: allowed top-level keys and their types, the format, the weights
    entry, the imports, the blocks and transforms. Runs before anything is imported or built; the model
    builder and its arguments are checked next, once the recipe's learnkit modules are imported
    (`learnkit.core.registry.check_model_kwargs`).
    """
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise ValueError(f"load_learner: {recipe_file} is not a learnkit export (format "
                         f"{recipe.get('format') if isinstance(recipe, dict) else None!r})")
    if recipe.get("format_version") != FORMAT_VERSION:
        learnkit_version = recipe.get("versions", {}).get("learnkit") if isinstance(recipe.get("versions"), dict) \
            else None
        raise ValueError(f"load_learner: {recipe_file} has format version {recipe.get('format_version')!r}; this "
                         f"learnkit reads version {FORMAT_VERSION}. Re-export with this version or install "
                         f"learnkit {learnkit_version}.")
    unknown = sorted(set(recipe) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"load_learner: {recipe_file} has unknown key(s) {unknown}; a recipe holds only "
                         f"{sorted({**_REQUIRED, **_OPTIONAL})}. It was edited: re-export the model.")
    for key, types in _REQUIRED.items():
        if key not in recipe:
            raise ValueError(f"load_learner: {recipe_file} is damaged: it has no {key!r} entry. Re-export the model.")
        _check_type(recipe_file, key, recipe[key], types)
    for key, types in _OPTIONAL.items():
        if key in recipe:
            _check_type(recipe_file, key, recipe[key], types)
    if recipe.get("mixed_precision") not in _MIXED_PRECISION:
        raise ValueError(f"load_learner: {recipe_file}: mixed_precision {recipe['mixed_precision']!r} is not one of "
                         f"{list(_MIXED_PRECISION)}")
    weights = recipe["weights"]
    for key, types in {"file": (str,), "sha256": (str,), "bytes": (int,)}.items():
        _check_type(recipe_file, f"weights.{key}", weights.get(key), types)
    if Path(weights["file"]).name != weights["file"] or weights["file"] in ("", ".", "..") or "\\" in weights["file"]:
        raise ValueError(f"load_learner: {recipe_file} names weights file {weights['file']!r}; it must be a plain "
                         "file name inside the bundle folder")
    if not _HEX64.match(weights["sha256"]) or not 8 <= weights["bytes"] <= MAX_WEIGHTS_BYTES:
        raise ValueError(f"load_learner: {recipe_file} is damaged: weights.sha256 / weights.bytes "
                         f"({weights['sha256'][:16]!r}, {weights['bytes']}) are not a sha256 and a file size")
    model = recipe["model"]
    if set(model) - {"name", "kwargs", "class"} or not ({"name", "kwargs"} <= set(model)):
        raise ValueError(f"load_learner: {recipe_file}: model must hold name and kwargs (and class), not "
                         f"{sorted(model)}")
    _check_type(recipe_file, "model.name", model["name"], (str, _NONE))
    _check_type(recipe_file, "model.kwargs", model["kwargs"], (dict, _NONE))
    if "class" in model:
        _check_type(recipe_file, "model.class", model["class"], (str,))
    if len(recipe["requires"]) > 100:
        raise ValueError(f"load_learner: {recipe_file} lists {len(recipe['requires'])} modules to import")
    for module in recipe["requires"]:
        if not (isinstance(module, str) and _MODULE.match(module)):
            raise ValueError(f"load_learner: {recipe_file} asks to import {module!r}; only learnkit's own modules "
                             "are imported when loading")
    for key in ("blocks", "item_tfms", "batch_tfms"):
        _check_configs(recipe_file, key, recipe[key])
    if not 1 <= recipe["n_inp"] < len(recipe["blocks"]):
        raise ValueError(f"load_learner: {recipe_file}: n_inp={recipe['n_inp']} does not fit its "
                         f"{len(recipe['blocks'])} blocks (inputs first, then a target block)")
    digests = recipe["meaning_sha256"]
    if sorted(digests) != sorted(MEANING_FIELDS) or not all(isinstance(d, str) for d in digests.values()):
        raise ValueError(f"load_learner: {recipe_file} is damaged: meaning_sha256 must hash {list(MEANING_FIELDS)}")
