"""lr_find on real data, over three seeds each: the suggestions land in a sane range, never on the first points of
the sweep, with no warning, and training at the valley trains (Fashion-MNIST: well above chance).

Before the fix, the fortunes text classifier's valley landed on the sweep's first points in 2 of 3 seeds
(1.8e-05 and 1.45e-07 for seeds 1 and 2; training at 1.45e-07 stays at chance, 0.167).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from learnkit import (CategoryBlock, DataBlock, IndexSplitter, Learner, Normalize, TensorBlock, accuracy,
                      create_model, read_idx, set_seed)
from learnkit.cli.train import SMALL_AWD_LSTM
from learnkit.text import TextDataBunch, text_classifier_learner

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FORTUNES = REPO / "datasets" / "fortunes-sample" / "fortunes.csv"
FMNIST = REPO / "datasets" / "fashion-mnist-sample"


def _find(learn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suggestions = learn.lr_find(show_plot=False)
    lr_warnings = [str(w.message) for w in caught if "lr_find" in str(w.message)]
    first_points = learn.lr_find_results["lrs"][3]
    return suggestions, lr_warnings, first_points


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fortunes_text_classifier(seed):
    set_seed(seed)
    # max_len=64 (the first 64 tokens of each text) keeps the run short; the failure showed on it too
    data = TextDataBunch.from_csv(FORTUNES, seed=seed, batch_size=32, device="cpu", max_len=64)
    learn = text_classifier_learner(data, config=SMALL_AWD_LSTM, progress=False)
    s, lr_warnings, first_points = _find(learn)
    assert not lr_warnings, lr_warnings
    assert 1e-4 <= s.valley <= 1e-1, s
    assert min(s.valley, s.steepest, s.minimum * 10) > first_points, s
    learn.fit_one_cycle(3, s.valley)
    records = learn.history.epoch_records
    # An AWD-LSTM from scratch on 480 texts is barely above chance after 3 epochs at any rate (0.17-0.24 measured),
    # so what is asserted is that it trains: at 1.45e-07 the training loss stayed at 1.94-1.95 over 4 epochs.
    assert records[-1]["train_loss"] <= 0.93 * records[0]["train_loss"], (s.valley, records)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fashion_mnist_cnn(seed):
    set_seed(seed)
    images = read_idx(FMNIST / "train-images-idx3-ubyte.gz")
    labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    dblock = DataBlock(blocks=(TensorBlock(dtype=None), CategoryBlock()), get_x=lambda i: images[i].unsqueeze(0),
                       get_y=lambda i: int(labels[i]), splitter=IndexSplitter(range(1600, 2000)),
                       batch_tfms=[Normalize(0.2860, 0.3530)])
    data = dblock.databunch(list(range(2000)), batch_size=64, device="cpu", seed=seed)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=10), metrics=[accuracy], progress=False)
    s, lr_warnings, first_points = _find(learn)
    assert not lr_warnings, lr_warnings
    assert 1e-4 <= s.valley <= 1e-1, s
    assert min(s.valley, s.steepest, s.minimum * 10) > first_points, s
    learn.fit_one_cycle(2, s.valley)
    acc = learn.history.epoch_records[-1]["accuracy"]
    assert acc >= 0.6, f"accuracy {acc:.3f} at lr {s.valley:.2e} (chance: 0.10)"
