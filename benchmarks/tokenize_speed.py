"""Tokenization throughput: learnkit's Tokenizer vs fastai's default (spaCy word tokenizer + fastai rules),
side by side in one run, on the same corpus (the KJV bible verses + the fortunes classification texts).

Command (needs fastai and spaCy in the same environment as learnkit, e.g. a scratch venv):
    python benchmarks/tokenize_speed.py [--workers 1 2]

Tokens/s counts each library's own output tokens (rule tokens such as xxmaj included) over wall time;
the ratio is of documents/s, which does not depend on how a library splits words.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

from learnkit.text.corpora import bible_kjv_verses, fortunes_classification
from learnkit.text.tokenizer import Tokenizer


def corpus() -> list[str]:
    return bible_kjv_verses() + [r["text"] for r in fortunes_classification()]


def time_learnkit(texts: list[str], workers: int) -> tuple[float, int]:
    tok = Tokenizer()
    start = time.perf_counter()
    docs = tok.tokenize_texts(texts, n_workers=workers)
    return time.perf_counter() - start, sum(len(d) for d in docs)


def time_fastai(texts: list[str], workers: int) -> tuple[float, int]:
    from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults, parallel_tokenize
    start = time.perf_counter()
    if workers <= 1:
        tok = TokenizeWithRules(SpacyTokenizer(), rules=defaults.text_proc_rules)
        docs = list(tok(texts))
    else:
        docs = [d for _, d in parallel_tokenize(texts, SpacyTokenizer(), n_workers=workers)]
    return time.perf_counter() - start, sum(len(d) for d in docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    texts = corpus()
    print(f"corpus: {len(texts)} documents, {sum(map(len, texts)):,} characters | {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores | python {platform.python_version()}")
    time_learnkit(texts[:200], 1)
    time_fastai(texts[:200], 1)  # warm-up: spaCy's model/tables load
    rows = []
    for workers in args.workers:
        for name, fn in (("learnkit", time_learnkit), ("fastai+spaCy", time_fastai)):
            seconds, tokens = fn(texts, workers)
            rows.append((name, workers, seconds, tokens))
            print(f"  {name:<13} workers={workers}: {seconds:7.2f} s, {tokens:,} tokens, "
                  f"{tokens / seconds:,.0f} tokens/s, {len(texts) / seconds:,.0f} docs/s", flush=True)
    print("\nlibrary        workers   seconds   tokens/s     docs/s   speed-up (docs/s vs fastai, same workers)")
    for name, workers, seconds, tokens in rows:
        ref = next(s for n, w, s, _ in rows if n == "fastai+spaCy" and w == workers)
        print(f"{name:<14} {workers:>7} {seconds:>9.2f} {tokens / seconds:>10,.0f} {len(texts) / seconds:>10,.0f}"
              f"   {ref / seconds:>5.1f}x")


if __name__ == "__main__":
    main()
