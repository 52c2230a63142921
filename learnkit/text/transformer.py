"""A plain-PyTorch BERT-family encoder read from a local Hugging Face model folder, its WordPiece tokenizer,
and a sequence classifier on top (registered as "bert_classifier").

No `transformers` dependency: nothing is fetched, no remote code runs, every line can be stepped through
with pdb. `hf_bert_state_dict` is the one place that knows Hugging Face's BERT weight names.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from learnkit.core import create_model, load_tensors, register_model

__all__ = ["attention_kernels", "pool_hidden", "BertConfig", "BertEncoder", "TransformerClassifier", "WordPieceTokenizer",
           "check_architecture", "hf_bert_state_dict", "layer_groups", "load_bert", "load_hf_weights",
           "transformer_classifier_from_dir"]

MODEL_FILES = ("config.json", "vocab.txt", "model.safetensors")
_SPECIAL_KEYS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                 "mask_token": "[MASK]"}
_MAX_CHARS_PER_WORD = 100
_CONTROL = ("Cc", "Cf", "Co", "Cs")  # removed; unassigned code points (Cn) are kept, as the reference does


# Plan-free fused attention first. cuDNN's attention, PyTorch's first choice on Hopper, builds a plan for every new
# (batch, length) shape, measured at about 0.1 s each on an H200 (MiniLM, batch 32): length-bucketed text batches
# change shape every step, so a 3-epoch fine-tune spent ~10 s planning. The memory-efficient kernel takes masks and
# dropout; flash (no mask), cuDNN and math stay as fallbacks.
_ATTENTION_ORDER = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH]


def attention_kernels(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The scaled-dot-product-attention kernel order for variable-length text on CUDA (see `_ATTENTION_ORDER`); a
    no-op on other devices and inside torch.compile / torch.export, which choose their own kernels."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return sdpa_kernel(_ATTENTION_ORDER, set_priority=True)


# ----------------------------------------------------------------------------------------------- tokenizer
def _is_punctuation(ch: str) -> bool:
    # BERT counts every ASCII symbol that is not a letter or digit ('$', '^', '`', ...) as punctuation too.
    cp = ord(ch)
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(ch).startswith("P"))


def _is_cjk(ch: str) -> bool:
    # The CJK Unified Ideographs blocks (not Hangul or kana, which are written with spaces or split by WordPiece).
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's tokenizer: basic clean-up and splitting, then greedy longest-match-first WordPiece.

    Gives the same ids as Hugging Face's `tokenizers` for the same folder (tested). Text that spells a
    special token ("[SEP]") is kept as that token, as the reference does.

    Example:
        >>> tok = WordPieceTokenizer.from_dir("path/to/all-MiniLM-L6-v2")
        >>> tok.tokenize("Unaffable!")
        ['una', '##ffa', '##ble', '!']
        >>> tok.decode(tok.encode("Unaffable!"))
        'unaffable !'
    """

    def __init__(self, vocab: Sequence[str], do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int = 512,
                 special_tokens: dict[str, str] | None = None):
        self.vocab = list(vocab)
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents  # None: strip them when lower-casing (BERT's rule)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.model_max_length = int(model_max_length)
        self.special_tokens = {**_SPECIAL_KEYS, **(special_tokens or {})}
        missing = [t for t in self.special_tokens.values() if t not in self.token_to_id]
        if missing:
            raise ValueError(f"WordPieceTokenizer: special tokens {missing} are not in the vocab of {len(self.vocab)} "
                             "tokens; vocab.txt must list them (BERT's have [PAD] [UNK] [CLS] [SEP] [MASK])")
        ids = {k: self.token_to_id[t] for k, t in self.special_tokens.items()}
        self.cls_id, self.sep_id, self.pad_id = ids["cls_token"], ids["sep_token"], ids["pad_token"]
        self.unk_id, self.mask_id = ids["unk_token"], ids["mask_token"]
        specials = sorted(self.special_tokens.values(), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._word_cache: dict[str, list[str]] = {}

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "WordPieceTokenizer":
        """Read `vocab.txt` (one token per line; the line number is its id) and, when there,
        `tokenizer_config.json` (do_lower_case, strip_accents, model_max_length, special token names)."""
        path = Path(path)
        if not (path / "vocab.txt").is_file():
            raise FileNotFoundError(f"WordPieceTokenizer.from_dir: {path / 'vocab.txt'} not found; a BERT model "
                                    "folder has vocab.txt with one WordPiece token per line")
        lines = (path / "vocab.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
        vocab = [line.rstrip() for line in lines]  # also drops the '\r' of Windows line ends
        cfg: dict[str, Any] = {}
        if (path / "tokenizer_config.json").is_file():
            cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        # Newer files write a special token as {"content": "[CLS]", ...}, older ones as "[CLS]".
        specials = {k: v.get("content") if isinstance(v, dict) else v for k, v in cfg.items() if k in _SPECIAL_KEYS}
        specials = {k: v for k, v in specials.items() if isinstance(v, str)}
        max_len = cfg.get("model_max_length", 512)
        max_len = max_len if isinstance(max_len, int) and max_len <= 1_000_000 else 512  # "no limit": 1e30
        return cls(vocab, do_lower_case=cfg.get("do_lower_case", True), strip_accents=cfg.get("strip_accents"),
                   tokenize_chinese_chars=cfg.get("tokenize_chinese_chars", True), model_max_length=max_len,
                   special_tokens=specials)

    def to_config(self) -> dict[str, Any]:
        """JSON-ready settings and vocab, enough for `from_config` to rebuild this tokenizer."""
        return {"vocab": list(self.vocab), "do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars, "model_max_length": self.model_max_length,
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WordPieceTokenizer":
        """Rebuild a tokenizer from `to_config()`'s dict."""
        return cls(**config)

    def __len__(self) -> int:
        return len(self.vocab)

    def _normalize(self, text: str) -> str:
        # Same order as the reference: drop control characters, spaces around CJK, strip accents, lower-case.
        chars = []
        for ch in text:
            if ch == "\ufffd" or (unicodedata.category(ch) in _CONTROL and ch not in "\t\n\r"):
                continue  # control and format characters go, also those that count as spaces (\x0b, \x85)
            chars.append(" " if ch.isspace() else f" {ch} " if self.tokenize_chinese_chars and _is_cjk(ch) else ch)
        text = "".join(chars)
        if self.do_lower_case if self.strip_accents is None else self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if not self.do_lower_case:
            return text
        # Per character, like the reference: str.lower() would turn a word-final 'Σ' into 'ς', not 'σ'.
        return "".join(c.lower() for c in text) if "Σ" in text else text.lower()

    def _wordpiece(self, word: str) -> list[str]:
        if word in self._word_cache:
            return self._word_cache[word]
        pieces, start = [], 0
        while start < len(word) <= _MAX_CHARS_PER_WORD:
            for end in range(len(word), start, -1):  # the longest vocab entry that starts at `start`
                piece = word[start:end] if start == 0 else "##" + word[start:end]  # '##': inside a word
                if piece in self.token_to_id:
                    break
            else:
                break
            pieces.append(piece)
            start = end
        if start < len(word):  # one unmatchable stretch, or over 100 characters: the whole word is unknown
            pieces = [self.special_tokens["unk_token"]]
        if len(self._word_cache) > 200_000:
            self._word_cache.clear()
        self._word_cache[word] = pieces
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text → WordPiece tokens (no [CLS]/[SEP])."""
        tokens: list[str] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:  # the split keeps each special token at an odd position
                tokens.append(part)
                continue
            for word in self._normalize(part).split():
                for is_punct, chars in itertools.groupby(word, _is_punctuation):  # each punctuation mark alone
                    for piece in (chars if is_punct else ["".join(chars)]):
                        tokens.extend(self._wordpiece(piece))
        return tokens

    def encode(self, text: str, max_len: int = 128) -> list[int]:
        """Text → ids `[CLS] tokens [SEP]`, the tokens cut so that the whole fits in `max_len`."""
        if not 2 <= max_len <= self.model_max_length:
            raise ValueError(f"encode: max_len={max_len} must be between 2 ([CLS] and [SEP]) and the model's "
                             f"limit of {self.model_max_length} positions")
        ids = [self.token_to_id[t] for t in self.tokenize(text)][:max_len - 2]
        return [self.cls_id, *ids, self.sep_id]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids → text: '##' pieces joined to their word, [CLS] [SEP] [PAD] dropped ([UNK]/[MASK] are kept,
        since they stand for content). Lower-casing and stripped accents cannot be undone."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        tokens = [self.vocab[i] for i in ids if i not in (self.cls_id, self.sep_id, self.pad_id)]
        return " ".join(tokens).replace(" ##", "")


# ----------------------------------------------------------------------------------------------- config
def check_architecture(config: dict[str, Any], where: str) -> None:
    """Raise unless a config.json dict describes a BERT encoder with absolute positions, naming the architecture
    it does describe (`model_type`, `architectures`) and what supports it."""
    kind = config.get("model_type", "bert")
    positions = config.get("position_embedding_type", "absolute")
    if kind == "bert" and positions == "absolute":
        return
    architectures = config.get("architectures")
    described = f"model_type={kind!r}" + (f", architectures={architectures}" if architectures else "") + \
        (f", position_embedding_type={positions!r}" if positions != "absolute" else "")
    raise ValueError(f"{where}: config.json describes a {described} model; learnkit's built-in transformer "
                     "reads BERT-family encoders with absolute positions only (model_type 'bert': BERT, MiniLM, "
                     "all-MiniLM-*, bge-*, e5-*). Fix: use a BERT-family model folder, or load this model with "
                     "Hugging Face transformers (pip install transformers; AutoModel.from_pretrained(folder)), "
                     "wrap it in an nn.Module that returns logits and train it with Learner(data, model).")


_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}  # F.gelu's `approximate`


@dataclasses.dataclass
class BertConfig:
    """The architecture fields of a Hugging Face BERT `config.json` (other keys are ignored)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, config: "dict[str, Any] | BertConfig") -> "BertConfig":
        """Build from a config.json dict, checking that it describes a model this module implements."""
        if isinstance(config, BertConfig):
            return config
        check_architecture(config, "BertConfig")
        fields = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in config.items() if k in fields})
        if out.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig: hidden_act={out.hidden_act!r} is not supported; use one of "
                             f"{sorted(_ACTIVATIONS)}")
        if out.hidden_size % out.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size={out.hidden_size} is not divisible by "
                             f"num_attention_heads={out.num_attention_heads}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------- model
class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(f"BertEncoder: sequences of {length} tokens are longer than the model's "
                             f"{self.position.num_embeddings} positions; encode with a smaller max_len")
        x = self.word(input_ids) + self.position(torch.arange(length, device=input_ids.device))
        # Single-sentence inputs are all segment 0.
        x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        return self.dropout(self.norm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with an output projection; `key_mask` (B, 1, 1, L) is True for real tokens."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        h = cfg.hidden_size
        self.n_heads, self.dropout_p = cfg.num_attention_heads, cfg.attention_probs_dropout_prob
        self.query, self.key, self.value, self.out = (nn.Linear(h, h) for _ in range(4))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, length, h = x.shape
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.n_heads, h // self.n_heads).transpose(1, 2)
        o = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                           attn_mask=key_mask, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(b, length, h))


class BertLayer(nn.Module):
    """Post-LN transformer block: x = norm(x + attention(x)); x = norm(x + ffn(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertSelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.approximate = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, key_mask)))
        h = self.ffn_out(F.gelu(self.ffn_in(x), approximate=self.approximate))
        return self.ffn_norm(x + self.dropout(h))


class BertEncoder(nn.Module):
    """BERT without a head: ids (B, L) → hidden states (B, L, hidden_size).

    Example:
        >>> hidden = BertEncoder(config)(input_ids, input_ids != tok.pad_id)  # (B, L, hidden_size)
    """

    def __init__(self, config: dict[str, Any] | BertConfig):
        super().__init__()
        self.config = BertConfig.from_dict(config)
        self.embeddings = BertEmbeddings(self.config)
        self.layers = nn.ModuleList(BertLayer(self.config) for _ in range(self.config.num_hidden_layers))
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # BERT's initialisation, for training from scratch (pretrained weights overwrite it).
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`attention_mask` (B, L): True (or 1) for real tokens, False (0) for padding; None means no padding.
        Outputs at padded positions are meaningless; padding never changes the other positions."""
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        with attention_kernels(x):
            for layer in self.layers:
                x = layer(x, key_mask)
        return x


# ----------------------------------------------------------------------------------------------- weights
_EMBEDDING_NAMES = {"word_embeddings": "word", "position_embeddings": "position",
                    "token_type_embeddings": "token_type", "LayerNorm": "norm"}
_LAYER_NAMES = {"attention.self.query": "attention.query", "attention.self.key": "attention.key",
                "attention.self.value": "attention.value", "attention.output.dense": "attention.out",
                "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "ffn_in",
                "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm"}
_PARAM_NAMES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}  # gamma/beta: old TF ports
_IGNORED = re.compile(r"pooler\..*|embeddings\.(position_ids|token_type_ids)")  # unused head; buffers


def _our_name(hf_name: str) -> str | None:
    module, _, param = hf_name.rpartition(".")
    if param not in _PARAM_NAMES:
        return None
    layer = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", module)
    if layer and layer[2] in _LAYER_NAMES:
        return f"layers.{layer[1]}.{_LAYER_NAMES[layer[2]]}.{_PARAM_NAMES[param]}"
    if module.startswith("embeddings.") and module[len("embeddings."):] in _EMBEDDING_NAMES:
        return f"embeddings.{_EMBEDDING_NAMES[module[len('embeddings.'):]]}.{_PARAM_NAMES[param]}"
    return None


def hf_bert_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face BERT state dict (`BertModel`'s names, or `bert.`-prefixed ones from a `BertFor*`
    model) into `BertEncoder`'s names, e.g. `encoder.layer.3.attention.self.query.weight` →
    `layers.3.attention.query.weight`, `embeddings.LayerNorm.weight` → `embeddings.norm.weight`.

    Dropped on purpose: the pooler, the `position_ids`/`token_type_ids` buffers and, in a `bert.`-prefixed
    file, the task heads outside `bert.` (`cls.*`, `classifier.*`). Any other name is an error naming it.
    """
    prefixed = any(name.startswith("bert.") for name in tensors)
    out, unknown = {}, []
    for name, tensor in tensors.items():
        if prefixed and not name.startswith("bert."):
            continue
        name = name[len("bert."):] if prefixed else name
        if not _IGNORED.fullmatch(name):
            ours = _our_name(name)
            unknown += [name] if ours is None else []
            out[ours or name] = tensor
    if unknown:
        raise ValueError(f"hf_bert_state_dict: {len(unknown)} weights are not part of a BERT encoder: "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}; is this a BERT checkpoint?")
    return out


def load_hf_weights(encoder: BertEncoder, tensors: dict[str, torch.Tensor], source: str = "the weights") -> None:
    """Load a Hugging Face BERT state dict into `encoder`: every encoder weight must be there, with its shape,
    and nothing else (see `hf_bert_state_dict` for what is dropped)."""
    state = hf_bert_state_dict(tensors)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else []) + shapes
    if problems:
        raise ValueError(f"load_hf_weights: {source} do not fit a BertEncoder with {encoder.config.to_dict()} "
                         f"(names here are BertEncoder's): " + "; ".join(problems)
                         + ". Check that config.json belongs to model.safetensors.")
    encoder.load_state_dict(state)


def _read_model_dir(path: str | os.PathLike) -> tuple[dict[str, Any], WordPieceTokenizer, Path]:
    path = Path(path)
    if (path / "config.json").is_file():  # another architecture's folder lacks vocab.txt: say what it is first
        check_architecture(json.loads((path / "config.json").read_text(encoding="utf-8")), str(path))
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        hint = ""
        if "model.safetensors" in missing and (path / "pytorch_model.bin").is_file():
            hint = (" It has pytorch_model.bin, a pickle, which learnkit does not load: convert it once with "
                    "learnkit.save_tensors(torch.load(bin_path, weights_only=True), folder / 'model.safetensors').")
        raise FileNotFoundError(f"{path} is missing {', '.join(missing)}: a BERT model folder must contain "
                                f"{', '.join(MODEL_FILES)} (and optionally tokenizer_config.json), as a Hugging "
                                f"Face model download does.{hint}")
    config = BertConfig.from_dict(json.loads((path / "config.json").read_text(encoding="utf-8"))).to_dict()
    return config, WordPieceTokenizer.from_dir(path), path / "model.safetensors"


def load_bert(path: str | os.PathLike) -> tuple[BertEncoder, WordPieceTokenizer, dict[str, Any]]:
    """Read a local Hugging Face BERT folder (config.json, vocab.txt, model.safetensors) into a `BertEncoder`
    in eval mode, its tokenizer and its config (a JSON-ready dict of `BertConfig`'s fields).

    Example:
        >>> encoder, tok, config = load_bert("path/to/all-MiniLM-L6-v2")
        >>> hidden = encoder(torch.tensor([tok.encode("hello world")]))   # (1, 4, 384)
    """
    config, tokenizer, weights = _read_model_dir(path)
    encoder = BertEncoder(config)
    load_hf_weights(encoder, load_tensors(weights), source=str(weights))
    return encoder.eval(), tokenizer, config


# ----------------------------------------------------------------------------------------------- classifier
def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors from an encoder's (B, T, H) states: the first token's ('cls') or the mean over the
    tokens that `mask` (B, T) keeps ('mean'). Shared by the built-in BERT and the transformers path (text/hf.py),
    which give the same logits on the same weights."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class TransformerClassifier(nn.Module):
    """BertEncoder → pooling ('mean' over real tokens, as sentence-transformers do, or the 'cls' token)
    → dropout → Linear. Input: ids (B, L) right-padded with `pad_id`; output: logits (B, n_out).

    Example:
        >>> logits = TransformerClassifier(config, n_out=3, pad_id=tok.pad_id)(input_ids)  # (B, 3)
    """

    def __init__(self, config: dict[str, Any] | BertConfig, n_out: int, pad_id: int, pooling: str = "mean",
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"TransformerClassifier: pooling={pooling!r}; use 'mean' or 'cls'")
        self.encoder = BertEncoder(config)
        self.pad_id, self.pooling = pad_id, pooling
        self.max_positions = self.encoder.config.max_position_embeddings  # the longest input
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.config.hidden_size, n_out))

    def pool(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The sentence vectors (B, hidden_size) before the head."""
        mask = input_ids != self.pad_id
        return pool_hidden(self.encoder(input_ids, mask), mask, self.pooling)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(input_ids))


@register_model("bert_classifier", dict_params={"config": None})  # a BERT config, read by learnkit only
def bert_classifier(config: dict[str, Any], n_out: int, pad_id: int, pooling: str = "mean",
                    dropout: float = 0.1) -> TransformerClassifier:
    """A `TransformerClassifier` with random weights (`transformer_classifier_from_dir` loads pretrained ones)."""
    return TransformerClassifier(config, n_out, pad_id, pooling, dropout)


def layer_groups(model: TransformerClassifier) -> list[nn.Module]:
    """Splitter for discriminative learning rates: [embeddings, layers 0-1, layers 2-3, ..., head]."""
    layers = list(model.encoder.layers)
    pairs = [nn.ModuleList(layers[i:i + 2]) for i in range(0, len(layers), 2)]
    return [model.encoder.embeddings, *pairs, model.head]


def transformer_classifier_from_dir(path: str | os.PathLike, n_out: int, pooling: str = "mean",
                                    dropout: float = 0.1) -> tuple[TransformerClassifier, WordPieceTokenizer]:
    """A classifier whose encoder holds the pretrained weights of a local BERT folder, and its tokenizer.

    Built with `create_model("bert_classifier", ...)`, so `learn.export()` can record it; pad batches with
    `tokenizer.pad_id`.

    Example:
        >>> model, tok = transformer_classifier_from_dir("path/to/all-MiniLM-L6-v2", n_out=2)
    """
    config, tokenizer, weights = _read_model_dir(path)
    model = create_model("bert_classifier", config=config, n_out=n_out, pad_id=tokenizer.pad_id,
                         pooling=pooling, dropout=dropout)
    load_hf_weights(model.encoder, load_tensors(weights), source=str(weights))
    return model, tokenizer
