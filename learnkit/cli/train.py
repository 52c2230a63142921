"""`learnkit train`, `learnkit lr-find` and `learnkit predict`: text classification from a CSV, or image
classification from a folder (the image half is cli/vision.py), on the command line. Part of the cli layer
(imported by cli/main.py only); it imports from the library, never the other way round.

Example:
    $ learnkit train datasets/fortunes-sample/fortunes.csv --epochs 3 --lr auto --out runs/fortunes
    $ learnkit predict runs/fortunes/model note.txt --text "The meeting is at nine."
    $ learnkit train datasets/fashion-mnist-sample/png --arch resnet18 --no-pretrained --grayscale --out runs/fm
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from learnkit.cli.args import CliError, fraction, learning_rate, one_line, positive_int, seed
from learnkit.cli.record import fingerprint, write_run_record

__all__ = ["add_commands", "run_command", "COMMANDS", "SMALL_AWD_LSTM"]

COMMANDS = ("train", "lr-find", "predict")
SMALL_AWD_LSTM = {"emb_size": 128, "hidden_size": 256, "n_layers": 2}  # CPU-sized; --big uses the library's


def add_commands(commands: Any) -> None:
    """Add the train, lr-find and predict sub-parsers to `commands` (cli/main.py's subparsers action)."""
    train = commands.add_parser(
        "train", help="train a text classifier (CSV) or an image classifier (folder); write plots, model, run.json",
        description="Train a classifier on PATH: a CSV with a header (text and label columns, optionally "
                    "is_valid; otherwise a seeded random --valid-pct split), or a folder of images (train/ and "
                    "valid/ sub-folders of class folders, or class folders only). Writes loss.png, lr_find.png "
                    "(with --lr auto), the exported model (model/) and run.json to --out.")
    finder = commands.add_parser(
        "lr-find", help="run the learning-rate finder on a CSV or image folder; print suggestions, save lr_find.png",
        description="Run the learning-rate finder for a classifier on PATH (as for 'train'), print "
                    "the valley, minimum and steepest suggestions and save lr_find.png to --out.")
    for sub, out in ((train, "runs/train"), (finder, "runs/lr-find")):
        sub.add_argument("path", metavar="PATH", type=Path, help="a CSV file with a header, or an image folder")
        sub.add_argument("--arch", default=None,
                         help="text: 'awd_lstm' (default) or the folder of a BERT-family model; images: a torchvision "
                              "name, 'efficientnet_lite0' or 'resnet9' (default: resnet34)")
        sub.add_argument("--big", action="store_true",
                         help="CSV: full-size AWD-LSTM instead of the small CPU config " + str(SMALL_AWD_LSTM))
        sub.add_argument("--valid-pct", type=fraction, default=0.2,
                         help="validation share when the CSV has no is_valid column or the image folder no "
                              "train/ and valid/ sub-folders (default: 0.2)")
        sub.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default: 32)")
        sub.add_argument("--text-col", default="text", help="CSV: text column (default: text)")
        sub.add_argument("--label-col", default="label", help="CSV: label column (default: label)")
        sub.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
        sub.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")
        images = sub.add_argument_group("image folders")
        images.add_argument("--no-pretrained", action="store_true", help="train from scratch (no ImageNet weights)")
        images.add_argument("--weights", default=None, help="pretrained weights: a local file or URL instead of "
                                                            "torchvision's cache")
        images.add_argument("--size", type=positive_int, default=None, help="resize batches to SIZE px on the device")
        images.add_argument("--augment", action="store_true", help="GPU batch augmentation (aug_transforms)")
        images.add_argument("--grayscale", action="store_true", help="one channel instead of RGB")
        images.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (listed) "
                                                                     "instead of stopping")
    train.add_argument("--epochs", type=positive_int, default=3, help="epochs (default: 3)")
    train.add_argument("--lr", type=learning_rate, default="auto",
                       help="learning rate, or 'auto' for the lr_find valley suggestion (default: auto)")
    predict = commands.add_parser(
        "predict", help="classify texts or images with an exported model; print NAME, label and probability "
                        "per input",
        description="Load MODEL (a folder written by 'learnkit train' or learn.export()) and print "
                    "NAME<TAB>label<TAB>probability for each FILE (a text file for a text model, an image for an "
                    "image model) and, for a text model, each --text value (named text-1, text-2, ...).")
    predict.add_argument("model", metavar="MODEL", type=Path, help="exported model folder")
    predict.add_argument("files", metavar="FILES", nargs="*", type=Path, help="text files or images to classify")
    predict.add_argument("--text", action="append", default=[], help="a text to classify (repeatable; text "
                                                                     "models)")


def run_command(args: argparse.Namespace) -> int:
    """Run train / lr-find / predict. Returns the exit status; bad data and arguments raise `CliError`."""
    if args.command == "predict":
        return predict(args)
    return train(args, find_only=args.command == "lr-find")


# ------------------------------------------------------------------------------------------- train, lr-find
def _check_inputs(args: argparse.Namespace) -> Path:
    path = Path(args.path).expanduser()
    if path.suffix.lower() != ".csv" and path.is_file():
        raise CliError(f"{path} is not a .csv file: train takes a text CSV or a folder of images")
    if not path.exists():
        raise CliError(f"{path}: no such file or folder")
    if path.is_file() and args.arch is None:
        args.arch = "awd_lstm"
    if path.is_file() and args.arch != "awd_lstm":
        from learnkit.text.learner import find_model_dir
        try:
            find_model_dir(args.arch)
        except FileNotFoundError as e:
            raise CliError(f"--arch: {e}") from None
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a folder; pass another --out")
    return path


def _build(args: argparse.Namespace, path: Path, out: Path) -> Any:
    if path.is_dir():
        from learnkit.cli.vision import build_image_learner
        return build_image_learner(args, path, out)
    from learnkit.core import set_seed
    from learnkit.text import TextDataBunch, text_classifier_learner
    set_seed(args.seed)
    try:
        data = TextDataBunch.from_csv(path, text_col=args.text_col, label_col=args.label_col,
                                      valid_pct=args.valid_pct, seed=args.seed, batch_size=args.batch_size)
    except KeyError as e:  # a missing column; KeyError's str() would add quotes
        message = str(e.args[0]) if e.args else str(e)
        raise CliError(message.replace("Pass text_col=/label_col=", "Pass --text-col/--label-col")) from None
    except (ValueError, TypeError, OSError, csv.Error) as e:
        raise CliError(one_line(e) if path.name in str(e) else f"cannot use {path}: {one_line(e)}") from None
    config = None if args.big or args.arch != "awd_lstm" else SMALL_AWD_LSTM
    try:
        weights = None if args.arch == "awd_lstm" else args.arch  # --arch: awd_lstm or a BERT-family model folder
        return text_classifier_learner(data, weights=weights, config=config, path=out, progress=not args.no_progress)
    except (ValueError, OSError, KeyError) as e:
        raise CliError(f"cannot build a {args.arch!r} classifier: {e}") from None


def _lr_find(learn: Any) -> Any:
    suggestions = learn.lr_find(show_plot=False)  # lr_find detaches the progress bar during its sweep itself
    print(f"lr_find: valley {suggestions.valley:.2e}, minimum {suggestions.minimum:.2e}, "
          f"steepest {suggestions.steepest:.2e}")
    return suggestions


def _save(fig: Any, file: Path) -> None:
    import matplotlib.pyplot as plt
    fig.savefig(file, dpi=100, bbox_inches="tight")
    plt.close(fig)


def train(args: argparse.Namespace, find_only: bool = False) -> int:
    """`learnkit train` (or, with find_only, `learnkit lr-find`) on a text CSV or an image folder."""
    start = time.perf_counter()
    path = _check_inputs(args)
    out = Path(args.out).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create the output folder {out}: {e.strerror or e}", status=1) from None
    import matplotlib
    matplotlib.use("Agg")  # files only: no window, no display needed
    learn = _build(args, path, out)
    data = learn.data
    from learnkit.data.bunch import n_items
    train_n, valid_n = n_items(data.train_dl), n_items(data.valid_dl)
    images = path.is_dir()
    print(f"learnkit {args.command}: {train_n} training and {valid_n} validation {'images' if images else 'texts'} "
          f"from {path}, "
          f"{len(data.classes)} classes, arch {args.arch}, device {data.device}, seed {args.seed}")
    suggestions = None
    if find_only or args.lr == "auto":
        suggestions = _lr_find(learn)
        _save(learn.plot_lr_find(), out / "lr_find.png")
        if find_only:
            print(f"wrote {out / 'lr_find.png'}")
            return 0
    lr = suggestions.valley if suggestions is not None else float(args.lr)
    print(f"training {args.epochs} epoch(s) with lr={lr:.2e}")
    fit_start = time.perf_counter()
    if args.arch == "awd_lstm" or (images and getattr(learn, "pretrained_source", None) is None):
        learn.unfreeze()
        learn.fit_one_cycle(args.epochs, lr)
    else:
        learn.fine_tune(args.epochs, base_lr=lr)
    fit_seconds = time.perf_counter() - fit_start
    _save(learn.plot_loss(), out / "loss.png")
    learn.export(out / "model")
    record = write_run_record(out, "train", learn, {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"path": str(path), "sha256": fingerprint(path),
                 "train_items": train_n, "valid_items": valid_n, "classes": list(data.classes)},
        "model_config": SMALL_AWD_LSTM if args.arch == "awd_lstm" and not args.big else None,
        "lr": lr, "lr_find": suggestions._asdict() if suggestions is not None else None,
    }, {"fit": fit_seconds}, start, ["loss.png"] + (["lr_find.png"] if suggestions is not None else []) + ["model/"])
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record["metrics"].items())
    print(f"{shown}; {record['seconds']['total']:.1f} s; wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------------ predict
def predict(args: argparse.Namespace) -> int:
    """`learnkit predict MODEL FILES... [--text ...]`: one NAME<TAB>label<TAB>probability line per input."""
    if not args.files and not args.text:
        raise CliError("nothing to classify; pass text (or image) files and/or --text \"...\"")
    predictor = _load(args.model)
    kind = type(predictor.blocks[0]).__name__
    if kind == "ImageBlock":
        from learnkit.cli.vision import image_inputs, image_kind
        mode = getattr(predictor.blocks[0], "mode", None)
        takes = f"image files (read as {'grayscale' if mode == 'L' else mode or 'RGB'})"
        for name, file in image_inputs(list(args.files), list(args.text), args.model):
            if image_kind(file) is None and file.suffix.lower() in (".txt", ".csv", ".json", ".md", ""):
                raise CliError(f"{file} is not an image, but {args.model} is an image model: it takes {takes}; "
                               "pass image files (or a text model for text)")
            try:
                label, _, probs = predictor.predict(file)
            except (ValueError, OSError) as e:
                text = one_line(e) if str(file) in str(e) else f"cannot classify {file}: {one_line(e)}"
                raise CliError(f"{text} ({args.model} takes {takes})") from None
            print(f"{name}\t{label}\t{float(probs.max()):.4f}")
        return 0
    if kind not in ("TextBlock", "SubwordTextBlock"):
        raise CliError(f"{args.model} takes tensors (its input is a {kind}), and `learnkit predict` takes image files "
                       f"or text; in Python: load_learner('{args.model}').predict(tensor), or retrain it on image "
                       "files (e.g. `learnkit demo` or ImageDataBunch.from_folder) to predict from the command line")
    items = [(str(file), _read_text(file, args.model)) for file in args.files]
    items += [(f"text-{i}", text) for i, text in enumerate(args.text, 1)]
    for name, text in items:
        label, _, probs = predictor.predict(text)
        print(f"{name}\t{label}\t{float(probs.max()):.4f}")
    return 0


def _read_text(file: Path, model: Path) -> str:
    """The text of `file` for a text model: a regular file that is not an image (by its first bytes)."""
    from learnkit.cli.vision import image_kind
    from learnkit.text.data import read_text_file
    file = Path(file)
    if not file.exists():
        raise CliError(f"{file}: no such file")
    if not file.is_file():
        raise CliError(f"{file} is not a regular file (a folder, FIFO or device); pass text files")
    kind = image_kind(file)
    if kind is not None:
        raise CliError(f"{file} is a {kind} image, but {model} is a text model; pass text files (or "
                       "--text \"...\"), or an image model")
    try:
        return read_text_file(file)[0]
    except OSError as e:
        raise CliError(f"cannot read {file}: {e.strerror or e}") from None


def _load(model: Path) -> Any:
    """`load_learner(model)`, every failure one line that names the file at fault (never a traceback)."""
    from learnkit.export import load_learner
    try:
        return load_learner(model)
    except OSError as e:  # a file that cannot be read: the exception names it
        raise CliError(one_line(e) if e.filename is None else f"cannot read {e.filename}: {e.strerror or e}") \
            from None
    except (KeyError, TypeError, AttributeError) as e:  # a recipe edited by hand, or a weights file
        raise CliError(_damaged(Path(model), e)) from None
    except Exception as e:  # load_learner's own errors name the damaged file (recipe or weights)
        text = one_line(e)
        raise CliError(text if str(model) in text else f"cannot load the model in {model} ({type(e).__name__}: "
                       f"{text}); re-export it") from None


def _damaged(model: Path, e: BaseException) -> str:
    """Which file of a bundle is damaged, for an error that does not say: the weights file when it does not read
    on its own, else the recipe."""
    import json

    from learnkit.core.serialization import load_tensors
    recipe = model / "recipe.json"
    try:
        weights = model / json.loads(recipe.read_text(encoding="utf-8"))["weights"]["file"]
    except Exception:  # the recipe itself does not say where the weights are
        weights = None
    if weights is not None and weights.is_file():  # a regular file only: never open a FIFO or a device
        try:
            load_tensors(weights)
        except Exception as w:
            return f"{weights} is damaged ({type(w).__name__}: {one_line(w)}); re-export the model"
    return f"{recipe} is damaged ({type(e).__name__}: {one_line(e)}); re-export the model"
