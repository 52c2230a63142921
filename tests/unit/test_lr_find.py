"""lr_find: exponential sweep, divergence stop, suggestions, and a bit-exact restore of everything."""
import math

import pytest
import torch

from learnkit import Learner
from learnkit.learner.lr_find import suggest_lrs
from learnkit.testing import synthetic_classification, tiny_bn_mlp


def _snapshot(learn):
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            None if learn.opt is None else learn.opt.state_dict())


def test_lr_find_restores_model_optimizer_bn_stats_and_rng_bit_exactly():
    learn = Learner(synthetic_classification(n=320, seed=1), tiny_bn_mlp(), progress=False)
    learn.fit(1, lr=1e-3)  # so the optimizer has real state (exp_avg, step) to protect
    model_before, opt_before = _snapshot(learn)
    opt_before = {"state": {k: {n: t.clone() for n, t in v.items()} for k, v in opt_before["state"].items()},
                  "param_groups": [dict(g) for g in opt_before["param_groups"]]}
    history_len = len(learn.history.losses)
    rng_before = (torch.get_rng_state().clone(), learn.data.train_dl.generator.get_state().clone())
    import random
    import numpy as np
    py_before, np_before = random.getstate(), np.random.get_state()

    learn.lr_find(num_it=30, show_plot=False)

    model_after, opt_after = _snapshot(learn)
    for k in model_before:  # includes BN running_mean/var and num_batches_tracked
        assert torch.equal(model_before[k], model_after[k]), k
    for pid, state in opt_before["state"].items():
        for name, t in state.items():
            assert torch.equal(t, opt_after["state"][pid][name]), (pid, name)
    assert [g["lr"] for g in opt_before["param_groups"]] == [g["lr"] for g in opt_after["param_groups"]]
    assert [g["betas"] for g in opt_before["param_groups"]] == [g["betas"] for g in opt_after["param_groups"]]
    assert torch.equal(rng_before[0], torch.get_rng_state())
    assert torch.equal(rng_before[1], learn.data.train_dl.generator.get_state())
    assert random.getstate() == py_before
    assert all(np.array_equal(a, b) for a, b in zip(np_before, np.random.get_state()))
    assert len(learn.history.losses) == history_len and len(learn.history.epoch_records) == 1


def test_lr_find_on_fresh_learner_leaves_no_optimizer_and_records_sweep():
    learn = Learner(synthetic_classification(n=320), tiny_bn_mlp(), progress=False)
    before, _ = _snapshot(learn)
    result = learn.lr_find(start_lr=1e-5, end_lr=1, num_it=40, stop_div=False, show_plot=False)
    assert learn.opt is None
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    lrs = learn.lr_find_results["lrs"]
    assert len(lrs) == 40
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)  # exponential
    # (Replaces bounds that held by construction: every suggestion is a swept lr, or one tenth of one.) The valley
    # lies inside the sweep, not on its first or last points, where the loss has come down from the start.
    losses = learn.lr_find_results["losses"]
    i = min(range(len(lrs)), key=lambda j: abs(math.log(lrs[j] / result.valley)))
    assert 3 <= i < len(lrs) - 3 and losses[i] < min(losses[:3]), (result.valley, i, losses[i], losses[:3])
    assert learn.plot_lr_find().axes[0].get_xscale() == "log"


def test_lr_find_stops_when_loss_explodes():
    learn = Learner(synthetic_classification(n=320), tiny_bn_mlp(), progress=False)
    learn.lr_find(start_lr=1e-3, end_lr=1e6, num_it=100, show_plot=False)
    losses = learn.lr_find_results["losses"]
    assert len(losses) < 100
    assert not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses)


def test_suggestions_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # loss flat, then falling between 1e-4 and 1e-2, then exploding
    losses = [2.0 if lr < 1e-4 else (2.0 - (math.log10(lr) + 4) * 0.8 if lr < 1e-2 else 0.4 + (math.log10(lr) + 2) * 3)
              for lr in lrs]
    s = suggest_lrs(lrs, losses)
    assert 1e-4 < s.valley < 1e-2
    assert s.minimum == pytest.approx(lrs[losses.index(min(losses))] / 10)
    assert 1e-4 <= s.steepest < 1e-2


def _sweep(n=100, start=1e-7, end=10.0):
    return [start * (end / start) ** (i / (n - 1)) for i in range(n)]


def _noisy_start_curve(descent):
    """A text classifier's curve: the loss drops by noise over the first 3 points (1.95 → 1.80), stays flat,
    falls by `descent` between 1e-3 and 1e-2, then explodes from 1e-1."""
    lrs = _sweep()
    losses = []
    for i, lr in enumerate(lrs):
        x = math.log10(lr)
        if i < 3:
            losses.append(1.95 - 0.075 * i)
        elif lr < 1e-3:
            losses.append(1.80 + 0.002 * math.sin(i))
        elif lr < 1e-2:
            losses.append(1.80 - descent * (x + 3))
        elif lr < 1e-1:
            losses.append(1.80 - descent)
        else:
            losses.append(1.80 - descent + 2.0 * (x + 1))
    return lrs, losses


def test_a_noisy_drop_over_the_first_points_is_not_the_valley(recwarn):
    lrs, losses = _noisy_start_curve(descent=0.1)
    s = suggest_lrs(lrs, losses)
    # before: the valley was lrs[3] = 3.7e-07 (half of the 1.95 → 1.70 chain is reached at the fourth point)
    assert 1e-3 < s.valley < 1e-2, s
    assert 1e-3 <= s.steepest <= 1e-2, s
    assert 1e-4 <= s.minimum <= 1e-2, s
    assert not [w for w in recwarn if "lr_find" in str(w.message)]


def test_no_clear_descent_warns_once_with_the_fix_and_stays_off_the_first_points():
    lrs, losses = _noisy_start_curve(descent=0.01)  # the loss falls less than 1% after the noisy start
    with pytest.warns(UserWarning, match=r"lr_find: the loss shows no clear descent .* fix: give a learning rate "
                                         r"yourself") as record:
        s = suggest_lrs(lrs, losses)
    assert len([w for w in record if "lr_find" in str(w.message)]) == 1
    first_kept = lrs[10]
    assert min(s) >= first_kept / 10 and s.valley >= first_kept and s.steepest >= first_kept
    assert 1e-3 <= s.valley <= 1e-1, s  # a tenth of where the loss starts rising (1e-1)


def test_a_loss_that_only_rises_falls_back_to_a_tenth_of_where_it_rises():
    lrs = _sweep()
    losses = [2.0 + 0.01 * math.sin(3 * i) if lr < 1e-2 else 2.0 + 0.5 * (math.log10(lr) + 2) for i, lr in
              enumerate(lrs)]
    with pytest.warns(UserWarning, match="no clear descent"):
        s = suggest_lrs(lrs, losses)
    assert 1e-4 <= s.valley <= 1e-2 and s.minimum >= lrs[10] / 10 and s.steepest >= lrs[10] / 10, s


def test_a_valley_at_the_edge_of_the_kept_curve_is_rejected():
    lrs = _sweep()
    # half of the drop happens between the first two kept points (10 and 11), then a slow fall to a minimum at
    # point 60 and a rise: the half-way point sits on the edge of the kept curve (the old rule chose lrs[11])
    losses = [2.0 if i <= 10 else 1.2 - 0.2 * (i - 11) / 49 if i <= 60 else 1.0 + 0.05 * (i - 60) for i in range(100)]
    s = suggest_lrs(lrs, losses)
    assert lrs[12] <= s.valley <= lrs[60], s


def test_a_loss_still_falling_at_the_end_warns():
    lrs = _sweep(end=1e-3)
    losses = [2.0 - 0.01 * i for i in range(100)]
    with pytest.warns(UserWarning, match="still falling at the end of the sweep"):
        suggest_lrs(lrs, losses)
