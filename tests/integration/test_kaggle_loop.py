"""The Kaggle loop on real small data: a submission file from an unlabelled test folder / CSV (labels,
probabilities, TTA, the input's order, clear refusals, atomic writes) and K-fold cross-validation (stratified,
seeded folds; out-of-fold accuracy well above chance; averaged test predictions), on the Fashion-MNIST PNG sample
and the fortunes sample."""
from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest
import torch

from learnkit import Learner, accuracy, create_model, cross_validate, load_learner, set_seed, write_submission
from learnkit.datasets import sample_path
from learnkit.vision import ImageDataBunch, aug_transforms

pytestmark = pytest.mark.integration

PNG = sample_path("fashion-mnist-sample") / "png"
CLASSES = sorted(d.name for d in (PNG / "train").iterdir() if d.is_dir())


def _subset(split: str, per_class: int) -> tuple[list[Path], list[str]]:
    files, labels = [], []
    for c in CLASSES:
        chosen = sorted((PNG / split / c).glob("*.png"), key=lambda p: int(p.stem))[:per_class]
        files += chosen
        labels += [c] * len(chosen)
    return files, labels


def _learner(files: list[Path], labels: list[str], valid_idx: list[int], augment: bool = False) -> Learner:
    data = ImageDataBunch.from_lists("/", files, labels, valid_idx=valid_idx, mode="L", batch_size=16,
                                     batch_tfms=aug_transforms(max_warp=0, seed=0) if augment else (), verbose=False)
    return Learner(data, create_model("simple_cnn", n_in=1, n_out=data.n_classes), metrics=[accuracy],
                   progress=False)


@pytest.fixture(scope="module")
def trained():
    """simple_cnn on 40 training images per class (3 epochs, flips and small rotations), validated on 10 per class."""
    set_seed(0)
    files, labels = _subset("train", 40)
    valid_files, valid_labels = _subset("valid", 10)
    learn = _learner(files + valid_files, labels + valid_labels, list(range(len(files), len(files) + 100)),
                     augment=True)
    learn.fit_one_cycle(3, 1e-2)
    return learn


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """40 valid images (4 per class) copied to test/ under ids that hide their class, in shuffled order, and a
    test.csv listing those ids in another order; returns (root, {id: true label})."""
    root = tmp_path_factory.mktemp("kaggle")
    (root / "test").mkdir()
    files, labels = _subset("valid", 14)
    picked = [(f, y) for k, (f, y) in enumerate(zip(files, labels)) if k % 14 >= 10]
    rng = random.Random(1)
    rng.shuffle(picked)
    truth = {}
    for k, (f, y) in enumerate(picked):
        shutil.copy(f, root / "test" / f"img{k:03d}.png")
        truth[f"img{k:03d}"] = y
    ids = list(truth)
    rng.shuffle(ids)
    with open(root / "test.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "note"])
        w.writerows([[i, "x"] for i in ids])
    return root, truth


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.open(newline="")))
    return rows[0], rows[1:]


def test_submission_from_a_folder_and_a_csv(trained, test_set, tmp_path):
    root, truth = test_set
    out = write_submission(trained, root / "test", tmp_path / "sub" / "submission.csv")
    header, rows = _read(out)
    assert header == ["id", "label"]
    assert [r[0] for r in rows] == sorted(truth)  # a folder: sorted file names, the id is the name's stem
    assert sum(truth[i] == y for i, y in rows) / len(rows) > 0.4  # chance: 0.1 (measured: 0.575)

    # The exported model (load_learner: a Predictor, no Learner) writes the same submission.
    trained.export(tmp_path / "model")
    exported = write_submission(load_learner(tmp_path / "model"), root / "test", tmp_path / "exported.csv")
    assert exported.read_text() == out.read_text()
    with pytest.raises(ValueError, match="tta=True.* needs the Learner"):
        write_submission(load_learner(tmp_path / "model"), root / "test", tmp_path / "x.csv", tta=True)

    csv_ids = [r[0] for r in _read(root / "test.csv")[1]]
    out = write_submission(trained, root / "test.csv", tmp_path / "probs.csv", folder="test", suffix=".png",
                           probabilities=True)
    header, prob_rows = _read(out)
    assert header == ["id"] + CLASSES
    assert [r[0] for r in prob_rows] == csv_ids  # the CSV's order, not sorted
    probs = torch.tensor([[float(v) for v in r[1:]] for r in prob_rows])
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-4)
    by_id = dict(rows)
    assert [CLASSES[int(p.argmax())] for p in probs] == [by_id[i] for i in csv_ids]  # same model, same answers


def test_submission_with_tta(trained, test_set, tmp_path):
    root, truth = test_set
    plain = write_submission(trained, root / "test", tmp_path / "plain.csv", probabilities=True)
    with_tta = write_submission(trained, root / "test", tmp_path / "tta.csv", probabilities=True, tta=True)
    p0 = torch.tensor([[float(v) for v in r[1:]] for r in _read(plain)[1]])
    p1 = torch.tensor([[float(v) for v in r[1:]] for r in _read(with_tta)[1]])
    assert torch.allclose(p1.sum(1), torch.ones(len(p1)), atol=1e-4)
    assert not torch.allclose(p0, p1, atol=1e-3)  # the augmented passes changed something
    assert (p0.argmax(1) == p1.argmax(1)).float().mean() > 0.7  # ... but not the model's mind on most images
    again = write_submission(trained, root / "test", tmp_path / "tta2.csv", probabilities=True, tta=True)
    assert again.read_text() == with_tta.read_text()  # TTA restores its random state: reproducible


def test_submission_refuses_clearly_and_writes_atomically(trained, test_set, tmp_path):
    root, _ = test_set
    out = tmp_path / "submission.csv"
    out.write_text("the previous submission\n")
    with pytest.raises(KeyError, match=r"test.csv has no column 'image' \(id_col\); its columns are \['id', 'note'\]"):
        write_submission(trained, root / "test.csv", out, id_col="image", folder="test", suffix=".png")
    with pytest.raises(IsADirectoryError, match="is a folder; pass a file name"):
        write_submission(trained, root / "test", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        write_submission(trained, root / "missing.csv", out)
    with pytest.raises(FileNotFoundError, match=r"do not exist.*check folder= and suffix="):
        write_submission(trained, root / "test.csv", out, folder="test", suffix=".jpg")
    broken = tmp_path / "broken"
    shutil.copytree(root / "test", broken)
    (broken / "img005.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(Exception, match="img005.png"):  # the decoder's error names the unreadable file
        write_submission(trained, broken, out)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,text\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv"):
        write_submission(trained, latin1, out)
    assert out.read_text() == "the previous submission\n"  # no failed call touched it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "latin1.csv", "submission.csv"]  # no temp left


def test_cross_validation_on_images():
    files, labels = _subset("train", 30)  # 300 images
    test_files, test_labels = _subset("valid", 5)

    def make_learner(fold):
        return _learner(files, labels, fold.valid_idx)

    cv = cross_validate(make_learner, files, labels, n_splits=3, seed=0,
                        fit=lambda learn: learn.fit_one_cycle(3, 1e-2), test_items=test_files)
    valid_sets = [set(f.valid_idx) for f in cv.folds]
    assert sum(map(len, valid_sets)) == len(files) and set().union(*valid_sets) == set(range(len(files)))
    for f in cv.folds:  # stratified: 10 of each class in every fold
        assert sorted(labels[i] for i in f.valid_idx) == sorted(CLASSES * 10)
        assert set(f.train_idx).isdisjoint(f.valid_idx)
    assert len(cv.fold_metrics) == 3 and all(m["accuracy"] > 0.4 for m in cv.fold_metrics), cv.fold_metrics
    assert cv.metrics["accuracy"] == pytest.approx(sum(m["accuracy"] for m in cv.fold_metrics) / 3)
    assert cv.oof_probs.shape == (300, 10) and not torch.isnan(cv.oof_probs).any()
    assert torch.allclose(cv.oof_probs.sum(1), torch.ones(300), atol=1e-4)
    assert cv.oof_accuracy > 0.45, cv.oof_accuracy  # chance 0.1 (measured: 0.61)
    # The out-of-fold accuracy is the folds' validation accuracy, computed from the items in their order.
    assert cv.oof_accuracy == pytest.approx(cv.metrics["accuracy"], abs=0.02)
    assert cv.test_probs.shape == (50, 10) and torch.allclose(cv.test_probs.sum(1), torch.ones(50), atol=1e-4)
    assert sum(p == y for p, y in zip(cv.test_preds, test_labels)) / 50 > 0.4  # measured: 0.6


def test_text_submission_from_a_csv_keeps_the_row_order(tmp_path):
    """A text competition's test.csv (id,text) with the fortunes sample's texts: rows in the file's order, each the
    prediction of its own text (the padded text path must not reorder them)."""
    from learnkit.text import TextDataBunch, text_classifier_learner
    fortunes = sample_path("fortunes-sample") / "fortunes.csv"
    rows = list(csv.DictReader(fortunes.open(encoding="utf-8", newline="")))
    set_seed(0)
    data = TextDataBunch.from_csv(fortunes, batch_size=32, seed=0)
    learn = text_classifier_learner(data, config={"emb_size": 64, "hidden_size": 128, "n_layers": 1}, progress=False)
    # Untrained on purpose (a fit of this LSTM on CPU takes ~10 s): the rows' order is tested, not the accuracy, and
    # a freshly initialised model already gives every text its own probabilities (asserted below).
    picked = [r for r in rows if r["is_valid"] == "True"][:30]
    random.Random(2).shuffle(picked)
    test = tmp_path / "test.csv"
    with open(test, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[f"t{k}", r["text"]] for k, r in enumerate(picked)])
    out = write_submission(learn, test, tmp_path / "submission.csv", probabilities=True)
    header, written = _read(out)
    assert header == ["id"] + [str(c) for c in learn.data.classes]
    assert [r[0] for r in written] == [f"t{k}" for k in range(30)]
    probs = torch.tensor([[float(v) for v in r[1:]] for r in written])
    assert torch.allclose(probs.sum(1), torch.ones(30), atol=1e-4)
    assert len({tuple(p.tolist()) for p in probs}) == 30  # distinct rows: a reordering would show
    for k in (0, 7, 29):  # each row is its own text's prediction
        assert torch.allclose(probs[k], learn.predict(picked[k]["text"])[2], atol=1e-4)
