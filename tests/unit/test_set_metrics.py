"""Whole-set metrics against scikit-learn on the same predictions: fed in batches (one of which lacks a class),
with tied scores, absent classes, multi-label targets; scikit-learn functions through SkMetric, torchmetrics
metrics through StatefulMetric, and one Learner.validate against scikit-learn on get_preds' outputs."""
import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from learnkit import (BalancedAccuracy, F1Score, MatthewsCorrCoef, RocAuc, SkMetric, StatefulMetric, TopKAccuracy,
                      per_class_accuracy)
from learnkit.learner.metrics import AvgMetric, MetricError, as_metric, as_metrics, update_metric
from learnkit.testing import tiny_learner


def run(metric, pred, target, batch_size=16):
    """metric over (pred, target) fed in batches, as the validation loop does."""
    metric.reset()
    for i in range(0, len(pred), batch_size):
        update_metric(metric, pred[i:i + batch_size], target[i:i + batch_size])
    return float(metric.compute())


def classes_data(n=120, n_classes=4, seed=0, ties=True):
    """Logits (rounded to halves: many ties when `ties`) and class targets; the first batch of 16 has no class 3."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_classes, generator=g) * 2
    if ties:
        logits = (logits * 2).round() / 2
    target = torch.randint(0, n_classes, (n,), generator=g)
    target[:16] = target[:16] % (n_classes - 1)  # a batch without the last class
    logits[torch.arange(n), target] += 1.0  # better than chance
    return logits, target


@pytest.mark.parametrize("ties", [True, False])
def test_roc_auc_binary_two_scores_equals_sklearn(ties):
    logits, target = classes_data(n_classes=2, ties=ties)
    target = (target > 0).long() if ties else target
    want = skm.roc_auc_score(target.numpy(), logits.softmax(-1)[:, 1].numpy())
    assert run(RocAuc(), logits, target) == pytest.approx(want, abs=1e-6)


def test_roc_auc_binary_one_logit_equals_sklearn():
    g = torch.Generator().manual_seed(1)
    logit = (torch.randn(100, generator=g) * 3).round()  # ties
    y = (torch.rand(100, generator=g) < torch.sigmoid(logit)).float()
    want = skm.roc_auc_score(y.numpy(), torch.sigmoid(logit).numpy())
    assert run(RocAuc(), logit, y) == pytest.approx(want, abs=1e-6)
    assert run(RocAuc(), logit[:, None], y[:, None]) == pytest.approx(want, abs=1e-6)  # (B, 1) too


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_roc_auc_one_vs_rest_equals_sklearn(average):
    logits, target = classes_data(n_classes=4)
    want = skm.roc_auc_score(target.numpy(), logits.softmax(-1).numpy(), multi_class="ovr", average=average)
    assert run(RocAuc(average), logits, target) == pytest.approx(want, abs=1e-6)


def test_roc_auc_of_sequence_scores_counts_every_position():
    logits, target = classes_data(n=120, n_classes=3)
    want = skm.roc_auc_score(target.numpy(), logits.softmax(-1).numpy(), multi_class="ovr")
    assert run(RocAuc(), logits.reshape(30, 4, 3), target.reshape(30, 4), batch_size=5) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_roc_auc_multi_label_equals_sklearn(average):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(90, 5, generator=g) * 2).round()
    y = (torch.rand(90, 5, generator=g) < torch.sigmoid(logits)).float()
    want = skm.roc_auc_score(y.numpy(), torch.sigmoid(logits).numpy(), average=average)
    assert run(RocAuc(average), logits, y) == pytest.approx(want, abs=1e-6)


def test_roc_auc_undefined_is_nan_with_a_warning_or_leaves_the_class_out():
    logits, target = classes_data(n_classes=2)
    with pytest.warns(RuntimeWarning, match="roc_auc: the validation targets hold one class only.*NaN"):
        assert np.isnan(run(RocAuc(), logits, torch.ones_like(target)))
    with pytest.warns(RuntimeWarning, match="predictions hold NaN"):
        assert np.isnan(run(RocAuc(), torch.full_like(logits, float("nan")), target))
    logits, target = classes_data(n_classes=4)
    target[target == 2] = 0  # class 2 absent from the whole validation set
    with pytest.warns(RuntimeWarning, match=r"column\(s\) \[2\] have no positive"):
        got = run(RocAuc(), logits, target)
    proba = logits.softmax(-1).numpy()
    want = np.mean([skm.roc_auc_score(target.numpy() == c, proba[:, c]) for c in (0, 1, 3)])
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_f1_equals_sklearn_single_and_multi_label(average):
    logits, target = classes_data(n_classes=5)
    target[target == 4] = 0  # class 4 only ever predicted, never true (sklearn counts its F1 of 0)
    want = skm.f1_score(target.numpy(), logits.argmax(-1).numpy(), average=average)
    assert run(F1Score(average), logits, target) == pytest.approx(want, abs=1e-6)
    g = torch.Generator().manual_seed(3)
    ml = torch.randn(80, 4, generator=g)
    y = (torch.rand(80, 4, generator=g) < torch.sigmoid(2 * ml)).float()
    y[:, 3] = 0  # a label never true
    want = skm.f1_score(y.numpy(), (torch.sigmoid(ml) >= 0.5).numpy(), average=average, zero_division=0)
    assert run(F1Score(average), ml, y) == pytest.approx(want, abs=1e-6)


def test_balanced_accuracy_mcc_and_per_class_accuracy_equal_sklearn():
    logits, target = classes_data(n_classes=5)
    target[target == 4] = 1  # class 4: predicted, never true
    y, p = target.numpy(), logits.argmax(-1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred holds a class y_true lacks
        balanced = skm.balanced_accuracy_score(y, p)
    assert run(BalancedAccuracy(), logits, target) == pytest.approx(balanced, abs=1e-6)
    assert run(MatthewsCorrCoef(), logits, target) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-6)
    recall = skm.recall_score(y, p, average=None, labels=range(5), zero_division=0)
    per_class = [run(m, logits, target) for m in per_class_accuracy(["a", "b", "c", "d", "e"])]
    assert per_class[:4] == pytest.approx(list(recall[:4]), abs=1e-6)
    assert np.isnan(per_class[4])  # no item of class e: NaN, not sklearn's zero_division value
    assert [m.name for m in per_class_accuracy(2)] == ["accuracy_0", "accuracy_1"]
    # one class predicted for everything: MCC undefined, 0 as in sklearn
    constant = torch.zeros(40, 3)
    constant[:, 1] = 1
    assert run(MatthewsCorrCoef(), constant, target[:40] % 3) == 0.0 == skm.matthews_corrcoef(
        (target[:40] % 3).numpy(), np.ones(40))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_equals_sklearn(k):
    logits, target = classes_data(n_classes=5, ties=False)
    want = skm.top_k_accuracy_score(target.numpy(), logits.numpy(), k=k, labels=range(5))
    assert run(TopKAccuracy(k), logits, target) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("metric", [BalancedAccuracy(), MatthewsCorrCoef(), TopKAccuracy(2),
                                    per_class_accuracy(4)[0]])
def test_single_label_metrics_refuse_multi_label_targets(metric):
    with pytest.raises(MetricError, match="multi-label"):
        update_metric(metric, torch.randn(8, 4), torch.randint(0, 2, (8, 4)).float())


def test_sk_metric_gets_the_whole_set_as_documented():
    logits, target = classes_data(n_classes=3)
    seen = []

    def spy(y_true, y_pred):
        seen.append((y_true, y_pred))
        return 0.5
    run(SkMetric(spy, y_pred="proba"), logits, target)
    y_true, y_pred = seen[-1]
    assert isinstance(y_true, np.ndarray) and y_true.dtype == np.int64 and y_true.shape == (120,)
    np.testing.assert_allclose(y_pred, logits.softmax(-1).numpy(), atol=1e-7)
    macro = SkMetric(functools.partial(skm.f1_score, average="macro"), y_pred="label")
    assert macro.name == "f1_score(average='macro')"
    assert run(macro, logits, target) == pytest.approx(
        skm.f1_score(target.numpy(), logits.argmax(-1).numpy(), average="macro"))
    kappa = SkMetric(functools.partial(skm.cohen_kappa_score, weights="quadratic"), y_pred="label", name="qwk")
    assert run(kappa, logits, target) == pytest.approx(skm.cohen_kappa_score(
        target.numpy(), logits.argmax(-1).numpy(), weights="quadratic"))
    assert run(SkMetric(skm.log_loss, y_pred="proba"), logits, target) == pytest.approx(
        skm.log_loss(target.numpy(), logits.softmax(-1).numpy()), rel=1e-5)


def test_sk_metric_binary_multi_label_and_raw():
    logits, target = classes_data(n_classes=2)
    assert run(SkMetric(skm.roc_auc_score, y_pred="positive_proba"), logits, target) == pytest.approx(
        run(RocAuc(), logits, target), abs=1e-6)
    logit = logits[:, 1] - logits[:, 0]
    assert run(SkMetric(skm.accuracy_score, y_pred="label"), logit, target.float()) == pytest.approx(
        float(((logit >= 0).long() == target).float().mean()))  # one logit: sigmoid >= 0.5
    g = torch.Generator().manual_seed(4)
    ml, y = torch.randn(50, 3, generator=g), torch.randint(0, 2, (50, 3), generator=g).float()
    samples = SkMetric(functools.partial(skm.f1_score, average="samples", zero_division=0), y_pred="label")
    assert run(samples, ml, y) == pytest.approx(
        skm.f1_score(y.numpy(), (ml >= 0).numpy(), average="samples", zero_division=0))
    pred, yr = torch.randn(40, 1, generator=g), torch.randn(40, 1, generator=g)
    assert run(SkMetric(skm.r2_score, y_pred="raw"), pred, yr) == pytest.approx(
        skm.r2_score(yr.numpy(), pred.numpy()), rel=1e-5)


def test_sk_metric_and_torchmetrics_errors_name_the_fix():
    with pytest.raises(TypeError, match=r"scikit-learn function fn\(y_true, y_pred\).*SkMetric\(f1_score"):
        as_metric(skm.f1_score)
    with pytest.raises(TypeError, match=r"SkMetric\(f1_score\(average='macro'\)"):
        as_metrics([functools.partial(skm.f1_score, average="macro")])
    with pytest.raises(ValueError, match=r"y_pred='probs'.*'label', 'proba', 'positive_proba', 'raw'"):
        SkMetric(skm.f1_score, y_pred="probs")
    logits, target = classes_data(n_classes=3)
    with pytest.raises(MetricError, match="positive_proba.*needs a binary task"):
        run(SkMetric(skm.roc_auc_score, y_pred="positive_proba"), logits, target)
    per_class = SkMetric(functools.partial(skm.f1_score, average=None), y_pred="label")
    with pytest.raises(TypeError, match="must return one number"):
        run(per_class, logits, target)


def test_torchmetrics_metric_is_accumulated_over_the_whole_set():
    tm = pytest.importorskip("torchmetrics")
    logits, target = classes_data(n_classes=4, ties=False)
    metric = as_metric(tm.classification.MulticlassAUROC(num_classes=4, average="macro"))
    assert isinstance(metric, StatefulMetric) and metric.name == "MulticlassAUROC"
    want = skm.roc_auc_score(target.numpy(), logits.softmax(-1).numpy(), multi_class="ovr")
    assert run(metric, logits, target) == pytest.approx(want, abs=1e-5)
    batch_mean = np.mean([skm.roc_auc_score(target[i:i + 40].numpy(), logits[i:i + 40].softmax(-1).numpy(),
                                            multi_class="ovr") for i in range(0, 120, 40)])
    assert abs(batch_mean - want) > 1e-3  # so the test above could tell accumulation from a batch average
    with pytest.raises(TypeError, match=r"MulticlassAUROC is a class; pass an instance"):
        as_metric(tm.classification.MulticlassAUROC)
    assert not isinstance(as_metric(lambda p, t: p.sum()), StatefulMetric)
    assert isinstance(as_metric(lambda p, t: p.sum()), AvgMetric)


def test_learner_validate_equals_sklearn_on_get_preds():
    tm = pytest.importorskip("torchmetrics")
    metrics = [RocAuc(), F1Score("weighted"), BalancedAccuracy(), MatthewsCorrCoef(), TopKAccuracy(2),
               SkMetric(functools.partial(skm.f1_score, average="macro"), y_pred="label"),
               tm.classification.MulticlassAUROC(num_classes=3)]
    learn = tiny_learner(metrics=metrics, seed=0)  # 64 validation items in two batches
    learn.fit(1, lr=3e-3)
    results = learn.validate()
    probs, y = learn.get_preds()
    y, probs, labels = y.numpy(), probs.numpy(), probs.argmax(-1).numpy()
    want = {"roc_auc": skm.roc_auc_score(y, probs, multi_class="ovr"),
            "f1_weighted": skm.f1_score(y, labels, average="weighted"),
            "balanced_accuracy": skm.balanced_accuracy_score(y, labels),
            "mcc": skm.matthews_corrcoef(y, labels),
            "top_2_accuracy": skm.top_k_accuracy_score(y, probs, k=2, labels=range(3)),
            "f1_score(average='macro')": skm.f1_score(y, labels, average="macro"),
            "MulticlassAUROC": skm.roc_auc_score(y, probs, multi_class="ovr")}
    assert list(results) == ["valid_loss", *want]
    for name, value in want.items():
        assert results[name] == pytest.approx(value, abs=1e-5), name
    assert learn.history.epoch_records[-1]["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-5)
