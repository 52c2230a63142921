"""Text data: TextBlock (word tokens + Vocab) and SubwordTextBlock (a model's own tokenizer), the language-model
target, and TextDataBunch constructors (each a DataBlock through `DataBlock.databunch`; the length-bucketed and
stream loaders they get are in data/loaders.py)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnkit.core.args import checked_keywords
from learnkit.data.blocks import CategoryBlock, TransformBlock, register_block
from learnkit.data.bunch import DataBunch
from learnkit.data.datablock import DataBlock, check_on_bad, report_bad
from learnkit.data.loaders import BucketBatchSampler, LMLoader
from learnkit.data.pipeline import ItemGetter
from learnkit.data.splitters import IndexSplitter, RandomSplitter, is_valid_flag
from learnkit.data.tables import missing_labels, read_csv
from learnkit.text.tokenizer import Tokenizer
from learnkit.text.vocab import Vocab

__all__ = ["TextBlock", "SubwordTextBlock", "LMTargetBlock", "LMLoss", "TextDataBunch", "BucketBatchSampler",
           "PadCollate", "LMLoader", "graph_pad_multiple", "read_text_file", "DEFAULT_MAX_LEN"]


@register_block
class TextBlock(TransformBlock):
    """A document as token ids: `Tokenizer` words numericalized by a `Vocab` built on the training texts.

    Args:
        tokenizer: a `Tokenizer` (default rules).
        vocab: a fixed `Vocab` (e.g. the pretrained LM's); built from training tokens when None.
        min_freq, max_vocab: for the built vocab.
        max_len: tokens kept per document (the first ones) for classification; None keeps all.
    """

    batching = "pad"  # documents have different lengths: bucketed batches, padded by `collate`
    bad_items = "empty or unreadable documents"

    def __init__(self, tokenizer: Tokenizer | None = None, vocab: Vocab | None = None, min_freq: int = 3,
                 max_vocab: int = 60000, max_len: int | None = None, cache_dir: str | Path | None = None):
        self.tokenizer = tokenizer or Tokenizer()
        self.vocab = vocab
        self.min_freq, self.max_vocab, self.max_len = min_freq, max_vocab, max_len
        self.cache_dir = cache_dir  # an on-disk token cache for tokenize_texts (not exported)
        self._tokens: dict[str, list[str]] = {}  # setup's tokens, reused once by encode_all

    @property
    def vocab_obj(self) -> Vocab | None:
        """The token `Vocab` (older name of `vocab`)."""
        return self.vocab

    @property
    def pad_idx(self) -> int:
        return 1

    def setup_tokens(self, docs: Sequence[Sequence[str]]) -> None:
        if self.vocab is None:
            self.vocab = Vocab.build(docs, self.min_freq, self.max_vocab)

    def setup(self, values: Sequence[str]) -> None:
        """Tokenize the training texts (in parallel) and build the vocab from them, unless one was given."""
        texts = [v for v in values if isinstance(v, str)]
        docs = self.tokenizer.tokenize_texts(texts, cache_dir=self.cache_dir)
        self._tokens = dict(zip(texts, docs))
        self.setup_tokens(docs)

    def ids(self, tokens: Sequence[str]) -> torch.Tensor:
        ids = self.vocab.numericalize(tokens)
        return ids[:self.max_len] if self.max_len is not None else ids

    def encode(self, value: str) -> torch.Tensor:
        ids = self.ids(self.tokenizer(check_document(value, type(self).__name__)))
        if not len(ids):
            raise ValueError(f"TextBlock.encode: {value[:60]!r} has no tokens; give the document some text")
        return ids

    def encode_all(self, values: Sequence[Any], num_workers: int | None = None) -> tuple[list[torch.Tensor],
                                                                                          list[tuple[int, str]]]:
        """Token ids of every document (tokenized in parallel; the training texts' tokens from `setup` are
        reused): (ids of the good ones, [(position, reason)] of empty or non-text documents)."""
        tokens, self._tokens = self._tokens, {}
        bad = [(i, f"not a string: {type(v).__name__}") for i, v in enumerate(values) if not isinstance(v, str)]
        missing = list({v for v in values if isinstance(v, str) and v not in tokens})
        tokens.update(zip(missing, self.tokenizer.tokenize_texts(missing, n_workers=num_workers,
                                                                 cache_dir=self.cache_dir)))
        bad_pos = {i for i, _ in bad}
        out, cut = [], 0
        for i, v in enumerate(values):
            if i in bad_pos:
                continue
            doc = tokens[v]
            if blank(v) or not doc:
                bad.append((i, "empty document (no tokens)"))
                continue
            cut += self.max_len is not None and len(doc) > self.max_len
            out.append(self.ids(doc))
        if cut:
            warnings.warn(f"TextBlock: {cut} of {len(out)} documents are longer than max_len={self.max_len} tokens "
                          f"and were cut to their first {self.max_len}")
        return out, sorted(bad)

    def decode(self, tensor: torch.Tensor) -> str:
        ids = [i for i in tensor.tolist() if i != self.pad_idx]
        return Tokenizer.decode(self.vocab.decode(ids))

    def collate(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return pad_batch(tensors, self.pad_idx)

    def show(self, tensor: torch.Tensor, ax: Any) -> None:
        ax.text(0, 0.5, self.decode(tensor)[:200], wrap=True, fontsize=8)
        ax.axis("off")

    def to_config(self) -> dict[str, Any]:
        return {"type": "TextBlock", "tokenizer": self.tokenizer.to_config(), "itos": self.vocab.itos,
                "max_len": self.max_len}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextBlock":
        return cls(Tokenizer.from_config(config["tokenizer"]), Vocab(config["itos"]), max_len=config.get("max_len"))

    def __repr__(self) -> str:
        return f"TextBlock(vocab={len(self.vocab) if self.vocab else '?'}, max_len={self.max_len})"


def graph_pad_multiple(max_len: int | None) -> int | None:
    """What `text_classifier_learner` pads batches to on CUDA: a multiple that leaves at most 8 lengths up to
    `max_len` (16 for max_len=128), so that one CUDA graph per length covers every batch (learner/graphs.py), for
    up to that many - 1 padding tokens; positions past the text are masked, so outputs do not change. Not on the
    CPU, where the extra tokens are extra compute (DeBERTa-style, fortunes: one epoch 74 s -> 87 s)."""
    return max(8, -(-max_len // 64) * 8) if max_len else None


def check_document(value: Any, where: str) -> str:
    """`value` when it is a document with text: a TypeError for a non-string, a ValueError for an empty or blank
    string (training rejects those too, so a prediction for one would mean nothing)."""
    if not isinstance(value, str):
        raise TypeError(f"{where}.encode: a document is a string, not {type(value).__name__} ({value!r:.60})")
    if blank(value):
        raise ValueError(f"{where}.encode: an empty document ({value!r:.20}); give it some text")
    return value


def blank(text: str) -> bool:
    """No visible character: empty, spaces, or only zero-width/control/format characters (U+200B, U+FEFF, NUL)."""
    return not any(c.isprintable() and not c.isspace() for c in text)


@register_block
class SubwordTextBlock(TextBlock):
    """A document as the ids of a model's own subword tokenizer (`WordPieceTokenizer`, or a Hugging Face fast
    tokenizer as `HFTokenizer`), which must offer `encode(text, max_len) -> list[int]`, `decode(ids)`, `pad_id` and
    `to_config`/`from_config` (and may offer `encode_batch(texts, max_len)`)."""

    def __init__(self, tokenizer: Any, max_len: int | None = 256, pad_multiple: int | None = None):
        self.tokenizer, self.max_len, self.vocab, self.cache_dir, self._tokens = tokenizer, max_len, None, None, {}
        self.pad_multiple = pad_multiple  # batches padded to a multiple of this (`graph_pad_multiple`); None: longest

    @property
    def pad_idx(self) -> int:
        return int(self.tokenizer.pad_id)

    def setup(self, values: Sequence[str]) -> None:
        pass

    def collate(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return pad_batch(tensors, self.pad_idx, self.pad_multiple, self.max_len)

    def encode(self, value: str) -> torch.Tensor:
        value = check_document(value, type(self).__name__)
        return torch.tensor(self.tokenizer.encode(value, max_len=self.max_len or 10**9), dtype=torch.long)

    def encode_all(self, values: Sequence[Any], num_workers: int | None = None) -> tuple[list[torch.Tensor],
                                                                                          list[tuple[int, str]]]:
        """The model tokenizer's ids of every document: (ids of the good ones, [(position, reason)])."""
        good, bad = [], []
        for i, v in enumerate(values):
            if not isinstance(v, str) or blank(v):
                bad.append((i, "empty document" if isinstance(v, str) else f"not a string: {type(v).__name__}"))
                continue
            good.append(v)
        if hasattr(self.tokenizer, "encode_batch"):  # a Rust fast tokenizer: the whole list at once, in parallel
            ids = self.tokenizer.encode_batch(good, max_len=self.max_len or 10**9)
            return [torch.tensor(i, dtype=torch.long) for i in ids], bad
        return [self.encode(v) for v in good], bad

    def decode(self, tensor: torch.Tensor) -> str:
        return self.tokenizer.decode([i for i in tensor.tolist() if i != self.pad_idx])

    def to_config(self) -> dict[str, Any]:
        return {"type": "SubwordTextBlock", "tokenizer": self.tokenizer.to_config(), "max_len": self.max_len}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SubwordTextBlock":
        if config["tokenizer"].get("kind") == "hf":  # a Hugging Face fast tokenizer (text/hf.py)
            from learnkit.text.hf import HFTokenizer
            return cls(HFTokenizer.from_config(config["tokenizer"]), config.get("max_len"))
        from learnkit.text.transformer import WordPieceTokenizer
        return cls(WordPieceTokenizer.from_config(config["tokenizer"]), config.get("max_len"))

    def __repr__(self) -> str:
        return f"SubwordTextBlock({type(self.tokenizer).__name__}, max_len={self.max_len})"


class LMLoss(nn.Module):
    """Cross-entropy of (B, L, V) next-token logits against (B, L) targets."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1))


@register_block
class LMTargetBlock(TransformBlock):
    """The next token at every position (language modelling). Loss: `LMLoss`; decoding: the likeliest
    next word after the last position."""

    batching = "stream"  # the documents become one token stream read in windows of about `bptt` tokens

    def __init__(self, itos: Sequence[str] | None = None, bptt: int = 72, source: TextBlock | None = None):
        self._itos = list(itos) if itos is not None else None
        self.bptt, self.source = bptt, source

    @property
    def itos(self) -> list[str] | None:
        """The next-token classes: the source TextBlock's vocab (once it is built), or the given list."""
        if self._itos is None and self.source is not None and self.source.vocab is not None:
            return self.source.vocab.itos
        return self._itos

    def encode(self, value: Any) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)  # targets come from the stream itself (x shifted by one)

    def loss_fn(self) -> Callable:
        return LMLoss()

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=-1)

    def decode_prediction(self, probs: torch.Tensor) -> tuple[Any, int]:
        index = int(probs.reshape(-1, probs.shape[-1])[-1].argmax())
        return (self.itos[index] if self.itos else index), index

    def to_config(self) -> dict[str, Any]:
        return {"type": "LMTargetBlock", "itos": self.itos, "bptt": self.bptt}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LMTargetBlock":
        return cls(config.get("itos"), bptt=config.get("bptt", 72))


def pad_batch(tensors: Sequence[torch.Tensor], pad_idx: int, multiple: int | None = None,
              max_len: int | None = None) -> torch.Tensor:
    """Right-pad 1-D id tensors to the longest, rounded up to a `multiple` (never past `max_len` unless the longest
    is): (B, L)."""
    longest = max(1, max(len(t) for t in tensors))
    if multiple:
        rounded = -(-longest // multiple) * multiple
        longest = min(rounded, max(longest, max_len)) if max_len else rounded
    out = torch.full((len(tensors), longest), pad_idx, dtype=torch.long)
    for i, t in enumerate(tensors):
        out[i, :len(t)] = t
    return out


class PadCollate:
    """[(ids, label), ...] → (padded ids (B, L), labels (B,))."""

    def __init__(self, pad_idx: int):
        self.pad_idx = pad_idx

    def __call__(self, samples: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        ids = pad_batch([s[0] for s in samples], self.pad_idx)
        rest = [torch.stack([s[i] for s in samples]) for i in range(1, len(samples[0]))]
        return (ids, *rest)


# Classification documents are cut to their first DEFAULT_MAX_LEN tokens unless max_len says otherwise: one 5.6 MB
# document once asked for 7.4 GB on the first batch. 1,440 tokens = 20 windows of 72, fastai's ULMFiT default.
DEFAULT_MAX_LEN = 1440


def read_text_file(path: str | Path, encoding: str | None = None) -> tuple[str, int]:
    """A file's text (UTF-8 unless `encoding`), undecodable bytes replaced; returns (text, number of replaced
    bytes). TextDataBunch.from_folder reads strictly instead and reports undecodable files (on_bad)."""
    raw = Path(path).read_bytes()
    text = raw.decode(encoding or "utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode(encoding or "utf-8", errors="ignore").count("\ufffd")
    return text, bad


class TextDataBunch(DataBunch):
    """A DataBunch for text: classifier batches (padded ids, labels) or language-model batches (x, y).

    Every constructor describes its data as a `DataBlock` (TextBlock + CategoryBlock, or + LMTargetBlock with
    `is_lm=True`) and goes through the one `DataBlock.databunch`; data/loaders.py batches documents by similar
    length (padded) or as one token stream (language model). `data.texts`, `data.labels` and `data.split` keep the
    raw data so that `with_block` can re-encode it for another model's tokenizer with the same split.

    Keyword arguments shared with ImageDataBunch's constructors mean the same: `valid_pct`, `seed`, `on_bad`
    ('error' lists empty or undecodable documents in one error; 'skip' leaves them out with a warning),
    `batch_size`, `num_workers` (None: auto — 0 here, the documents are encoded once up front), `device`,
    `verbose`. Text options: `is_lm`, `bptt` (language-model window), `block` (default: a `TextBlock` with
    `max_len`, `min_freq`, `max_vocab`), `max_len` (classification default 1,440 tokens; None keeps all),
    `cache_dir` (an on-disk token cache).
    """

    texts: list[str]
    labels: list[Any] | None
    split: tuple[list[int], list[int]]
    is_lm: bool = False

    def show_batch(self, n: int = 6, split: str = "train", width: int = 100) -> list[tuple[str, str]]:
        """Print `n` decoded documents of a batch with their targets; returns them."""
        batch = self.one_batch(split)
        rows = []
        for i in range(min(n, len(batch[0]))):
            text = self.x_block.decode(batch[0][i].cpu())
            target = self.y_block.title(batch[1][i].cpu()) if isinstance(self.y_block, CategoryBlock) else \
                self.x_block.decode(batch[1][i].cpu())[-40:]
            rows.append((text, target))
            print(f"{target[:20]:<20} | {text[:width]}{'...' if len(text) > width else ''}")
        return rows

    # ---------------------------------------------------------------- constructors
    @classmethod
    @checked_keywords
    def from_lists(cls, texts: Sequence[str], labels: Sequence[Any] | None = None, *,
                   valid_idx: Sequence[int] | None = None, valid_pct: float = 0.2, seed: int | None = None,
                   is_lm: bool = False, on_bad: str = "error", batch_size: int = 64, bptt: int = 72,
                   block: TextBlock | None = None, max_len: int | None = DEFAULT_MAX_LEN, min_freq: int = 3,
                   max_vocab: int = 60000, device: Any = None, num_workers: int | None = None,
                   cache_dir: str | Path | None = None, sources: Sequence[str] | None = None,
                   verbose: bool = False, drop_empty: bool | None = None) -> "TextDataBunch":
        """Build from texts (and labels for classification).

        Args:
            valid_idx: validation indices; otherwise a seeded random `valid_pct` split.
            is_lm: language-model batches (labels are ignored).
            sources: names of the texts (file names, row numbers) used in messages.
            drop_empty: deprecated; use on_bad='skip'.

        Example:
            >>> data = TextDataBunch.from_lists(["good", "bad"] * 50, ["pos", "neg"] * 50, seed=0)
        """
        if drop_empty is not None:
            warnings.warn("TextDataBunch(drop_empty=...) is deprecated: use on_bad='skip' (or 'error')",
                          DeprecationWarning, stacklevel=3)
            on_bad = "skip" if drop_empty else on_bad
        texts = list(texts)
        names = list(sources) if sources is not None else [f"text {i}" for i in range(len(texts))]
        if not is_lm and labels is None:
            raise ValueError("TextDataBunch: classification needs labels (or pass is_lm=True)")
        if labels is not None and len(labels) != len(texts):
            raise ValueError(f"TextDataBunch: {len(texts)} texts but {len(labels)} labels; give one label per text")
        bad = [n for t, n in zip(texts, names) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"TextDataBunch: these entries are not strings: {bad[:5]}")
        splitter: Any = IndexSplitter(valid_idx) if valid_idx is not None else \
            RandomSplitter(valid_pct, seed=seed if seed is not None else 0)
        block = block or TextBlock(max_len=None if is_lm else max_len, min_freq=min_freq, max_vocab=max_vocab,
                                   cache_dir=cache_dir)
        return cls._texts(texts, labels if not is_lm else None, names, splitter, block, is_lm=is_lm, bptt=bptt,
                          on_bad=on_bad, batch_size=batch_size, device=device, num_workers=num_workers, seed=seed,
                          verbose=verbose)

    @classmethod
    @checked_keywords
    def from_csv(cls, csv_path: str | Path, *, text_col: str = "text", label_col: str = "label",
                 valid_col: str | None = "is_valid", valid_pct: float = 0.2, encoding: str | None = None,
                 seed: int | None = None, is_lm: bool = False, on_bad: str = "error", batch_size: int = 64,
                 bptt: int = 72, block: TextBlock | None = None, max_len: int | None = DEFAULT_MAX_LEN,
                 min_freq: int = 3, max_vocab: int = 60000, device: Any = None, num_workers: int | None = None,
                 cache_dir: str | Path | None = None, verbose: bool = False) -> "TextDataBunch":
        """From a CSV file with a header: texts, labels, and (if the column exists) a validation flag
        (1/true/yes/valid); otherwise a seeded random `valid_pct` split. `encoding`: the CSV's text encoding
        (default UTF-8, BOM accepted; undecodable bytes are an error naming the line)."""
        path = Path(csv_path)
        check_on_bad(on_bad)
        header, rows = read_csv(path, encoding=encoding)
        if not rows:
            raise ValueError(f"{path}: no rows of data (only a header)")
        missing = [c for c in (text_col, None if is_lm else label_col) if c and c not in header]
        if missing:
            raise KeyError(f"{path}: no column(s) {missing}; columns are {header}. Pass text_col=/label_col=")
        ti = header.index(text_col)
        li = header.index(label_col) if not is_lm else None
        vi = header.index(valid_col) if valid_col and valid_col in header else None
        if li is not None:  # empty / 'nan' / 'None' labels would become a class of their own
            lines = set(missing_labels(rows, li))
            report_bad([(f"{path.name} line {r.line}", f"no label in column {label_col!r} (cell "
                         f"{r[li] if len(r) > li else ''!r})") for r in rows if r.line in lines], on_bad,
                       "rows without a label (they would become a class of their own)",
                       f"fill in the column {label_col!r} of {path}")
            rows = [r for r in rows if r.line not in lines]
        short = [r.line for r in rows if len(r) <= max(ti, vi or 0)]
        if short:
            raise ValueError(f"{path}: line(s) {short[:10]} have fewer cells than the header {header}")
        texts = [r[ti] for r in rows]
        labels = [r[li] for r in rows] if li is not None else None
        valid_idx = [i for i, r in enumerate(rows) if is_valid_flag(r[vi])] if vi is not None else None
        return cls.from_lists(texts, labels, valid_idx=valid_idx, valid_pct=valid_pct, seed=seed, is_lm=is_lm,
                              on_bad=on_bad, batch_size=batch_size, bptt=bptt, block=block, max_len=max_len,
                              min_freq=min_freq, max_vocab=max_vocab, device=device, num_workers=num_workers,
                              cache_dir=cache_dir, sources=[f"{path.name} line {r.line}" for r in rows],
                              verbose=verbose)

    @classmethod
    @checked_keywords
    def from_folder(cls, path: str | Path, *, train: str = "train", valid: str = "valid",
                    valid_pct: float | None = None, seed: int | None = None, encoding: str | None = None,
                    is_lm: bool = False, on_bad: str = "error", batch_size: int = 64, bptt: int = 72,
                    block: TextBlock | None = None, max_len: int | None = DEFAULT_MAX_LEN, min_freq: int = 3,
                    max_vocab: int = 60000, device: Any = None, num_workers: int | None = None,
                    cache_dir: str | Path | None = None, verbose: bool = False) -> "TextDataBunch":
        """Labels = parent folder names of `*.txt` files, as ImageDataBunch.from_folder: with `path/train` and
        `path/valid` the folders are the split; otherwise (or with `valid_pct`) a seeded random split of every
        file (of `path/train` and `path/valid` when they exist, else of the class folders under `path`). With
        is_lm=True any .txt files below the roots. Files that are not valid text in `encoding` (default UTF-8)
        are listed in one error (on_bad='skip' leaves them out)."""
        path = Path(path)
        check_on_bad(on_bad)
        if not path.is_dir():
            raise FileNotFoundError(f"TextDataBunch.from_folder: {path} is not a folder")
        has_train, has_valid = (path / train).is_dir(), (path / valid).is_dir()
        roots = [path / train] + ([path / valid] if has_valid else []) if has_train else [path]
        texts, labels, in_valid, names, bad = [], [], [], [], []
        for r, root in enumerate(roots):
            for file in sorted(p for p in root.rglob("*.txt") if p.is_file()):
                if not is_lm and file.parent == root:
                    bad.append((file, f"not inside a class folder of {root}: its label is unknown"))
                    continue
                try:
                    texts.append(file.read_bytes().decode(encoding or "utf-8"))
                except UnicodeDecodeError as e:
                    bad.append((file, f"not valid {encoding or 'UTF-8'} text at byte {e.start}; pass "
                                      "encoding='latin-1' (or the files' real encoding)"))
                    continue
                labels.append(file.parent.name)
                in_valid.append(r == 1)
                names.append(str(file))
        report_bad(bad, on_bad, "files that cannot be read as labelled text", "fix or remove them")
        if not texts:
            raise ValueError(f"TextDataBunch.from_folder: no .txt files under {[str(r) for r in roots]}")
        use_folders = valid_pct is None and has_train and has_valid
        valid_idx = [i for i, v in enumerate(in_valid) if v] if use_folders else None
        data = cls.from_lists(texts, None if is_lm else labels, valid_idx=valid_idx,
                              valid_pct=0.2 if valid_pct is None else valid_pct, seed=seed, is_lm=is_lm,
                              on_bad=on_bad, batch_size=batch_size, bptt=bptt, block=block, max_len=max_len,
                              min_freq=min_freq, max_vocab=max_vocab, device=device, num_workers=num_workers,
                              cache_dir=cache_dir, sources=names, verbose=verbose)
        data.skipped = list(bad) + data.skipped
        return data

    # ---------------------------------------------------------------- the one path
    @classmethod
    def _texts(cls, texts: list[str], labels: list[Any] | None, names: list[str], splitter: Any, block: TextBlock, *,
               is_lm: bool, bptt: int, on_bad: str, batch_size: int, device: Any, num_workers: int | None,
               seed: int | None, verbose: bool) -> "TextDataBunch":
        """(text, label, name) items described as a DataBlock and built by its `databunch()`."""
        y_block: TransformBlock = LMTargetBlock(bptt=bptt, source=block) if is_lm else CategoryBlock()
        items = list(zip(texts, labels if labels is not None else [None] * len(texts), names))
        dblock = DataBlock(blocks=(block, y_block), splitter=splitter, get_name=ItemGetter(2))
        data = dblock.databunch(items, batch_size=batch_size, num_workers=num_workers, device=device, seed=seed,
                                on_bad=on_bad, verbose=verbose, bunch_type=cls)
        skipped = {n for n, _ in data.skipped}
        train, valid = dblock.split_of(items, seed)
        keep = [i for i in range(len(items)) if names[i] not in skipped]
        position = {i: k for k, i in enumerate(keep)}
        data.texts = [texts[i] for i in keep]
        data.labels = [labels[i] for i in keep] if labels is not None else None
        data.split = ([position[i] for i in train if i in position], [position[i] for i in valid if i in position])
        data.is_lm = is_lm
        data.options = {"is_lm": is_lm, "bptt": bptt, "on_bad": on_bad, "batch_size": batch_size, "device": device,
                        "num_workers": num_workers, "seed": seed, "verbose": verbose}
        return data

    @property
    def batch_size(self) -> int:
        return int(self.train_dl.batch_size or self.options["batch_size"])

    def with_block(self, block: TextBlock) -> "TextDataBunch":
        """The same texts, labels and split, encoded by another block (e.g. a transformer's tokenizer); a new
        TextDataBunch (this one is unchanged)."""
        names = [f"text {i}" for i in range(len(self.texts))]
        return type(self)._texts(self.texts, self.labels, names, _GivenSplit(*self.split), block, **self.options)


class _GivenSplit:
    """A splitter that returns a split already made (with_block keeps the order as well as the sets)."""

    def __init__(self, train: Sequence[int], valid: Sequence[int]):
        self.train, self.valid = list(train), list(valid)

    def __call__(self, items: Sequence[Any]) -> tuple[list[int], list[int]]:
        return self.train, self.valid
