"""Predictor: inference from an exported bundle (the model in eval mode plus its preprocessing); needs no
Learner and no training data. `load_learner` (export/bundle.py) builds one from a bundle folder."""
from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from learnkit.core.device import amp_dtype, autocast
from learnkit.data.blocks import TransformBlock
from learnkit.learner.inference import inference_forward

__all__ = ["Predictor"]


def _autocast_dtype(mixed_precision: Any, recipe: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for inference: `learnkit.core.amp_dtype`, whose 'auto' follows what training used."""
    return amp_dtype(mixed_precision, device, trained=recipe.get("mixed_precision"), where="load_learner")


class Predictor:
    """Inference from an exported bundle: the model in eval mode plus the preprocessing it was trained with.

    `predict_batch` is the fast path for many inputs: they are decoded by a thread pool while earlier
    batches run, batches go to the device from pinned memory, the model runs under `torch.inference_mode()`
    with autocast on CUDA (bf16, or fp16 where bf16 is unsupported or training used fp16), and the
    probabilities come back to the CPU once, at the end. On CUDA, image models run channels-last.

    Args:
        model, blocks, n_inp, item_tfms, batch_tfms, recipe: what `load_learner` rebuilt from the bundle.
        device: where the model runs.
        mixed_precision: 'auto' (see above; off on the CPU), 'bf16', 'fp16' or None (float32): the values
            `Learner(mixed_precision=...)` takes (`learnkit.core.parse_mixed_precision`).
        num_workers: decoding threads for `predict_batch` (default: up to 8); 0 or 1 decodes in this thread.

    Example:
        >>> predictor = load_learner("models/export")
        >>> label, index, probs = predictor.predict(x)
        >>> labels, probs = predictor.predict_batch(paths)          # probs: float32 (N, n_classes), CPU
    """

    def __init__(self, model: nn.Module, blocks: Sequence[TransformBlock], n_inp: int, item_tfms: Sequence[Any],
                 batch_tfms: Sequence[nn.Module], device: torch.device, recipe: dict,
                 mixed_precision: str | None = "auto", num_workers: int | None = None):
        self.device = torch.device(device)
        self.amp_dtype = _autocast_dtype(mixed_precision, recipe, self.device)
        # NHWC convolutions are faster with bf16/fp16 tensor cores (ChannelsLast is not recorded in exports).
        self.channels_last = self.device.type == "cuda" and any(p.ndim == 4 for p in model.parameters())
        model = model.to(self.device).eval()
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.blocks, self.n_inp = list(blocks), n_inp
        self.item_tfms = list(item_tfms)
        self.batch_tfms = nn.ModuleList(batch_tfms).to(self.device).eval()
        self.recipe = recipe
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)

    @property
    def classes(self) -> list[Any] | None:
        return self.recipe.get("classes")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context used for the model (a no-op in float32)."""
        return autocast(self.device.type, self.amp_dtype)

    # ------------------------------------------------------------------ raw items → CPU batches
    def _encode(self, item: Any) -> torch.Tensor:
        return self._item_transforms(self.blocks[0].encode(item))

    def _item_transforms(self, x: torch.Tensor) -> torch.Tensor:
        for tfm in self.item_tfms:
            x = tfm(x)
        return x

    def _collate(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        collate = getattr(self.blocks[0], "collate", None)  # variable-length inputs (text) say how to batch
        if collate is not None:
            return collate(encoded)
        pin = self.device.type == "cuda"  # stack straight into page-locked memory: the copy can be asynchronous
        out = torch.empty((len(encoded), *encoded[0].shape), dtype=encoded[0].dtype, pin_memory=pin)
        try:
            return torch.stack(encoded, out=out)
        except RuntimeError as e:
            shapes = sorted({tuple(t.shape) for t in encoded})
            raise ValueError(f"predict_batch: the encoded items have different shapes {shapes[:5]}; the recipe's "
                             "item transforms must give every item the same shape (export with a resize item "
                             "transform), or predict one item at a time") from e

    def _encoded_batches(self, items: Sequence[Any], batch_size: int) -> Iterator[torch.Tensor]:
        many = getattr(self.blocks[0], "encode_many", None)
        if many is not None and self.num_workers > 1 and len(items) >= 64:
            # The block decodes in parallel itself (images: worker processes, streamed in order) while
            # earlier batches run on the device.
            batch: list[torch.Tensor] = []
            for x in many(items, self.num_workers):
                batch.append(self._item_transforms(x))
                if len(batch) == batch_size:
                    yield self._collate(batch)
                    batch = []
            if batch:
                yield self._collate(batch)
            return
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        if self.num_workers <= 1 or len(items) < 64:
            for chunk in chunks:
                yield self._collate([self._encode(item) for item in chunk])
            return

        def encode_all(part: Sequence[Any]) -> list[torch.Tensor]:
            return [self._encode(item) for item in part]

        # Decoding (PIL, tokenizers) runs in threads, two batches ahead of the one on the device; tasks of up
        # to 32 items keep the per-task overhead small and the threads busy.
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="learnkit-decode") as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append([pool.submit(encode_all, chunk[i:i + 32]) for i in range(0, len(chunk), 32)])
                if len(pending) > 2:
                    yield self._collate([x for f in pending.popleft() for x in f.result()])
            while pending:
                yield self._collate([x for f in pending.popleft() for x in f.result()])

    # ------------------------------------------------------------------ batches → probabilities
    def _run(self, batches: Iterable[torch.Tensor]) -> torch.Tensor:
        cuda = self.device.type == "cuda"
        outs = []
        with torch.inference_mode():
            for xb in batches:
                if cuda and xb.device.type == "cpu" and not xb.is_pinned():
                    xb = xb.pin_memory()
                x = xb.to(self.device, non_blocking=cuda)
                for tfm in self.batch_tfms:
                    x = tfm(x)
                if self.channels_last and x.ndim == 4 and x.is_floating_point():
                    x = x.contiguous(memory_format=torch.channels_last)
                # stays on the device: no sync per batch
                outs.append(inference_forward(self.model, (x,), self.amp_dtype, self.blocks[self.n_inp].activation))
            widths = {tuple(o.shape[1:]) for o in outs}
            if len(widths) > 1:
                raise ValueError(f"predict_batch: the batches' outputs have different shapes {sorted(widths)}; "
                                 "pass batch_size=len(items) to get them in one batch")
            probs = torch.cat(outs) if len(outs) > 1 else outs[0]
        # Outside inference mode, so the caller gets an ordinary tensor (in-place ops allowed).
        return probs.to("cpu", torch.float32, copy=True)

    def predict_tensors(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Probabilities (float32, CPU) for an already encoded batch: what the item transforms produce, stacked
        (uint8 images (N, C, H, W), padded token ids (N, T)), on the CPU or on the device.

        Example:
            >>> probs = predictor.predict_tensors(uint8_images)          # (N, n_classes)
        """
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) == 0:
            raise ValueError(f"predict_tensors: expected a non-empty batch tensor (N, ...), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        _check_batch_size(batch_size, "predict_tensors")
        return self._run(x[i:i + batch_size] for i in range(0, len(x), batch_size))

    def predict_batch(self, items: Sequence[Any], batch_size: int = 256) -> tuple[list[Any], torch.Tensor]:
        """(decoded predictions, probabilities float32 (N, n_out) on the CPU) for raw inputs, in their order.

        Args:
            items: raw inputs as `get_x` returns them (image paths, bytes, arrays, texts).
            batch_size: items per forward pass; the result does not depend on it (up to float rounding).

        Example:
            >>> labels, probs = predictor.predict_batch(list(Path("new").glob("*.png")))
        """
        items = list(items)
        if not items:
            raise ValueError("predict_batch: no items given (an empty list); pass a list of raw inputs, e.g. "
                             "image paths or texts")
        _check_batch_size(batch_size, "predict_batch")
        probs = self._run(self._encoded_batches(items, batch_size))
        y_block = self.blocks[self.n_inp]
        return [y_block.decode_prediction(p)[0] for p in probs], probs

    def predict(self, item: Any) -> tuple[Any, Any, torch.Tensor]:
        """(decoded prediction, class index or None, probabilities) for one raw input."""
        _, probs = self.predict_batch([item])
        decoded, index = self.blocks[self.n_inp].decode_prediction(probs[0])
        return decoded, index, probs[0]


def _check_batch_size(batch_size: Any, where: str) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{where}(batch_size={batch_size!r}): must be a positive int, e.g. 256")
