"""Schedules: pure functions of progress; one_cycle equals torch's OneCycleLR step by step."""
import math

import pytest
import torch

from learnkit.learner import Learner
from learnkit.optim import Const, Cos, Exp, Lin, Phases, flat_cos, one_cycle, sgdr
from learnkit.testing import synthetic_classification, tiny_mlp


def test_basic_schedules_endpoints():
    assert Lin(1, 3)(0.5) == 2
    assert Cos(1, 0)(0) == 1 and abs(Cos(1, 0)(1)) < 1e-12 and Cos(1, 0)(0.5) == pytest.approx(0.5)
    assert Exp(1e-3, 1e-1)(0.5) == pytest.approx(1e-2)
    assert Const(7)(0.3) == 7
    ph = Phases([0.5], [Lin(0, 1), Lin(1, 0)])
    assert ph(0.25) == pytest.approx(0.5) and ph(0.5) == pytest.approx(1) and ph(0.75) == pytest.approx(0.5)


@pytest.mark.parametrize("total,pct", [(100, 0.25), (37, 0.3), (10, 0.5)])
def test_one_cycle_equals_torch_onecyclelr(total, pct):
    max_lr, div, final_div = 3e-3, 25.0, 1e4
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=max_lr, betas=(0.95, 0.99))
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct,
                                              div_factor=div, final_div_factor=final_div, anneal_strategy="cos",
                                              cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
    ours = one_cycle(max_lr, total, div, final_div, pct, moms=(0.95, 0.85, 0.95))
    for step in range(total):
        p = step / (total - 1)
        assert ours["lr"](p) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        assert ours["mom"](p) == pytest.approx(opt.param_groups[0]["betas"][0], rel=1e-9), step
        opt.step()
        ref.step()


def test_fit_one_cycle_applies_onecyclelr_values_per_batch():
    data = synthetic_classification(n=160, batch_size=16, valid_pct=0.25)  # 120 train -> 7 batches (drop_last)
    learn = Learner(data, tiny_mlp(), progress=False)
    learn.fit_one_cycle(2, max_lr=1e-2, pct_start=0.3)
    total = 2 * len(data.train_dl)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-2, betas=(0.95, 0.99))
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=total, pct_start=0.3,
                                              final_div_factor=1e5, base_momentum=0.85, max_momentum=0.95)
    assert len(learn.history.hypers) == total
    for step in range(total):
        assert learn.history.hypers[step]["lr"][0] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        assert learn.history.hypers[step]["mom"][0] == pytest.approx(opt.param_groups[0]["betas"][0], rel=1e-9)
        opt.step()
        ref.step()
    # the optimizer really received them
    assert learn.opt.param_groups[0]["betas"][0] == pytest.approx(0.95)


def test_flat_cos_and_sgdr_shapes():
    fc = flat_cos(1e-2, 101, pct_start=0.5)["lr"]
    assert fc(0) == fc(0.49) == 1e-2
    assert fc(1) == pytest.approx(1e-7)
    s = sgdr(1.0, [1, 2])["lr"]
    assert s(0) == 1.0 and s(1 / 3 - 1e-9) < 1e-6 and s(1 / 3 + 1e-9) == pytest.approx(1.0, abs=1e-6)
    assert s(1) == pytest.approx(0, abs=1e-12)


def test_any_hyper_parameter_can_be_scheduled():
    data = synthetic_classification(n=96, batch_size=16)
    learn = Learner(data, tiny_mlp(), progress=False)
    learn.fit(1, schedules={"lr": Const(1e-3), "weight_decay": Lin(0.0, 0.1), "eps": Const(1e-6)})
    assert learn.history.hypers[0]["weight_decay"][0] == 0
    assert learn.history.hypers[-1]["weight_decay"][0] == pytest.approx(0.1)
    decay_groups = [g for g in learn.opt.param_groups if g["params"][0].ndim > 1]
    assert decay_groups[0]["weight_decay"] == pytest.approx(0.1)
    assert learn.opt.param_groups[0]["eps"] == 1e-6
    with pytest.raises(KeyError, match="no hyper-parameter 'nope'"):
        learn.fit(1, schedules={"nope": Const(1.0)})


def test_fit_sgdr_epochs_and_restart():
    data = synthetic_classification(n=96, batch_size=16)
    learn = Learner(data, tiny_mlp(), progress=False)
    learn.fit_sgdr(2, 1, max_lr=1e-2)  # cycles of 1 and 2 epochs
    assert len(learn.history.epoch_records) == 3
    lrs = [h["lr"][0] for h in learn.history.hypers]
    n = len(data.train_dl)
    assert lrs[0] == pytest.approx(1e-2) and lrs[n] == pytest.approx(1e-2, rel=1e-2)  # restart
    assert lrs[n - 1] < 1e-3 and lrs[-1] < 1e-6
    assert not math.isnan(sum(lrs))
