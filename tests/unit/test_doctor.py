"""The pre-flight check: each classic mistake gets a plain-words error with shapes and the fix."""
import pytest
import torch
from torch import nn

import learnkit as lk
from learnkit import Learner, LearnerCheckError
from learnkit.testing import synthetic_classification, synthetic_regression, tiny_learner, tiny_mlp


class Squeezed(nn.Module):
    """A regression model that returns (B,) while RegressionBlock's targets are (B, 1)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def _learner(data, model, **kwargs):
    return tiny_learner(data=data, model=model, **kwargs)


def test_good_setup_passes_and_fit_checks_once():
    learn = _learner(synthetic_classification(), tiny_mlp())
    learn.check()
    learn.fit(1)
    assert learn.checked


def test_head_size_vs_number_of_classes():
    learn = _learner(synthetic_classification(n_classes=3), tiny_mlp(8, 5))
    with pytest.raises(LearnerCheckError, match=r"head outputs 5 values per item, but the data has 3 classes.*n_out=3"):
        learn.fit(1)


def test_target_dtype_vs_loss():
    learn = _learner(synthetic_regression(), tiny_mlp(4, 1), loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(LearnerCheckError, match=r"CrossEntropyLoss needs integer class indices.*\(32, 1\) float32"):
        learn.check()
    learn = _learner(synthetic_classification(), tiny_mlp(8, 3), loss_fn=nn.MSELoss())
    with pytest.raises(LearnerCheckError, match=r"MSELoss needs float targets.*\(32,\) int64"):
        learn.check()


def test_missing_flatten_loses_batch_dimension():
    items = [(torch.randn(1, 4, 4), "a" if i % 2 else "b") for i in range(64)]
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock), splitter=lk.IndexSplitter(range(16))).databunch(
        items, batch_size=16, device="cpu")

    class ViewAll(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.head = nn.Linear(2 * 4 * 4 * 16, 2)  # sized for the whole batch: the classic x.view(-1)

        def forward(self, x):
            return self.head(self.conv(x).view(-1)).view(1, -1)

    with pytest.raises(LearnerCheckError, match=r"returned 1 predictions .* for a batch of 16 targets.*nn.Flatten"):
        _learner(data, ViewAll()).check()
    no_flatten = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Linear(32, 2))
    with pytest.raises(LearnerCheckError, match=r"input batch of shape \(16, 1, 4, 4\).*missing nn.Flatten"):
        _learner(data, no_flatten).check()


def test_regression_broadcasting_b1_vs_b():
    data = synthetic_regression()

    with pytest.raises(LearnerCheckError, match=r"\(32,\) float32.*\(32, 1\) float32.*broadcast to \(32, 32\)"):
        _learner(data, Squeezed()).check()


def test_model_and_data_on_different_devices():
    learn = _learner(synthetic_classification(), tiny_mlp())
    learn.data.device = torch.device("meta")  # stands in for "cuda" on a CPU-only machine
    with pytest.raises(LearnerCheckError, match=r"weights on \['cpu'\] but the data goes to meta"):
        learn.check()


def test_wrong_input_channels_and_nan_loss():
    items = [(torch.randn(1, 8, 8), "a" if i % 2 else "b") for i in range(64)]
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock)).databunch(items, batch_size=16, device="cpu")
    with pytest.raises(LearnerCheckError, match="input channels"):
        _learner(data, lk.create_model("simple_cnn", n_in=3, n_out=2)).check()
    nan_items = [(torch.full((4,), float("nan")), "a" if i % 2 else "b") for i in range(64)]
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock)).databunch(nan_items, batch_size=16, device="cpu")
    with pytest.raises(LearnerCheckError, match="loss is nan on the first batch"):
        _learner(data, tiny_mlp(4, 2)).check()


def test_check_touches_no_state():
    learn = _learner(synthetic_classification(), lk.testing.tiny_bn_mlp())
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng = torch.get_rng_state()
    learn.check()
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    assert learn.model.training


def test_preflight_can_be_switched_off_for_intended_setups():
    data = synthetic_regression()

    def loss(pred, target):  # a custom loss that handles the shapes itself
        return ((pred - target.squeeze(-1)) ** 2).mean()

    with pytest.raises(LearnerCheckError, match=r"preflight=False"):
        _learner(data, Squeezed(), loss_fn=loss).fit(1)
    learn = _learner(data, Squeezed(), loss_fn=loss, preflight=False)
    learn.fit(1)
    assert len(learn.history.epoch_records) == 1
