"""Model cards: what an exported model is, what it expects and how well it did, as JSON (for machines) and
Markdown (for people), written beside every export (`export`, `export_torch`, `export_onnx`).

A card records the classes, the validation metrics, a fingerprint of the training data (sha256 and sizes), the
seed, the library versions, the intended input format and how to load and run the model.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import math
import os
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import torch

from learnkit.core.device import versions as core_versions
from learnkit.core.random import current_seed
from learnkit.core.registry import model_spec
from learnkit.core.serialization import atomic_write, to_json_safe
from learnkit.data.bunch import n_items

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["data_fingerprint", "model_card", "render_markdown", "write_model_card"]

CARD_FORMAT, CARD_VERSION = "learnkit-model-card", 1
_OPTIONAL_PACKAGES = ("numpy", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime")
_CHUNK_BYTES = 64 * 2**20  # resident tensors are hashed in slices of about this size (bounded host memory)


class _Unhashable(TypeError):
    pass


def _hash_value(h: "hashlib._Hash", value: Any, root: str | None) -> None:
    """Feed one item into `h` in a canonical, type-tagged form (so that 1, 1.0 and '1' differ)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(value, os.PathLike):
        # Relative to the items' common folder, with '/' separators: the same data set in another place (or
        # on another OS) hashes the same.
        text = os.fspath(value)
        h.update(b"P" + _utf8(Path(os.path.relpath(text, root) if root else text).as_posix()))
    elif isinstance(value, bytes):
        h.update(b"bytes:" + value)
    elif isinstance(value, (str, bool, int, float, np.generic)) or value is None:
        plain = value.item() if isinstance(value, np.generic) else value
        h.update(_utf8(f"{type(plain).__name__}:{plain!r}"))
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}(".encode())
        for v in value:
            _hash_value(h, v, root)
        h.update(b")")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}(".encode())
        for k in sorted(value, key=repr):
            _hash_value(h, k, root)
            _hash_value(h, value[k], root)
        h.update(b")")
    else:
        raise _Unhashable(type(value).__name__)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _paths(value: Any) -> list[str]:
    if isinstance(value, os.PathLike):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths(v)]
    return []


def _hash_items(items: Any) -> tuple[str, bool]:
    """(sha256 of the items, whether they held file paths)."""
    items = list(items)
    paths = [os.path.abspath(p) for item in items for p in _paths(item)]
    root = None
    if paths:
        try:
            root = os.path.commonpath(paths)
            root = root if len(paths) > 1 else os.path.dirname(root)  # one file: its folder
        except ValueError:  # paths on different drives: keep them as given
            root = None
    h = hashlib.sha256()
    for item in items:
        _hash_value(h, _absolute(item) if root else item, root)
    return h.hexdigest(), bool(paths)


def _absolute(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return Path(os.path.abspath(value))
    if isinstance(value, tuple):
        return tuple(_absolute(v) for v in value)
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


def _hash_tensors(tensors: Any) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        per_row = max(1, t[0].numel() * t.element_size()) if len(t) else 1
        step = max(1, _CHUNK_BYTES // per_row)
        for start in range(0, len(t), step):
            h.update(t[start:start + step].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """A sha256 of the training split's identity, cheap and deterministic, with the split sizes.

    What is hashed, in order of preference:
    - a GPU-resident loader's tensors (`train_dl.tensors`, e.g. uint8 images and labels): their bytes;
    - the training dataset's `items` (e.g. (file path, label) pairs): paths relative to their common folder,
      labels, arrays and tensors by value. Files are identified by path, not read: cheap, but an edited
      image with the same name hashes the same;
    - a dataset of tensors (`TensorDataset.tensors`), or a plain list of items;
    - otherwise `dataset[i]` for every i (the dataset's own code runs; e.g. numericalized token ids).

    Returns:
        {"sha256": hex digest or None, "over": what was hashed (or why nothing was), "train_items": n,
        "valid_items": n}

    Example:
        >>> data_fingerprint(learn.data)["sha256"][:12]
        '3f1c0a9be2d4'
    """
    train_dl, valid_dl = data.train_dl, getattr(data, "valid_dl", None)
    out: dict[str, Any] = {"sha256": None, "over": None, "train_items": n_items(train_dl),
                           "valid_items": n_items(valid_dl) if valid_dl is not None else 0}
    dataset = getattr(train_dl, "dataset", None)
    try:
        if getattr(train_dl, "tensors", None) is not None:
            out["sha256"], out["over"] = _hash_tensors(train_dl.tensors), "the resident training tensors' bytes"
        elif getattr(dataset, "items", None) is not None:
            out["sha256"], paths = _hash_items(dataset.items)
            out["over"] = "the training items (" + ("file paths relative to their common folder, " if paths else "") + \
                "labels, values)"
        elif getattr(dataset, "tensors", None) is not None:
            out["sha256"], out["over"] = _hash_tensors(dataset.tensors), "the training dataset's tensors' bytes"
        elif isinstance(dataset, (list, tuple)):
            out["sha256"], out["over"] = _hash_items(dataset)[0], "the training items"
        elif dataset is not None and hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            out["sha256"] = _hash_items(dataset[i] for i in range(len(dataset)))[0]
            out["over"] = "dataset[i] for every training item (as the dataset encodes it)"
        else:
            out["over"] = f"not hashed: the training loader ({type(train_dl).__name__}) exposes no dataset or tensors"
    except _Unhashable as e:
        out["over"] = f"not hashed: training items hold a {e} value, which has no deterministic byte form"
    return out


def _finite(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become None (strict JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _metrics(learn: "Learner") -> dict[str, Any]:
    records = learn.history.epoch_records
    last = dict(records[-1]) if records else None
    values = dict(learn.val_results) if learn.val_results else \
        {k: v for k, v in (last or {}).items() if k not in ("epoch", "train_loss", "time")}
    return _finite({"split": "validation", "values": values,
                    "source": "learn.val_results" if learn.val_results else "the last epoch of learn.history",
                    "epochs_trained": len(records), "last_epoch": last})


def _versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    versions = core_versions()
    for name in _OPTIONAL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {**versions, **(extra or {})}


def _title(learn: "Learner") -> str:
    spec = model_spec(learn.model) or {}
    name = spec.get("name") or type(learn.model).__name__
    arch = (spec.get("kwargs") or {}).get("arch")
    target = type(learn.data.y_block).__name__ if learn.data.y_block is not None else "no target"
    n = len(learn.data.classes) if learn.data.classes is not None else None
    return f"{name}{f' ({arch})' if isinstance(arch, str) else ''}: {target}" + (f", {n} classes" if n else "")


def model_card(learn: "Learner", export: dict[str, Any], input_spec: dict[str, Any], output_spec: dict[str, Any],
               usage: str, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of `learn`'s model as a JSON-ready dict.

    Args:
        learn: the trained learner (read only).
        export: what was written: {"format", "exporter", "files", ...}.
        input_spec: the intended input format (dtype, shape, what happens before and inside the model).
        output_spec: what the model returns.
        usage: a short Python snippet that loads and runs the export.
        fingerprint: `data_fingerprint(learn.data)` when already computed.

    Example:
        >>> write_model_card(model_card(learn, {"format": "onnx"}, {...}, {...}, "..."), Path("model.onnx.card"))
    """
    spec = model_spec(learn.model) or {"name": None, "kwargs": None}
    data = learn.data
    amp = getattr(learn, "amp_dtype", None)
    card = {
        "card_format": CARD_FORMAT, "card_version": CARD_VERSION,
        "title": _title(learn),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export": export,
        "model": {"name": spec["name"], "kwargs": spec["kwargs"], "class": type(learn.model).__name__,
                  "parameters": sum(p.numel() for p in learn.model.parameters())},
        "task": type(data.y_block).__name__ if data.y_block is not None else None,
        "classes": data.classes,
        "input": input_spec,
        "output": output_spec,
        "metrics": _metrics(learn),
        "training_data": fingerprint if fingerprint is not None else data_fingerprint(data),
        "seed": current_seed(),
        "mixed_precision": str(amp).replace("torch.", "") if amp is not None else None,
        "versions": _versions(export.get("versions")),
        "usage": usage,
    }
    return json.loads(json.dumps(_finite(card), default=str))  # plain JSON types only (paths, dtypes → str)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return "—" if value is None else str(value).replace("|", "\\|")


def _bullets(spec: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in spec.items():
        shown = f"`{json.dumps(value)}`" if isinstance(value, (list, dict)) else _cell(value)
        lines.append(f"- **{key}**: {shown}")
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    """The card as a readable Markdown page (the same facts as the JSON)."""
    export, data, metrics = card["export"], card["training_data"], card["metrics"]
    classes = card.get("classes")
    lines = [f"# Model card: {card['title']}", "",
             f"Exported {card['created']} as **{export.get('format')}** "
             f"(files: {', '.join(f'`{f}`' for f in export.get('files', []))}).", "",
             "## Intended input", "", *_bullets(card["input"]), "", "## Output", "", *_bullets(card["output"]), ""]
    if classes is not None:
        more = f", ... ({len(classes) - 50} more)" if len(classes) > 50 else ""
        shown = ", ".join(f"`{c}`" for c in classes[:50]) + more
        lines += ["## Classes", "", f"{len(classes)} classes, in output order: {shown}", ""]
    lines += ["## Validation metrics", ""]
    if metrics["values"]:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in metrics["values"].items()]
    else:
        lines.append("No validation results were recorded (the model was not validated before export).")
    last = metrics.get("last_epoch") or {}
    lines += ["", f"Epochs trained: {metrics['epochs_trained']}" +
              (f"; last epoch's training loss {_cell(last.get('train_loss'))}" if "train_loss" in last else "") +
              f". Source: {metrics['source']}.", "",
              "## Training data", "",
              f"- **sha256**: `{data['sha256']}`" if data["sha256"] else "- **sha256**: not recorded",
              f"- **over**: {data['over']}",
              f"- **items**: {data['train_items']} training, {data['valid_items']} validation", "",
              "## Reproducibility", "",
              f"- **seed** (`learnkit.set_seed`): {card['seed']}",
              f"- **mixed precision in training**: {card['mixed_precision'] or 'off (float32)'}",
              f"- **model**: `{card['model']['name']}` ({card['model']['class']}, "
              f"{card['model']['parameters']:,} parameters), arguments `{json.dumps(card['model']['kwargs'])}`",
              "- **versions**: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), "",
              "## How to load and run", "", "```python", card["usage"].rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(card: dict[str, Any], stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` atomically (e.g. stem `model.onnx.card` → `model.onnx.card.json`).

    Returns:
        (json path, markdown path).
    """
    stem = Path(stem)
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    with atomic_write(json_path) as tmp:  # names with undecodable bytes (class folders) tagged, losslessly
        tmp.write_text(json.dumps(to_json_safe(card), indent=2) + "\n", encoding="utf-8")
    with atomic_write(md_path) as tmp:  # for people: undecodable bytes shown as \xff escapes
        tmp.write_text(render_markdown(card), encoding="utf-8", errors="backslashreplace")
    return json_path, md_path
