"""The registry's real entries against Debian's packages: `get_dataset(..., offline=True)` converts the full
Fashion-MNIST and fortunes sets from /usr/share, and the registered checksums hold for those files.

Skipped without the packages, except in CI (env CI set), where a missing package fails with the `apt-get`
line, so that a skip cannot go unnoticed. The Fashion-MNIST conversion writes 70,000 PNGs (~20 s on 2 cores).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnkit import read_idx
from learnkit.datasets import MANIFEST, dataset_info, get_dataset
from learnkit.text.corpora import FORTUNE_CATEGORIES
from ci_rules import how_to_install, skip_or_fail, system_data_path

pytestmark = pytest.mark.integration

FMNIST = system_data_path("/usr/share/datasets/fashion-mnist",
                          needs=[f.name for f in dataset_info("fashion-mnist").files])
FORTUNES = system_data_path("/usr/share/games/fortunes", needs=FORTUNE_CATEGORIES)
# The gzip header of the upstream files: a stored file name and these time stamps (2017-08-31 UTC). Debian's
# package holds the same compressed bytes under a header without the name (see learnkit/datasets/registry.py).
UPSTREAM_MTIME = {"train-images-idx3-ubyte.gz": 1504176606, "train-labels-idx1-ubyte.gz": 1504176606,
                  "t10k-images-idx3-ubyte.gz": 1504176627, "t10k-labels-idx1-ubyte.gz": 1504176627}


def require(name: str, package: str) -> None:
    missing = [p for f in dataset_info(name).files for p in f.local_paths if not system_data_path(p).is_file()]
    if missing:
        message = f"{name}: {', '.join(missing)} not found. {how_to_install(package)}."
        skip_or_fail(message)


def test_debian_fashion_mnist_files_match_the_registry():
    require("fashion-mnist", "dataset-fashion-mnist")
    for dfile in dataset_info("fashion-mnist").files:
        upstream, debian = dfile.checksums
        data = (FMNIST / dfile.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (debian.size, debian.sha256), dfile.name
        # Debian's bytes do not have upstream's md5 ...
        assert hashlib.md5(data).hexdigest() != upstream.md5
        # ... but the same deflate stream under upstream's header (flags FNAME, its mtime, XFL 0, OS Unix) does.
        header = b"\x1f\x8b\x08\x08" + struct.pack("<I", UPSTREAM_MTIME[dfile.name]) + b"\x00\x03"
        rebuilt = header + dfile.name.removesuffix(".gz").encode() + b"\x00" + data[10:]
        assert data[:4] == b"\x1f\x8b\x08\x00"  # Debian's header: deflate, no flags
        assert len(rebuilt) == upstream.size
        assert hashlib.md5(rebuilt).hexdigest() == upstream.md5, dfile.name
        assert hashlib.sha256(rebuilt).hexdigest() == upstream.sha256, dfile.name
        assert gzip.decompress(rebuilt) == gzip.decompress(data)


def test_fashion_mnist_converts_offline_from_the_debian_copy(tmp_path):
    require("fashion-mnist", "dataset-fashion-mnist")
    folder = get_dataset("fashion-mnist", home=tmp_path, offline=True, progress=False)
    assert folder == tmp_path.resolve() / "datasets" / "fashion-mnist"
    assert len(list((folder / "train").rglob("*.png"))) == 60000
    assert len(list((folder / "valid").rglob("*.png"))) == 10000
    with open(folder / "labels.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 70000 and Counter(r["is_valid"] for r in rows) == {"False": 60000, "True": 10000}
    assert set(Counter(r["label"] for r in rows).values()) == {7000}  # balanced: 6000 + 1000 per class
    images, labels = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    classes = (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
    for i in (0, 4321, 9999):
        row = next(r for r in rows if r["is_valid"] == "True" and r["path"].endswith(f"/{i}.png"))
        assert row["label"] == classes[int(labels[i])]
        assert np.array_equal(np.asarray(Image.open(folder / row["path"])), images[i].numpy())
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    for name, record in manifest["files"].items():
        assert record["source"] == str(FMNIST / name) and record["origin"].startswith("Debian dataset-fashion-mnist")
    assert not (tmp_path / "downloads").exists()  # nothing downloaded, nothing copied
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["fashion-mnist"]  # no temporary folder left


def test_fortunes_converts_offline_from_the_debian_package(tmp_path):
    require("fortunes-6", "fortunes")
    folder = get_dataset("fortunes-6", home=tmp_path, offline=True, progress=False)
    with open(folder / "fortunes.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4298 and Counter(r["is_valid"] for r in rows) == {"False": 3438, "True": 860}
    copyright = system_data_path("/usr/share/doc/fortunes/copyright")
    assert (folder / "LICENSE").read_bytes().endswith(copyright.read_bytes())
