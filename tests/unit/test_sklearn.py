"""learnkit.sklearn: the scikit-learn estimator contract (fit/predict/score, clone, nested params,
GridSearchCV, partial_fit, reproducibility, errors) for numeric X, image paths and texts. Tiny data, CPU,
a few seconds."""
import numpy as np
import pytest

pytest.importorskip("sklearn")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from learnkit.sklearn import LearnkitClassifier, LearnkitRegressor  # noqa: E402
from learnkit.testing import quadrant_image_items  # noqa: E402
from learnkit.vision.nets import ResNet9  # noqa: E402

FAST = dict(module__hidden=(16,), epochs=6, max_lr=1e-2, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def clf_data():
    X, y = make_classification(n_samples=300, n_features=8, n_informative=5, random_state=0)
    return X, np.array(["cat", "dog"])[y]


def _width(est):
    return [m for m in est.learner_.model.modules() if isinstance(m, nn.Linear)][0].out_features


def test_classifier_string_labels(clf_data):
    X, y = clf_data
    clf = LearnkitClassifier(**FAST).fit(X[:200], y[:200])
    assert list(clf.classes_) == ["cat", "dog"]
    assert clf.n_features_in_ == 8
    proba = clf.predict_proba(X[200:])
    assert proba.shape == (100, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    pred = clf.predict(X[200:])
    assert set(pred) <= {"cat", "dog"}
    assert (pred == clf.classes_[proba.argmax(1)]).all()  # columns are in classes_ order
    assert clf.score(X[200:], y[200:]) > 0.8


def test_classifier_accepts_tensors_and_callable_module(clf_data):
    X, y = clf_data
    def factory(n_in, n_out, width=8):
        return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, n_out))
    clf = LearnkitClassifier(module=factory, module__hidden=None, module__width=8, epochs=2, device="cpu")
    clf.fit(torch.from_numpy(X), y)
    assert _width(clf) == 8 and clf.predict(X[:5]).shape == (5,)


def test_regressor_in_pipeline():
    X, y = make_regression(n_samples=300, n_features=8, noise=5.0, random_state=0)
    reg = make_pipeline(StandardScaler(), LearnkitRegressor(module__hidden=(32,), epochs=30, max_lr=3e-2,
                                                            batch_size=32, device="cpu"))
    reg.fit(X[:200], y[:200])
    assert reg.predict(X[200:]).shape == (100,)
    assert reg.score(X[200:], y[200:]) > 0.8


def test_clone_and_nested_params(clf_data):
    X, y = clf_data
    est = LearnkitClassifier(module__hidden=(24,), module__dropout=0.1, epochs=1, device="cpu")
    params = est.get_params(deep=True)
    assert params["module__hidden"] == (24,) and params["module__dropout"] == 0.1
    twin = clone(est)
    assert twin.get_params() == params and not hasattr(twin, "learner_")
    twin.set_params(module__hidden=(16,), epochs=2)
    assert twin.get_params()["module__hidden"] == (16,) and twin.epochs == 2
    assert est.module__hidden == (24,)  # the original is untouched
    twin.fit(X, y)
    assert _width(twin) == 16
    # Through a Pipeline: the nested name reaches the estimator.
    pipe = make_pipeline(StandardScaler(), LearnkitClassifier(**FAST))
    pipe.set_params(learnkitclassifier__module__hidden=(12,))
    assert pipe.get_params()["learnkitclassifier__module__hidden"] == (12,)
    assert _width(pipe.fit(X, y)[-1]) == 12


def test_grid_search_and_cross_val(clf_data):
    X, y = clf_data
    pipe = Pipeline([("scale", StandardScaler()), ("learnkitclassifier", LearnkitClassifier(**FAST))])
    grid = GridSearchCV(pipe, {"learnkitclassifier__max_lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert grid.best_params_["learnkitclassifier__max_lr"] in (1e-3, 1e-2)
    scores = cross_val_score(LearnkitRegressor(**FAST), *make_regression(n_samples=120, n_features=4,
                                                                         random_state=0), cv=2)
    assert np.isfinite(scores).all()


def test_partial_fit_and_reproducibility(clf_data):
    X, y = clf_data
    clf = LearnkitClassifier(**{**FAST, "epochs": 2, "max_lr": 3e-3})
    clf.partial_fit(X[:150], y[:150], classes=["cat", "dog"])
    first = log_loss(y, clf.predict_proba(X), labels=clf.classes_)
    model = clf.learner_.model
    clf.partial_fit(X[150:], y[150:])
    assert clf.learner_.model is model  # continued, not rebuilt
    assert log_loss(y, clf.predict_proba(X), labels=clf.classes_) <= first + 1e-3
    # First partial_fit with only one label present needs `classes`.
    LearnkitClassifier(**FAST).partial_fit(X[:40][y[:40] == "cat"], y[:40][y[:40] == "cat"], classes=["cat", "dog"])
    a = LearnkitClassifier(**FAST).fit(X, y).predict_proba(X)
    b = LearnkitClassifier(**FAST).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = LearnkitClassifier(**{**FAST, "seed": 1}).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_auto_lr(clf_data):
    X, y = clf_data
    clf = LearnkitClassifier(**{**FAST, "max_lr": "auto", "epochs": 2}).fit(X, y)
    assert 0 < clf.max_lr_ < 10


def test_errors_are_named(clf_data):
    X, y = clf_data
    clf = LearnkitClassifier(**FAST)
    with pytest.raises(ValueError, match="y has 299 samples but X has 300"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="X must be numeric.*OneHotEncoder"):
        clf.fit(np.array([["a", "b"]] * 10), ["cat", "dog"] * 5)
    with pytest.raises(ValueError, match="y has 1 class.*at least two"):
        clf.fit(X, np.array(["cat"] * len(X)))
    with pytest.raises(ValueError, match="X must be 2-D.*reshape"):
        clf.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.full((10, 2), np.nan), ["cat", "dog"] * 5)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    clf.set_params(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but LearnkitClassifier is expecting 8"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:4], ["cow"] * 4)
    with pytest.raises(ValueError, match="y must be numeric"):
        LearnkitRegressor(**FAST).fit(X, y)


# ---------------------------------------------------------------- image paths and texts as X
IMG = dict(epochs=4, max_lr=1e-2, batch_size=16, device="cpu")
TXT = dict(epochs=8, max_lr=3e-2, batch_size=16, device="cpu", module__emb_size=16, module__hidden_size=32,
           module__n_layers=1)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """96 grayscale 8x8 PNGs; the label is the bright quadrant (q0..q3): chance is 0.25."""
    from PIL import Image
    root = tmp_path_factory.mktemp("quadrants")
    files, labels = [], []
    for i, (x, label) in enumerate(quadrant_image_items(n=96, channels=1, seed=0)):
        Image.fromarray(x[0].numpy()).save(root / f"{i}.png")
        files.append(root / f"{i}.png")
        labels.append(label)
    return files, np.array(labels)


@pytest.fixture(scope="module")
def text_data():
    """80 short documents over two disjoint vocabularies (fruit / car words): chance is 0.5."""
    rng = np.random.default_rng(0)
    words = {"fruit": "apple banana cherry grape lemon mango".split(),
             "car": "engine wheel brake motor piston gear".split()}
    y = np.array(["fruit", "car"])[np.arange(80) % 2]
    texts = [" ".join(rng.choice(words[label], 6)) for label in y]
    texts[2] += " see photo.jpg"  # a text that ends like a file name is still a text (it has whitespace)
    return texts, y


def test_image_paths_fit_predict(image_files):
    files, y = image_files
    clf = LearnkitClassifier(**IMG).fit(files[:64], y[:64])
    assert clf.input_kind_ == "images" and isinstance(clf.learner_.model, ResNet9)
    assert list(clf.classes_) == ["q0", "q1", "q2", "q3"] and not hasattr(clf, "n_features_in_")
    test = np.array([str(f) for f in files[64:]])  # str paths in an array work as well as Path objects
    proba = clf.predict_proba(test)
    assert proba.shape == (32, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert (clf.predict(test) == clf.classes_[proba.argmax(1)]).all()
    assert clf.score(files[64:], y[64:]) > 0.8
    # predict goes through the training pipeline (decode, normalize): the Learner's own predict agrees.
    np.testing.assert_allclose(proba[0], clf.learner_.predict(files[64])[2].numpy(), atol=1e-5)
    # image_size resizes every image; the model sees that size.
    big = LearnkitClassifier(**{**IMG, "epochs": 1, "image_size": 16}).fit(files[:32], y[:32])
    assert tuple(big.learner_.data.one_batch()[0].shape[-2:]) == (16, 16)
    assert big.predict_proba(files[:3]).shape == (3, 4)


def test_image_paths_in_pipeline_and_grid_search(image_files):
    files, y = image_files
    root = files[0].parent
    names = [f.name for f in files]  # relative names; the pipeline's first step resolves them
    pipe = Pipeline([("resolve", FunctionTransformer(lambda xs: [root / n for n in xs])),
                     ("clf", LearnkitClassifier(**{**IMG, "batch_size": 8}))])
    grid = GridSearchCV(pipe, {"clf__max_lr": [1e-4, 1e-2]}, cv=2).fit(names[:64], y[:64])
    low, high = grid.cv_results_["mean_test_score"]  # 32 training images per fold
    assert grid.best_params_ == {"clf__max_lr": 1e-2} and high > 0.9 and low < 0.6  # 1e-4 barely moves
    assert grid.score(names[64:], y[64:]) > 0.9


def test_texts_fit_predict_cross_val(text_data):
    texts, y = text_data
    clf = LearnkitClassifier(**TXT).fit(texts[:60], y[:60])
    assert clf.input_kind_ == "texts" and list(clf.classes_) == ["car", "fruit"]
    model = clf.learner_.model
    assert [m.embedding_dim for m in model.modules() if isinstance(m, nn.Embedding)] == [16]
    assert sum(isinstance(m, nn.LSTM) for m in model.modules()) == 1
    proba = clf.predict_proba(np.array(texts[60:]))
    assert proba.shape == (20, 2) and clf.score(texts[60:], y[60:]) > 0.9
    again = LearnkitClassifier(**TXT).fit(texts[:60], y[:60]).predict_proba(texts[60:])
    np.testing.assert_array_equal(proba, again)  # same seed, same model
    scores = cross_val_score(LearnkitClassifier(**TXT), texts, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.9
    # In a Pipeline after a text step, with a nested module__ parameter tuned by GridSearchCV.
    pipe = make_pipeline(FunctionTransformer(lambda docs: [d.lower() for d in docs]), LearnkitClassifier(**TXT))
    grid = GridSearchCV(pipe, {"learnkitclassifier__module__emb_size": [8, 24]}, cv=2).fit(texts, y)
    emb = [m for m in grid.best_estimator_[-1].learner_.model.modules() if isinstance(m, nn.Embedding)][0]
    assert emb.embedding_dim == grid.best_params_["learnkitclassifier__module__emb_size"]
    assert grid.score([t.upper() for t in texts[:20]], y[:20]) > 0.9  # the lowercasing step runs at predict


def test_items_clone_params_and_auto_lr(text_data):
    texts, y = text_data
    est = LearnkitClassifier(**TXT, arch="awd_lstm", image_size=(8, 8), pretrained=False, module__drop_mult=0.2)
    params = est.get_params()
    assert params["arch"] == "awd_lstm" and params["image_size"] == (8, 8) and params["module__drop_mult"] == 0.2
    twin = clone(est).set_params(module__emb_size=12, max_lr="auto")
    assert est.module__emb_size == 16 and twin.get_params()["module__emb_size"] == 12
    twin.fit(texts, y)
    assert 0 < twin.max_lr_ < 10 and twin.score(texts, y) > 0.6
    assert not hasattr(clone(twin), "learner_")


def test_item_errors_name_the_item(image_files, text_data, tmp_path):
    files, y = image_files
    texts, labels = text_data
    clf = LearnkitClassifier(**{**TXT, "epochs": 1})
    missing = files[:3] + [tmp_path / "gone.png"]
    with pytest.raises(FileNotFoundError, match=r"X\[3\]: image file .*gone\.png' not found"):
        clf.fit(missing, y[:4])
    with pytest.raises(ValueError, match=r"X\[2\] = '.*0\.png' is an image path, but X\[0\] = .* is a text"):
        clf.fit(texts[:2] + [files[0]], labels[:3])
    with pytest.raises(ValueError, match=r"X\[1\] = None is a NoneType, not a str or Path"):
        clf.fit(["apple banana", None], ["a", "b"])
    with pytest.raises(ValueError, match=r"X\[1\] = '.*notes\.txt' is not an image file"):
        clf.fit([files[0], tmp_path / "notes.txt"], ["a", "b"])
    with pytest.raises(ValueError, match="X is a single str"):
        clf.fit("apple banana", ["a"])
    with pytest.raises(ValueError, match="LearnkitRegressor takes numeric X only; got texts"):
        LearnkitRegressor(**FAST).fit(texts, np.arange(len(texts), dtype=float))
    with pytest.raises(NotImplementedError, match="partial_fit takes numeric X only"):
        clf.partial_fit(texts, labels)
    clf.fit(texts, labels)
    with pytest.raises(ValueError, match="fitted on texts X but got images X"):
        clf.predict(files[:2])
    with pytest.raises(ValueError, match="fitted on texts X but got numeric X"):
        clf.predict(np.zeros((2, 3)))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        LearnkitClassifier(**{**IMG, "epochs": 1}).fit(files[:8], y[:8]).predict([tmp_path / "gone.png"])


# scikit-learn's whole estimator suite (about 55 checks per estimator, ~3 s each on CPU). Checks that do
# not apply are skipped by sklearn itself (no sample_weight argument, not a transformer, ...).
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # sklearn's own NaN-y cast
# Float32 matrix products may differ in the last bits with the batch's composition (BLAS blocking), so
# predictions on a subset or a permutation can differ from the full batch's at ~1e-7: these two checks fail for
# some seeds and CPUs (seen: the regressor with seed=1 here). They are allowed to fail, not skipped.
def _float32_batch_dependence(estimator):
    reason = "float32 results depend on batch composition at ~1e-7 (BLAS blocking)"
    return {"check_methods_subset_invariance": reason, "check_methods_sample_order_invariance": reason}


@parametrize_with_checks([LearnkitClassifier(module__hidden=(32,), epochs=3, max_lr=3e-2, batch_size=32, device="cpu"),
                          LearnkitRegressor(module__hidden=(32,), epochs=3, max_lr=3e-2, batch_size=32, device="cpu")],
                         expected_failed_checks=_float32_batch_dependence, xfail_strict=False)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
