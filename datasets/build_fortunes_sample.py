"""Build the committed fortunes sample (datasets/fortunes-sample/) from Debian's `fortunes` package.

A class-balanced, seeded subset of `learnkit.text.corpora.fortunes_classification()` (6 categories,
cross-category duplicates removed, stratified 80/20 split with seed 42): for each category, 80 of its
training entries and 20 of its validation entries, so the sample keeps the full set's split (a sample
row marked is_valid is a validation row of the full set too). Written as fortunes.csv (header
text,label,is_valid; rows in category order, file order inside a category) plus LICENSE (the package's
copyright file, verbatim, after a short header). The same package version gives the same bytes.

Usage:
    python datasets/build_fortunes_sample.py                          # from /usr/share/games/fortunes
    python datasets/build_fortunes_sample.py --root DIR --out DIR --seed 42
"""
from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    from learnkit.text.corpora import FORTUNE_CATEGORIES, FORTUNE_ROOT, fortunes_classification, write_fortunes_csv
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    from learnkit.text.corpora import FORTUNE_CATEGORIES, FORTUNE_ROOT, fortunes_classification, write_fortunes_csv
from learnkit.core.system_data import system_data_path

DEFAULT_OUT = Path(__file__).resolve().parent / "fortunes-sample"
# Ships with the package that owns the fortune files (or its copy unpacked without root by ./run data).
COPYRIGHT = system_data_path("/usr/share/doc/fortunes/copyright")
PER_CLASS = {False: 80, True: 20}  # training / validation entries per category
LICENSE_HEADER = """\
Fortunes sample: 600 entries (100 per category) of the fortune cookie files computers, science,
politics, songs-poems, work and men-women, taken from the Debian package `fortunes` (source package
fortune-mod). Overstrikes (char + backspace) were removed and surrounding whitespace stripped;
otherwise the texts are unmodified.

The cookies are quotations and jokes collected from many sources; individual entries may remain the
property of their authors. Debian distributes them under the copyright notice below, copied verbatim
from /usr/share/doc/fortunes/copyright. Keep this file with any copy of the sample.

------------------------------------------------------------------------------
"""


def sample_rows(rows: list[dict], seed: int) -> list[dict]:
    """`PER_CLASS` rows of each (label, is_valid) group, drawn with one `random.Random(seed)` in label
    order (train then valid), returned in their original order."""
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in dict.fromkeys(r["label"] for r in rows):
        for is_valid, k in PER_CLASS.items():
            group = [i for i, r in enumerate(rows) if r["label"] == label and r["is_valid"] == is_valid]
            if len(group) < k:
                raise ValueError(f"category {label!r} has {len(group)} {'valid' if is_valid else 'train'} rows, "
                                 f"fewer than the {k} to sample")
            chosen += rng.sample(group, k)
    return [rows[i] for i in sorted(chosen)]


def build(root: Path = Path(FORTUNE_ROOT), out: Path = DEFAULT_OUT, seed: int = 42,
          copyright_file: Path = COPYRIGHT) -> dict[str, str]:
    """Write fortunes.csv and LICENSE into `out`; return {file name: sha256}."""
    if not copyright_file.is_file():
        raise FileNotFoundError(f"{copyright_file} not found; install it with `apt-get install fortunes` (or without "
                                "root: ./run data)")
    rows = sample_rows(fortunes_classification(root, FORTUNE_CATEGORIES, seed=seed), seed)
    out.mkdir(parents=True, exist_ok=True)
    write_fortunes_csv(rows, out / "fortunes.csv")
    (out / "LICENSE").write_bytes(LICENSE_HEADER.encode("utf-8") + copyright_file.read_bytes())
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("fortunes.csv", "LICENSE")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(FORTUNE_ROOT), help="folder of fortune files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split and of the sampling")
    args = parser.parse_args(argv)
    for name, digest in build(args.root, args.out, args.seed).items():
        size = (args.out / name).stat().st_size
        print(f"{digest}  {name}  ({size} bytes)")


if __name__ == "__main__":
    main()
