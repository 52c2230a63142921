"""Any Hugging Face encoder as a text classifier: `transformers.AutoModel` (registered as "hf_classifier", rebuilt
from its JSON config) plus its fast tokenizer (`HFTokenizer`, rebuilt from `tokenizer.json`), and layer groups
for discriminative rates. Needs the `learnkit[hf]` extra (transformers); the built-in BERT (transformer.py) does
not.

Why these seams: the bundle stores the model's config and the tokenizer's own JSON (no pickle, no remote code:
only architectures that ship inside transformers are built), so `load_learner` rebuilds both offline.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import torch
from torch import nn

from learnkit.core.hub import HF_EXTRA
from learnkit.core.registry import create_model, register_model
from learnkit.text.transformer import attention_kernels, pool_hidden

__all__ = ["HFClassifier", "HFTokenizer", "RelativePositions", "check_encoder", "hf_classifier",
           "hf_classifier_from_dir", "hf_layer_groups", "position_limit", "require_transformers"]

# What AutoTokenizer reads; a folder with none of them would give an empty tokenizer (a few special tokens)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spm.model",
                   "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def require_transformers(what: str) -> ModuleType:
    """`transformers`, or an ImportError naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ImportError(f"{what} needs Hugging Face transformers, which is not installed: {HF_EXTRA}. Without it, "
                          "BERT-family folders (config.json, vocab.txt, model.safetensors) still load with the "
                          "built-in encoder: text_classifier_learner(data, arch='bert', weights=folder)") from None
    return transformers


class HFTokenizer:
    """A Hugging Face fast tokenizer behind the interface `SubwordTextBlock` uses: `encode(text, max_len)`,
    `encode_batch(texts, max_len)`, `decode(ids)`, `pad_id`, `to_config`/`from_config`.

    Encoding is the Rust `tokenizers` pipeline of the model's `tokenizer.json` (normalizer, pre-tokenizer,
    model, the special tokens the post-processor adds), cut to `max_len` ids including those specials.

    Example:
        >>> tok = HFTokenizer.from_pretrained("path/to/model")
        >>> tok.encode("Hello world", max_len=16)      # [CLS] ... [SEP] ids
    """

    def __init__(self, tokenizer_json: str | dict, pad_id: int, model_max_length: int = 512):
        from tokenizers import Tokenizer
        self.tokenizer_json = tokenizer_json if isinstance(tokenizer_json, str) else json.dumps(tokenizer_json)
        self.backend = Tokenizer.from_str(self.tokenizer_json)
        self.backend.no_padding()  # batches are padded by the block's collate, after length bucketing
        self.pad_id, self.model_max_length, self._cut = int(pad_id), int(model_max_length), -1

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "HFTokenizer":
        """Read a model folder's tokenizer with `AutoTokenizer` (fast only; a slow-only tokenizer is an error).

        Raises:
            FileNotFoundError: the folder holds no tokenizer file (transformers would build an empty one).
            ValueError: transformers cannot read or convert it (the message says why: e.g. sentencepiece missing).
        """
        transformers = require_transformers("HFTokenizer")
        present = sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
        if Path(folder).is_dir() and not set(present) & set(TOKENIZER_FILES):
            raise FileNotFoundError(f"{folder}: no tokenizer file (one of {', '.join(TOKENIZER_FILES)}); it holds "
                                    f"{present[:12]}. Save the model's tokenizer into it "
                                    "(AutoTokenizer.from_pretrained(<id>).save_pretrained(folder))")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError, ImportError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{folder}: transformers could not read its tokenizer ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else 'no message'}). A "
                             "sentencepiece-only tokenizer (spm.model) needs `pip install sentencepiece` once to be "
                             "converted; then save it with a tokenizer.json: AutoTokenizer.from_pretrained(folder)"
                             ".save_pretrained(folder)") from e
        if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
            raise ValueError(f"{folder}: its tokenizer ({type(tok).__name__}) has no fast (Rust) version; learnkit "
                             "needs tokenizer.json. Convert it once: AutoTokenizer.from_pretrained(folder, "
                             "use_fast=True).save_pretrained(folder)")
        pad = tok.pad_token_id
        if pad is None:  # vocabularies without a pad token; any id works, the mask hides it
            pad = tok.eos_token_id if tok.eos_token_id is not None else 0
        length = tok.model_max_length if isinstance(tok.model_max_length, int) and tok.model_max_length < 10**6 \
            else 512
        return cls(tok.backend_tokenizer.to_str(), pad, length)

    def _truncate(self, max_len: int | None) -> None:
        cut = min(max_len or self.model_max_length, self.model_max_length)
        if cut != self._cut:
            self.backend.enable_truncation(cut)  # counts the special tokens the post-processor adds
            self._cut = cut

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        self._truncate(max_len)
        return self.backend.encode(text).ids

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> list[list[int]]:
        """`encode` of many texts at once (parallel in Rust)."""
        self._truncate(max_len)
        return [e.ids for e in self.backend.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def __len__(self) -> int:
        return self.backend.get_vocab_size()

    def to_config(self) -> dict[str, Any]:
        """JSON-ready: the tokenizer's own tokenizer.json (as an object), pad id and length limit."""
        return {"kind": "hf", "tokenizer_json": json.loads(self.tokenizer_json), "pad_id": self.pad_id,
                "model_max_length": self.model_max_length}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HFTokenizer":
        return cls(config["tokenizer_json"], config["pad_id"], config.get("model_max_length", 512))


def _config(transformers: ModuleType, config: dict[str, Any]) -> Any:
    """A transformers config object from a JSON dict, for architectures shipped inside transformers only."""
    model_type = config.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise ValueError(f"hf_classifier: model_type={model_type!r} is not an architecture of the installed "
                         f"transformers {transformers.__version__} (remote code is never run); upgrade transformers "
                         "or use a model whose config.json names a built-in model_type")
    fields = {k: v for k, v in config.items() if k not in ("model_type", "auto_map", "transformers_version")}
    return transformers.AutoConfig.for_model(model_type, **fields)


def position_limit(encoder: nn.Module) -> int | None:
    """The most tokens an AutoModel encoder takes: its learned position table's size, less the offset of
    RoBERTa-style positions, which count from padding_idx + 1 (RoBERTa, XLM-R, MPNet, Data2Vec, ESM, LUKE, ...: the
    table's `padding_idx` says so); else max_position_embeddings (rotary: ModernBERT); None for relative positions
    only (DeBERTa-v3: position_biased_input=False)."""
    table = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
    if isinstance(table, nn.Embedding):
        limit = table.num_embeddings - (table.padding_idx + 1 if table.padding_idx is not None else 0)
        return limit if limit > 0 else None
    config = encoder.config
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_biased_input", True) is False:
        return None
    return limit if limit > 0 else None


def check_encoder(config: Any, where: str) -> None:
    """A ValueError unless `config` is an encoder (BERT-like: every token sees every other); decoder-only (GPT-2,
    Llama) and encoder-decoder (T5, BART) models are named with the fix."""
    from transformers.models.auto import modeling_auto
    model_type = getattr(config, "model_type", "?")
    causal = (model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type != "xlnet"  # bidirectional
              and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    if getattr(config, "is_encoder_decoder", False) is True:
        kind = "an encoder-decoder (sequence-to-sequence) model"
    elif causal or getattr(config, "is_decoder", False) is True:
        kind = "a decoder (causal language model: each token sees only the ones before it)"
    else:
        return
    raise ValueError(f"{where}: model_type={model_type!r} is {kind}; text_classifier_learner fine-tunes encoders "
                     "(BERT, RoBERTa, DistilBERT, DeBERTa, ELECTRA, XLM-RoBERTa, ModernBERT, ...). Pick an encoder "
                     "checkpoint, e.g. 'microsoft/deberta-v3-small' or 'sentence-transformers/all-MiniLM-L6-v2'")


def classifier_head(hidden_size: int, n_out: int, dropout: float) -> nn.Sequential:
    """HFClassifier's head: dropout, then Linear(hidden_size, n_out)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, n_out))


class RelativePositions:
    """DeBERTa-v2/v3's relative-position table, built once per sequence length by the encoder's own `get_rel_pos`
    and handed to it on every later call: a forward pre-hook on `DebertaV2Encoder` (`keep_relative_positions`).

    Why: the encoder rebuilds the table in every forward, and building it copies a host scalar to the GPU
    (`torch.tensor(mid - 1).type_as(...)`), a synchronizing copy that no CUDA graph can record. With the table
    kept, the whole DeBERTa training step is captured (learner/graphs.py) and an eager step skips its ~10 kernels.
    The table depends on the length and device only. Not while tracing, exporting or compiling, where the model
    must compute it for whatever length it is given.
    """
    MAX_TABLES = 64

    def __init__(self) -> None:
        self.tables: dict[tuple[int, torch.device], torch.Tensor] = {}

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if (not args or kwargs.get("relative_pos") is not None or kwargs.get("query_states") is not None
                or torch.jit.is_tracing() or torch.compiler.is_compiling() or not isinstance(args[0], torch.Tensor)
                or not isinstance(args[0].shape[-2], int)):
            return None
        hidden = args[0]
        key = (hidden.shape[-2], hidden.device)
        table = self.tables.get(key)
        if table is None:
            if len(self.tables) >= self.MAX_TABLES:
                self.tables.clear()
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, also when first built under
                table = self.tables[key] = module.get_rel_pos(hidden)  # inference mode and then trained with
        return args, {**kwargs, "relative_pos": table}


def keep_relative_positions(encoder: nn.Module) -> nn.Module:
    """`encoder` (an AutoModel) with a `RelativePositions` hook on its inner encoder when that rebuilds
    relative positions in every forward (DeBERTa-v2/v3 with relative attention); other models unchanged."""
    inner = getattr(encoder, "encoder", None)
    if getattr(inner, "relative_attention", False) is True and callable(getattr(inner, "get_rel_pos", None)):
        inner.register_forward_pre_hook(RelativePositions(), with_kwargs=True)
    return encoder


class HFClassifier(nn.Module):
    """`AutoModel` encoder → pooling ('mean' over real tokens, or the first ('cls') token) → dropout → Linear.
    Input: ids (B, L) right-padded with `pad_id` (the mask is `ids != pad_id`); output: logits (B, n_out).

    Example:
        >>> model = HFClassifier(AutoConfig.from_pretrained(folder).to_dict(), n_out=6, pad_id=0)
    """

    def __init__(self, config: dict[str, Any], n_out: int, pad_id: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"HFClassifier: pooling={pooling!r}; use 'mean' or 'cls'")
        transformers = require_transformers("HFClassifier")
        # sdpa: PyTorch's fused attention (flash / memory-efficient kernels on CUDA), where the architecture has it.
        try:
            self.encoder = transformers.AutoModel.from_config(_config(transformers, config), attn_implementation="sdpa")
        except (ValueError, ImportError):  # an architecture without an sdpa implementation (DeBERTa-v2)
            self.encoder = transformers.AutoModel.from_config(_config(transformers, config), attn_implementation="eager")
        self.encoder.float()  # float32 master weights (a config may say float16); autocast chooses the compute type
        keep_relative_positions(self.encoder)
        self.pad_id, self.pooling = int(pad_id), pooling
        self.max_positions = position_limit(self.encoder)  # the longest input (None: no fixed limit)
        self.head = classifier_head(self.encoder.config.hidden_size, n_out, dropout)

    def pool(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The sentence vectors (B, hidden_size) before the head."""
        mask = input_ids != self.pad_id
        with attention_kernels(input_ids):
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        return pool_hidden(hidden, mask, self.pooling)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(input_ids))


# The config is read by transformers' own config classes for built-in model types only (checked in `_config`).
@register_model("hf_classifier", dict_params={"config": None})
def hf_classifier(config: dict[str, Any], n_out: int, pad_id: int, pooling: str = "mean",
                  dropout: float = 0.1) -> HFClassifier:
    """An `HFClassifier` with random weights (`hf_classifier_from_dir` loads pretrained ones)."""
    return HFClassifier(config, n_out, pad_id, pooling, dropout)


def _layer_list(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's transformer blocks: its longest ModuleList (encoder.layer, transformer.layer, layers)."""
    lists = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"hf_layer_groups: {type(encoder).__name__} has no list of layers to split")
    return max(lists, key=lambda t: len(t[1]))


def hf_layer_groups(model: HFClassifier, layers_per_group: int = 2) -> list[nn.Module]:
    """Splitter for discriminative rates: [embeddings (everything before the blocks), blocks 0-1, blocks 2-3, ...,
    head]; what comes after the blocks (a final norm) joins the last block group. Every parameter once."""
    name, layers = _layer_list(model.encoder)
    before, after, seen_layers = [], [], False

    def walk(module: nn.Module, prefix: str) -> None:
        nonlocal seen_layers
        for child_name, child in module.named_children():
            full = f"{prefix}{child_name}"
            if full == name:
                seen_layers = True
            elif name.startswith(full + "."):
                walk(child, full + ".")
            elif any(True for _ in child.parameters()):
                (after if seen_layers else before).append(child)
    walk(model.encoder, "")
    own = [p for p in model.encoder.parameters(recurse=False)]  # parameters set on the encoder itself
    blocks = [nn.ModuleList(layers[i:i + layers_per_group]) for i in range(0, len(layers), layers_per_group)]
    blocks[-1] = nn.ModuleList([*blocks[-1], *after])
    first = nn.ModuleList(before)
    if own:
        first.append(nn.ParameterList(own))
    return [first, *blocks, model.head]


def hf_classifier_from_dir(folder: str | os.PathLike, n_out: int, pooling: str = "mean", dropout: float = 0.1,
                           pretrained: bool = True) -> tuple[HFClassifier, HFTokenizer]:
    """A classifier on a local Hugging Face model folder (any encoder the installed transformers knows), built with
    `create_model("hf_classifier", ...)` so that `learn.export()` records it, with its pretrained weights when
    `pretrained`, and the folder's fast tokenizer.

    Example:
        >>> model, tok = hf_classifier_from_dir("path/to/deberta-v3-small", n_out=6)
    """
    transformers = require_transformers("hf_classifier_from_dir")
    folder = Path(folder)
    auto_config = transformers.AutoConfig.from_pretrained(str(folder))
    check_encoder(auto_config, str(folder))
    tokenizer = HFTokenizer.from_pretrained(folder)
    vocab_size = getattr(auto_config, "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:  # ids past the embedding table: an index error
        raise ValueError(f"{folder}: its tokenizer has {len(tokenizer)} tokens but config.json's vocab_size is "
                         f"{vocab_size}; the tokenizer files belong to another model. Put the model's own "
                         "tokenizer in the folder")
    config = json.loads(auto_config.to_json_string(use_diff=False))
    kwargs = dict(config=config, n_out=n_out, pad_id=tokenizer.pad_id, pooling=pooling, dropout=dropout)
    if not pretrained:
        model = create_model("hf_classifier", **kwargs)
        return model, _fit_tokenizer(tokenizer, model)
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder}: no weights file (one of {', '.join(WEIGHT_FILES)}); hub downloads fetch "
                                "safetensors only (never pickles). Save the weights into it "
                                "(model.save_pretrained(folder)), or pass pretrained=False for random weights")
    with torch.device("meta"):  # the shell only: its random encoder would be replaced at once (no memory, no init)
        model = create_model("hf_classifier", **kwargs)
    attention = model.encoder.config._attn_implementation  # what HFClassifier chose (sdpa where the model has it)
    encoder, info = transformers.AutoModel.from_pretrained(str(folder), attn_implementation=attention,
                                                           output_loading_info=True)
    # the pooler is never used (HFClassifier pools the last hidden states itself), and checkpoints saved from a
    # masked-LM or sequence-classification model do not hold it
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        raise ValueError(f"{folder}: its weights lack {missing[:5]} of {type(encoder).__name__}; check that "
                         "config.json belongs to the weights")
    # float32 master weights; from_pretrained gives eval mode
    model.encoder = keep_relative_positions(encoder.float().train(model.training))
    model.head = classifier_head(encoder.config.hidden_size, n_out, dropout)  # the shell's is on the meta device
    return model, _fit_tokenizer(tokenizer, model)


def _fit_tokenizer(tokenizer: HFTokenizer, model: HFClassifier) -> HFTokenizer:
    """The model's positions decide how long an encoding may be, not the tokenizer's model_max_length (absent:
    512; or set shorter in tokenizer_config.json, which would silently cut a longer max_len)."""
    if model.max_positions is not None:
        tokenizer.model_max_length = model.max_positions
    return tokenizer
