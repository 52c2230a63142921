"""The Kaggle loop on tiny synthetic data (folds, cross_validate, write_submission), the lookup of Debian data
unpacked without root, and `learnkit predict`'s error for a model that takes tensors. Real-data runs:
tests/integration/test_kaggle_loop.py."""
from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from learnkit import (CategoryBlock, DataBlock, Learner, TensorBlock, accuracy, cli, cross_validate,
                      write_submission)
from learnkit.core.system_data import how_to_install, system_data_path
from learnkit.learner import kfold_indices
from learnkit.testing import classification_items, tiny_learner, tiny_mlp


# ------------------------------------------------------------------------------------------------ folds
def test_stratified_folds_are_disjoint_cover_and_keep_class_shares():
    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 18
    folds = kfold_indices(60, n_splits=3, seed=0, labels=labels)
    valid = [v for _, v in folds]
    assert sorted(i for v in valid for i in v) == list(range(60))  # every item validated exactly once
    for train, v in folds:
        assert sorted(train + v) == list(range(60)) and not set(train) & set(v)
        assert Counter(labels[i] for i in v) == {"a": 10, "b": 4, "c": 6}
    assert kfold_indices(60, 3, 0, labels) == folds  # seeded
    assert kfold_indices(60, 3, 1, labels) != folds
    plain = kfold_indices(10, n_splits=3, seed=0)
    assert sorted(len(v) for _, v in plain) == [3, 3, 4]


@pytest.mark.parametrize("args, message", [
    ((10, 1), "n_splits=1"),
    ((3, 5), "3 items cannot make 5 folds"),
    ((6, 3, 0, ["a"] * 5 + ["b"]), r"fewer items than n_splits=3.*'b': 1"),
    ((6, 3, 0, ["a"] * 5), "6 items but 5 labels"),
])
def test_bad_fold_requests_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        kfold_indices(*args)


# ------------------------------------------------------------------------------------------------ cross_validate
PAIRS = classification_items(150, seed=3)
X, Y = [x for x, _ in PAIRS], [y for _, y in PAIRS]


def _make_learner(fold):
    data = DataBlock(blocks=(TensorBlock, CategoryBlock), splitter=fold.splitter).databunch(
        PAIRS, batch_size=32, device="cpu", seed=0)
    return Learner(data, tiny_mlp(8, 3), metrics=[accuracy], progress=False)


def test_cross_validate_over_a_datablock_factory():
    cv = cross_validate(_make_learner, X, Y, n_splits=3, seed=0, fit=lambda learn: learn.fit_one_cycle(3, 5e-2),
                        test_items=X[:10])
    assert [len(f.valid_idx) for f in cv.folds] == [50, 50, 50]
    assert cv.classes == ["class_0", "class_1", "class_2"]
    assert cv.oof_probs.shape == (150, 3) and torch.allclose(cv.oof_probs.sum(1), torch.ones(150), atol=1e-5)
    assert cv.oof_accuracy > 0.65, cv.oof_accuracy  # chance ~0.33 (measured: 0.76)
    # out-of-fold predictions are in the items' order: each equals its own fold's accuracy share
    for f, m in zip(cv.folds, cv.fold_metrics):
        right = sum(cv.oof_preds[i] == Y[i] for i in f.valid_idx) / len(f.valid_idx)
        assert right == pytest.approx(m["accuracy"], abs=1e-6)
    assert cv.metrics["accuracy"] == pytest.approx(cv.oof_accuracy, abs=1e-6)  # equal folds: the same mean
    assert cv.test_probs.shape == (10, 3) and len(cv.test_preds) == 10


def test_cross_validate_refuses_a_factory_that_ignores_the_fold():
    def ignores_fold(fold):
        return tiny_learner("classification", n=150)  # its own random 25% split, not the fold's

    with pytest.raises(ValueError, match=r"fold 0's learner validates on \d+ items, but the fold has 50.*splitter"):
        cross_validate(ignores_fold, X, Y, n_splits=3)


# ------------------------------------------------------------------------------------------------ write_submission
def test_write_submission_from_a_list(tmp_path):
    learn = tiny_learner("classification")
    learn.fit_one_cycle(2, 3e-2)
    out = write_submission(learn, X[:7], tmp_path / "a" / "sub.csv", ids=[f"r{i}" for i in range(7)])
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == [f"r{i}" for i in range(7)]
    probs, _ = learn.get_preds(learn.data.test_dl(X[:7]))
    assert [r[1] for r in rows[1:]] == [learn.data.classes[int(i)] for i in probs.argmax(1)]
    out = write_submission(learn, X[:7], tmp_path / "p.csv", id_col="row", probabilities=True)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["row", "class_0", "class_1", "class_2"] and rows[1][0] == "0"
    written = torch.tensor([[float(v) for v in r[1:]] for r in rows[1:]])
    assert torch.allclose(written, probs, atol=1e-5)
    with pytest.raises(ValueError, match="7 inputs but 2 ids"):
        write_submission(learn, X[:7], tmp_path / "x.csv", ids=["a", "b"])
    with pytest.raises(ValueError, match="repeat a name"):
        write_submission(learn, X[:7], tmp_path / "x.csv", id_col="label")
    with pytest.raises(ValueError, match="no class target block"):
        write_submission(tiny_learner("regression"), X[:3], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------------------------------------ Debian data
def test_system_data_is_found_at_the_system_path_then_the_unpacked_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNKIT_HOME", str(tmp_path / "home"))
    absent = "/nonexistent-learnkit-test/share/file.txt"
    assert str(system_data_path(absent)) == absent  # nowhere: the system path, for the caller's error
    unpacked = tmp_path / "home" / "debian" / "nonexistent-learnkit-test" / "share" / "file.txt"
    unpacked.parent.mkdir(parents=True)
    unpacked.write_text("x")
    assert system_data_path(absent) == unpacked
    assert system_data_path(tmp_path) == tmp_path  # an existing path wins
    # A folder counts only when it holds what the caller reads (another package may own the same folder).
    assert system_data_path(tmp_path, needs=["file.txt"]) == tmp_path  # nowhere: the path itself
    folder = "/nonexistent-learnkit-test/share"
    assert system_data_path(folder, needs=["file.txt"]) == unpacked.parent
    assert str(system_data_path(folder, needs=["other.txt"])) == folder
    assert "apt-get install fortunes" in how_to_install("fortunes") and "./run data" in how_to_install("fortunes")


# ------------------------------------------------------------------------------------------------ CLI predict
def test_predict_names_what_a_tensor_model_takes(tmp_path, capsys):
    learn = tiny_learner("classification", path=tmp_path)
    learn.export(tmp_path / "model")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    assert cli.main(["predict", str(tmp_path / "model"), str(note)]) == 2
    err = capsys.readouterr().err
    assert "takes tensors (its input is a TensorBlock)" in err and "load_learner(" in err
    assert err.count("\n") == 1
