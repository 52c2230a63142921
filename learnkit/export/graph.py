"""Export for serving: one graph holding the batch-level preprocessing, the model and the output activation,
written as a `torch.export` program (`.pt2`) or an ONNX file, each with a model card (`<file>.card.json` and
`<file>.card.md`) beside it.

Input contract (images): a uint8 batch (B, C, H, W) — or float in [0, 1] — at the size the *item*
transforms produce. Decoding and item-level resizing happen before the graph (in the serving code, as
`Predictor` does); batch-level resizing (`BatchResize`) and normalization (`Normalize`) are inside it.
The batch dimension is dynamic.

Input contract (text): int64 token ids (B, T), right-padded with the input block's pad id; batch size and
sequence length are both dynamic (T from 1 up to the model's position limit, recorded in the card).
Tokenization and numericalization stay outside the graph: the input block's full settings (tokenizer rules,
vocab, pad id, max_len) are written to `<file>.tokenizer.json`, which `block_from_config` rebuilds.
A model whose code fixes the sequence length while tracing (the AWD-LSTM's loop over time steps) cannot be
captured; that is a `NotImplementedError` that says to use `learn.export()` + `load_learner` instead.

Output: activated predictions (B, n_out): probabilities for a `CategoryBlock` (softmax) or a
`MultiCategoryBlock` (sigmoid), raw values for regression.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

import torch
from torch import nn

from learnkit.core.serialization import atomic_write, check_finite, sha256_file
from learnkit.export.card import model_card, write_model_card

if TYPE_CHECKING:
    from learnkit.learner.learner import Learner

__all__ = ["ServingModule", "export_torch", "export_onnx"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _input_kind(data: Any) -> str:
    """'tokens' for padded token ids (a block that collates and has a pad id), 'tensor' for fixed-shape inputs."""
    block = data.blocks[0]
    if getattr(block, "collate", None) is None:
        return "tensor"
    if isinstance(getattr(block, "pad_idx", None), int):
        return "tokens"
    raise NotImplementedError(
        f"serving export: the input block {block!r} has variable-length inputs without a pad id, so the graph's "
        "input contract cannot be stated. Use learn.export() (the recipe format) and load_learner() instead.")


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
        >>> probs = serving(uint8_images)          # (B, n_classes); or serving(token_ids) for text
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
        """Build from `learn.model`, `learn.data.batch_tfms` and `learn.data.y_block.activation`; a model whose
        weights hold NaN/inf is refused."""
        check_finite(learn.model.state_dict(), f"serving export: the model's weights ({type(learn.model).__name__})")
        data = learn.data
        _input_kind(data)
        if data.n_inp != 1:
            raise NotImplementedError(f"serving export: models with {data.n_inp} inputs are not supported; "
                                      "use learn.export() instead")
        y_block = data.y_block
        return cls(learn.model, data.batch_tfms, y_block.activation if y_block is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for tfm in self.batch_tfms:
            x = tfm(x)
        return self.activation(self.model(x))


def _example(learn: "Learner", example: torch.Tensor | None, kind: str) -> torch.Tensor:
    """One loader batch's inputs before batch transforms (what the loader yields), on the CPU."""
    if example is None:
        dl = learn.data.valid_dl if learn.data.valid_dl is not None else learn.data.train_dl
        example = next(iter(dl))[0]
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"serving export: the example input must be a tensor, got {type(example).__name__}")
    example = example.detach().cpu()
    if example.shape[0] < 2:  # a size of 1 would make torch.export specialize that dimension to 1
        example = torch.cat([example, example])
    if kind == "tokens" and example.shape[1] < 2:  # one more pad column changes no prediction
        pad = torch.full((example.shape[0], 2 - example.shape[1]), learn.data.blocks[0].pad_idx, dtype=example.dtype)
        example = torch.cat([example, pad], 1)
    return example


def _fail(step: str, exc: Exception) -> RuntimeError:
    return RuntimeError(f"{step} failed: {type(exc).__name__}: {exc}\nThe model or one of its batch transforms "
                        "could not be captured as a graph. Use learn.export() (weights + recipe.json, loaded with "
                        "load_learner) to ship it instead.")


def _model_limit(model: nn.Module | None) -> int | None:
    limit = getattr(model, "max_positions", None)
    return limit if isinstance(limit, int) else None


def _max_tokens(program: torch.export.ExportedProgram, model: nn.Module | None = None) -> int | None:
    """The largest sequence length the captured program accepts: its traced bound where torch.export found one,
    else the model's own `max_positions` attribute (text classifiers set it), else None."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    size = node.meta["val"].shape[1]
    if isinstance(size, int):
        return size
    bounds = program.range_constraints.get(size.node.expr)
    # an unbounded range ends in sympy's int_oo (RoBERTa's position ids come from a cumsum: no traced bound)
    # (int_oo claims is_finite, and int() of it raises AttributeError)
    try:
        return int(bounds.upper) if bounds is not None else _model_limit(model)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return _model_limit(model)


def _capture(learn: "Learner", serving: ServingModule, x: torch.Tensor, kind: str,
             step: str) -> tuple[torch.export.ExportedProgram, int | None]:
    """torch.export with a dynamic batch (and, for tokens, a dynamic length); returns (program, max tokens)."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch")}
    if kind == "tokens":
        dims[1] = torch.export.Dim.DYNAMIC  # its range (e.g. up to 512 positions) is whatever the model allows
    try:
        program = torch.export.export(serving, (x,), dynamic_shapes={"x": dims})
    except Exception as e:
        if kind == "tokens" and "Constraints violated" in str(e):
            raise NotImplementedError(
                f"serving export: {type(learn.model).__name__} cannot be captured with a dynamic sequence length: "
                f"tracing fixed the number of tokens to {x.shape[1]} (a Python loop over time steps, as in the "
                "AWD-LSTM, does that). Ship this model with learn.export() and serve it with "
                "load_learner(folder).predict_batch(texts), which tokenizes, pads and batches as training did."
            ) from e
        raise _fail(step, e) from e
    return program, (_max_tokens(program, serving.model) if kind == "tokens" else None)


def _input_spec(learn: "Learner", x: torch.Tensor, kind: str, max_tokens: int | None, path: Path) -> dict[str, Any]:
    data = learn.data
    block = data.blocks[0]
    item_tfms = [t.to_config() if hasattr(t, "to_config") else repr(t) for t in data.item_tfms]
    if kind == "tokens":
        block_cfg = block.to_config()
        tokenizer = dict(block_cfg.get("tokenizer") or {})
        vocab = tokenizer.pop("vocab", None) or block_cfg.get("itos") or []
        if tokenizer.pop("tokenizer_json", None) is not None:  # a Hugging Face tokenizer.json: in the side file only
            vocab = range(len(block.tokenizer))
            tokenizer["tokenizer_json"] = ("in tokenizer_file under block.tokenizer.tokenizer_json; also "
                                           "tokenizers.Tokenizer.from_str(json.dumps(it)), truncated to max_len ids "
                                           "(special tokens included)")
        return {"name": "input_ids", "dtype": "int64", "shape": ["batch", "tokens"],
                "pad_id": int(block.pad_idx), "max_tokens": max_tokens, "min_tokens": 1,
                "block": block_cfg.get("type"), "max_len": block_cfg.get("max_len"), "tokenizer": tokenizer,
                "vocab_size": len(vocab), "tokenizer_file": path.name + ".tokenizer.json",
                "note": "token ids from the input block (tokenize, numericalize, cut to max_len), right-padded with "
                        "pad_id to the longest in the batch; learnkit.data.block_from_config(json.load(open("
                        "tokenizer_file))['block']).encode(text) gives them (import learnkit.text first)"}
    return {"name": "images", "dtype": str(x.dtype).replace("torch.", ""), "shape": ["batch", *x.shape[1:]],
            "channels": int(x.shape[1]) if x.ndim == 4 else None,
            "before_graph": {"block": block.to_config(), "item_tfms": item_tfms},
            "note": "decoded and item-resized inputs; uint8 in [0, 255] or float in [0, 1]; batch-level "
                    "resize and normalization are inside the graph"}


def _write_card(learn: "Learner", path: Path, x: torch.Tensor, out: torch.Tensor, fmt: str, exporter: str,
                kind: str, max_tokens: int | None, usage: str) -> Path:
    files = [path.name]
    if kind == "tokens":  # numericalization is outside the graph: ship what reproduces it
        side = path.with_name(path.name + ".tokenizer.json")
        with atomic_write(side) as tmp:
            tmp.write_text(json.dumps({"format": "learnkit-input-block", "block": learn.data.blocks[0].to_config(),
                                       "pad_id": int(learn.data.blocks[0].pad_idx)}))
        files.append(side.name)
    export = {"format": fmt, "exporter": exporter, "files": files, "sha256": sha256_file(path)}
    output = {"name": "probs", "dtype": str(out.dtype).replace("torch.", ""), "shape": ["batch", *out.shape[1:]],
              "activation": type(learn.data.y_block).__name__ + ".activation" if learn.data.y_block is not None
              else None}
    card = model_card(learn, export, _input_spec(learn, x, kind, max_tokens, path), output, usage)
    json_path, _ = write_model_card(card, path.with_name(path.name + ".card"))
    return json_path


def export_torch(learn: "Learner", path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write a `torch.export` program (`.pt2`, dynamic batch; dynamic length for text) of
    `ServingModule.from_learner(learn)`, and its model card.

    Args:
        learn: the trained learner (left unchanged: the model is copied to the CPU).
        path: the `.pt2` file; `<path>.card.json` and `<path>.card.md` (and for text `<path>.tokenizer.json`)
            are written beside it.
        example: an input batch as the loader yields it (before batch transforms); default: one batch
            of `learn.data.valid_dl` (or `train_dl`).

    Returns:
        The path of the written program.

    Example:
        >>> file = export_torch(learn, "model.pt2")
        >>> probs = torch.export.load(file).module()(uint8_images)
    """
    path = Path(path)
    serving = ServingModule.from_learner(learn)
    kind = _input_kind(learn.data)
    x = _example(learn, example, kind)
    program, max_tokens = _capture(learn, serving, x, kind, "export_torch: torch.export.export (tracing ServingModule)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: the name need not end in .pt2
        torch.export.save(program, f)
    with torch.no_grad():
        out = serving(x)
    usage = (f"import torch\nmodule = torch.export.load({path.name!r}).module()\n"
             f"probs = module({'input_ids' if kind == 'tokens' else 'images'})  # see 'Intended input'")
    _write_card(learn, path, x, out, "torch.export (.pt2)", "torch.export.export", kind, max_tokens, usage)
    return path


def export_onnx(learn: "Learner", path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write an ONNX file of `ServingModule.from_learner(learn)`: input "images" (dynamic batch) or, for text,
    "input_ids" (dynamic batch and length); output "probs". Its model card is written beside it.

    Uses the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, needs `onnxscript`).

    Args:
        learn: the trained learner (left unchanged: the model is copied to the CPU).
        path: the `.onnx` file; `<path>.card.json` and `<path>.card.md` (and for text `<path>.tokenizer.json`)
            are written beside it.
        example: an input batch as the loader yields it (before batch transforms); default: one batch
            of `learn.data.valid_dl` (or `train_dl`).

    Returns:
        The path of the written file.

    Example:
        >>> file = export_onnx(learn, "model.onnx")
        >>> onnxruntime.InferenceSession(str(file)).run(None, {"images": images.numpy()})
    """
    path = Path(path)
    serving = ServingModule.from_learner(learn)
    kind = _input_kind(learn.data)
    x = _example(learn, example, kind)
    name = "input_ids" if kind == "tokens" else "images"
    dims: dict[int, Any] = {0: torch.export.Dim("batch")}
    max_tokens = None
    if kind == "tokens":
        # A first capture finds the model's length limit (and refuses models that fix the length), so that the
        # ONNX axis can carry a readable name ("tokens") with that bound.
        _, max_tokens = _capture(learn, serving, x, kind, "export_onnx: torch.export.export (tracing ServingModule)")
        dims[1] = torch.export.Dim("tokens", max=max_tokens) if max_tokens else torch.export.Dim("tokens")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path) as tmp:
            torch.onnx.export(serving, (x,), str(tmp), dynamo=True, input_names=[name], output_names=["probs"],
                              dynamic_shapes={"x": dims}, external_data=False, verbose=False)
    except Exception as e:
        raise _fail("export_onnx: torch.onnx.export (dynamo exporter)", e) from e
    with torch.no_grad():
        out = serving(x)
    usage = (f"import onnxruntime\nsession = onnxruntime.InferenceSession({path.name!r})\n"
             f"(probs,) = session.run(['probs'], {{{name!r}: {name}.numpy()}})  # see 'Intended input'")
    _write_card(learn, path, x, out, "onnx", "torch.onnx.export(dynamo=True)", kind, max_tokens, usage)
    return path
