"""Export for inference without pickle: `weights.safetensors` (plain tensors) + `recipe.json` (model
builder and arguments, blocks, preprocessing, classes, versions, seed, weights hash) + a model card
(`model_card.json`, `model_card.md`).

`load_learner` rebuilds a `Predictor` from learnkit's own registries only: no user code runs on the load
path and the training data is not needed. A tampered or incompatible bundle is a clear error.
`Predictor.predict_batch` decodes raw inputs in threads, batches them and runs the model without autograd,
with autocast on CUDA.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch

from learnkit.core.device import default_device, versions
from learnkit.core.random import current_seed
from learnkit.core.registry import builder_module, create_model, model_spec
from learnkit.core.serialization import atomic_write, load_tensors, save_tensors, sha256_file
from learnkit.data.blocks import block_from_config
from learnkit.data.transforms import transform_from_config
from learnkit.export.card import data_fingerprint, model_card, write_model_card
from learnkit.export.predictor import Predictor

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["export", "load_learner", "Predictor"]

FORMAT, FORMAT_VERSION = "learnkit-export", 1
RECIPE, WEIGHTS, CARD = "recipe.json", "weights.safetensors", "model_card"


def _version() -> str:
    from learnkit.version import __version__
    return __version__


def _config(tfm: Any, kind: str) -> dict:
    if not hasattr(tfm, "to_config"):
        raise ValueError(f"export: the {kind} {tfm!r} cannot be recorded (it has no to_config), so predictions "
                         "after loading would not see the same preprocessing. Use learnkit's transforms, or give "
                         "yours to_config/from_config and register it with learnkit.data.register_transform.")
    return tfm.to_config()


def export(learn: "Learner", path: str | Path) -> Path:
    """Write the bundle to folder `path` (relative paths are under learn.path): weights, recipe and model card.

    Returns:
        The folder.

    Example:
        >>> folder = export(learn, "export")      # or learn.export("export")
        >>> load_learner(folder).predict_batch(paths)
    """
    folder = Path(path) if Path(path).is_absolute() else learn.path / path
    spec = model_spec(learn.model)
    if spec is None:
        raise ValueError(
            f"export: the model ({type(learn.model).__name__}) was not built by learnkit.create_model, so the "
            "bundle could not say how to rebuild it. Fix: register your builder with @register_model('name') "
            "and build the model with create_model('name', **kwargs); or keep weights only with learn.save().")
    data = learn.data
    item_cfgs = [_config(t, "item transform") for t in data.item_tfms]
    # A batch transform that only acts on training batches (augmentation) returns None: nothing to replay.
    batch_cfgs = [c for c in (_config(t, "batch transform") for t in data.batch_tfms) if c is not None]
    # learnkit modules that register what the recipe names (imported again by load_learner; never user code)
    modules = {builder_module(spec["name"]), *(type(b).__module__ for b in data.blocks),
               *(type(t).__module__ for t in list(data.item_tfms) + list(data.batch_tfms))}
    requires = sorted(m for m in modules if m and m.startswith("learnkit."))
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = data_fingerprint(data)
    state = {k: v.detach().cpu() for k, v in learn.model.state_dict().items()}
    save_tensors(state, folder / WEIGHTS, metadata={"format": FORMAT})
    recipe = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": spec,
        "requires": requires,
        "blocks": [b.to_config() for b in data.blocks], "n_inp": data.n_inp,
        "item_tfms": item_cfgs,
        "batch_tfms": batch_cfgs,
        "classes": data.vocab,
        "mixed_precision": str(learn.amp_dtype).replace("torch.", "") if learn.amp_dtype else None,
        "versions": versions(),
        "seed": current_seed(),
        "training": {"train_items": fingerprint["train_items"], "valid_items": fingerprint["valid_items"],
                     "data_sha256": fingerprint["sha256"],
                     "epochs_recorded": len(learn.history.epoch_records),
                     "last_epoch": learn.history.epoch_records[-1] if learn.history.epoch_records else None},
        "weights": {"file": WEIGHTS, "sha256": sha256_file(folder / WEIGHTS)},
    }
    with atomic_write(folder / RECIPE) as tmp:
        tmp.write_text(json.dumps(recipe, indent=2, default=str))
    _write_card(learn, folder, recipe, fingerprint)
    return folder


def _write_card(learn: "Learner", folder: Path, recipe: dict, fingerprint: dict) -> None:
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
    usage = (f"import learnkit\npredictor = learnkit.load_learner({folder.name!r})   # the bundle folder\n"
             "labels, probs = predictor.predict_batch(items)       # items: raw inputs, e.g. image paths\n"
             "label, index, probs = predictor.predict(item)")
    card = model_card(learn, export_info, input_spec, output_spec, usage, fingerprint)
    write_model_card(card, folder / CARD)


def load_learner(path: str | Path, device: str | torch.device | None = None, mixed_precision: str | None = "auto",
                 num_workers: int | None = None) -> Predictor:
    """Rebuild a `Predictor` from a folder written by `learn.export()`.

    Args:
        path: the bundle folder.
        device: where to run (default: the current CUDA device if any, else the CPU).
        mixed_precision: 'auto' (on CUDA what training used, bf16 if it trained in float32; off on the CPU),
            'bf16', 'fp16' or None (float32), as `Learner(mixed_precision=...)` (`core.parse_mixed_precision`).
        num_workers: decoding threads for `predict_batch` (default: up to 8).

    Example:
        >>> predictor = load_learner("models/export", device="cpu")
        >>> labels, probs = predictor.predict_batch(paths)
    """
    folder = Path(path)
    recipe_file = folder / RECIPE
    if not recipe_file.exists():
        raise FileNotFoundError(f"load_learner: {recipe_file} not found; pass the folder written by learn.export()")
    try:
        recipe = json.loads(recipe_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_learner: {recipe_file} is not valid JSON ({e}); the bundle is damaged, re-export it") from None
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise ValueError(f"load_learner: {recipe_file} is not a learnkit export (format "
                         f"{recipe.get('format') if isinstance(recipe, dict) else None!r})")
    if recipe.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"load_learner: {recipe_file} has format version {recipe.get('format_version')!r}; this "
                         f"learnkit ({_version()}) reads version {FORMAT_VERSION}. Re-export with this version or "
                         f"install learnkit {recipe.get('versions', {}).get('learnkit')}.")
    weights_file = folder / recipe["weights"]["file"]
    if Path(recipe["weights"]["file"]).name != recipe["weights"]["file"] or not weights_file.exists():
        raise FileNotFoundError(f"load_learner: weights file {weights_file} is missing")
    digest = sha256_file(weights_file)
    if digest != recipe["weights"]["sha256"]:
        raise ValueError(f"load_learner: {weights_file} does not match the sha256 recorded in {recipe_file} "
                         f"({digest[:12]}... != {recipe['weights']['sha256'][:12]}...): the file was modified or "
                         "damaged after export. Re-export the model.")
    for module in recipe.get("requires", []):
        if not (isinstance(module, str) and module.startswith("learnkit.")):
            raise ValueError(f"load_learner: {recipe_file} asks to import {module!r}; only learnkit's own modules "
                             "are imported when loading")
        importlib.import_module(module)
    try:
        model = create_model(recipe["model"]["name"], **recipe["model"]["kwargs"])
    except KeyError as e:
        raise ValueError(f"load_learner: {recipe_file} needs model builder {recipe['model']['name']!r}, which is not "
                         f"registered. Import the module that registers it (@register_model) before loading.") from e
    state = load_tensors(weights_file)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"load_learner: the weights in {weights_file} do not fit model {recipe['model']}: {e}") from e
    blocks = [block_from_config(c) for c in recipe["blocks"]]
    device = default_device() if device is None else torch.device(device)
    return Predictor(model, blocks, recipe["n_inp"], [transform_from_config(c) for c in recipe["item_tfms"]],
                     [transform_from_config(c) for c in recipe["batch_tfms"]], device, recipe, mixed_precision,
                     num_workers)
