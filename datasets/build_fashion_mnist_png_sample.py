"""Build the PNG-folder copy of the committed Fashion-MNIST sample (datasets/fashion-mnist-sample/png/).

The images are those of the sample's own IDX files, so the two forms hold the same 2000 + 500 items:
`png/train/<class>/<i>.png` is item `i` of `train-images-idx3-ubyte.gz`, `png/valid/<class>/<i>.png` item `i`
of `t10k-images-idx3-ubyte.gz` (the upstream test split). Class folders are the names of classes.txt with every
run of characters other than letters, digits, '.' and '-' replaced by '_' ('T-shirt/top' -> 'T-shirt_top',
'Ankle boot' -> 'Ankle_boot'): `learnkit.datasets.convert.folder_name`, so this folder looks like what
`get_dataset("fashion-mnist-sample")` writes.

Each PNG is 8-bit grayscale (mode L), 28x28, written by Pillow with `optimize=False` and a fixed zlib level,
with no time or text chunks: the same bytes on every run with the same zlib. The IDX files are read with
`learnkit.read_idx` (install the repo first, as the README says).

Usage:
    python datasets/build_fashion_mnist_png_sample.py                  # reads and writes datasets/fashion-mnist-sample/
    python datasets/build_fashion_mnist_png_sample.py --sample DIR --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from learnkit import read_idx
from learnkit.datasets.convert import folder_name

DEFAULT_SAMPLE = Path(__file__).resolve().parent / "fashion-mnist-sample"
SPLITS = {"train": "train", "valid": "t10k"}  # PNG folder -> IDX file prefix
ZLIB_LEVEL = 9  # the smallest files; the level is fixed so that a rebuild gives the same bytes


def write_png(path: Path, image: np.ndarray) -> None:
    """One (H, W) uint8 array as an 8-bit grayscale PNG, deterministically."""
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG", optimize=False,
                                                      compress_level=ZLIB_LEVEL)


def build(sample: Path, out: Path) -> dict[str, int]:
    """Write `out/train/...` and `out/valid/...` from the IDX files in `sample`; returns {split: image count}.

    The two split folders are removed first, so a rebuild leaves no stale file behind.
    """
    classes = (sample / "classes.txt").read_text(encoding="utf-8").splitlines()
    folders = [folder_name(c) for c in classes]
    if len(set(folders)) != len(folders):
        raise ValueError(f"class names {classes} give clashing folder names {folders}")
    counts = {}
    for split, prefix in SPLITS.items():
        images = read_idx(sample / f"{prefix}-images-idx3-ubyte.gz").numpy()
        labels = read_idx(sample / f"{prefix}-labels-idx1-ubyte.gz").numpy()
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{sample}: {prefix} has images {images.shape} but labels {labels.shape}")
        if labels.size and int(labels.max()) >= len(classes):
            raise ValueError(f"{sample}: {prefix} labels go up to {int(labels.max())}, "
                             f"but classes.txt names {len(classes)} classes")
        shutil.rmtree(out / split, ignore_errors=True)
        for name in folders:
            (out / split / name).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            write_png(out / split / folders[label] / f"{i}.png", image)
        counts[split] = len(images)
    return counts


def tree_digest(out: Path) -> str:
    """sha256 over the sorted relative paths and contents of every PNG under `out` (one line to compare)."""
    h = hashlib.sha256()
    for path in sorted(out.rglob("*.png")):
        h.update(path.relative_to(out).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help=f"folder with the sample's IDX files and classes.txt (default: {DEFAULT_SAMPLE})")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: SAMPLE/png)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.sample / "png"
    needed = ["classes.txt"] + [f"{p}-{k}-ubyte.gz" for p in SPLITS.values() for k in ("images-idx3", "labels-idx1")]
    missing = [n for n in needed if not (args.sample / n).exists()]
    if missing:
        print(f"error: {args.sample} lacks {', '.join(missing)}; build the IDX sample first with "
              "`python datasets/build_fashion_mnist_sample.py`", file=sys.stderr)
        return 2
    counts = build(args.sample, out)
    size = sum(p.stat().st_size for p in out.rglob("*.png"))
    print(f"{out}: {counts['train']} train + {counts['valid']} valid PNGs, {size} bytes; "
          f"tree sha256 {tree_digest(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
