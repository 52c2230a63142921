"""Export for inference without pickle: `weights.safetensors` (plain tensors) + `recipe.json` (model
builder and arguments, blocks, preprocessing, classes, versions, seed, weights hash and size, and a hash of the
recipe's meaning) + a model card (`model_card.json`, `model_card.md`).

`load_learner` checks the recipe against a schema, then rebuilds a `Predictor` from learnkit's own registries
only: no user code runs on the load path and the training data is not needed. A model that is not built by a
registered builder (any `nn.Module`) is exported too; `load_learner(folder, model=module)` takes its
architecture back. Re-exporting writes the new bundle in a sibling temp folder and swaps it in, so the old
bundle stays loadable until the new one is complete. A tampered, damaged or incompatible bundle is a
one-sentence error naming the file.
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch
from torch import nn

from learnkit.core.device import default_device, versions
from learnkit.core.random import current_seed
from learnkit.core.registry import builder_module, check_model_kwargs, create_model, model_spec
from learnkit.core.serialization import (check_finite, disk_error, from_json_safe, read_regular_file,
                                         remove_stale_temps, save_tensors, sha256_file, state_mismatch, temp_path,
                                         tensors_from_bytes, to_json_safe)
from learnkit.data.blocks import block_from_config
from learnkit.data.transforms import transform_from_config
from learnkit.export.card import data_fingerprint, model_card, write_model_card
from learnkit.export.predictor import Predictor
from learnkit.export.recipe import (FORMAT, FORMAT_VERSION, MAX_RECIPE_BYTES, check_meaning, check_recipe,
                                    meaning_sha256)

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["export", "load_learner", "Predictor"]

RECIPE, WEIGHTS, CARD = "recipe.json", "weights.safetensors", "model_card"
BUNDLE_FILES = (RECIPE, WEIGHTS, CARD + ".json", CARD + ".md")
_ASIDE = ".learnkit-previous"  # the old bundle, during the swap


def _config(tfm: Any, kind: str) -> dict:
    if not hasattr(tfm, "to_config"):
        raise ValueError(f"export: the {kind} {tfm!r} cannot be recorded (it has no to_config), so predictions "
                         "after loading would not see the same preprocessing. Use learnkit's transforms, or give "
                         "yours to_config/from_config and register it with learnkit.data.register_transform.")
    return tfm.to_config()


def _target_folder(learn: "Learner", path: str | Path) -> Path:
    """The bundle folder; refused when it holds anything but a bundle (the swap replaces the whole folder)."""
    folder = Path(path) if Path(path).is_absolute() else learn.path / path
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ValueError(f"export: {folder} exists and is not a folder; pass a new or bundle folder path")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in BUNDLE_FILES)
        if foreign:
            raise ValueError(f"export: {folder} holds files that are not part of a bundle ({', '.join(foreign[:5])}"
                             f"{', ...' if len(foreign) > 5 else ''}); re-exporting replaces the whole folder, so "
                             "export into a new folder or move those files away")
    return folder


def export(learn: "Learner", path: str | Path) -> Path:
    """Write the bundle to folder `path` (relative paths are under learn.path): weights, recipe and model card.

    The bundle is written into a sibling temp folder and swapped in with renames: an earlier bundle at `path`
    stays loadable until the new one is complete, and a failed export (an error, a full disk, Ctrl-C) leaves it
    as it was. Any `nn.Module` is exported: a model from `create_model` is rebuilt by name when loading;
    for any other, `load_learner(folder, model=...)` takes the architecture back.

    Returns:
        The folder.

    Example:
        >>> folder = export(learn, "export")      # or learn.export("export")
        >>> load_learner(folder).predict_batch(paths)
    """
    folder = _target_folder(learn, path)
    model_cls = f"{type(learn.model).__module__}.{type(learn.model).__qualname__}"
    spec = model_spec(learn.model) or {"name": None, "kwargs": None, "class": model_cls}
    data = learn.data
    item_cfgs = [_config(t, "item transform") for t in data.item_tfms]
    # A batch transform that only acts on training batches (augmentation) returns None: nothing to replay.
    batch_cfgs = [c for c in (_config(t, "batch transform") for t in data.batch_tfms) if c is not None]
    # learnkit modules that register what the recipe names (imported again by load_learner; never user code)
    modules = {builder_module(spec["name"]) if spec["name"] else None, *(type(b).__module__ for b in data.blocks),
               *(type(t).__module__ for t in list(data.item_tfms) + list(data.batch_tfms))}
    requires = sorted(m for m in modules if m and m.startswith("learnkit."))
    state = {k: v.detach().cpu() for k, v in learn.model.state_dict().items()}
    check_finite(state, f"export: the model's weights ({type(learn.model).__name__})")
    fingerprint = data_fingerprint(data)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder.parent)  # what a killed export left
    tmp = temp_path(folder)
    try:
        tmp.mkdir()
        save_tensors(state, tmp / WEIGHTS, metadata={"format": FORMAT})
        recipe = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "model": spec,
            "requires": requires,
            "blocks": [b.to_config() for b in data.blocks], "n_inp": data.n_inp,
            "item_tfms": item_cfgs,
            "batch_tfms": batch_cfgs,
            "classes": data.classes,
            "mixed_precision": str(learn.amp_dtype).replace("torch.", "") if learn.amp_dtype else None,
            "versions": versions(),
            "seed": current_seed(),
            "training": {"train_items": fingerprint["train_items"], "valid_items": fingerprint["valid_items"],
                         "data_sha256": fingerprint["sha256"],
                         "epochs_recorded": len(learn.history.epoch_records),
                         "last_epoch": learn.history.epoch_records[-1] if learn.history.epoch_records else None},
            "weights": {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS),
                        "bytes": (tmp / WEIGHTS).stat().st_size},
        }
        # The recipe as it will read back (labels with undecodable bytes tagged, other values as JSON), hashed.
        recipe = json.loads(json.dumps(to_json_safe(recipe), default=str))
        recipe["meaning_sha256"] = meaning_sha256(recipe)
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=2), encoding="utf-8")
        _write_card(learn, tmp, folder.name, recipe, fingerprint)
        _swap_in(tmp, folder)
    except OSError as e:
        raise disk_error(e, folder, "the previous bundle there (if any)") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Put the complete bundle `new` at `folder`: two renames (the old bundle moves aside, the new one in)."""
    if folder.exists():
        # Named apart from temp files, so that a crash between the two renames leaves the complete old bundle
        # where load_learner points to it (and no cleanup of stale temp files deletes it).
        old = folder.with_name(f".{folder.name}.{os.getpid()}-{secrets.token_hex(4)}{_ASIDE}")
        os.rename(folder, old)
        try:
            os.rename(new, folder)
        except BaseException:
            os.rename(old, folder)  # put the previous bundle back
            raise
    else:
        os.rename(new, folder)
    for aside in _moved_aside(folder):  # this one, and any an interrupted export left: a new bundle is in place
        shutil.rmtree(aside, ignore_errors=True)


def _moved_aside(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f".{glob.escape(folder.name)}.*{_ASIDE}"))


def _write_card(learn: "Learner", folder: Path, name: str, recipe: dict, fingerprint: dict) -> None:
    data = learn.data
    kind = "token ids" if getattr(data.blocks[0], "collate", None) is not None else "tensor"
    input_spec = {"kind": "raw inputs, as get_x returns them (e.g. an image path, bytes or array; a text)",
                  "block": recipe["blocks"][0], "item_tfms": recipe["item_tfms"], "batch_tfms": recipe["batch_tfms"],
                  "note": f"the input block encodes each item ({kind}), the item transforms run per item, then "
                          "items are batched and the batch transforms run on the device: Predictor does all of it"}
    y_block = data.y_block
    output_spec = {"predict_batch": "(decoded predictions, probabilities float32 (N, n_out) on the CPU)",
                   "activation": f"{type(y_block).__name__}.activation" if y_block is not None else None}
    export_info = {"format": "learnkit bundle (weights.safetensors + recipe.json)", "exporter": "learnkit.export",
                   "files": [WEIGHTS, RECIPE], "weights_sha256": recipe["weights"]["sha256"]}
    model_arg = "" if recipe["model"]["name"] else ", model=MyModel(...)  # your architecture: weights come from the bundle"
    usage = (f"import learnkit\npredictor = learnkit.load_learner({name!r}{model_arg})   # the bundle folder\n"
             "labels, probs = predictor.predict_batch(items)       # items: raw inputs, e.g. image paths\n"
             "label, index, probs = predictor.predict(item)")
    card = model_card(learn, export_info, input_spec, output_spec, usage, fingerprint)
    write_model_card(card, folder / CARD)


def _read_recipe(folder: Path) -> tuple[dict, Path]:
    recipe_file = folder / RECIPE
    if not os.path.lexists(recipe_file):
        aside = _moved_aside(folder)
        hint = f" (an interrupted export left the previous bundle at {aside[-1]}: rename it to {folder.name})" \
            if aside and not folder.exists() else ""
        raise FileNotFoundError(f"load_learner: {recipe_file} not found; pass the folder written by "
                                f"learn.export(){hint}")
    raw = read_regular_file(recipe_file, MAX_RECIPE_BYTES, "bundle recipe")
    try:
        recipe = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_learner: {recipe_file} is not valid JSON ({e}); the bundle is damaged, re-export it") from None
    check_recipe(recipe, recipe_file)  # before anything is imported, read or built
    check_meaning(recipe, recipe_file)
    return recipe, recipe_file


def _read_weights(folder: Path, recipe: dict, recipe_file: Path) -> dict[str, torch.Tensor]:
    """The weights, read once (a regular file of the recorded size), checked against the recorded sha256."""
    info = recipe["weights"]
    weights_file = folder / info["file"]
    if not os.path.lexists(weights_file):
        raise FileNotFoundError(f"load_learner: weights file {weights_file} is missing; re-export the model")
    raw = read_regular_file(weights_file, what="bundle weights file", expected_bytes=info["bytes"])
    digest = hashlib.sha256(raw).hexdigest()
    if digest != info["sha256"]:
        raise ValueError(f"load_learner: {weights_file} does not match the sha256 recorded in {recipe_file} "
                         f"({digest[:12]}... != {info['sha256'][:12]}...): the file was modified or "
                         "damaged after export. Re-export the model.")
    return tensors_from_bytes(raw, weights_file)


def _check_fit(model: nn.Module, state: dict[str, torch.Tensor], weights_file: Path, what: str) -> None:
    """Every tensor the model needs is in the file with the same shape, and nothing else (before any copying)."""
    missing, extra, bad_shape = state_mismatch(model.state_dict(), state)
    if missing or extra:
        which = f"lacks tensor {missing[0]!r}" if missing else f"has tensor {extra[0]!r}"
        raise ValueError(f"load_learner: {weights_file} {which}, which {what} "
                         f"{'needs' if missing else 'does not have'} ({len(missing)} missing, {len(extra)} "
                         "unexpected): the weights do not fit the model. Re-export, or pass the architecture "
                         "that was exported.")
    if bad_shape is not None:
        key, got, want = bad_shape
        raise ValueError(f"load_learner: the weights in {weights_file} do not fit {what}: tensor {key!r} has "
                         f"shape {got} in the file but {want} in the model")


def _build_model(recipe: dict, recipe_file: Path, state: dict[str, torch.Tensor], weights_file: Path,
                 model: nn.Module | None) -> nn.Module:
    spec = recipe["model"]
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"load_learner(model=...): expected an nn.Module (the architecture), got "
                            f"{type(model).__name__}")
        _check_fit(model, state, weights_file, f"the given model ({type(model).__name__})")
        model.load_state_dict(state)
        return model
    if spec["name"] is None:
        raise ValueError(f"load_learner: {recipe_file} holds a {spec.get('class', 'custom')} model that was not built "
                         "by a registered builder, so the bundle cannot rebuild it. Fix: pass the architecture, "
                         "load_learner(folder, model=MyModel(...)), built as for training; its weights come from "
                         "the bundle. (Or register a builder with @register_model and build with create_model.)")
    try:
        check_model_kwargs(spec["name"], spec["kwargs"] or {})
    except ValueError as e:
        raise ValueError(f"load_learner: {recipe_file}: {e}") from None
    # On the meta device first: no memory is allocated, so a recipe asking for a huge model (or shapes that do
    # not match the weights) is refused before anything real is built.
    what = f"model {spec['name']!r} built from {recipe_file.name}"
    try:
        with torch.device("meta"):
            meta = create_model(spec["name"], **(spec["kwargs"] or {}))
    except Exception:  # a builder that cannot run on the meta device: checked once built for real
        meta = None
    if meta is not None:
        _check_fit(meta, state, weights_file, what)
        del meta
    try:
        built = create_model(spec["name"], **(spec["kwargs"] or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"load_learner: {recipe_file}: model {spec['name']!r} cannot be built from its recorded "
                         f"arguments ({type(e).__name__}: {e})") from None
    _check_fit(built, state, weights_file, what)
    built.load_state_dict(state)
    return built


def load_learner(path: str | Path, device: str | torch.device | None = None, mixed_precision: str | None = "auto",
                 num_workers: int | None = None, model: nn.Module | None = None) -> Predictor:
    """Rebuild a `Predictor` from a folder written by `learn.export()`.

    Args:
        path: the bundle folder.
        device: where to run (default: the current CUDA device if any, else the CPU).
        mixed_precision: 'auto' (on CUDA what training used, bf16 if it trained in float32; off on the CPU),
            'bf16', 'fp16' or None (float32), as `Learner(mixed_precision=...)` (`core.parse_mixed_precision`).
        num_workers: decoding threads for `predict_batch` (default: up to 8).
        model: the architecture, for a bundle whose model was not built by `create_model` (any `nn.Module`):
            built as for training; the bundle's weights are loaded into it (it becomes the Predictor's model).

    Example:
        >>> predictor = load_learner("models/export", device="cpu")
        >>> labels, probs = predictor.predict_batch(paths)
        >>> predictor = load_learner("models/my_net", model=MyNet())   # a plain nn.Module was exported
    """
    folder = Path(path)
    recipe, recipe_file = _read_recipe(folder)
    state = _read_weights(folder, recipe, recipe_file)
    weights_file = folder / recipe["weights"]["file"]
    for module in recipe["requires"]:
        importlib.import_module(module)
    recipe = from_json_safe(recipe)  # labels with undecodable bytes back to the same str
    try:
        blocks = [block_from_config(c) for c in recipe["blocks"]]
        item_tfms = [transform_from_config(c) for c in recipe["item_tfms"]]
        batch_tfms = [transform_from_config(c) for c in recipe["batch_tfms"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"load_learner: {recipe_file}: a block or transform cannot be rebuilt ({type(e).__name__}: "
                         f"{e}); the recipe is damaged or from another learnkit. Re-export the model.") from None
    built = _build_model(recipe, recipe_file, state, weights_file, model)
    device = default_device() if device is None else torch.device(device)
    return Predictor(built, blocks, recipe["n_inp"], item_tfms, batch_tfms, device, recipe, mixed_precision,
                     num_workers)
