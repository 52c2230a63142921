"""learnkit's text one-liner against a plain Hugging Face `Trainer` script doing the same fine-tune (same model
folder, epochs, batch size, max length, peak learning rate, bf16) on the 6-class fortunes split: seconds end to end
(a fresh Python process each, imports included) and validation accuracy, side by side in one run.

Models: all-MiniLM-L6-v2 (learnkit's built-in BERT and its transformers path) and a small randomly initialised
DeBERTa-v3-style config with a Unigram tokenizer trained here on the training texts.

    python benchmarks/hf_vs_trainer.py --minilm DIR --csv fortunes.csv [--epochs 3] [--repeat 2] [--out results.json]
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_fortunes(csv_path: str) -> tuple[list[str], list[str], list[int]]:
    """(texts, labels, validation indices) of the CSV written by learnkit.text.corpora.write_fortunes_csv."""
    import csv
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return ([r["text"] for r in rows], [r["label"] for r in rows],
            [i for i, r in enumerate(rows) if r["is_valid"].strip().lower() in ("1", "true", "yes", "valid")])


def learnkit_worker(folder: str, arch: str, csv_path: str, epochs: int, lr: float, batch_size: int, max_len: int,
                    recipe: str, seed: int = 0) -> dict:
    from learnkit import set_seed
    from learnkit.text import TextDataBunch, text_classifier_learner
    set_seed(seed)
    texts, labels, valid = read_fortunes(csv_path)
    data = TextDataBunch.from_lists(texts, labels, valid_idx=valid, batch_size=batch_size, seed=seed)
    learn = text_classifier_learner(data, arch, weights=folder, max_len=max_len, progress=False)
    if recipe == "fit_one_cycle":  # the Trainer's fine-tune: everything trained from the start, one schedule
        learn.fit_one_cycle(epochs, lr, pct_start=0.1)
    else:  # the default transfer recipe
        learn.fine_tune(epochs)
    # the last epoch's validation (the Trainer script predicts once, after training; a second pass would count twice)
    graphs = {k: learn.cuda_graph_report.get(k) for k in ("used", "replays", "eager_batches", "reason")}
    return {"accuracy": round(learn.history.epoch_records[-1]["accuracy"], 4), "cuda_graphs": graphs}


def trainer_worker(folder: str, csv_path: str, epochs: int, lr: float, batch_size: int, max_len: int,
                   mark=lambda name: None, make_callbacks=lambda: [], seed: int = 0) -> dict:
    """The plain `Trainer` script. `mark(name)` is called after each step (text_deberta_timeline.py times them);
    `make_callbacks()` gives extra TrainerCallbacks (called once transformers is imported)."""
    # The repo's datasets/ folder would shadow Hugging Face's `datasets`, which Trainer imports when installed.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    import torch
    mark("import torch")
    import numpy as np
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)
    mark("import transformers (Trainer, Auto*)")
    set_seed(seed)
    texts, labels, valid = read_fortunes(csv_path)
    classes = sorted(set(labels))
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, truncation=True, max_length=max_len)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": classes.index(labels[i])} for i in range(len(texts))]
    valid_set = set(valid)
    train_rows = [r for i, r in enumerate(rows) if i not in valid_set]
    valid_rows = [rows[i] for i in valid]
    mark("tokenizer + encode")
    # float32 master weights under bf16 autocast, as learnkit trains (a float16 checkpoint would load as float16)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(classes), dtype=torch.float32)
    mark("from_pretrained")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, per_device_eval_batch_size=128,
                                 num_train_epochs=epochs, learning_rate=lr, weight_decay=0.01,
                                 warmup_steps=int(0.1 * epochs * -(-len(train_rows) // batch_size)),
                                 bf16=torch.cuda.is_available(), logging_strategy="no", save_strategy="no", eval_strategy="no",
                                 report_to=[], seed=seed, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=DataCollatorWithPadding(tok),
                          callbacks=make_callbacks())
        mark("TrainingArguments + Trainer()")
        trainer.train()
        mark("train returned")
        predictions = trainer.predict(valid_rows)
        mark("predict")
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {"accuracy": round(accuracy, 4)}


def write_deberta(folder: Path, csv_path: str) -> Path:
    """A small DeBERTa-v3-style encoder (relative positions, no absolute ones), random weights, and a Unigram
    tokenizer trained on the training texts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoModel, DebertaV2Config, PreTrainedTokenizerFast
    texts, _, valid = read_fortunes(csv_path)
    valid_set = set(valid)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok.train_from_iterator([t for i, t in enumerate(texts) if i not in valid_set],
                            trainers.UnigramTrainer(vocab_size=8000, special_tokens=specials, unk_token="[UNK]"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                            unk_token="[UNK]", mask_token="[MASK]", model_max_length=512).save_pretrained(folder)
    config = DebertaV2Config(vocab_size=tok.get_vocab_size(), hidden_size=256, num_hidden_layers=4,
                             num_attention_heads=4, intermediate_size=1024, max_position_embeddings=512,
                             relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
                             share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                             position_biased_input=False, pad_token_id=0)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minilm"), parser.add_argument("--csv", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="run each model's contenders this many times, in turn")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds: each contender runs once per seed")
    parser.add_argument("--only", default=None, help="comma-separated contenders to run (e.g. trainer,"
                        "learnkit:transformers:fit_one_cycle); default all")
    parser.add_argument("--models", default="minilm,deberta", help="comma-separated: minilm (needs --minilm), deberta")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one contender in this fresh process
        shape = dict(csv_path=args.csv, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                     max_len=args.max_len, seed=args.seed)
        if args.worker == "trainer":
            row = trainer_worker(args.folder, **shape)
        else:
            _, arch, recipe = args.worker.split(":")
            row = learnkit_worker(args.folder, arch, recipe=recipe, **shape)
        row["seconds_inside"] = round(time.perf_counter() - T0, 2)
        print("RESULT " + json.dumps(row), flush=True)
        return
    import torch
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models.split(",")
        deberta = write_deberta(Path(tmp) / "deberta-v3-small-random", args.csv) if "deberta" in models else None
        minilm = args.minilm if "minilm" in models else None
        plans = [(minilm, "all-MiniLM-L6-v2", 1e-4, ["trainer", "learnkit:bert:fit_one_cycle",
                                                          "learnkit:transformers:fit_one_cycle",
                                                          "learnkit:bert:fine_tune",
                                                          "learnkit:transformers:fine_tune"]),
                 (deberta and str(deberta), "DeBERTa-v3-style random (256 x 4)", 5e-4, ["trainer",
                                                                            "learnkit:transformers:fit_one_cycle"])]
        for folder, name, lr, contenders in plans:
            if folder is None:
                continue
            chosen = [c for c in contenders if args.only is None or c in args.only.split(",")]
            for who, seed in [(c, int(s)) for _ in range(args.repeat) for s in args.seeds.split(",") for c in chosen]:
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, __file__, "--worker", who, "--folder", folder, "--csv", args.csv,
                                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                                       "--max-len", str(args.max_len), "--lr", str(lr), "--seed", str(seed)],
                                      capture_output=True, text=True)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                row = {"model": name, "contender": who, "seed": seed, "epochs": args.epochs, "batch_size": args.batch_size,
                       "max_len": args.max_len, "lr": lr, "seconds_end_to_end": round(time.perf_counter() - start, 2),
                       **(json.loads(line[7:]) if line else {"error": proc.stderr[-1500:]})}
                results.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                                    else "cpu", "results": results}, indent=1))


if __name__ == "__main__":
    main()
