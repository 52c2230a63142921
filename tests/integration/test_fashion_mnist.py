"""Fashion-MNIST end to end on the CPU: DataBlock → simple_cnn → fit_one_cycle → accuracy well above chance.

Two sources: the committed sample (datasets/fashion-mnist-sample, always present) and the full data set of
Debian's `dataset-fashion-mnist` (skipped without it, except in CI, where a missing data set fails).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

import learnkit
from learnkit import (CategoryBlock, DataBlock, IndexSplitter, Learner, Normalize, TensorBlock, accuracy,
                      create_model, read_idx, set_seed)
from ci_rules import how_to_install, skip_or_fail, system_data_path

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "fashion-mnist-sample"
DEBIAN = system_data_path("/usr/share/datasets/fashion-mnist", needs=[f"{s}-{k}-ubyte.gz" for s in ("train", "t10k")
                                                                       for k in ("images-idx3", "labels-idx1")])
CLASSES = (SAMPLE / "classes.txt").read_text(encoding="utf-8").splitlines()
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (after scaling to [0, 1])


def require_debian_data() -> Path:
    """The Debian data folder; skip without it, but fail in CI, where a skip would go unnoticed."""
    files = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [f for f in files if not (DEBIAN / f).exists()]
    if missing:
        message = (f"Fashion-MNIST not found: {DEBIAN} lacks {', '.join(missing)}. "
                   f"{how_to_install('dataset-fashion-mnist')}.")
        skip_or_fail(message)
    return DEBIAN


def read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) of `split` ('train' or 't10k') in `folder`."""
    return read_idx(folder / f"{split}-images-idx3-ubyte.gz"), read_idx(folder / f"{split}-labels-idx1-ubyte.gz")


def train_cnn(images: torch.Tensor, labels: torch.Tensor, n_valid: int, epochs: int, seed: int,
              max_lr: float = 1e-2) -> Learner:
    """Train simple_cnn on items 0..N-n_valid-1, validate on the last `n_valid` items."""
    set_seed(seed)
    dblock = DataBlock(
        blocks=(TensorBlock(dtype=None), CategoryBlock(vocab=CLASSES)),  # vocab in label order, not sorted
        get_x=lambda i: images[i].unsqueeze(0),  # (1, 28, 28) uint8: Normalize scales it on the device
        get_y=lambda i: CLASSES[int(labels[i])],
        splitter=IndexSplitter(range(len(images) - n_valid, len(images))),
        batch_tfms=[Normalize(MEAN, STD)])
    data = dblock.databunch(list(range(len(images))), batch_size=64, device="cpu", seed=seed)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=10), metrics=[accuracy], progress=False)
    learn.fit_one_cycle(epochs, max_lr)
    return learn


def test_sample_is_class_balanced():
    for split, per_class in (("train", 200), ("t10k", 50)):
        images, labels = read_split(SAMPLE, split)
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == torch.uint8
        assert torch.bincount(labels.long(), minlength=10).tolist() == [per_class] * 10
    assert CLASSES == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                       "Bag", "Ankle boot"]


def test_sample_trains_well_above_chance():
    train_x, train_y = read_split(SAMPLE, "train")
    test_x, test_y = read_split(SAMPLE, "t10k")
    learn = train_cnn(torch.cat([train_x, test_x]), torch.cat([train_y, test_y]), n_valid=len(test_x),
                      epochs=8, seed=0)
    last = learn.history.epoch_records[-1]
    assert last["accuracy"] >= 0.75, f"accuracy {last['accuracy']:.3f} on the sample (chance: 0.10)"
    # validate() re-runs the validation set on the final weights: it must agree with what fit recorded.
    again = learn.validate()
    assert again["accuracy"] == pytest.approx(last["accuracy"], abs=1e-6)
    assert again["valid_loss"] == pytest.approx(last["valid_loss"], rel=1e-5)
    # The training loss went down: the loop really trained.
    first = learn.history.epoch_records[0]
    assert last["train_loss"] < first["train_loss"]


def test_full_data_subsample_trains_well_above_chance():
    folder = require_debian_data()
    train_x, train_y = read_split(folder, "train")
    test_x, test_y = read_split(folder, "t10k")
    g = torch.Generator().manual_seed(0)
    train_idx = torch.randperm(len(train_x), generator=g)[:6000]
    test_idx = torch.randperm(len(test_x), generator=g)[:2000]
    images = torch.cat([train_x[train_idx], test_x[test_idx]])
    labels = torch.cat([train_y[train_idx], test_y[test_idx]])
    learn = train_cnn(images, labels, n_valid=2000, epochs=5, seed=0)
    acc = learn.history.epoch_records[-1]["accuracy"]
    assert acc >= 0.80, f"accuracy {acc:.3f} on 2000 test images after training on 6000 (chance: 0.10)"


def test_build_script_reproduces_the_committed_sample(tmp_path):
    """Rebuilding from the Debian files gives the committed content (compared decompressed, so that another
    zlib version, which may compress differently, does not matter)."""
    folder = require_debian_data()
    import runpy
    build = runpy.run_path(str(REPO / "datasets" / "build_fashion_mnist_sample.py"))["build"]
    build(folder, tmp_path, seed=0)
    for name in sorted(p.name for p in SAMPLE.iterdir() if p.is_file()):
        ours, committed = (tmp_path / name).read_bytes(), (SAMPLE / name).read_bytes()
        if name.endswith(".gz"):
            ours, committed = gzip.decompress(ours), gzip.decompress(committed)
        assert ours == committed, f"{name} differs from the committed sample; rebuild and commit it"
    assert learnkit.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").shape == (500,)


def test_png_build_script_reproduces_the_committed_png_folder(tmp_path):
    """The PNG folder is the IDX sample, pixel for pixel and byte for byte (its build script is deterministic)."""
    import runpy
    script = runpy.run_path(str(REPO / "datasets" / "build_fashion_mnist_png_sample.py"))
    counts = script["build"](SAMPLE, tmp_path)
    assert counts == {"train": 2000, "valid": 500}
    assert script["tree_digest"](tmp_path) == script["tree_digest"](SAMPLE / "png")


def test_missing_data_skips_locally_but_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "DEBIAN", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install dataset-fashion-mnist"):
        require_debian_data()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install dataset-fashion-mnist"):
        require_debian_data()
