"""Text data: TextBlock (word tokens + Vocab) and SubwordTextBlock (a model's own tokenizer), the
length-bucketed classifier loader, the language-model stream loader, and TextDataBunch constructors."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from learnkit.core.device import default_device
from learnkit.data.blocks import CategoryBlock, TransformBlock, register_block
from learnkit.data.bunch import DataBunch, WorkerLoader
from learnkit.data.splitters import RandomSplitter, check_split
from learnkit.data.tables import missing_labels, read_csv
from learnkit.text.tokenizer import Tokenizer
from learnkit.text.vocab import Vocab

__all__ = ["TextBlock", "SubwordTextBlock", "LMTargetBlock", "LMLoss", "TextDataBunch", "BucketBatchSampler",
           "PadCollate", "LMLoader", "read_text_file"]


def read_text_file(path: str | Path) -> tuple[str, int]:
    """A file's text as UTF-8, undecodable bytes replaced; returns (text, number of replaced bytes)."""
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    return text, bad


@register_block
class TextBlock(TransformBlock):
    """A document as token ids: `Tokenizer` words numericalized by a `Vocab` built on the training texts.

    Args:
        tokenizer: a `Tokenizer` (default rules).
        vocab: a fixed `Vocab` (e.g. the pretrained LM's); built from training tokens when None.
        min_freq, max_vocab: for the built vocab.
        max_len: tokens kept per document (the first ones) for classification; None keeps all.
    """

    def __init__(self, tokenizer: Tokenizer | None = None, vocab: Vocab | None = None, min_freq: int = 3,
                 max_vocab: int = 60000, max_len: int | None = None):
        self.tokenizer = tokenizer or Tokenizer()
        self.vocab_obj = vocab
        self.min_freq, self.max_vocab, self.max_len = min_freq, max_vocab, max_len

    @property
    def pad_idx(self) -> int:
        return 1

    def setup_tokens(self, docs: Sequence[Sequence[str]]) -> None:
        if self.vocab_obj is None:
            self.vocab_obj = Vocab.build(docs, self.min_freq, self.max_vocab)

    def setup(self, values: Sequence[str]) -> None:
        self.setup_tokens(self.tokenizer.tokenize_texts(values))

    def ids(self, tokens: Sequence[str]) -> torch.Tensor:
        ids = self.vocab_obj.numericalize(tokens)
        return ids[:self.max_len] if self.max_len is not None else ids

    def encode(self, value: str) -> torch.Tensor:
        return self.ids(self.tokenizer(value))

    def decode(self, tensor: torch.Tensor) -> str:
        ids = [i for i in tensor.tolist() if i != self.pad_idx]
        return Tokenizer.decode(self.vocab_obj.decode(ids))

    def collate(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return pad_batch(tensors, self.pad_idx)

    def show(self, tensor: torch.Tensor, ax: Any) -> None:
        ax.text(0, 0.5, self.decode(tensor)[:200], wrap=True, fontsize=8)
        ax.axis("off")

    def to_config(self) -> dict[str, Any]:
        return {"type": "TextBlock", "tokenizer": self.tokenizer.to_config(), "itos": self.vocab_obj.itos,
                "max_len": self.max_len}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextBlock":
        return cls(Tokenizer.from_config(config["tokenizer"]), Vocab(config["itos"]), max_len=config.get("max_len"))

    def __repr__(self) -> str:
        return f"TextBlock(vocab={len(self.vocab_obj) if self.vocab_obj else '?'}, max_len={self.max_len})"


@register_block
class SubwordTextBlock(TextBlock):
    """A document as the ids of a model's own subword tokenizer (e.g. `WordPieceTokenizer`), which must
    offer `encode(text, max_len) -> list[int]`, `decode(ids)`, `pad_id` and `to_config`/`from_config`."""

    def __init__(self, tokenizer: Any, max_len: int | None = 256):
        self.tokenizer, self.max_len, self.vocab_obj = tokenizer, max_len, None

    @property
    def pad_idx(self) -> int:
        return int(self.tokenizer.pad_id)

    def setup(self, values: Sequence[str]) -> None:
        pass

    def encode(self, value: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(value, max_len=self.max_len or 10**9), dtype=torch.long)

    def decode(self, tensor: torch.Tensor) -> str:
        return self.tokenizer.decode([i for i in tensor.tolist() if i != self.pad_idx])

    def to_config(self) -> dict[str, Any]:
        return {"type": "SubwordTextBlock", "tokenizer": self.tokenizer.to_config(), "max_len": self.max_len}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SubwordTextBlock":
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

    def __init__(self, itos: Sequence[str] | None = None):
        self.itos = list(itos) if itos is not None else None

    def loss_fn(self) -> Callable:
        return LMLoss()

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=-1)

    def decode_prediction(self, probs: torch.Tensor) -> tuple[Any, int]:
        index = int(probs.reshape(-1, probs.shape[-1])[-1].argmax())
        return (self.itos[index] if self.itos else index), index

    def to_config(self) -> dict[str, Any]:
        return {"type": "LMTargetBlock", "itos": self.itos}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LMTargetBlock":
        return cls(config.get("itos"))


def pad_batch(tensors: Sequence[torch.Tensor], pad_idx: int) -> torch.Tensor:
    """Right-pad 1-D id tensors to the longest: (B, L_max)."""
    longest = max(1, max(len(t) for t in tensors))
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


class _Docs(Dataset):
    def __init__(self, ids: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return (self.ids[i],) if self.labels is None else (self.ids[i], self.labels[i])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths (less padding). Training: shuffle, cut into chunks of 50 batches, sort
    each chunk by length, batch it, shuffle the batches, then put the longest batch first so an
    out-of-memory error shows on the first step. Validation: sorted by length, longest first."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None, chunk_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.generator, self.chunk = generator, chunk_batches * batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            yield from (order[i:i + bs] for i in range(0, n, bs))
            return
        perm = torch.randperm(n, generator=self.generator).tolist()
        batches = []
        for c in range(0, n, self.chunk):
            chunk = sorted(perm[c:c + self.chunk], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        batches = [batches[i] for i in order]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
        yield from batches


class LMLoader:
    """Language-model batches from a list of documents (1-D id tensors), a GPU-free iterable with the
    DataLoader contract (`__iter__` of (x, y) tuples, `__len__`, `batch_size`, `dataset`, `generator`).

    Each epoch: documents shuffled (training), concatenated into one stream, cut into `batch_size` rows
    (row b continues across batches), then read in windows of about `bptt` tokens (random lengths around
    bptt in training; their number is fixed, so `len()` is exact); y is x shifted by one token.
    """

    def __init__(self, docs: Sequence[torch.Tensor], batch_size: int = 64, bptt: int = 72, shuffle: bool = True,
                 generator: torch.Generator | None = None):
        self.dataset, self.batch_size, self.bptt = list(docs), batch_size, bptt
        self.shuffle, self.generator, self.drop_last = shuffle, generator, False
        self.n_tokens = sum(len(d) for d in self.dataset)
        if self.n_tokens // batch_size < 2:
            raise ValueError(f"LMLoader: {self.n_tokens} tokens cannot fill {batch_size} rows of at least 2 "
                             f"tokens; use a smaller batch_size or more text")

    def __len__(self) -> int:
        return math.ceil((self.n_tokens // self.batch_size - 1) / self.bptt)

    def _lengths(self, total: int) -> list[int]:
        n = len(self)
        if not self.shuffle:
            return [min(self.bptt, total - i * self.bptt) for i in range(n)]
        # Jittered lengths (mostly bptt, sometimes half; +-5%), rescaled so n windows cover the stream.
        base = torch.where(torch.rand(n, generator=self.generator) < 0.95, 1.0, 0.5) * self.bptt
        raw = base * (1 + 0.05 * torch.randn(n, generator=self.generator))
        ends = (raw.clamp_min(1).cumsum(0) / raw.clamp_min(1).sum() * total).round().long().tolist()
        lengths, prev = [], 0
        for e in ends:
            lengths.append(max(1, e - prev))
            prev += lengths[-1]
        lengths[-1] -= prev - total
        return [l for l in lengths if l > 0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.dataset), generator=self.generator).tolist() if self.shuffle \
            else range(len(self.dataset))
        stream = torch.cat([self.dataset[i] for i in order])
        per_row = len(stream) // self.batch_size
        rows = stream[:per_row * self.batch_size].view(self.batch_size, per_row)
        i = 0
        for length in self._lengths(per_row - 1):
            yield rows[:, i:i + length], rows[:, i + 1:i + 1 + length]
            i += length


class TextDataBunch(DataBunch):
    """A DataBunch for text: classifier batches (padded ids, labels) or language-model batches (x, y).

    Keeps the raw texts, labels and split so that `with_block` can re-encode them for another model's
    tokenizer (a pretrained transformer) with the same split.
    """

    def test_dl(self, items: Sequence[Any], with_labels: bool = False, batch_size: int | None = None) -> DataLoader:
        block = self.x_block
        ids = [block.encode(t if not with_labels else t[0]) for t in items]
        labels = [self.y_block.encode(t[1]) for t in items] if with_labels else None
        return DataLoader(_Docs(ids, labels), batch_size=batch_size or 64, shuffle=False,
                          collate_fn=PadCollate(block.pad_idx))

    def show_batch(self, n: int = 6, split: str = "train", width: int = 100, **kwargs: Any) -> list[tuple[str, str]]:
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
    def from_lists(cls, texts: Sequence[str], labels: Sequence[Any] | None = None,
                   valid_idx: Sequence[int] | None = None, valid_pct: float = 0.2, seed: int | None = None,
                   is_lm: bool = False, batch_size: int = 64, bptt: int = 72, block: TextBlock | None = None,
                   max_len: int | None = None, min_freq: int = 3, max_vocab: int = 60000,
                   device: Any = None, num_workers: int = 0, cache_dir: str | Path | None = None,
                   drop_empty: bool = False, sources: Sequence[str] | None = None) -> "TextDataBunch":
        """Build from texts (and labels for classification).

        Args:
            valid_idx: validation indices; otherwise a seeded random `valid_pct` split.
            is_lm: language-model batches (labels are ignored).
            block: how to encode (default `TextBlock(max_len=max_len, min_freq, max_vocab)`).
            drop_empty: drop documents with no tokens (listed in a warning) instead of raising.
            sources: names of the texts (file names, row numbers) used in messages.
        """
        texts = list(texts)
        names = list(sources) if sources is not None else [f"text {i}" for i in range(len(texts))]
        if not is_lm and labels is None:
            raise ValueError("TextDataBunch: classification needs labels (or pass is_lm=True)")
        if labels is not None and len(labels) != len(texts):
            raise ValueError(f"TextDataBunch: {len(texts)} texts but {len(labels)} labels")
        bad = [n for t, n in zip(texts, names) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"TextDataBunch: these entries are not strings: {bad[:5]}")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            listed = ", ".join(names[i] for i in empty[:10])
            if not drop_empty:
                raise ValueError(f"TextDataBunch: {len(empty)} empty document(s): {listed}. Remove them or pass "
                                 f"drop_empty=True to skip them.")
            warnings.warn(f"TextDataBunch: skipped {len(empty)} empty document(s): {listed}")
        keep = [i for i in range(len(texts)) if i not in set(empty)]
        if valid_idx is not None:
            valid_set = set(int(i) for i in valid_idx)
            split = ([j for j, i in enumerate(keep) if i not in valid_set], [j for j, i in enumerate(keep) if i in valid_set])
        else:
            split = RandomSplitter(valid_pct, seed=seed if seed is not None else 0)(keep)
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
        train_idx, valid_idx_ = check_split(*split, len(texts), "TextDataBunch")
        block = block or TextBlock(max_len=None if is_lm else max_len, min_freq=min_freq, max_vocab=max_vocab)
        return cls._build(texts, labels, train_idx, valid_idx_, is_lm, batch_size, bptt, block, device,
                          num_workers, cache_dir, seed)

    @classmethod
    def _build(cls, texts: list[str], labels: list[Any] | None, train_idx: list[int], valid_idx: list[int],
               is_lm: bool, batch_size: int, bptt: int, block: TextBlock, device: Any, num_workers: int,
               cache_dir: str | Path | None, seed: int | None) -> "TextDataBunch":
        device = default_device() if device is None else torch.device(device)
        if isinstance(block, SubwordTextBlock):
            ids = [block.encode(t) for t in texts]
        else:
            docs = block.tokenizer.tokenize_texts(texts, cache_dir=cache_dir)
            block.setup_tokens([docs[i] for i in train_idx])
            ids = [block.ids(d) for d in docs]
            if block.max_len is not None:
                cut = sum(len(d) > block.max_len for d in docs)
                if cut:
                    warnings.warn(f"TextDataBunch: {cut} of {len(docs)} documents are longer than max_len="
                                  f"{block.max_len} tokens and were cut to their first {block.max_len}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if is_lm:
            y_block: TransformBlock = LMTargetBlock(block.vocab_obj.itos if block.vocab_obj else None)
            train_dl: Any = LMLoader([ids[i] for i in train_idx], batch_size, bptt, True, generator)
            valid_dl: Any = LMLoader([ids[i] for i in valid_idx], batch_size, bptt, False) if valid_idx else []
        else:
            y_block = CategoryBlock()
            y_block.setup([labels[i] for i in train_idx])
            if valid_idx:
                y_block.check([labels[i] for i in valid_idx], "validation")
            targets = [y_block.encode(v) for v in labels]
            collate = PadCollate(block.pad_idx)

            def loader(idx: list[int], shuffle: bool) -> DataLoader:
                sampler = BucketBatchSampler([len(ids[i]) for i in idx], batch_size, shuffle, generator)
                return WorkerLoader(_Docs([ids[i] for i in idx], [targets[i] for i in idx]), batch_sampler=sampler,
                                  collate_fn=collate, num_workers=num_workers, pin_memory=device.type == "cuda",
                                  persistent_workers=num_workers > 0)
            train_dl, valid_dl = loader(train_idx, True), loader(valid_idx, False)
        bunch = cls(train_dl, valid_dl, [block, y_block], 1, (), device)
        bunch.texts, bunch.labels, bunch.split = texts, labels, (train_idx, valid_idx)
        bunch.is_lm, bunch.batch_size, bunch.bptt, bunch.seed = is_lm, batch_size, bptt, seed
        bunch.num_workers = num_workers
        return bunch

    def with_block(self, block: TextBlock) -> "TextDataBunch":
        """The same texts, labels and split, encoded by another block (e.g. a transformer's tokenizer)."""
        return type(self)._build(self.texts, self.labels, *self.split, self.is_lm, self.batch_size, self.bptt,
                                 block, self.device, self.num_workers, None, self.seed)

    @classmethod
    def from_csv(cls, path: str | Path, text_col: str = "text", label_col: str = "label",
                 valid_col: str | None = "is_valid", encoding: str | None = None, on_bad: str = "error",
                 **kwargs: Any) -> "TextDataBunch":
        """From a CSV file with a header: texts, labels, and (if the column exists) a validation flag.

        The file is read by `learnkit.data.tables.read_csv`: strict UTF-8 (a BOM accepted) unless `encoding=`
        (e.g. 'latin-1'); undecodable bytes are an error naming the lines. Rows whose label is missing (empty,
        'nan', 'None', 'null'...: `tables.MISSING_LABELS`) are an error naming their lines (on_bad='error'), or
        are left out with a warning naming them (on_bad='skip')."""
        if on_bad not in ("error", "skip"):
            raise ValueError(f"TextDataBunch.from_csv(on_bad={on_bad!r}): use 'error' or 'skip'")
        path = Path(path)
        header, records = read_csv(path, encoding=encoding)
        rows = [dict(zip(header, r)) for r in records]
        if not rows:
            raise ValueError(f"{path}: no rows")
        missing = [c for c in (text_col, None if kwargs.get("is_lm") else label_col) if c and c not in header]
        if missing:
            raise KeyError(f"{path}: no column(s) {missing}; columns are {header}. Pass text_col=/label_col=")
        if not kwargs.get("is_lm"):
            li = header.index(label_col)
            lines = missing_labels(records, li)
            if lines:
                shown, gone = ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else ""), set(lines)
                cells = sorted({repr(r[li] if len(r) > li else "") for r in records if r.line in gone})
                if on_bad == "error":
                    raise ValueError(f"{path}: {len(lines)} row(s) have no label in column {label_col!r} (line(s) "
                                     f"{shown}; cells {', '.join(cells)}): they would become a class of their own. "
                                     "Fill them in, or pass on_bad='skip' to leave those rows out.")
                warnings.warn(f"TextDataBunch.from_csv: left out {len(lines)} row(s) of {path} without a label in "
                              f"column {label_col!r}: line(s) {shown}")
                keep = [i for i, r in enumerate(records) if r.line not in gone]
                records, rows = [records[i] for i in keep], [rows[i] for i in keep]
        texts = [r.get(text_col) for r in rows]
        labels = None if kwargs.get("is_lm") else [r.get(label_col) for r in rows]
        if valid_col and valid_col in header and "valid_idx" not in kwargs:
            kwargs["valid_idx"] = [i for i, r in enumerate(rows)
                                   if (r.get(valid_col) or "").strip().lower() in ("1", "true", "yes", "valid")]
        return cls.from_lists(texts, labels, sources=[f"{path.name} line {r.line}" for r in records], **kwargs)

    @classmethod
    def from_folder(cls, path: str | Path, train: str = "train", valid: str = "valid", **kwargs: Any) -> "TextDataBunch":
        """From `path/train/<label>/*.txt` and `path/valid/<label>/*.txt` (or, with is_lm=True, any .txt
        files below path/train and path/valid). Undecodable bytes are replaced, counted and reported."""
        path = Path(path)
        texts, labels, valid_idx, names, damaged = [], [], [], [], []
        for split in (train, valid):
            folder = path / split
            if not folder.is_dir():
                raise FileNotFoundError(f"TextDataBunch.from_folder: {folder} is not a folder; expected "
                                        f"{path}/{train}/<label>/*.txt and {path}/{valid}/<label>/*.txt")
            for file in sorted(folder.rglob("*.txt")):
                text, bad = read_text_file(file)
                if bad:
                    damaged.append((str(file), bad))
                if split == valid:
                    valid_idx.append(len(texts))
                texts.append(text)
                labels.append(file.parent.name)
                names.append(str(file))
        if not texts:
            raise ValueError(f"TextDataBunch.from_folder: no .txt files under {path}/{train} or {path}/{valid}")
        if damaged:
            warnings.warn(f"TextDataBunch.from_folder: {len(damaged)} file(s) were not valid UTF-8; "
                          f"{sum(n for _, n in damaged)} undecodable byte(s) replaced by U+FFFD, e.g. {damaged[:3]}")
        return cls.from_lists(texts, None if kwargs.get("is_lm") else labels, valid_idx=valid_idx, sources=names,
                              **kwargs)
