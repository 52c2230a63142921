"""Export for inference without pickle: `weights.safetensors` (plain tensors) + `recipe.json` (model
builder and arguments, blocks, preprocessing, classes, versions, seed, weights hash).

`load_learner` rebuilds a `Predictor` from learnkit's own registries only: no user code runs on the load
path and the training data is not needed. A tampered or incompatible bundle is a clear error.
"""
from __future__ import annotations

import importlib
import json
import platform
from pathlib import Path
from typing import Any, Sequence, TYPE_CHECKING

import torch
from torch import nn

from learnkit.core.device import default_device
from learnkit.core.random import current_seed
from learnkit.core.registry import builder_module, create_model, model_spec
from learnkit.core.serialization import atomic_write, load_tensors, save_tensors, sha256_file
from learnkit.data.blocks import TransformBlock, block_from_config
from learnkit.data.bunch import n_items
from learnkit.data.transforms import transform_from_config

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["export", "load_learner", "Predictor"]

FORMAT, FORMAT_VERSION = "learnkit-export", 1
RECIPE, WEIGHTS = "recipe.json", "weights.safetensors"


def _version() -> str:
    from learnkit import __version__
    return __version__


def _config(tfm: Any, kind: str) -> dict:
    if not hasattr(tfm, "to_config"):
        raise ValueError(f"export: the {kind} {tfm!r} cannot be recorded (it has no to_config), so predictions "
                         "after loading would not see the same preprocessing. Use learnkit's transforms, or give "
                         "yours to_config/from_config and register it with learnkit.data.register_transform.")
    return tfm.to_config()


def export(learn: "Learner", path: str | Path) -> Path:
    """Write the bundle to folder `path` (relative paths are under learn.path). Returns the folder."""
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
        "versions": {"learnkit": _version(), "torch": torch.__version__, "python": platform.python_version()},
        "seed": current_seed(),
        "training": {"train_items": n_items(data.train_dl), "valid_items": n_items(data.valid_dl),
                     "epochs_recorded": len(learn.history.epoch_records),
                     "last_epoch": learn.history.epoch_records[-1] if learn.history.epoch_records else None},
        "weights": {"file": WEIGHTS, "sha256": sha256_file(folder / WEIGHTS)},
    }
    with atomic_write(folder / RECIPE) as tmp:
        tmp.write_text(json.dumps(recipe, indent=2, default=str))
    return folder


class Predictor:
    """Inference from an exported bundle: the model in eval mode plus the preprocessing it was trained with.

    Example:
        >>> predictor = load_learner("models/export")
        >>> label, index, probs = predictor.predict(x)
    """

    def __init__(self, model: nn.Module, blocks: Sequence[TransformBlock], n_inp: int, item_tfms: Sequence[Any],
                 batch_tfms: Sequence[nn.Module], device: torch.device, recipe: dict):
        self.model = model.to(device).eval()
        self.blocks, self.n_inp = list(blocks), n_inp
        self.item_tfms = list(item_tfms)
        self.batch_tfms = nn.ModuleList(batch_tfms).to(device).eval()
        self.device, self.recipe = device, recipe

    @property
    def classes(self) -> list[Any] | None:
        return self.recipe.get("classes")

    def _encode(self, item: Any) -> torch.Tensor:
        x = self.blocks[0].encode(item)
        for tfm in self.item_tfms:
            x = tfm(x)
        return x

    def predict_batch(self, items: Sequence[Any]) -> tuple[list[Any], torch.Tensor]:
        """(decoded predictions, activated outputs) for raw inputs, without autograd."""
        encoded = [self._encode(item) for item in items]
        collate = getattr(self.blocks[0], "collate", None)  # variable-length inputs (text) say how to batch
        x = (collate(encoded) if collate is not None else torch.stack(encoded)).to(self.device)
        with torch.no_grad():
            for tfm in self.batch_tfms:
                x = tfm(x)
            out = self.model(x)
        y_block = self.blocks[self.n_inp]
        probs = y_block.activation(out).cpu()
        return [y_block.decode_prediction(p)[0] for p in probs], probs

    def predict(self, item: Any) -> tuple[Any, Any, torch.Tensor]:
        """(decoded prediction, class index or None, probabilities) for one raw input."""
        _, probs = self.predict_batch([item])
        decoded, index = self.blocks[self.n_inp].decode_prediction(probs[0])
        return decoded, index, probs[0]


def load_learner(path: str | Path, device: str | torch.device | None = None) -> Predictor:
    """Rebuild a `Predictor` from a folder written by `learn.export()`."""
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
                     [transform_from_config(c) for c in recipe["batch_tfms"]], device, recipe)
