"""Blocks: what one kind of value is, how it becomes a tensor, and (for targets) the default loss,
activation and decoding. Modality-free: images live in `learnkit.vision`, tokens in `learnkit.text`."""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from learnkit.core.serialization import dtype_from_name

__all__ = ["TransformBlock", "TensorBlock", "CategoryBlock", "MultiCategoryBlock", "RegressionBlock",
           "block_from_config", "register_block"]

_BLOCKS: dict[str, type["TransformBlock"]] = {}


def register_block(cls: type["TransformBlock"]) -> type["TransformBlock"]:
    """Let `block_from_config` rebuild blocks of this class from exported recipes (class decorator)."""
    _BLOCKS[cls.__name__] = cls
    return cls


_register = register_block


def block_from_config(config: dict[str, Any]) -> "TransformBlock":
    """Rebuild a block from `block.to_config()`; only learnkit's own block classes are accepted."""
    name = config.get("type")
    if name not in _BLOCKS:
        raise ValueError(f"unknown block type {name!r} in exported recipe; known: {sorted(_BLOCKS)}")
    return _BLOCKS[name].from_config(config)


def _short(value: Any) -> str:
    """A one-line description of a value for error messages and summaries."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={value.dtype})"
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"


class TransformBlock:
    """Base block. Subclasses override what they need.

    A block turns one raw value into a tensor (`encode`) and back (`decode`). A target block also
    supplies `loss_fn()`, `activation(output)` and `decode_prediction(probs)`. `setup(values)` sees the
    training values once (e.g. to build a vocab); `check(values, split)` validates other splits.
    """

    item_tfms: Sequence[Callable] = ()
    batch_tfms: Sequence[nn.Module] = ()
    # How values of this block become a batch (read by data/loaders.py): 'stack' (same shape: default_collate),
    # 'pad' (variable length: the block's `collate` pads), 'stream' (a language-model target: one token stream).
    batching: str = "stack"
    bad_items: str = "items that cannot be read"  # how messages name the inputs encode_all/verify_all reject

    def setup(self, values: Sequence[Any]) -> None:
        pass

    def check(self, values: Sequence[Any], split: str) -> None:
        pass

    def encode(self, value: Any) -> torch.Tensor:
        return torch.as_tensor(value)

    def decode(self, tensor: torch.Tensor) -> Any:
        return tensor

    # --- targets that move with the input (a mask, keypoints); see learnkit/vision/segment.py, points.py ---
    # True: the DataBlock gives this target block the input's raw value too (`target_steps`), resizing item
    # transforms move it (`target_steps(tfms)`), geometric batch augmentation moves it (`warp`), and show_batch
    # draws it over the input (`show`). False (labels, numbers): it is encoded alone and never moved.
    follows_input: bool = False

    def target_steps(self, tfms: Sequence[Callable]) -> list[tuple[str, Callable[[Any], Any]]]:
        """A following target's per-item steps: from `(value, input_value)` (its getter's value and the input's)
        to the encoded tensor, moved by each (deterministic) item transform in `tfms` as the input is. Only
        called when `follows_input` is True."""
        raise NotImplementedError(f"{type(self).__name__} has follows_input=True but no target_steps")

    def finish_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """A target batch's last step on the device, after the batch transforms (MaskBlock: uint8 → int64).
        Default: unchanged."""
        return batch

    # --- target role ---
    def loss_fn(self) -> Callable | None:
        return None

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def decode_prediction(self, probs: torch.Tensor) -> tuple[Any, Any]:
        """(decoded value, index) for one item's activated output."""
        return self.decode(probs), None

    # --- display ---
    def show(self, tensor: torch.Tensor, ax: Any) -> None:
        """Draw one encoded (batch-transformed) value on a matplotlib axis."""
        t = tensor.detach().float().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
            t = (t - t.min()) / (t.max() - t.min() + 1e-8)
            ax.imshow(t.squeeze(-1).numpy(), cmap="gray" if t.shape[-1] == 1 else None)
        elif t.ndim == 2:
            ax.imshow(t.numpy(), cmap="gray")
        else:
            ax.plot(t.reshape(-1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])

    def title(self, tensor: torch.Tensor) -> str:
        return str(self.decode(tensor))

    # --- export ---
    def to_config(self) -> dict[str, Any]:
        return {"type": type(self).__name__}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TransformBlock":
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@_register
class TensorBlock(TransformBlock):
    """An input that already is numbers: a tensor, a NumPy array, a (nested) list.

    Args:
        dtype: the tensor's dtype; None keeps the value's own (keep uint8 images as uint8 and let a
            `Normalize` batch transform convert them on the device — four times fewer bytes to move).
    """

    def __init__(self, dtype: torch.dtype | None = torch.float32):
        self.dtype = dtype

    def encode(self, value: Any) -> torch.Tensor:
        t = torch.as_tensor(value)
        return t if self.dtype is None else t.to(self.dtype)

    def to_config(self) -> dict[str, Any]:
        return {"type": "TensorBlock", "dtype": None if self.dtype is None else str(self.dtype).split(".")[-1]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TensorBlock":
        name = config.get("dtype")
        return cls(None if name is None else dtype_from_name(name, "TensorBlock config"))

    def __repr__(self) -> str:
        return f"TensorBlock(dtype={self.dtype})"


def _plain(label: Any) -> Any:
    """A one-element tensor or NumPy scalar label as a Python number: tensors hash by identity, so
    `tensor(3)` and `tensor(3)` would otherwise be two different classes (and not JSON-exportable)."""
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        return label.item()
    if type(label).__module__ == "numpy" and getattr(label, "size", 0) == 1:
        return label.item()
    return label


def _sorted_labels(labels: Sequence[Any]) -> list[Any]:
    try:
        return sorted(labels)
    except TypeError:  # mixed types: sort by text so the order is still deterministic
        return sorted(labels, key=lambda v: (type(v).__name__, str(v)))


def _unseen_error(unseen: Counter, vocab: Sequence[Any], split: str, block: str) -> ValueError:
    listed = ", ".join(f"{lab!r} ({n} item{'s' if n > 1 else ''})" for lab, n in unseen.most_common(10))
    more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
    return ValueError(
        f"{block}: the {split} set has label(s) never seen in training: {listed}{more}. Training labels: "
        f"{list(vocab)[:20]}. Fix: move some items with these labels into the training split (another "
        f"splitter or seed), drop them, or pass the full label list as {block}(classes=[...]).")


class _Labels(TransformBlock):
    """Shared by the label blocks: `classes` (the sorted training labels unless given) and their index."""

    classes: list[Any] | None

    def _set_classes(self, classes: Sequence[Any] | None) -> None:
        self.classes = [_plain(v) for v in classes] if classes is not None else None
        self._index: dict[Any, int] = {v: i for i, v in enumerate(self.classes or [])}

    @property
    def vocab(self) -> list[Any] | None:
        """Deprecated: a target's labels are `classes` (`vocab` is for tokens)."""
        warnings.warn(f"{type(self).__name__}.vocab is deprecated: use .classes", DeprecationWarning, stacklevel=2)
        return self.classes

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None


@_register
class CategoryBlock(_Labels):
    """A single label per item. `classes` = the sorted training labels, unless given.

    Loss: cross-entropy; activation: softmax; decoding: the most probable label.
    """

    def __init__(self, classes: Sequence[Any] | None = None, *, vocab: Sequence[Any] | None = None):
        if vocab is not None:
            warnings.warn("CategoryBlock(vocab=...) is deprecated: use classes=", DeprecationWarning, stacklevel=2)
            classes = vocab if classes is None else classes
        self._set_classes(classes)
        self._fixed = classes is not None

    def setup(self, values: Sequence[Any]) -> None:
        if not self._fixed:
            self._set_classes(_sorted_labels({_plain(v) for v in values}))
        if len(self.classes or []) < 2:
            raise ValueError(f"CategoryBlock: the training labels hold {len(self.classes or [])} class(es) "
                             f"({self.classes}); a classifier needs at least two. Check get_y and the splitter.")
        self.check(values, "training")

    def check(self, values: Sequence[Any], split: str) -> None:
        unseen = Counter(_plain(v) for v in values if _plain(v) not in self._index)
        if unseen:
            raise _unseen_error(unseen, self.classes or [], split, "CategoryBlock")

    def encode(self, value: Any) -> torch.Tensor:
        try:
            return torch.tensor(self._index[_plain(value)], dtype=torch.long)
        except KeyError:
            raise KeyError(f"label {value!r} is not one of the classes {self.classes}") from None

    def decode(self, tensor: torch.Tensor) -> Any:
        return self.classes[int(tensor)]

    def loss_fn(self) -> Callable:
        return nn.CrossEntropyLoss()

    def default_metrics(self) -> list[str]:
        """Names of the metrics a learner shows by default (resolved by learnkit.learner.metrics)."""
        return ["accuracy"]

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=-1)

    def decode_prediction(self, probs: torch.Tensor) -> tuple[Any, int]:
        index = int(probs.argmax(-1))
        return self.classes[index], index

    def to_config(self) -> dict[str, Any]:
        return {"type": "CategoryBlock", "classes": self.classes}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CategoryBlock":
        return cls(classes=config["classes"] if "classes" in config else config["vocab"])  # 'vocab': older exports

    def __repr__(self) -> str:
        return f"CategoryBlock(n_classes={len(self.classes) if self.classes else '?'})"


@_register
class MultiCategoryBlock(_Labels):
    """Zero or more labels per item (a list, or a string split on `delim`), encoded multi-hot.

    Loss: binary cross-entropy on logits; activation: sigmoid; decoding: labels with p >= `threshold`.
    """

    def __init__(self, classes: Sequence[Any] | None = None, delim: str | None = None, threshold: float = 0.5, *,
                 vocab: Sequence[Any] | None = None):
        if vocab is not None:
            warnings.warn("MultiCategoryBlock(vocab=...) is deprecated: use classes=", DeprecationWarning,
                          stacklevel=2)
            classes = vocab if classes is None else classes
        self._set_classes(classes)
        self._fixed = classes is not None
        self.delim = delim
        self.threshold = threshold

    def _labels(self, value: Any) -> list[Any]:
        if isinstance(value, str):
            return [v.strip() for v in value.split(self.delim) if v.strip() != ""]
        return [_plain(v) for v in value]

    def setup(self, values: Sequence[Any]) -> None:
        if not self._fixed:
            self._set_classes(_sorted_labels({lab for v in values for lab in self._labels(v)}))
        if not self.classes:
            raise ValueError("MultiCategoryBlock: no labels at all in the training items; check get_y")
        self.check(values, "training")

    def check(self, values: Sequence[Any], split: str) -> None:
        unseen = Counter(lab for v in values for lab in self._labels(v) if lab not in self._index)
        if unseen:
            raise _unseen_error(unseen, self.classes or [], split, "MultiCategoryBlock")

    def encode(self, value: Any) -> torch.Tensor:
        out = torch.zeros(len(self.classes or []), dtype=torch.float32)
        for lab in self._labels(value):
            if lab not in self._index:
                raise KeyError(f"label {lab!r} (in {value!r}) is not one of the classes {self.classes}")
            out[self._index[lab]] = 1.0
        return out

    def decode(self, tensor: torch.Tensor) -> list[Any]:
        return [self.classes[i] for i in torch.nonzero(tensor >= self.threshold).flatten().tolist()]

    def loss_fn(self) -> Callable:
        return nn.BCEWithLogitsLoss()

    def default_metrics(self) -> list[str]:
        """Names of the metrics a learner shows by default (resolved by learnkit.learner.metrics)."""
        return ["accuracy_multi"]

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())

    def decode_prediction(self, probs: torch.Tensor) -> tuple[list[Any], list[int]]:
        index = torch.nonzero(probs >= self.threshold).flatten().tolist()
        return [self.classes[i] for i in index], index

    def to_config(self) -> dict[str, Any]:
        return {"type": "MultiCategoryBlock", "classes": self.classes, "delim": self.delim,
                "threshold": self.threshold}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MultiCategoryBlock":
        return cls(classes=config["classes"] if "classes" in config else config["vocab"], delim=config.get("delim"),
                   threshold=config.get("threshold", 0.5))

    def __repr__(self) -> str:
        return f"MultiCategoryBlock(n_classes={len(self.classes) if self.classes else '?'})"


@_register
class RegressionBlock(TransformBlock):
    """A number (or a fixed-length vector of numbers) per item, encoded as float32 of shape (n_out,).

    A scalar target becomes shape (1,), so a batch is (B, 1) and matches a model ending in Linear(., 1).
    Loss: mean squared error; activation: identity.
    """

    def encode(self, value: Any) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float32).reshape(-1)

    def decode(self, tensor: torch.Tensor) -> Any:
        values = tensor.detach().float().cpu().reshape(-1).tolist()
        return values[0] if len(values) == 1 else values

    def decode_prediction(self, probs: torch.Tensor) -> tuple[Any, None]:
        return self.decode(probs), None

    def loss_fn(self) -> Callable:
        return nn.MSELoss()

    def default_metrics(self) -> list[str]:
        """Names of the metrics a learner shows by default (resolved by learnkit.learner.metrics)."""
        return ["mae"]

    def title(self, tensor: torch.Tensor) -> str:
        value = self.decode(tensor)
        return f"{value:.3g}" if isinstance(value, float) else str([round(v, 3) for v in value])
