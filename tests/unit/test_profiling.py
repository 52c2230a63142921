"""BottleneckReport and profile: per-epoch numbers, data-bound vs compute-bound advice, a traceless profile."""
import time

import pytest
import torch
from torch import nn

from learnkit import Learner
from learnkit.learner import profiling
from learnkit.learner.profiling import BottleneckReport, _advice, profile
from learnkit.learner.events import Callback, CancelFit
from learnkit.learner.progress import ProgressBar
from learnkit.testing import synthetic_classification, tiny_bn_mlp, tiny_mlp


class VirtualClock:
    """The report's clock, moved only by the test's 'sleeps': exact numbers whatever the machine's load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = VirtualClock()
    monkeypatch.setattr(profiling, "time", clock)  # BottleneckReport reads time.perf_counter()
    return clock


class SlowLoader:
    """The DataLoader contract around `dl`, sleeping `delay` seconds before each batch."""

    def __init__(self, dl, delay, sleep=time.sleep):
        self.dl, self.delay, self.sleep = dl, delay, sleep
        self.batch_size, self.drop_last, self.dataset, self.generator = dl.batch_size, dl.drop_last, dl.dataset, None

    def __len__(self):
        return len(self.dl)

    def __iter__(self):
        for batch in self.dl:
            self.sleep(self.delay)
            yield batch


class SlowLinear(nn.Module):
    """A linear layer whose forward first sleeps: a model whose step dominates."""

    def __init__(self, n_in=8, n_out=3, delay=0.02, sleep=time.sleep):
        super().__init__()
        self.delay, self.sleep, self.identity, self.linear = delay, sleep, nn.Identity(), nn.Linear(n_in, n_out)

    def forward(self, x):
        self.sleep(self.delay)
        return self.linear(self.identity(x))


@pytest.mark.parametrize("drop_last", [True, False])
def test_one_report_per_epoch_with_samples_seen_and_a_printed_line(drop_last):
    data = synthetic_classification(n=256, batch_size=50, drop_last=drop_last)
    dl = data.train_dl
    lines = []
    report = BottleneckReport(print_fn=lines.append)
    Learner(data, tiny_mlp(), progress=False).fit(2, lr=1e-3, callbacks=[report])
    assert len(report.reports) == 2 and len(lines) == 2
    expected = len(dl) * dl.batch_size if dl.drop_last else len(dl.dataset)
    assert len(dl.dataset) % 50 != 0  # so drop_last makes a difference
    for epoch, r in enumerate(report.reports):
        assert r["epoch"] == epoch and r["batches"] == len(dl) and r["samples"] == expected
        assert r["samples_per_s"] > 0 and r["seconds"] > 0 and 0 <= r["data_share"] <= 1
        assert r["data_s"] + r["step_s"] == pytest.approx(r["seconds"])
        assert r["peak_gpu_mb"] is None
        assert r["advice"].startswith(("CPU run", "data-bound"))
    assert "samples/s" in lines[0] and report.reports[0]["advice"] in lines[0]


def test_no_line_printed_when_every_epoch_is_false():
    lines = []
    report = BottleneckReport(print_fn=lines.append, every_epoch=False)
    Learner(synthetic_classification(), tiny_mlp(), progress=False).fit(1, lr=1e-3, callbacks=[report])
    assert lines == [] and len(report.reports) == 1


def test_slow_loader_is_reported_data_bound(clock):
    data = synthetic_classification(n=256, batch_size=32)
    data.train_dl = SlowLoader(data.train_dl, 0.02, clock.sleep)
    report = BottleneckReport(print_fn=lambda s: None)
    Learner(data, tiny_mlp(), progress=False).fit(1, lr=1e-3, callbacks=[report])
    r = report.reports[0]
    assert r["data_share"] > 0.5, r
    assert r["data_s"] >= 0.02 * r["batches"] * 0.9
    assert r["advice"].startswith("data-bound")


def test_slow_model_is_not_reported_data_bound(clock):
    report = BottleneckReport(print_fn=lambda s: None)
    Learner(synthetic_classification(n=256, batch_size=32), SlowLinear(sleep=clock.sleep), progress=False).fit(
        1, lr=1e-3, callbacks=[report])
    r = report.reports[0]
    assert r["data_share"] < 0.2, r
    assert r["step_s"] >= 0.02 * r["batches"] * 0.9
    assert not r["advice"].startswith("data-bound")


def test_fit_cancelled_mid_epoch_still_reports_the_batches_run():
    class StopAfterTwo(Callback):
        def after_batch(self, learn):
            if learn.training and learn.batch_idx == 1:
                raise CancelFit()

    lines = []
    report = BottleneckReport(print_fn=lines.append)
    Learner(synthetic_classification(), tiny_mlp(), progress=False).fit(
        3, lr=1e-3, callbacks=[report, StopAfterTwo()])
    assert len(report.reports) == 1 and report.reports[0]["batches"] == 2 and len(lines) == 1


def test_advice_rules():
    assert _advice(0.5, "cuda", 0.95).startswith("memory-bound")
    assert _advice(0.5, "cuda", 0.5).startswith("data-bound: 50%")
    assert _advice(0.05, "cuda", 0.5).startswith("compute-bound")
    assert _advice(0.2, "cuda", 0.5).startswith("balanced")
    assert _advice(0.05, "cpu", None).startswith("CPU run")
    assert _advice(0.4, "cpu", None).startswith("data-bound")


def _opt_state(learn):
    sd = learn.opt.state_dict()
    return {k: {n: t.clone() for n, t in v.items()} for k, v in sd["state"].items()}, sd["param_groups"]


def test_profile_returns_numbers_and_leaves_the_learner_bit_identical(capsys):
    learn = Learner(synthetic_classification(n=320, seed=1, batch_size=16), tiny_bn_mlp(), progress=True)
    learn.fit(1, lr=1e-3)  # real optimizer state and history to protect
    capsys.readouterr()
    model_before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_before, groups_before = _opt_state(learn)
    rng_before = torch.get_rng_state().clone()
    gen_before = learn.data.train_dl.generator.get_state().clone()
    history_before = (learn.history.losses.clone(), [dict(r) for r in learn.history.epoch_records],
                      len(learn.history.hypers))
    counters = (learn.epoch, learn.iter, learn.opt_steps)

    r = profile(learn, n_batches=5)

    assert r["batches"] == 5 and r["samples"] == 5 * 16 and r["samples_per_s"] > 0 and r["note"] is None
    assert 0 <= r["data_share"] <= 1 and r["peak_gpu_mb"] is None and r["advice"]
    assert capsys.readouterr().out == ""  # no progress bar, no per-epoch line during a profile
    assert sum(isinstance(cb, ProgressBar) for cb in learn.callbacks) == 1  # the bar is back
    assert all(torch.equal(model_before[k], v) for k, v in learn.model.state_dict().items())
    opt_after, groups_after = _opt_state(learn)
    assert opt_after.keys() == opt_before.keys()
    assert all(torch.equal(t, opt_after[k][n]) for k, s in opt_before.items() for n, t in s.items())
    assert groups_after == groups_before
    assert torch.equal(rng_before, torch.get_rng_state())
    assert torch.equal(gen_before, learn.data.train_dl.generator.get_state())
    assert torch.equal(history_before[0], learn.history.losses)
    assert learn.history.epoch_records == history_before[1] and len(learn.history.hypers) == history_before[2]
    assert (learn.epoch, learn.iter, learn.opt_steps) == counters


def test_profile_on_a_short_loader_profiles_the_whole_epoch_and_says_so():
    learn = Learner(synthetic_classification(n=256, batch_size=32), tiny_mlp(), progress=False)
    r = profile(learn, n_batches=50)
    assert r["batches"] == len(learn.data.train_dl) < 50
    assert "only 6 batches" in r["note"]
    assert learn.opt is None and learn.history.epoch_records == []


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_profile_rejects_bad_n_batches_naming_the_value(bad):
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    with pytest.raises(ValueError, match=f"n_batches={bad}"):
        profile(learn, n_batches=bad)


def test_learner_profile_method_is_the_function():
    data = synthetic_classification(n=256, n_features=8, n_classes=3, seed=0, batch_size=32)
    learn = Learner(data, tiny_mlp(8, 3), progress=False)
    report = learn.profile(n_batches=3)
    assert report["batches"] == 3 and report["samples"] == 96 and learn.opt is None
