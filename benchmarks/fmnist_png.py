"""Write the full Fashion-MNIST (60,000 train + 10,000 test) as an ImageNet-style folder of PNG files, in parallel.

Layout: `OUT/train/<class>/<i>.png` and `OUT/test/<class>/<i>.png`, `<i>` the image's index in its upstream IDX
file, class folders named as in learnkit.datasets.convert ('T-shirt/top' -> 'T-shirt_top', 'Ankle boot' ->
'Ankle_boot'); 8-bit grayscale 28x28 PNGs, pixels unmodified. A folder that already holds exactly the expected
files (checked by listing every class folder) is left alone, so a benchmark can call this every time.

Command:
    python benchmarks/fmnist_png.py OUT [--source DIR] [--workers N]

Only NumPy and Pillow are needed (not learnkit, not torch), so the worker processes start fast.
"""
from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import re
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = {"train": "train", "test": "t10k"}  # output folder -> upstream file prefix
CHUNK = 2000  # images per task: large enough that pickling and scheduling cost nothing, small enough to balance


def folder_name(label: str) -> str:
    """A class name as a folder name that needs no quoting in a shell ('T-shirt/top' -> 'T-shirt_top')."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label)


FOLDERS = tuple(folder_name(c) for c in CLASSES)


def read_idx_u8(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzipped or not) as a uint8 array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_chunk(split_dir: str, start: int, images: np.ndarray, labels: np.ndarray) -> int:
    """Worker: write images[k] as split_dir/<class>/<start + k>.png. The pixels travel with the task (1.5 MB per
    2000 images), so workers need no shared state and any start method works."""
    from PIL import Image

    for k in range(len(images)):
        path = os.path.join(split_dir, FOLDERS[labels[k]], f"{start + k}.png")
        Image.fromarray(images[k]).save(path, format="PNG", optimize=False)
    return len(images)


def _missing(out: Path, split: str, labels: np.ndarray) -> tuple[int, list[str]]:
    """(number of expected files absent, unexpected .png names) for one split folder."""
    absent, extra = 0, []
    for c, name in enumerate(FOLDERS):
        expected = {f"{i}.png" for i in np.flatnonzero(labels == c).tolist()}
        try:
            present = {e.name for e in os.scandir(out / split / name) if e.name.endswith(".png")}
        except FileNotFoundError:
            present = set()
        absent += len(expected - present)
        extra += [f"{split}/{name}/{n}" for n in sorted(present - expected)]
    return absent, extra


def is_complete(out: str | os.PathLike, source: str | os.PathLike = DEFAULT_SOURCE) -> bool:
    """Whether `out` holds exactly the expected PNG names in every class folder of both splits."""
    out, source = Path(out), Path(source)
    for split, prefix in SPLITS.items():
        absent, extra = _missing(out, split, read_idx_u8(source / f"{prefix}-labels-idx1-ubyte.gz"))
        if absent or extra:
            return False
    return True


def write_png_folder(out_dir: str | os.PathLike, source: str | os.PathLike = DEFAULT_SOURCE,
                     workers: int | None = None, verbose: bool = True) -> Path:
    """Write Fashion-MNIST from the four upstream IDX files in `source` to `out_dir` as PNGs; returns `out_dir`.

    Skipped when every expected file is already there (and nothing else). An incomplete folder (an earlier run
    was stopped) is rewritten in full, since a file cut short by a kill has the right name.

    Args:
        out_dir: the folder to fill (created if needed).
        source: folder holding train-/t10k- images-idx3 and labels-idx1 files (.gz or not).
        workers: processes to use; default: every CPU this process may run on.
        verbose: print what was done and how long it took.

    Example:
        >>> folder = write_png_folder("/tmp/fmnist-png")   # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())        # doctest: +SKIP
        ['test', 'train']
    """
    out, source = Path(out_dir), Path(source)
    t0 = time.perf_counter()
    data = {}
    for split, prefix in SPLITS.items():
        paths = [source / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
        paths = [p if p.exists() else p.with_suffix("") for p in paths]  # also accept the unzipped files
        if not all(p.exists() for p in paths):
            raise FileNotFoundError(f"{source} lacks {paths[0].name} or {paths[1].name}; install the data set "
                                    "with `apt-get install dataset-fashion-mnist` or pass source=DIR")
        images, labels = (read_idx_u8(p) for p in paths)
        if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1] or int(labels.max()) >= len(CLASSES):
            raise ValueError(f"{source}: unexpected {prefix} files: images {images.shape}, labels {labels.shape}")
        data[split] = images, labels
    todo = [split for split, (_, labels) in data.items() if any(_missing(out, split, labels))]
    if not todo:
        if verbose:
            print(f"{out}: complete ({sum(len(y) for _, y in data.values())} PNGs), kept "
                  f"({time.perf_counter() - t0:.2f} s to check)")
        return out
    workers = workers or len(os.sched_getaffinity(0))
    tasks = []
    for split in todo:
        images, labels = data[split]
        for name in FOLDERS:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        tasks += [(str(out / split), s, images[s:s + CHUNK], labels[s:s + CHUNK]) for s in range(0, len(labels), CHUNK)]
    # forkserver: the workers do not inherit a parent that may already hold torch's threads (fork would, and
    # Python 3.12 warns about it); spawn where there is no forkserver.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        written = sum(pool.map(_write_chunk, *zip(*tasks)))
    for split in todo:
        absent, extra = _missing(out, split, data[split][1])
        if absent or extra:
            raise RuntimeError(f"{out / split}: after writing, {absent} expected files are missing and {len(extra)} "
                               f"unexpected ones are there (e.g. {extra[:3]}); remove the folder and run again")
    if verbose:
        seconds = time.perf_counter() - t0
        print(f"{out}: wrote {written} PNGs ({', '.join(todo)}) with {workers} processes in {seconds:.1f} s "
              f"({written / seconds:,.0f} images/s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with the four upstream IDX files (default: {DEFAULT_SOURCE})")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    try:
        write_png_folder(args.out, args.source, args.workers)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
