"""Metrics that fit the target, errors that name the metric, multi-label F1, readable names, a single metric
without a list, and models with two outputs (metrics see the first output; get_preds returns a tuple)."""
import functools
import math

import pytest
import torch
from torch import nn

from learnkit import (CategoryBlock, DataBlock, Learner, MultiCategoryBlock, RandomSplitter, RegressionBlock,
                      TensorBlock, accuracy, accuracy_multi)
from learnkit.learner.metrics import (AvgMetric, F1Score, Metric, MetricError, as_metrics, default_metrics,
                                      update_metric)
from learnkit.testing import quadrant_image_items, synthetic_classification, synthetic_regression, tiny_mlp
from learnkit.vision import vision_learner


def _image_data(target: str):
    items = quadrant_image_items(n=64, multi=target == "multi", seed=0)
    if target == "regression":  # how bright the image is: a number per image
        items = [(x, float(x.float().mean()) / 255) for x, _ in items]
    y_block = {"category": CategoryBlock, "multi": MultiCategoryBlock, "regression": RegressionBlock}[target]
    dblock = DataBlock(blocks=(TensorBlock(dtype=torch.float32), y_block), splitter=RandomSplitter(0.25, seed=0))
    return dblock.databunch(items, batch_size=16, device="cpu", seed=0)


@pytest.mark.parametrize("target, expected", [("category", ["accuracy"]), ("multi", ["accuracy_multi"]),
                                              ("regression", ["mae"])])
def test_vision_learner_picks_metrics_from_the_target_block(target, expected):
    data = _image_data(target)
    learn = vision_learner(data, "resnet9", pretrained=False, n_out=1 if target == "regression" else None,
                           progress=False)
    assert [m.name for m in learn.metrics] == expected
    if target == "regression":  # used to be accuracy, a (B, 1) vs (B, 1) comparison
        learn.fit(1, lr=1e-3)
        record = learn.history.epoch_records[-1]
        assert "accuracy" not in record and math.isfinite(record["mae"]) and record["mae"] >= 0


def test_default_metrics_per_block():
    assert [m.name for m in default_metrics(CategoryBlock())] == ["accuracy"]
    assert [m.name for m in default_metrics(MultiCategoryBlock())] == ["accuracy_multi"]
    assert [m.name for m in default_metrics(RegressionBlock())] == ["mae"]
    assert default_metrics(TensorBlock()) == [] and default_metrics(None) == []


def test_a_failing_metric_is_named_with_the_shapes():
    learn = Learner(synthetic_regression(n=64, batch_size=16), tiny_mlp(4, 1), metrics=[accuracy], progress=False)
    with pytest.raises(MetricError, match=r"metric 'accuracy' failed on pred shape \(16, 1\), target shape "
                                          r"\(16, 1\): ValueError: accuracy needs class scores"):
        learn.fit(1)

    def broken(pred, target):
        raise IndexError("index 7 is out of bounds")
    learn = Learner(synthetic_classification(n=64, batch_size=16), tiny_mlp(), metrics=[broken], progress=False)
    with pytest.raises(MetricError, match=r"metric 'broken' failed on pred shape \(16, 3\), target shape \(16,\): "
                                          r"IndexError: index 7") as info:
        learn.validate()
    assert isinstance(info.value.__cause__, IndexError)


def test_f1_on_multi_label_targets_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=g)
    target = (torch.rand(50, 5, generator=g) < 0.4).float()
    predicted = (torch.sigmoid(logits) >= 0.5).int().numpy()
    for average in ("micro", "macro"):
        f1 = F1Score(average)
        f1.update(logits[:30], target[:30])  # two batches: the counts add up
        f1.update(logits[30:], target[30:])
        expected = sklearn_metrics.f1_score(target.int().numpy(), predicted, average=average)
        assert float(f1.compute()) == pytest.approx(expected, abs=1e-6), average


def test_f1_single_label_unchanged():
    f1 = F1Score("macro")
    f1.update(torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1, 1]))
    # class 0: tp 1, fp 1, fn 0 → 2/3; class 1: tp 1, fp 0, fn 1 → 2/3
    assert float(f1.compute()) == pytest.approx(2 / 3)


def test_partial_metric_gets_a_readable_name():
    metric = AvgMetric(functools.partial(accuracy_multi, threshold=0.3))
    assert metric.name == "accuracy_multi(threshold=0.3)"
    data = synthetic_classification(n=64, batch_size=16)
    learn = Learner(data, tiny_mlp(), metrics=[functools.partial(accuracy)], progress=False)
    assert "accuracy()" in learn.validate()


def test_a_single_metric_needs_no_list():
    data = synthetic_classification(n=64, batch_size=16)
    assert [m.name for m in Learner(data, tiny_mlp(), metrics=accuracy, progress=False).metrics] == ["accuracy"]
    assert [m.name for m in Learner(data, tiny_mlp(), metrics=F1Score(), progress=False).metrics] == ["f1_macro"]
    assert [m.name for m in as_metrics(F1Score)] == ["f1_macro"] and as_metrics(None) == []
    with pytest.raises(TypeError, match="'accuracy' is not a metric"):
        as_metrics(["accuracy"])


class TwoHeads(nn.Module):
    """Class scores and an auxiliary output."""

    def __init__(self):
        super().__init__()
        self.body, self.aux = tiny_mlp(), nn.Linear(8, 2)

    def forward(self, x):
        return self.body(x), self.aux(x)


def two_head_loss(pred, target):
    logits, aux = pred
    return nn.functional.cross_entropy(logits, target) + 0.0 * aux.sum()


class SeesTuple(Metric):
    name, takes_tuple = "n_outputs", True

    def reset(self):
        self.seen = []

    def update(self, pred, target):
        self.seen.append(len(pred))

    def compute(self):
        return torch.tensor(float(self.seen[0]))


def test_two_output_model_metrics_see_the_first_output_and_get_preds_gives_a_tuple():
    data = synthetic_classification(n=96, batch_size=16)
    learn = Learner(data, TwoHeads(), loss_fn=two_head_loss, metrics=[accuracy, SeesTuple()],
                    progress=False)
    learn.fit(1, lr=1e-2)
    results = learn.validate()
    preds, targets = learn.get_preds()
    assert isinstance(preds, tuple) and len(preds) == 2
    probs, aux = preds
    assert probs.shape == (len(targets), 3) and aux.shape == (len(targets), 2)
    assert torch.allclose(probs.sum(1), torch.ones(len(targets)))  # the target's activation: on the first output
    with torch.no_grad():
        xb = torch.stack([data.valid_dl.dataset[i][0] for i in range(len(data.valid_dl.dataset))])
        raw_logits, raw_aux = learn.model(xb)
    assert torch.allclose(aux, raw_aux, atol=1e-6)  # other outputs: as the model gives them
    assert results["accuracy"] == pytest.approx(float((probs.argmax(1) == targets).float().mean()), abs=1e-6)
    assert results["n_outputs"] == 2.0
    raw, _ = learn.get_preds(activation=False)
    assert torch.allclose(raw[0], raw_logits, atol=1e-6)


def test_update_metric_passes_tensors_through():
    metric = AvgMetric(accuracy)
    update_metric(metric, torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    assert float(metric.compute()) == 1.0
