"""Reading tables (CSV files) for every `from_csv`: strict text decoding, so that distinct labels never merge."""
from __future__ import annotations

import csv
import io
from pathlib import Path

__all__ = ["read_csv"]


def read_csv(path: str | Path, encoding: str | None = None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV file with a header row.

    Decoding is strict: UTF-8 by default (a UTF-8 byte-order mark is accepted and dropped); bytes that do not
    decode are an error naming the file and the line, with the `encoding=` to pass. `encoding` forces one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    raw = path.read_bytes()
    codec = encoding or "utf-8-sig"
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not valid {encoding or 'UTF-8'} (byte {raw[e.start]:#04x} at offset "
                         f"{e.start}); pass encoding='latin-1' (or the file's real encoding, e.g. 'cp1252')") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ValueError(f"{path}: the file is empty; it needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    return header, [(n, row) for n, row in enumerate(rows[1:], start=2) if row]
