"""Build a segmentation and keypoint data set from real Fashion-MNIST items composed on canvases (deterministic).

    python datasets/build_segmentation_sample.py                        # the committed sample (64 px)
    python datasets/build_segmentation_sample.py --size 128 --n 20000 --n-points 20000 --out /tmp/seg128

Writes, under --out (default datasets/segmentation-sample):

- `segmentation/images/NNNNN.png` (grayscale, `--size` px): 1 to 3 garments, each a Fashion-MNIST item scaled by
  a random factor, on a smooth random background; later items cover earlier ones.
- `segmentation/masks/NNNNN.png` (mode 'L'): 0 = background, 1 + the item's Fashion-MNIST label where the item's
  pixel is above `THRESHOLD` (after scaling), so `codes.txt` is ['background', 'T-shirt/top', ..., 'Ankle boot'].
- `keypoints/images/NNNNN.png` with exactly one garment each, and `keypoints/points.csv`: file, then x0, y0, ...,
  x3, y3 = the corners of the garment's box (top-left, top-right, bottom-right, bottom-left), in pixels with 0 at
  the image's left/top edge and the box's right/bottom edge at (last pixel + 1) — learnkit's PointBlock convention.

Everything comes from one `numpy.random.Generator(PCG64(seed))` and Pillow's deterministic resize and PNG
writer, so the same inputs give the same bytes (tests/integration/test_segmentation_sample.py checks the
committed sample). Items come from the Fashion-MNIST training file of --source (default: the committed
datasets/fashion-mnist-sample, 2,000 items; pass /usr/share/datasets/fashion-mnist for all 60,000).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
THRESHOLD = 40  # an item's pixel above this (of 255, after scaling) is labelled with its class


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a NumPy array."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_items(source: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_idx(source / "train-images-idx3-ubyte.gz"), read_idx(source / "train-labels-idx1-ubyte.gz")


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random gray background (a 4x4 grid of values in 0..60 resized bilinearly): thresholding the image
    alone does not give the mask, and it compresses well."""
    coarse = rng.integers(0, 61, (4, 4)).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))


def place(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, item: np.ndarray, label: int,
          scale_range: tuple[float, float]) -> tuple[int, int, int, int] | None:
    """Scale `item` (28x28) randomly, put it at a random place inside the canvas; return its box (x0, y0, x1, y1)
    of labelled pixels in canvas pixels, or None when nothing is above the threshold."""
    size = canvas.shape[0]
    side = int(round(28 * rng.uniform(*scale_range) * size / 64))
    side = max(8, min(side, size))
    scaled = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
    on = scaled > THRESHOLD
    if not on.any():
        return None
    region = canvas[top:top + side, left:left + side]
    region[on] = scaled[on]
    mask[top:top + side, left:left + side][on] = label + 1
    ys, xs = np.nonzero(on)
    return left + int(xs.min()), top + int(ys.min()), left + int(xs.max()) + 1, top + int(ys.max()) + 1


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode="L").save(out, format="PNG", optimize=False, compress_level=9)
    return out.getvalue()


def build(out: Path, size: int, n_seg: int, n_points: int, source: Path, seed: int) -> None:
    images, labels = load_items(source)
    rng = np.random.Generator(np.random.PCG64(seed))
    seg = out / "segmentation"
    for d in (seg / "images", seg / "masks", out / "keypoints" / "images"):
        d.mkdir(parents=True, exist_ok=True)
    (seg / "codes.txt").write_text("\n".join(["background"] + CLASSES) + "\n", encoding="utf-8")
    if (source / "LICENSE").is_file():  # derived from Fashion-MNIST: its notice travels with the data
        (out / "LICENSE").write_bytes((source / "LICENSE").read_bytes())
    for i in range(n_seg):
        canvas, mask = background(rng, size), np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(images)))
            place(rng, canvas, mask, images[k], int(labels[k]), (0.8, 1.5))
        (seg / "images" / f"{i:05d}.png").write_bytes(png(canvas))
        (seg / "masks" / f"{i:05d}.png").write_bytes(png(mask))
    rows = []
    i = 0
    while len(rows) < n_points:
        canvas, mask = background(rng, size), np.zeros((size, size), np.uint8)
        k = int(rng.integers(len(images)))
        box = place(rng, canvas, mask, images[k], int(labels[k]), (1.0, 1.8))
        if box is None:
            continue
        x0, y0, x1, y1 = box
        name = f"{i:05d}.png"
        (out / "keypoints" / "images" / name).write_bytes(png(canvas))
        rows.append([f"images/{name}", x0, y0, x1, y0, x1, y1, x0, y1])
        i += 1
    with open(out / "keypoints" / "points.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "x0", "y0", "x1", "y1", "x2", "y2", "x3", "y3"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "segmentation-sample")
    parser.add_argument("--size", type=int, default=64, help="canvas side in pixels (default 64)")
    parser.add_argument("--n", type=int, default=300, help="segmentation images (default 300)")
    parser.add_argument("--n-points", type=int, default=200, help="keypoint images (default 200)")
    parser.add_argument("--source", type=Path, default=HERE / "fashion-mnist-sample",
                        help="a folder with Fashion-MNIST's train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build(args.out, args.size, args.n, args.n_points, args.source, args.seed)


if __name__ == "__main__":
    main()
