"""A fast rule-based word tokenizer with fastai-style rules and special tokens, parallel tokenization of
large corpora with an on-disk cache keyed by content, and `decode` for display.

Rules, in order: HTML fixes (entities, <br />), characters repeated 4+ times → `xxrep n c`, words
repeated 3+ times → `xxwrep n w`, spaces around / # \\ and runs of spaces collapsed; then word splitting
(clitics such as n't and 's are their own tokens); then `xxup` before ALL-CAPS words and `xxmaj` before
Capitalised ones, everything lower-cased, and `xxbos` (and optionally `xxeos`) around the document.
"""
from __future__ import annotations

import gzip
import hashlib
import html
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["Tokenizer", "SPECIAL_TOKENS", "UNK", "PAD", "BOS", "EOS", "FLD", "REP", "WREP", "UP", "MAJ"]

UNK, PAD, BOS, EOS, FLD, REP, WREP, UP, MAJ = ("xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep",
                                               "xxup", "xxmaj")
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, REP, WREP, UP, MAJ]
RULES_VERSION = "1"  # bump when a rule changes: the cache key includes it

_BR = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_REP = re.compile(r"(\S)(\1{3,})")
_WREP = re.compile(r"(?:\s|^)(\w+)((?:\s+\1\b){2,})", re.UNICODE)
_SPEC = re.compile(r"([/#\\])")
_SPACES = re.compile(r" {2,}")
_TOKEN = re.compile(r"""
      \w+(?=n't\b)                 # "do" of "don't"
    | n't\b                        # the clitic itself
    | '(?:s|re|ve|ll|d|m)\b        # 's 're 've 'll 'd 'm
    | \d+(?:[.,:]\d+)+             # 3.14  1,000  12:30
    | \w+                          # words and numbers
    | [^\w\s]                      # any other single character: punctuation, symbols, emoji
""", re.UNICODE | re.VERBOSE | re.IGNORECASE)


def _replace_rep(m: re.Match) -> str:
    return f" {REP} {len(m.group(0))} {m.group(1)} "


def _replace_wrep(m: re.Match) -> str:
    count = len(m.group(2).split()) + 1
    return f" {WREP} {count} {m.group(1)} "


class Tokenizer:
    """Text → list of tokens.

    Args:
        add_bos / add_eos: put `xxbos` / `xxeos` around each document.
        lower: lower-case (after marking case with xxup/xxmaj).
        max_chars: characters kept per document (None: all); longer ones are cut and counted.

    Example:
        >>> Tokenizer()("I LOVE it!!!! Don't you?")
        ['xxbos', 'xxmaj', 'i', 'xxup', 'love', 'it', 'xxrep', '4', '!', 'xxmaj', 'do', "n't", 'you', '?']
    """

    def __init__(self, add_bos: bool = True, add_eos: bool = False, lower: bool = True,
                 max_chars: int | None = None):
        self.add_bos, self.add_eos, self.lower, self.max_chars = add_bos, add_eos, lower, max_chars

    # --- one document ---
    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer: expected a str, got {type(text).__name__} ({str(text)[:60]!r})")
        if self.max_chars is not None:
            text = text[:self.max_chars]
        text = html.unescape(_BR.sub("\n", text)).replace("\xa0", " ")
        text = _REP.sub(_replace_rep, text)
        text = _WREP.sub(_replace_wrep, text)
        text = _SPACES.sub(" ", _SPEC.sub(r" \1 ", text))
        out = [BOS] if self.add_bos else []
        for tok in _TOKEN.findall(text):
            if len(tok) > 1 and tok.isupper():
                out += [UP, tok.lower() if self.lower else tok]
            elif tok[:1].isupper() and (len(tok) == 1 or tok[1:].islower()):
                out += [MAJ, tok.lower() if self.lower else tok]
            else:
                out.append(tok.lower() if self.lower else tok)
        if self.add_eos:
            out.append(EOS)
        return out

    # --- many documents ---
    def tokenize_texts(self, texts: Sequence[str], n_workers: int | None = None, cache_dir: str | Path | None = None,
                       chunk_size: int = 2000) -> list[list[str]]:
        """Tokenize a corpus, in parallel for large ones, with an optional on-disk cache.

        The cache file is named by a hash of the rules, the settings and every text, so a changed corpus
        or rule never reuses stale tokens.
        """
        texts = list(texts)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"tokens-{self.cache_key(texts)}.txt.gz"
            if cache.exists():
                with gzip.open(cache, "rt", encoding="utf-8") as f:
                    docs = [line.rstrip("\n").split(" ") if line != "\n" else [] for line in f]
                if len(docs) == len(texts):
                    return docs
        workers = n_workers if n_workers is not None else min(os.cpu_count() or 1, 8)
        if workers <= 1 or len(texts) < 2 * chunk_size:
            docs = [self(t) for t in texts]
        else:
            chunks = [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
            with ProcessPoolExecutor(workers) as pool:
                docs = [doc for part in pool.map(self._tokenize_chunk, chunks) for doc in part]
        if cache is not None:
            from learnkit.core.serialization import atomic_write
            with atomic_write(cache) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
                f.writelines(" ".join(doc) + "\n" for doc in docs)
        return docs

    def _tokenize_chunk(self, texts: list[str]) -> list[list[str]]:
        return [self(t) for t in texts]

    def cache_key(self, texts: Iterable[str]) -> str:
        h = hashlib.sha256(repr((RULES_VERSION, self.to_config())).encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()[:32]

    # --- display ---
    @staticmethod
    def decode(tokens: Sequence[str]) -> str:
        """Readable text from tokens: undo xxmaj/xxup/xxrep/xxwrep, drop xxbos/xxeos/xxpad, glue punctuation."""
        words: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok in (BOS, EOS, PAD, FLD):
                i += 1
                continue
            if tok == MAJ:
                words.append(nxt if nxt.startswith("xx") else nxt[:1].upper() + nxt[1:])  # never "Xxunk"
                i += 2
            elif tok == UP:
                words.append(nxt.upper())
                i += 2
            elif tok in (REP, WREP) and i + 2 < len(tokens) and tokens[i + 1].isdigit():
                n, what = int(tokens[i + 1]), tokens[i + 2]
                words.append(what * n if tok == REP else " ".join([what] * n))
                i += 3
            else:
                words.append(tok)
                i += 1
        text = ""
        for w in words:
            glue = not text or w == "n't" or w.startswith("'") or (w != "" and all(c in ".,!?;:)]}%" for c in w))
            text += w if glue or text.endswith(("(", "[", "{", "$", "#", "/")) else " " + w
        return text

    # --- export ---
    def to_config(self) -> dict:
        return {"type": "Tokenizer", "add_bos": self.add_bos, "add_eos": self.add_eos, "lower": self.lower,
                "max_chars": self.max_chars}

    @classmethod
    def from_config(cls, config: dict) -> "Tokenizer":
        return cls(**{k: v for k, v in config.items() if k != "type"})

    def __repr__(self) -> str:
        return f"Tokenizer(add_bos={self.add_bos}, add_eos={self.add_eos}, lower={self.lower})"
