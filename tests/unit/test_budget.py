"""fit_one_cycle(budget=...): the plan's arithmetic, a run that stops exactly where planned (mid-epoch) with the
schedule fully annealed, and clear errors. No wall-clock thresholds: the time planning is fed fixed numbers."""
import math

import pytest

from learnkit import Callback
from learnkit.learner import budget as budget_mod
from learnkit.learner.budget import parse_budget, plan_budget
from learnkit.testing import tiny_learner


def _learner():
    return tiny_learner(n=640)  # 16 train batches of 32


@pytest.mark.parametrize("text, seconds", [(90, 90.0), (2.5, 2.5), ("90s", 90.0), ("1.5m", 90.0), ("2min", 120.0),
                                           ("1h", 3600.0), (" 45 s ", 45.0)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5s", 0, "10 parsecs", True])
def test_bad_budgets_name_the_value(bad):
    with pytest.raises(ValueError, match="budget="):
        parse_budget(bad)


def test_plan_counts_validations_and_may_end_mid_epoch(monkeypatch):
    learn = _learner()
    per_epoch = len(learn.data.train_dl)
    monkeypatch.setattr(budget_mod, "measure", lambda learn: (0.01, 0.05))  # 10 ms a batch, 50 ms a validation
    plan = plan_budget(learn, "1s")
    total, epochs = plan["total_batches"], plan["epochs"]
    assert epochs == math.ceil(total / per_epoch)
    assert total * 0.01 + epochs * 0.05 <= 1.0 < (total + 1) * 0.01 + epochs * 0.05 + 1e-9
    assert total % per_epoch != 0  # this budget ends inside an epoch


class _Record(Callback):
    order = 90

    def __init__(self):
        self.lrs, self.batches, self.validations = [], 0, 0

    def after_batch(self, learn):
        if learn.training:
            self.batches += 1
            self.lrs.append(learn.opt.param_groups[0]["lr"])

    def after_validate(self, learn):
        self.validations += 1


def test_budgeted_fit_runs_the_planned_batches_and_ends_annealed(monkeypatch):
    learn = _learner()
    monkeypatch.setattr(budget_mod, "measure", lambda learn: (0.01, 0.05))
    record = _Record()
    learn.fit_one_cycle(budget="0.5s", max_lr=1e-2, callbacks=[record])
    plan = learn.budget_plan
    assert record.batches == plan["total_batches"] and record.validations == plan["epochs"]
    assert max(record.lrs) == pytest.approx(1e-2, rel=1e-2)
    assert record.lrs[-1] == pytest.approx(1e-2 / 25 / 1e5, rel=1e-6)  # the schedule's final value: annealed
    assert len(learn.history.epoch_records) == plan["epochs"]


def test_measure_leaves_the_learner_untouched_and_returns_positive_times():
    learn = _learner()
    batch_s, valid_s = budget_mod.measure(learn, n_batches=3)
    assert batch_s > 0 and valid_s > 0 and learn.opt is None and not learn.history.epoch_records


def test_epochs_xor_budget():
    learn = _learner()
    with pytest.raises(ValueError, match="give epochs or budget"):
        learn.fit_one_cycle(2, budget="10s")
    with pytest.raises(ValueError, match="give epochs or budget"):
        learn.fit_one_cycle()


def test_a_budget_too_small_says_what_one_batch_costs(monkeypatch):
    learn = _learner()
    monkeypatch.setattr(budget_mod, "measure", lambda learn: (1.0, 5.0))
    with pytest.raises(ValueError, match="a training batch takes 1.000 s"):
        learn.fit_one_cycle(budget="3s")
