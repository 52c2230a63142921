"""Reading CSV tables for every `from_csv`: strict decoding (so that distinct labels never merge), and finding
rows whose label is missing (so that they never become a class of their own).

Decoding is strict UTF-8 by default, with a UTF-8 byte-order mark accepted (never a first column named
'\\ufefftext'). Undecodable bytes are an error naming the file, the first bad lines and the `encoding=` to pass:
replacing them would turn 'café' and 'cafè' of a latin-1 file into the same 'caf\\ufffd' label.

Example:
    >>> header, rows = read_csv("labels.csv")                    # doctest: +SKIP
    >>> rows[0], rows[0].line                                    # doctest: +SKIP
    (['train/a.png', 'cat'], 2)
    >>> missing_labels(rows, header.index("label"))              # doctest: +SKIP
    [7, 12]
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

__all__ = ["Row", "read_csv", "MISSING_LABELS", "is_missing", "missing_labels"]

# Whole cells (after stripping spaces) that mean "no value": what pandas, NumPy, Python and JSON write for one.
MISSING_LABELS = frozenset({"", "nan", "NaN", "NAN", "None", "null", "NULL"})
_SHOWN_LINES = 5  # bad lines named in an error


class Row(list):
    """One CSV record: a list of its cells (str), and `line`, the file line it starts on (the header is line 1
    when it is the first line; a quoted cell may span several lines)."""

    __slots__ = ("line",)

    def __init__(self, cells: Sequence[str], line: int):
        super().__init__(cells)
        self.line = line


def read_csv(path: str | os.PathLike, encoding: str | None = None, delimiter: str = ",") -> tuple[list[str], list[Row]]:
    """The header and the records of a CSV file, decoded strictly.

    Args:
        path: the CSV file.
        encoding: None (default): UTF-8, a leading byte-order mark accepted; else any Python codec name, e.g.
            'latin-1' or 'cp1252' for files saved by older spreadsheet programs. Never decoded with replacement.
        delimiter: the cell separator.

    Returns:
        (header, rows): the first record's cells, and every later record as a `Row` (blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the bytes do not decode; the message names the file, the first bad lines and the encoding
            to pass (cp1252 or latin-1 when the bytes read as such; utf-16 for a UTF-16 byte-order mark).

    Example:
        >>> header, rows = read_csv("labels.csv", encoding="latin-1")   # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file" + (" (it is a folder)" if path.is_dir() else ""))
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding is None else encoding
    try:
        text = raw.decode(codec)
    except LookupError:
        raise ValueError(f"{path}: encoding={encoding!r} is not a known encoding; use e.g. 'utf-8', 'latin-1' or "
                         "'cp1252'") from None
    except UnicodeDecodeError as e:
        raise ValueError(_decode_error(path, raw, codec, encoding, e)) from None
    if text.startswith("\ufeff"):  # a BOM left by an explicit encoding='utf-8' (or utf-16's own)
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[Row] = []
    line = 1  # the line the next record starts on
    for cells in reader:
        if cells:
            records.append(Row(cells, line))
        line = reader.line_num + 1
    if not records:
        return [], []
    return list(records[0]), records[1:]


def _decode_error(path: Path, raw: bytes, codec: str, encoding: str | None, error: UnicodeDecodeError) -> str:
    """The message for a file that does not decode: where, what, and which encoding to pass."""
    bad_lines = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8" if codec == "utf-8-sig" else codec)
        except UnicodeDecodeError:
            bad_lines.append(number)
            if len(bad_lines) > _SHOWN_LINES:
                break
    shown = ", ".join(map(str, bad_lines[:_SHOWN_LINES])) + (" and more" if len(bad_lines) > _SHOWN_LINES else "")
    start = max(0, error.start - 10)
    context = raw[start:error.end + 10]
    what = "not valid UTF-8" if encoding is None else f"not valid {encoding}"
    suggestion = _guess_encoding(raw)
    why = ("latin-1 reads any bytes: check that the labels look right" if suggestion == "latin-1" else
           f"the bytes read as {suggestion}")
    fix = (f"pass encoding={suggestion!r} ({why}), or re-save the file as UTF-8" if suggestion != encoding else
           "pass the file's encoding with encoding=..., or re-save it as UTF-8")
    return (f"{path}: {what} at line(s) {shown} (byte {raw[error.start]:#04x} at offset {error.start}, in "
            f"{context!r}); {fix}. The bytes are not replaced: that would merge distinct labels such as 'café' and "
            f"'cafè'.")


def _guess_encoding(raw: bytes) -> str:
    """utf-16 (a UTF-16 byte-order mark), cp1252 (bytes 0x80-0x9F that cp1252 reads: curly quotes, the euro
    sign...), else latin-1, which reads any bytes (the same letters as cp1252 from 0xA0 up)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if any(0x80 <= b <= 0x9F for b in raw):
        try:
            raw.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return "latin-1"


def is_missing(cell: str | None) -> bool:
    """Whether a label cell means "no value": None, or after stripping spaces one of MISSING_LABELS
    ('', 'nan', 'NaN', 'NAN', 'None', 'null', 'NULL'), as a whole cell ('nano' or 'None of these' are labels)."""
    return cell is None or cell.strip() in MISSING_LABELS


def missing_labels(rows: Sequence[Row], column: int) -> list[int]:
    """The file lines of the rows whose cell in `column` is missing (`is_missing`, or the row is too short), for
    a constructor to refuse them by line or to skip them with on_bad='skip'.

    Example:
        >>> missing_labels(rows, header.index("label"))   # lines 7 and 12 have empty or 'nan' labels  # doctest: +SKIP
        [7, 12]
    """
    return [row.line for row in rows if len(row) <= column or is_missing(row[column])]
