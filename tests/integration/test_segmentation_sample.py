"""The committed segmentation / keypoint sample (datasets/segmentation-sample): the generator reproduces it byte
for byte, and it loads through SegmentationDataBunch / PointsDataBunch with masks and points that still describe
their images after augmentation."""
import csv
import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learnkit.vision import PointsDataBunch, SegmentationDataBunch, aug_transforms

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "segmentation-sample"
pytestmark = pytest.mark.integration


def test_generator_reproduces_the_sample_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(REPO / "datasets" / "build_segmentation_sample.py"), "--out", str(tmp_path)],
                   check=True)
    ours = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert ours == theirs and len(ours) == 300 * 2 + 200 + 3  # + codes.txt, points.csv, LICENSE
    differ = [p for p in ours if not filecmp.cmp(SAMPLE / p, tmp_path / p, shallow=False)]
    pixels_differ = [str(p) for p in differ if p.suffix != ".png" or not np.array_equal(
        np.asarray(Image.open(SAMPLE / p)), np.asarray(Image.open(tmp_path / p)))]
    assert not pixels_differ, f"the generator no longer reproduces {pixels_differ[:5]} (of {len(pixels_differ)})"
    assert not differ, (f"same pixels but other PNG bytes in {[str(p) for p in differ[:5]]} (of {len(differ)}): "
                        f"Pillow {Image.__version__}'s PNG encoder differs from the one that wrote the sample; "
                        "rebuild the sample with this Pillow (python datasets/build_segmentation_sample.py)")


def test_masks_label_the_garments():
    codes = (SAMPLE / "segmentation" / "codes.txt").read_text().split("\n")[:11]
    assert codes[0] == "background" and codes[10] == "Ankle boot"
    labelled, total = 0, 0
    for i in range(0, 300, 10):
        img = np.asarray(Image.open(SAMPLE / "segmentation" / "images" / f"{i:05d}.png"))
        mask = np.asarray(Image.open(SAMPLE / "segmentation" / "masks" / f"{i:05d}.png"))
        assert mask.shape == img.shape == (64, 64) and mask.max() <= 10
        assert (img[mask > 0] > 40).all()  # a labelled pixel is a garment pixel above the threshold
        labelled, total = labelled + (mask > 0).sum(), total + mask.size
    assert 0.05 < labelled / total < 0.5


def test_segmentation_sample_loads_and_augments_aligned():
    data = SegmentationDataBunch.from_folder(SAMPLE / "segmentation", mode="L", seed=0, batch_size=64,
                                             batch_tfms=aug_transforms(max_rotate=20, max_lighting=0.0, mode="nearest", seed=0),
                                             normalize=None, verbose=False)
    assert data.loader_kind == "resident" and data.n_classes == 11 and data.classes[1] == "T-shirt/top"
    assert len(data.train_dl.tensors[0]) == 240 and data.train_dl.tensors[1].dtype == torch.uint8
    x, y = data.one_batch("train")
    assert y.dtype == torch.int64 and y.shape == (64, 64, 64)
    labelled = (y > 0) & (y != 255)
    assert ((x[:, 0] * 255)[labelled] > 40).all()  # the garments' pixels moved with their labels
    counts = torch.bincount(y[y != 255].flatten(), minlength=11)
    assert (counts[1:] > 0).all()  # every garment class occurs in one batch


def test_keypoint_sample_points_are_box_corners():
    rows = list(csv.reader(open(SAMPLE / "keypoints" / "points.csv")))
    assert rows[0] == ["file", "x0", "y0", "x1", "y1", "x2", "y2", "x3", "y3"] and len(rows) == 201
    for row in rows[1:40]:
        img = np.asarray(Image.open(SAMPLE / "keypoints" / row[0]))
        x0, y0, x1, _, _, y1, _, _ = (int(v) for v in row[1:])
        on = img > 40
        inside = on[y0:y1, x0:x1]
        assert inside.any(axis=0)[[0, -1]].all() and inside.any(axis=1)[[0, -1]].all()  # the box is tight...
        assert on.sum() >= inside.sum()  # ...and the garment lies within it (the background stays <= 60)
    data = PointsDataBunch.from_csv(SAMPLE / "keypoints" / "points.csv", mode="L", seed=0, batch_size=32,
                                    normalize=None, verbose=False)
    assert data.loader_kind == "resident" and data.y_block.n_points == 4 and data.y_block.n_outputs == 8
    x, y = data.one_batch("valid")
    assert y.shape == (32, 4, 2) and float(y.abs().max()) <= 1
    tl, br = y[:, 0], y[:, 2]
    assert (tl < br).all()  # top-left above and left of bottom-right
