"""The command line's one error class and its argument helpers: `CliError` (printed by `main` as one line,
exit status 2 unless it says otherwise), the argparse subclass whose errors are a `CliError`, and the value
parsers every sub-command shares (positive ints, seeds, learning rates, fractions).

Example:
    >>> parser.add_argument("--epochs", type=positive_int, default=3)
    >>> raise CliError("no image files under data/; pass a folder of class folders")
"""
from __future__ import annotations

import argparse
import math
from typing import NoReturn

__all__ = ["CliError", "Parser", "positive_int", "seed", "learning_rate", "fraction", "one_line"]


class CliError(Exception):
    """What went wrong, in one sentence that names the bad value or file and the fix. `main` prints it as
    `<prog>: error: <message>` on one line and returns `status` (2: bad input; 1: the output cannot be written).

    Args:
        message: the sentence.
        status: the exit status.
        prog: the command to name (default: `learnkit <command>`).
    """

    def __init__(self, message: str, status: int = 2, prog: str | None = None):
        super().__init__(message)
        self.status, self.prog = status, prog


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump) raised as a `CliError` (no sys.exit)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", prog=self.prog)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a KeyError without the quotes its str() adds)."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split())


def positive_int(text: str) -> int:
    """An int >= 1 (epochs, batch size, image size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """A seed in 0..2**63-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**63-1, got {value}")
    return value


def learning_rate(text: str) -> str | float:
    """'auto' (the lr_find valley) or a positive finite number."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a validation share)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return value
