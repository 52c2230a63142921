"""Build the committed Fashion-MNIST sample (datasets/fashion-mnist-sample/) from the full data set.

A class-balanced, seeded subset: 200 images per class from the training file (2000 in all) and 50 per
class from the test file (500 in all), written as gzipped IDX files named like the upstream ones, plus
classes.txt and LICENSE. The output is byte-for-byte the same on every run (fixed seed, gzip mtime=0, no file name
in the gzip header), so `git diff` shows nothing after a rebuild with the same source files.

Only the standard library and NumPy are used, so the sample can be rebuilt without learnkit.

Usage:
    python datasets/build_fashion_mnist_sample.py                      # from the Debian package
    python datasets/build_fashion_mnist_sample.py --source DIR --out DIR --seed 0
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import struct
import sys
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
DEFAULT_OUT = Path(__file__).resolve().parent / "fashion-mnist-sample"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
SPLITS = {"train": 200, "t10k": 50}  # images per class taken from each upstream file
# The notice of /usr/share/doc/dataset-fashion-mnist/copyright (Files: *), kept here so that the output
# does not depend on what else is installed.
LICENSE = """\
Fashion-MNIST sample: a subset of Fashion-MNIST by Zalando Research
(https://github.com/zalandoresearch/fashion-mnist), taken from the Debian package
dataset-fashion-mnist. The images and labels are unmodified; only a subset is kept.

Copyright: 2017, Zalando SE, https:tech.zalando.com
License: Expat (MIT)

 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the "Software"),
 to deal in the Software without restriction, including without limitation
 the rights to use, copy, modify, merge, publish, distribute, sublicense,
 and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:

 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.

 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


OUTPUTS = [f"{s}-{k}-ubyte.gz" for s in SPLITS for k in ("images-idx3", "labels-idx1")] + ["classes.txt",
                                                                                          "LICENSE"]


def read_idx_u8(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzipped) as a uint8 array of its stored shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, raw bytes."""
    assert array.dtype == np.uint8
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    # mtime=0 and an empty file name keep the gzip header free of anything that changes between runs.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                                                 mtime=0) as gz:
        gz.write(payload)


def balanced_indices(labels: np.ndarray, per_class: int, rng: random.Random) -> list[int]:
    """`per_class` indices of each label 0..9, drawn without replacement, returned in file order."""
    chosen: list[int] = []
    for c in range(len(CLASSES)):
        pool = np.flatnonzero(labels == c).tolist()
        if len(pool) < per_class:
            raise ValueError(f"class {c} ({CLASSES[c]}) has only {len(pool)} images, {per_class} needed")
        chosen += rng.sample(pool, per_class)
    return sorted(chosen)


def build(source: Path, out: Path, seed: int = 0) -> dict[str, str]:
    """Write the sample into `out`; returns {file name: sha256}."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # Python's Mersenne Twister + sample(): stable across Python versions
    digests = {}
    for split, per_class in SPLITS.items():
        images = read_idx_u8(source / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx_u8(source / f"{split}-labels-idx1-ubyte.gz")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{source}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
        keep = balanced_indices(labels, per_class, rng)
        for kind, array in (("images-idx3", images[keep]), ("labels-idx1", labels[keep])):
            path = out / f"{split}-{kind}-ubyte.gz"
            write_gz(path, idx_bytes(np.ascontiguousarray(array)))
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE, encoding="utf-8")
    for name in OUTPUTS:
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with the four upstream .gz files (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    args = parser.parse_args(argv)
    missing = [f"{s}-{k}-ubyte.gz" for s in SPLITS for k in ("images-idx3", "labels-idx1")
               if not (args.source / f"{s}-{k}-ubyte.gz").exists()]
    if missing:
        print(f"error: {args.source} lacks {', '.join(missing)}; install them with "
              "`apt-get install dataset-fashion-mnist` or pass --source DIR", file=sys.stderr)
        return 2
    for name, digest in build(args.source, args.out, args.seed).items():
        size = (args.out / name).stat().st_size
        print(f"{digest}  {name}  ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
