"""The `learnkit` command: the parser, `main` (which turns every `CliError` into one line and an exit status) and
`learnkit datasets list|get NAME`. The other commands live beside it: `demo` (demo.py), `train`, `lr-find` and
`predict` for text CSVs and image folders (train.py, vision.py).

Example:
    $ python -m learnkit demo --out runs/demo --epochs 3
    $ learnkit datasets get fashion-mnist --offline
    $ learnkit train datasets/fortunes-sample/fortunes.csv --epochs 3 --out runs/train
    $ learnkit predict runs/train/model --text "Never trust a computer you can't throw out a window."
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from learnkit.cli import demo as cli_demo
from learnkit.cli import train as cli_train
from learnkit.cli.args import CliError, Parser, one_line, positive_int, seed

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `learnkit` parser with every sub-command."""
    parser = Parser(prog="learnkit", description="learnkit command line.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    demo = commands.add_parser(
        "demo", help="train a small CNN on the bundled Fashion-MNIST sample and write plots, model and run.json",
        description="Train simple_cnn on the Fashion-MNIST PNG sample that ships with learnkit (2000 train / 500 "
                    "test images, ImageDataBunch.from_folder): lr_find, then fit_one_cycle; write show_batch.png, "
                    "lr_find.png, loss.png, sched.png, confusion_matrix.png, top_losses.png, the exported model "
                    "(model/, predicts image files: 'learnkit predict OUT/model some.png') and run.json to --out.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=positive_int, default=3, help="epochs of fit_one_cycle (default: 3)")
    demo.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars (the final summary still prints)")
    datasets = commands.add_parser(
        "datasets", help="list the named data sets, or fetch one into the cache and print its folder",
        description="Named data sets with checksums and licences. 'get' takes each file from the cache, a mirror "
                    "folder, a package path (e.g. Debian's) or the network, verifies it and converts the set into "
                    "learnkit's on-disk form under $LEARNKIT_HOME (default ~/.learnkit).")
    actions = datasets.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
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
    cli_train.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `learnkit` and `python -m learnkit`. Returns the exit status: 0, 2 for bad input (one line
    on stderr, never a traceback), 1 when the output cannot be written, 130 on Ctrl-C."""
    parser = build_parser()
    command = "learnkit"
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help / --version: argparse has printed what was asked
            return e.code if isinstance(e.code, int) else 0
        if args.command is None:
            raise CliError("no command given; choose one of: demo, datasets, train, lr-find, predict "
                           "(see 'learnkit --help')", prog="learnkit")
        command = f"learnkit {args.command}"
        if args.command == "datasets":
            return datasets_command(args)
        if args.command in cli_train.COMMANDS:
            return cli_train.run_command(args)
        return cli_demo.demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    except CliError as e:
        print(f"{e.prog or command}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ datasets
def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def datasets_command(args: argparse.Namespace) -> int:
    """`learnkit datasets list|get NAME`. Returns the exit status; a bad name or unusable data is a CliError."""
    if args.action is None:
        raise CliError("no action given; choose one of: list, get NAME (see 'learnkit datasets --help')")
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
    except (KeyError, DatasetError, OSError) as e:  # an unknown name, a bad copy, no network
        raise CliError(one_line(e), prog="learnkit datasets get") from None
    print(folder)
    return 0

