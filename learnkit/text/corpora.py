"""Readers for two real text corpora shipped by Debian: `fortunes` (a 6-class classification set) and
`bible-kjv` (the King James Bible, a language-model corpus).

Only the standard library is used. Nothing is downloaded: a missing package is reported with the
`apt-get install` line that fixes it (or `./run data`, which unpacks the packages without root; the system path
is tried first, then that unpacked copy: `learnkit.core.system_data.system_data_path`).

Example:
    >>> rows = fortunes_classification()                       # doctest: +SKIP
    >>> rows[0].keys()                                         # doctest: +SKIP
    dict_keys(['text', 'label', 'is_valid'])
    >>> write_fortunes_csv(rows, "fortunes.csv")               # doctest: +SKIP
    >>> bible_kjv_verses()[0]                                  # doctest: +SKIP
    'In the beginning God created the heaven and the earth.'
"""
from __future__ import annotations

import csv
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from learnkit.core.system_data import FETCH_COMMAND, system_data_path

__all__ = ["FortuneFile", "parse_fortune_file", "read_fortune_file", "fortunes_classification",
           "write_fortunes_csv", "bible_kjv_text", "bible_kjv_verses", "FORTUNE_ROOT", "FORTUNE_CATEGORIES"]

FORTUNE_ROOT = "/usr/share/games/fortunes"
FORTUNE_CATEGORIES = ("computers", "science", "politics", "songs-poems", "work", "men-women")
_INSTALL_FORTUNES = f"install it with `apt-get install fortunes` (or without root: `{FETCH_COMMAND}`)"
# One character followed by a backspace: old-style overstrike (bold "a\ba", underline "_\bx", accents
# "'\bi"). The terminal would show what follows the backspace, so that is what is kept.
_OVERSTRIKE = re.compile("[^\x08]\x08", re.DOTALL)


@dataclass(frozen=True)
class FortuneFile:
    """What `parse_fortune_file` read from one fortune file.

    Attributes:
        entries: the entries, in file order; stripped, overstrikes removed, empty ones dropped.
        undecodable_bytes: how many bytes of the file were not valid UTF-8.
        replacement_chars: how many U+FFFD characters decoding put in their place (a run of invalid
            bytes that looks like one truncated sequence becomes a single U+FFFD, so this can be smaller).
        overstrikes: how many "char + backspace" pairs were removed.
    """
    entries: list[str] = field(default_factory=list)
    undecodable_bytes: int = 0
    replacement_chars: int = 0
    overstrikes: int = 0


def _missing_fortunes(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"fortune {what} not found: {path}; {_INSTALL_FORTUNES} "
                             "(or pass root= pointing at a folder of fortune files)")


def parse_fortune_file(path: str | Path) -> FortuneFile:
    """Read a fortune file (entries separated by lines holding only '%') with decoding statistics.

    The bytes are decoded as UTF-8 with errors='replace'; each entry is stripped of surrounding
    whitespace, overstrikes are removed (a character followed by a backspace goes, what follows stays;
    stray backspaces go too), and empty entries are dropped.

    Example:
        >>> parse_fortune_file("/usr/share/games/fortunes/science").undecodable_bytes   # doctest: +SKIP
        0
    """
    path = Path(path)
    if not path.is_file():
        raise _missing_fortunes(path, "file")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    # surrogateescape maps every undecodable byte to one lone surrogate: an exact byte count.
    undecodable = sum(1 for ch in raw.decode("utf-8", errors="surrogateescape") if "\udc80" <= ch <= "\udcff")
    replaced = text.count("\ufffd") - raw.count("\ufffd".encode("utf-8"))  # minus genuine U+FFFD in the file
    entries, lines, overstrikes = [], [], 0
    for line in text.split("\n") + ["%"]:  # a final separator flushes the last entry
        if line.rstrip("\r") != "%":
            lines.append(line)
            continue
        entry, n = "\n".join(lines), 1
        while n:  # "___\b\b\bnot" (three underscores, three backspaces) needs three passes
            entry, n = _OVERSTRIKE.subn("", entry)
            overstrikes += n
        entry = entry.replace("\x08", "").strip()  # a backspace with nothing before it
        if entry:
            entries.append(entry)
        lines = []
    return FortuneFile(entries, undecodable, replaced, overstrikes)


def read_fortune_file(path: str | Path) -> list[str]:
    """The entries of a fortune file, cleaned as `parse_fortune_file` says (which also gives the count
    of undecodable bytes).

    Example:
        >>> read_fortune_file("/usr/share/games/fortunes/work")[:1]                     # doctest: +SKIP
    """
    return parse_fortune_file(path).entries


def _dedup_key(text: str) -> str:
    """Entries that differ only in whitespace or letter case count as the same entry."""
    return " ".join(text.split()).casefold()


def fortunes_classification(root: str | Path = FORTUNE_ROOT, categories: tuple[str, ...] = FORTUNE_CATEGORIES,
                            seed: int = 42, valid_pct: float = 0.2, min_entries: int = 580) -> list[dict]:
    """A text-classification set from Debian's fortune files: the label is the file (category) name.

    Cleaning: an entry whose text occurs in more than one category is removed from all of them (it
    cannot be labelled); repeats inside one category are kept once (the first). Texts are compared
    after collapsing whitespace and case (`" ".join(t.split()).casefold()`); the kept text is the
    first occurrence, unchanged.

    Split: stratified. For each category in `categories` order, one `random.Random(seed)` shuffles
    the entry indices and the first `round(n * valid_pct)` become validation. Same seed and files, same
    split. Rows come in `categories` order, file order inside a category.

    Args:
        root: folder holding one fortune file per category (found by `system_data_path`).
        categories: file names, which are also the labels.
        seed: seed of the split.
        valid_pct: fraction of each category put in the validation set.
        min_entries: every category must have at least this many entries as read, before any
            de-duplication (guards against a truncated or different package version).

    Returns:
        A list of dicts {'text': str, 'label': str, 'is_valid': bool}.

    Raises:
        FileNotFoundError: `root` or a category file is missing.
        ValueError: a category has fewer than `min_entries` entries, or an argument is invalid.

    Example:
        >>> rows = fortunes_classification(seed=42)                                      # doctest: +SKIP
        >>> sum(r["is_valid"] for r in rows) / len(rows)                                 # doctest: +SKIP
        0.2...
    """
    root = system_data_path(root, needs=categories)
    if not root.is_dir():
        raise _missing_fortunes(root, "folder")
    if not 0 <= valid_pct < 1:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct!r}")
    if len(set(categories)) != len(categories) or not categories:
        raise ValueError(f"categories must be non-empty and distinct, got {categories!r}")
    per_category: dict[str, list[str]] = {}
    for category in categories:
        entries = read_fortune_file(root / category)
        if len(entries) < min_entries:
            raise ValueError(f"fortune category {category!r} has {len(entries)} entries in {root / category}, "
                             f"fewer than the {min_entries} expected; is the `fortunes` package complete?")
        per_category[category] = entries
    owners: dict[str, set[str]] = {}
    for category, entries in per_category.items():
        for entry in entries:
            owners.setdefault(_dedup_key(entry), set()).add(category)
    rng = random.Random(seed)
    rows = []
    for category, entries in per_category.items():
        seen: set[str] = set()
        kept = []
        for entry in entries:
            key = _dedup_key(entry)
            if len(owners[key]) == 1 and key not in seen:
                seen.add(key)
                kept.append(entry)
        order = list(range(len(kept)))
        rng.shuffle(order)
        valid = set(order[:round(len(kept) * valid_pct)])
        rows += [{"text": t, "label": category, "is_valid": i in valid} for i, t in enumerate(kept)]
    return rows


def write_fortunes_csv(rows: list[dict], path: str | Path) -> None:
    """Write rows of `fortunes_classification` as UTF-8 CSV with header text,label,is_valid.

    Fields holding newlines or quotes are quoted (RFC 4180), lines end in '\\n', is_valid is written
    as True/False; the same rows always give the same bytes.

    Example:
        >>> write_fortunes_csv(fortunes_classification(), "fortunes.csv")                # doctest: +SKIP
    """
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label", "is_valid"])
        for row in rows:
            writer.writerow([row["text"], row["label"], bool(row["is_valid"])])


def bible_kjv_text(command: str = "bible", data_dir: str = "/usr/lib", timeout: float = 120) -> str:
    """The whole King James Bible as printed by Debian's `bible` program (package `bible-kjv`).

    Runs `bible -p DATA_DIR -l100000 gen1:1-rev22:21`: for each chapter a blank line, a heading such as
    "Genesis 1", a blank line, then one line per verse "  N text" (-l100000: no line wrapping).
    `data_dir` holds `bible.data` (package `bible-kjv-text`, a dependency of `bible-kjv`).

    Raises:
        FileNotFoundError: the command is not installed.
        RuntimeError: the command failed or printed something other than the text.

    Example:
        >>> bible_kjv_text().splitlines()[1]                                             # doctest: +SKIP
        'Genesis 1'
    """
    exe = shutil.which(command)
    if exe is None and command == "bible" and system_data_path("/usr/bin/bible").is_file():
        exe = str(system_data_path("/usr/bin/bible"))  # unpacked without root (./run data)
    if exe is None:
        raise FileNotFoundError(f"the `{command}` program was not found on PATH; install it with "
                                "`apt-get install bible-kjv` (Debian package bible-kjv, with bible-kjv-text), or "
                                f"without root: `{FETCH_COMMAND}`")
    data_dir = system_data_path(Path(data_dir) / "bible.data").parent
    args = [exe, "-p", str(data_dir), "-l100000", "gen1:1-rev22:21"]
    result = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    text = result.stdout.decode("utf-8", errors="replace")
    if result.returncode != 0 or not text.lstrip().startswith("Genesis 1"):
        message = (result.stderr or result.stdout).decode("utf-8", errors="replace").strip()[:300]
        raise RuntimeError(f"`{' '.join(args)}` failed (exit status {result.returncode}): {message!r}; "
                           f"is bible.data in {data_dir}? `apt-get install bible-kjv` installs it in /usr/lib")
    return text


_VERSE = re.compile(r"^ {2}\d+ (.*)$")
_HEADING = re.compile(r"^(?:[1-3] )?[A-Z][A-Za-z ]* \d+$")


def bible_kjv_verses(command: str = "bible", data_dir: str = "/usr/lib") -> list[str]:
    """The 31,102 verses of the King James Bible in canonical order, as text without references.

    Raises:
        ValueError: a line of `bible_kjv_text` is neither a verse, a chapter heading nor blank.

    Example:
        >>> verses = bible_kjv_verses()                                                  # doctest: +SKIP
        >>> len(verses), verses[0]                                                       # doctest: +SKIP
        (31102, 'In the beginning God created the heaven and the earth.')
    """
    verses = []
    for number, line in enumerate(bible_kjv_text(command, data_dir).split("\n"), 1):
        match = _VERSE.match(line)
        if match:
            verses.append(match.group(1).strip())
        elif line.strip() and not _HEADING.match(line):
            raise ValueError(f"unexpected line {number} in the output of `{command}`: {line[:80]!r}")
    return verses
