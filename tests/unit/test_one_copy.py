"""One copy of each concept, and events that tell the truth: the mixed-precision option means the same in Learner
and load_learner, the inference forward / versions / confusion matrix / validation flag exist once, `after_fit`
knows whether the fit failed, and `fit(max_batches=...)` ends a fit inside an epoch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from learnkit import Callback, CancelFit, load_learner
from learnkit.callbacks import EMA
from learnkit.core.device import amp_dtype, parse_mixed_precision, versions
from learnkit.data.splitters import is_valid_flag
from learnkit.learner.confusion import confusion_matrix
from learnkit.learner.inference import inference_forward
from learnkit.optim.schedules import one_cycle
from learnkit.testing import tiny_data, tiny_learner
from learnkit.vision.interpret import ClassificationInterpretation

CPU = torch.device("cpu")
SAME_VALUES = [("auto", "auto"), (True, "auto"), ("bf16", "bf16"), ("bfloat16", "bf16"), (torch.bfloat16, "bf16"),
               ("fp16", "fp16"), ("float16", "fp16"), (torch.float16, "fp16"), (None, None), (False, None),
               ("no", None), ("off", None), ("float32", None), (torch.float32, None)]


@pytest.mark.parametrize("value, canonical", SAME_VALUES)
def test_one_precision_vocabulary(value, canonical):
    assert parse_mixed_precision(value) == canonical


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    learn = tiny_learner(path=tmp_path_factory.mktemp("bundle"))
    learn.fit(1)
    return learn, learn.export("model")


@pytest.mark.parametrize("value", [v for v, _ in SAME_VALUES])
def test_learner_and_load_learner_accept_the_same_values_with_the_same_meaning(bundle, value):
    # before: Learner refused torch dtypes and 'float32'; load_learner refused True, False, 'no' and 'off'; and an
    # explicit 'bf16' was bf16 autocast in the Learner but float32 in the Predictor on the CPU
    learn = tiny_learner(mixed_precision=value)
    predictor = load_learner(bundle[1], device="cpu", mixed_precision=value)
    assert learn.amp_dtype == predictor.amp_dtype == amp_dtype(value, CPU)


@pytest.mark.parametrize("bad", ["fp8", "bf32", 16, torch.int8])
def test_a_bad_precision_is_refused_by_both_naming_the_caller(bundle, bad):
    with pytest.raises(ValueError, match=r"Learner\(mixed_precision=.*'auto', 'bf16', 'fp16' or None"):
        tiny_learner(mixed_precision=bad)
    with pytest.raises(ValueError, match=r"load_learner\(mixed_precision=.*'auto', 'bf16', 'fp16' or None"):
        load_learner(bundle[1], device="cpu", mixed_precision=bad)


def test_auto_follows_training_on_cuda_and_is_off_on_the_cpu():
    cuda = torch.device("cuda", 0)
    assert amp_dtype("auto", CPU) is None and amp_dtype("auto", CPU, trained="float16") is None
    assert amp_dtype("auto", cuda, trained="float16") == torch.float16
    assert amp_dtype("fp16", cuda) == torch.float16 and amp_dtype("bf16", CPU) == torch.bfloat16


class TwoHeads(nn.Module):
    def forward(self, x):
        return x.double() * 2, x.sum(1, keepdim=True)


def test_inference_forward_is_float32_without_grad_and_applies_the_activation():
    model = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    out = inference_forward(model, (x,))
    assert out.dtype == torch.float32 and not out.requires_grad and torch.equal(out, model(x).detach())
    probs = inference_forward(model, (x,), torch.bfloat16, lambda o: o.softmax(-1))
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(-1), torch.ones(5))
    a, b = inference_forward(TwoHeads(), (x,))  # each output of a tuple, cast
    assert a.dtype == b.dtype == torch.float32 and torch.allclose(a, x * 2)


def test_learner_predictor_and_interpretation_give_the_same_probabilities(bundle):
    learn, folder = bundle
    preds, targets = learn.get_preds()
    xs = torch.cat([x for x, _ in learn.data.valid_dl])
    probs = load_learner(folder, device="cpu").predict_tensors(xs)
    assert torch.allclose(preds, probs, atol=1e-6)
    interp = ClassificationInterpretation.from_learner(learn)
    assert torch.allclose(interp.probs, preds, atol=1e-6)
    assert torch.equal(interp.confusion_matrix(), confusion_matrix(preds, targets, 3))


def test_confusion_matrix_counts_pairs_and_takes_the_argmax_of_scores():
    preds, targets = torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 0, 1, 2, 1, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 2]])
    assert torch.equal(confusion_matrix(preds, targets, 3), expected)
    assert torch.equal(confusion_matrix(nn.functional.one_hot(preds, 3).float(), targets, 3), expected)
    assert confusion_matrix(preds, targets, 4).shape == (4, 4)
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(preds, targets, 2)


def test_the_versions_dict_is_one_dict(bundle):
    import json
    recipe = json.loads((bundle[1] / "recipe.json").read_text())
    card = json.loads((bundle[1] / "model_card.json").read_text())
    assert recipe["versions"] == versions()
    assert {k: card["versions"][k] for k in versions()} == versions()


@pytest.mark.parametrize("value, flag", [("1", True), (" True ", True), ("yes", True), ("valid", True), ("Y", True),
                                         ("t", True), ("0", False), ("false", False), ("train", False), ("", False),
                                         ("n", False), (True, True), (0, False), (1.0, True)])
def test_is_valid_flag(value, flag):
    assert is_valid_flag(value) is flag


def test_is_valid_flag_refuses_a_typo():
    with pytest.raises(ValueError, match="'ture'"):
        is_valid_flag("ture")


class RecordFitError(Callback):
    order = 100

    def __init__(self, raise_in_epoch=None):
        self.raise_in_epoch, self.seen = raise_in_epoch, "not run"

    def after_epoch(self, learn):
        if self.raise_in_epoch is not None:
            raise self.raise_in_epoch

    def after_fit(self, learn):
        self.seen = learn.fit_error


@pytest.mark.parametrize("error", [None, CancelFit(), ValueError("boom"), KeyboardInterrupt()])
def test_after_fit_knows_whether_the_fit_failed(error):
    learn, probe = tiny_learner(), RecordFitError(error)
    if isinstance(error, (ValueError, KeyboardInterrupt)):
        with pytest.raises(type(error)):
            learn.fit(2, callbacks=[probe])
        assert probe.seen is error and learn.fit_error is None  # not kept: its traceback holds the step's tensors
    else:
        learn.fit(2, callbacks=[probe])
        assert probe.seen is None
    learn.fit(1, callbacks=[probe := RecordFitError()])
    assert probe.seen is None and learn.fit_error is None  # reset by the next fit


def test_ema_applies_the_average_when_fit_runs_inside_an_except_block():
    learn, ema = tiny_learner(bn=True), EMA(0.5)
    try:
        raise RuntimeError("handled elsewhere")
    except RuntimeError:
        learn.fit(1, callbacks=[ema])  # a normal end: the average is applied
    assert all(torch.equal(t, ema.shadow[k]) for k, t in learn.model.state_dict().items())


class CountPhases(Callback):
    def __init__(self):
        self.train_batches, self.validations, self.lrs = 0, 0, []

    def after_batch(self, learn):
        if learn.training:
            self.train_batches += 1
            self.lrs.append(learn.opt.param_groups[0]["lr"])

    def after_validate(self, learn):
        self.validations += 1


def test_fit_max_batches_cuts_the_epoch_it_falls_in_validates_and_ends():
    learn = tiny_learner()
    per_epoch = len(learn.data.train_dl)  # 6
    counter = CountPhases()
    total = per_epoch + 2
    sched = one_cycle(1e-2, total)
    learn.fit(5, schedules={"lr": [sched["lr"]]}, callbacks=[counter], max_batches=total)
    assert counter.train_batches == total and counter.validations == 2 and len(learn.history.epoch_records) == 2
    assert learn.n_iter == learn.iter == total
    assert counter.lrs[-1] == pytest.approx(sched["lr"](1.0))  # the schedule saw the true length: annealed
    with pytest.raises(ValueError, match="max_batches"):
        learn.fit(1, max_batches=0)
