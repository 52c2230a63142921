"""Export for serving: one graph holding the batch-level preprocessing, the model and the output activation,
written as a `torch.export` program (`.pt2`) or an ONNX file, each with a small JSON model card beside it.

Input contract (images): a uint8 batch (B, C, H, W) — or float in [0, 1] — at the size the *item*
transforms produce. Decoding and item-level resizing happen before the graph (in the serving code, as
`Predictor` does); batch-level resizing (`BatchResize`) and normalization (`Normalize`) are inside it.
Output: activated predictions (B, n_out): probabilities for a `CategoryBlock` (softmax) or a
`MultiCategoryBlock` (sigmoid), raw values for regression. The batch dimension is dynamic.

Text (numericalized, padded (B, T) token ids) is not supported yet: variable-length inputs raise
`NotImplementedError`. Use `learn.export()` (the recipe format) for those.
"""
from __future__ import annotations

import copy
import json
import platform
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

import torch
from torch import nn

from learnkit.core.serialization import atomic_write
from learnkit.data.bunch import n_items

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["ServingModule", "export_torch", "export_onnx"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class ServingModule(nn.Module):
    """Batch transforms (eval mode, recorded ones only) → model (eval) → the target block's activation.

    Batch transforms whose `to_config()` returns None (augmentation that is identity in eval mode,
    `ChannelsLast`) are left out: they change nothing at inference. Everything is copied to the CPU, so
    building one never touches the learner's model or data.

    Args:
        model: the trained network.
        batch_tfms: the data's batch transforms (`nn.Module`s).
        activation: maps the model's output to predictions (e.g. `CategoryBlock.activation`); None = identity.

    Example:
        >>> serving = ServingModule.from_learner(learn)
        >>> probs = serving(uint8_images)          # (B, n_classes)
    """

    def __init__(self, model: nn.Module, batch_tfms: Any = (), activation: Callable | None = None):
        super().__init__()
        kept = [t for t in batch_tfms if not (hasattr(t, "to_config") and t.to_config() is None)]
        self.batch_tfms = nn.ModuleList([copy.deepcopy(t) for t in kept]).cpu().eval()
        self.model = copy.deepcopy(model).cpu().eval()
        self.activation = activation if activation is not None else _identity
        self.eval()  # exporters trace the mode they find; serving is inference only

    @classmethod
    def from_learner(cls, learn: "Learner") -> "ServingModule":
        """Build from `learn.model`, `learn.data.batch_tfms` and `learn.data.y_block.activation`."""
        data = learn.data
        if getattr(data.blocks[0], "collate", None) is not None:
            raise NotImplementedError(
                f"serving export: the input block {data.blocks[0]!r} has variable-length inputs (numericalized, "
                "padded token ids), which the serving export does not support yet. Use learn.export() (the recipe "
                "format) and load_learner() instead.")
        if data.n_inp != 1:
            raise NotImplementedError(f"serving export: models with {data.n_inp} inputs are not supported; "
                                      "use learn.export() instead")
        y_block = data.y_block
        return cls(learn.model, data.batch_tfms, y_block.activation if y_block is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for tfm in self.batch_tfms:
            x = tfm(x)
        return self.activation(self.model(x))


def _example(learn: "Learner", example: torch.Tensor | None) -> torch.Tensor:
    """One loader batch's inputs before batch transforms (what the loader yields), on the CPU."""
    if example is None:
        dl = learn.data.valid_dl if learn.data.valid_dl is not None else learn.data.train_dl
        example = next(iter(dl))[0]
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"serving export: the example input must be a tensor, got {type(example).__name__}")
    if example.shape[0] < 2:  # a batch of 1 would make torch.export specialize the batch dimension to 1
        example = torch.cat([example, example])
    return example.detach().cpu()


def _fail(step: str, exc: Exception) -> RuntimeError:
    return RuntimeError(f"{step} failed: {type(exc).__name__}: {exc}\nThe model or one of its batch transforms "
                        "could not be captured as a graph. Use learn.export() (weights + recipe.json, loaded with "
                        "load_learner) to ship it instead.")


def _write_card(learn: "Learner", path: Path, example: torch.Tensor, out: torch.Tensor, fmt: str,
                exporter: str) -> Path:
    from learnkit import __version__
    data = learn.data
    records = learn.history.epoch_records
    card = {
        "format": fmt, "exporter": exporter, "file": path.name,
        "classes": data.vocab,
        "input": {"name": "images", "dtype": str(example.dtype).replace("torch.", ""),
                  "shape": ["batch", *example.shape[1:]],
                  "channels": int(example.shape[1]) if example.ndim == 4 else None,
                  "note": "decoded and item-resized inputs; uint8 in [0, 255] or float in [0, 1]; batch-level "
                          "resize and normalization are inside the graph"},
        "output": {"name": "probs", "dtype": str(out.dtype).replace("torch.", ""), "shape": ["batch", *out.shape[1:]],
                   "activation": type(data.y_block).__name__ + ".activation" if data.y_block is not None else None},
        "versions": {"learnkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "last_epoch": records[-1] if records else None,
        "train_items": n_items(data.train_dl),
    }
    card_path = path.with_name(path.name + ".card.json")
    with atomic_write(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2, default=str))
    return card_path


def export_torch(learn: "Learner", path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write a `torch.export` program (`.pt2`, dynamic batch) of `ServingModule.from_learner(learn)`.

    Args:
        learn: the trained learner (left unchanged: the model is copied to the CPU).
        path: the `.pt2` file; `<path>.card.json` is written beside it.
        example: an input batch as the loader yields it (before batch transforms); default: one batch
            of `learn.data.valid_dl` (or `train_dl`).

    Returns:
        The path of the written program.

    Example:
        >>> file = export_torch(learn, "model.pt2")
        >>> probs = torch.export.load(file).module()(uint8_images)
    """
    path = Path(path)
    serving, x = ServingModule.from_learner(learn), _example(learn, example)
    try:
        program = torch.export.export(serving, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    except Exception as e:
        raise _fail("export_torch: torch.export.export (tracing ServingModule)", e) from e
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    with torch.no_grad():
        out = serving(x)
    _write_card(learn, path, x, out, "torch.export (.pt2)", "torch.export.export")
    return path


def export_onnx(learn: "Learner", path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write an ONNX file of `ServingModule.from_learner(learn)`: input "images" (dynamic batch), output "probs".

    Uses the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, needs `onnxscript`).

    Args:
        learn: the trained learner (left unchanged: the model is copied to the CPU).
        path: the `.onnx` file; `<path>.card.json` is written beside it.
        example: an input batch as the loader yields it (before batch transforms); default: one batch
            of `learn.data.valid_dl` (or `train_dl`).

    Returns:
        The path of the written file.

    Example:
        >>> file = export_onnx(learn, "model.onnx")
        >>> onnxruntime.InferenceSession(str(file)).run(None, {"images": images.numpy()})
    """
    path = Path(path)
    serving, x = ServingModule.from_learner(learn), _example(learn, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(serving, (x,), str(path), dynamo=True, input_names=["images"], output_names=["probs"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False)
    except Exception as e:
        raise _fail("export_onnx: torch.onnx.export (dynamo exporter)", e) from e
    with torch.no_grad():
        out = serving(x)
    _write_card(learn, path, x, out, "onnx", "torch.onnx.export(dynamo=True)")
    return path
