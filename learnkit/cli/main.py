"""The `learnkit` command. `learnkit demo` trains a small CNN on the bundled Fashion-MNIST sample and
writes its plots, exported model and a run record: the shortest check that an install works end to end.
`learnkit datasets list|get NAME` lists the named data sets and fetches one into the cache.
`learnkit train|lr-find CSV` and `learnkit predict MODEL FILES...` train, tune and use a text classifier
(learnkit/cli_train.py).

Example:
    $ python -m learnkit demo --out runs/demo --epochs 3
    $ learnkit datasets get fashion-mnist --offline
    $ learnkit train datasets/fortunes-sample/fortunes.csv --epochs 3 --out runs/train
    $ learnkit predict runs/train/model --text "Never trust a computer you can't throw out a window."
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from learnkit.cli import train as cli_train

__all__ = ["main", "SAMPLE_DIR"]

SAMPLE_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz", "classes.txt")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (after scaling to [0, 1])


# The sample lives in the source checkout next to the package (<repo>/datasets/...), not inside the wheel.
# This file is learnkit/cli/main.py, so this is <repo>/datasets/...
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "datasets" / "fashion-mnist-sample"
REBUILD = "python datasets/build_fashion_mnist_sample.py  (needs: apt-get install dataset-fashion-mnist)"


class _UsageError(Exception):
    """A bad command line; main() prints it as one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump) and returns control to `main` (no sys.exit)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**63-1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="learnkit", description="learnkit command line.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo", help="train a small CNN on the bundled Fashion-MNIST sample and write plots, model and run.json",
        description="Train simple_cnn on the Fashion-MNIST sample (2000 train / 500 test images): lr_find, "
                    "then fit_one_cycle; write loss.png, lr_find.png, sched.png, confusion_matrix.png, the "
                    "exported model (model/) and run.json to --out.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=_positive_int, default=3, help="epochs of fit_one_cycle (default: 3)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars (the final summary still prints)")
    datasets = commands.add_parser(
        "datasets", help="list the named data sets, or fetch one into the cache and print its folder",
        description="Named data sets with checksums and licences. 'get' takes each file from the cache, a mirror "
                    "folder, a package path (e.g. Debian's) or the network, verifies it and converts the set into "
                    "learnkit's on-disk form under $LEARNKIT_HOME (default ~/.learnkit).")
    actions = datasets.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    listing = actions.add_parser("list", help="name, size, licence and whether it is cached, per data set")
    get = actions.add_parser("get", help="fetch, verify and convert NAME (if not cached); print its folder")
    get.add_argument("name", metavar="NAME", help="a name from 'learnkit datasets list'")
    for sub in (listing, get):
        sub.add_argument("--home", type=Path, default=None,
                         help="cache folder (default: $LEARNKIT_HOME, else ~/.learnkit)")
    get.add_argument("--mirror", type=Path, default=None,
                     help="folder holding the source files, as NAME/FILE or FILE (default: $LEARNKIT_MIRROR)")
    get.add_argument("--offline", action="store_true", help="never use the network")
    get.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli_train.add_commands(commands, _positive_int, _seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `learnkit` and `python -m learnkit`. Returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except SystemExit as e:  # --help / --version: argparse has printed what was asked
        return e.code if isinstance(e.code, int) else 0
    if args.command is None:
        print("learnkit: error: no command given; choose one of: demo, datasets, train, lr-find, predict "
              "(see 'learnkit --help')", file=sys.stderr)
        return 2
    try:
        if args.command == "datasets":
            return datasets_command(args)
        if args.command in cli_train.COMMANDS:
            return cli_train.run_command(args)
        return demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"learnkit {args.command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ datasets
def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def datasets_command(args: argparse.Namespace) -> int:
    """`learnkit datasets list|get NAME`. Returns the exit status: 2 on a bad name or unusable data."""
    if args.action is None:
        print("learnkit datasets: error: no action given; choose one of: list, get NAME "
              "(see 'learnkit datasets --help')", file=sys.stderr)
        return 2
    from learnkit.datasets import DatasetError, dataset_home, get_dataset, is_cached, list_datasets
    if args.action == "list":
        rows = [(d.name, _size(d.size), d.licence, "yes" if is_cached(d.name, args.home) else "no")
                for d in list_datasets()]
        widths = [max(len(r[i]) for r in rows + [("name", "size", "licence", "cached")]) for i in range(3)]
        for row in [("name", "size", "licence", "cached")] + rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
        print(f"cache: {dataset_home(args.home)}")
        return 0
    try:
        folder = get_dataset(args.name, home=args.home, mirror=args.mirror, offline=args.offline,
                             progress=not args.no_progress)
    except KeyError as e:  # unknown name; KeyError's str() would add quotes
        print(f"learnkit datasets get: error: {e.args[0]}", file=sys.stderr)
        return 2
    except (DatasetError, OSError) as e:
        print(f"learnkit datasets get: error: {e}", file=sys.stderr)
        return 2
    print(folder)
    return 0


# ---------------------------------------------------------------------------------------------------- demo
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _confusion_matrix(preds: Any, targets: Any, n_classes: int) -> Any:
    import torch
    index = targets.long() * n_classes + preds.argmax(dim=-1).long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _plot_confusion(matrix: Any, classes: list[str], accuracy: float) -> Any:
    import matplotlib.pyplot as plt
    n = len(classes)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Fashion-MNIST sample, {int(matrix.sum())} test images, accuracy {accuracy:.3f}")
    threshold = matrix.max().item() / 2
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                        color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def demo(out: Path, epochs: int = 3, seed: int = 0, progress: bool = True) -> int:
    """Train simple_cnn on the Fashion-MNIST sample and write the run's artefacts to `out`. Returns the
    exit status (2 when the sample is missing or damaged, 1 when `out` cannot be written)."""
    start = time.perf_counter()
    missing = [name for name in SAMPLE_FILES if not (SAMPLE_DIR / name).is_file()]
    if missing:
        print(f"learnkit demo: the Fashion-MNIST sample is missing from {SAMPLE_DIR} (no {', '.join(missing)}); "
              f"rebuild it from a source checkout with: {REBUILD}", file=sys.stderr)
        return 2
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        print(f"learnkit demo: --out {out} is a file, not a folder; pass another --out", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"learnkit demo: cannot create the output folder {out}: {e.strerror or e}", file=sys.stderr)
        return 1

    import matplotlib
    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt
    import torch

    from learnkit.version import __version__
    from learnkit.core import create_model, set_seed
    from learnkit.data import CategoryBlock, DataBlock, IndexSplitter, Normalize, TensorBlock, read_idx
    from learnkit.learner import Learner, ProgressBar, accuracy

    try:
        classes = (SAMPLE_DIR / "classes.txt").read_text(encoding="utf-8").splitlines()
        train_x, train_y = (read_idx(SAMPLE_DIR / f"train-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1"))
        test_x, test_y = (read_idx(SAMPLE_DIR / f"t10k-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1"))
    except (OSError, ValueError, EOFError) as e:
        print(f"learnkit demo: cannot read the sample in {SAMPLE_DIR} ({type(e).__name__}: {e}); rebuild it "
              f"with: {REBUILD}", file=sys.stderr)
        return 2
    if len(classes) != 10 or train_x.shape[1:] != (28, 28) or len(train_x) != len(train_y) \
            or len(test_x) != len(test_y):
        print(f"learnkit demo: the sample in {SAMPLE_DIR} has unexpected shapes (images {tuple(train_x.shape)}, "
              f"{len(classes)} classes); rebuild it with: {REBUILD}", file=sys.stderr)
        return 2

    set_seed(seed)
    # One item list: the training images, then the test images, which are the validation split.
    images, labels = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
    dblock = DataBlock(
        blocks=(TensorBlock(dtype=None), CategoryBlock(vocab=classes)),  # vocab in label order
        get_x=lambda i: images[i].unsqueeze(0),  # (1, 28, 28) uint8; Normalize makes floats on the device
        get_y=lambda i: classes[int(labels[i])],
        splitter=IndexSplitter(range(len(train_x), len(images))),
        batch_tfms=[Normalize(MEAN, STD)])
    data = dblock.databunch(list(range(len(images))), batch_size=32, seed=seed)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=10), metrics=[accuracy], path=out,
                    progress=progress)
    print(f"learnkit demo: {len(train_x)} training and {len(test_x)} test images from {SAMPLE_DIR}, "
          f"device {data.device}, seed {seed}")

    # The sweep gets no progress bar: its bars and table rows would read like training epochs.
    bar = next((cb for cb in learn.callbacks if isinstance(cb, ProgressBar)), None)
    if bar is not None:
        learn.remove_callback(bar)
    suggestions = learn.lr_find(show_plot=False)
    if bar is not None:
        learn.add_callback(bar)
    lr = suggestions.valley
    print(f"lr_find: valley {suggestions.valley:.2e}, minimum {suggestions.minimum:.2e}, "
          f"steepest {suggestions.steepest:.2e}; training {epochs} epoch(s) with max_lr={lr:.2e}")

    fit_start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    fit_seconds = time.perf_counter() - fit_start

    preds, targets = learn.get_preds()
    matrix = _confusion_matrix(preds, targets, len(classes))
    final = learn.history.epoch_records[-1]
    for name, fig in (("loss.png", learn.plot_loss()), ("lr_find.png", learn.plot_lr_find()),
                      ("sched.png", learn.plot_sched()),
                      ("confusion_matrix.png", _plot_confusion(matrix, classes, final["accuracy"]))):
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
    learn.export(out / "model")

    record = {
        "command": "demo",
        "seed": seed,
        "epochs": epochs,
        "versions": {"learnkit": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "device": str(data.device),
        "sample": {"folder": str(SAMPLE_DIR), "train_items": len(train_x), "valid_items": len(test_x),
                   "sha256": {name: _sha256(SAMPLE_DIR / name) for name in SAMPLE_FILES}},
        "lr": lr,
        "lr_find": suggestions._asdict(),
        "metrics": {k: v for k, v in final.items() if k not in ("epoch", "time")},
        "history": learn.history.epoch_records,
        "confusion_matrix": {"classes": classes, "rows_actual_cols_predicted": matrix.tolist()},
        "seconds": {"fit_one_cycle": round(fit_seconds, 3), "total": round(time.perf_counter() - start, 3)},
        "files": ["loss.png", "lr_find.png", "sched.png", "confusion_matrix.png", "model/", "run.json"],
    }
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"accuracy {final['accuracy']:.4f} on {len(test_x)} test images (chance 0.10); "
          f"{record['seconds']['total']:.1f} s; wrote {out}")
    return 0
