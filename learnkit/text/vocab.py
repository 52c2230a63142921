"""Vocab: token ↔ id, built from training tokens (min_freq, max_vocab, special tokens first)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from learnkit.text.tokenizer import PAD, SPECIAL_TOKENS, UNK

__all__ = ["Vocab"]


class Vocab:
    """An ordered list of tokens. `xxunk` is id 0 and `xxpad` id 1; unknown tokens map to 0.

    Example:
        >>> vocab = Vocab.build([["xxbos", "a", "b", "a"]], min_freq=1)
        >>> vocab.numericalize(["a", "zzz"]).tolist()
        [9, 0]
    """

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        if self.itos[:2] != [UNK, PAD]:
            raise ValueError(f"Vocab: the first two tokens must be {UNK!r} and {PAD!r}, got {self.itos[:2]}")
        if len(set(self.itos)) != len(self.itos):
            dup = [t for t, n in Counter(self.itos).items() if n > 1]
            raise ValueError(f"Vocab: duplicate tokens {dup[:5]}")
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, docs: Iterable[Sequence[str]], min_freq: int = 3, max_vocab: int = 60000,
              specials: Sequence[str] = SPECIAL_TOKENS) -> "Vocab":
        """Most frequent tokens first (ties alphabetical), those seen fewer than `min_freq` times dropped,
        at most `max_vocab` tokens; padded with unused `xxfake` tokens to a multiple of 8 (faster matmuls)."""
        counts = Counter(tok for doc in docs for tok in doc)
        specials = list(dict.fromkeys([UNK, PAD] + list(specials)))
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in specials),
                      key=lambda t: (-counts[t], t))
        itos = specials + kept[:max(0, max_vocab - len(specials))]
        itos += [f"xxfake{i}" for i in range(-len(itos) % 8)]
        return cls(itos)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_idx(self) -> int:
        return 1

    def numericalize(self, tokens: Sequence[str]) -> torch.Tensor:
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.itos[i] if 0 <= i < len(self.itos) else UNK for i in ids]

    def save(self, path: str | Path) -> None:
        from learnkit.core.serialization import atomic_write
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps({"format": "learnkit-vocab-1", "itos": self.itos}))

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["itos"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a learnkit vocab file ({e}); save one with Vocab.save") from None

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {self.itos[:12]}...)"
