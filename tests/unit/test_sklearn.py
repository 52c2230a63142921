"""learnkit.sklearn: the scikit-learn estimator contract (fit/predict/score, clone, nested params,
GridSearchCV, partial_fit, reproducibility, errors). Tiny data, CPU, a few seconds."""
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
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from learnkit.sklearn import LearnkitClassifier, LearnkitRegressor  # noqa: E402

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
