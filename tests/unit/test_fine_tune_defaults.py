"""fine_tune's defaults for small data: the head phase sized in optimizer steps, the head phase's weights kept when
the unfrozen phase ends worse (keep_best), fastai's one-epoch head phase on request, and the LoRA argument."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import learnkit as lk
from learnkit.learner.events import Callback
from learnkit.learner.recipes import HEAD_PHASE_STEPS
from learnkit.testing import tiny_learner


def two_groups(model: nn.Module) -> list[nn.Module]:
    return [model[1], model[3]]  # body Linear, head Linear


def learner(**kwargs):
    return tiny_learner(splitter=two_groups, metrics=[lk.accuracy], **kwargs)


class Sabotage(Callback):
    """Zero the head just before the last validation of the unfrozen phase (the second fit): that phase then ends
    at chance, worse than the head phase."""

    def __init__(self):
        self.fits = 0

    def before_fit(self, learn):
        self.fits += 1

    def before_validate(self, learn):
        if self.fits == 2 and learn.epoch == learn.n_epochs - 1:
            with torch.no_grad():
                learn.model[3].weight.zero_(), learn.model[3].bias.zero_()


def test_head_phase_is_sized_in_steps_between_one_and_epochs_epochs():
    learn = learner()
    steps = len(learn.data.train_dl)                        # 6 batches an epoch: 200 steps would be 34 epochs
    assert steps * 3 < HEAD_PHASE_STEPS
    learn.fine_tune(3)
    assert learn.fine_tune_report["head_epochs"] == 3       # capped at `epochs`
    assert len(learn.history.epoch_records) == 6
    lrs = [h["lr"][-1] for h in learn.history.hypers[:3 * steps]]
    assert lrs[-1] < lrs[0] / 100 and max(lrs) == pytest.approx(2e-3, rel=1e-2)   # annealed like fit_one_cycle


def test_explicit_freeze_epochs_is_fastais_head_phase():
    learn = learner()
    learn.fine_tune(2, freeze_epochs=1)
    assert learn.fine_tune_report["head_epochs"] == 1 and len(learn.history.epoch_records) == 3


def test_keep_best_restores_the_head_phase_when_the_unfrozen_phase_ends_worse(capsys):
    torch.manual_seed(0)
    learn = learner()
    snapshots = []

    class AfterHead(Callback):
        def after_fit(self, learn):
            if not snapshots:
                snapshots.append({k: v.clone() for k, v in learn.model.state_dict().items()})
    learn.fine_tune(2, base_lr=1e-2, callbacks=[Sabotage(), AfterHead()])
    report = learn.fine_tune_report
    assert report["restored"] and report["final"][1] < report["after_head"][1]
    assert all(torch.equal(v, snapshots[0][k]) for k, v in learn.model.state_dict().items())
    assert learn.validate()["accuracy"] == pytest.approx(report["after_head"][1])
    assert "restored the head phase's weights" in capsys.readouterr().out

    kept = learner()
    kept.fine_tune(2, base_lr=1e-2, keep_best=False, callbacks=[Sabotage()])
    assert not kept.fine_tune_report["restored"] and torch.all(kept.model[3].weight == 0)


def test_keep_best_leaves_a_better_unfrozen_phase_alone():
    learn = learner()
    learn.fine_tune(2, base_lr=1e-2)
    report = learn.fine_tune_report
    assert not report["restored"] and report["final"][1] >= report["after_head"][1]


@pytest.mark.parametrize("lora,strategy", [(0, "freeze"), (8, "gradual"), (2.5, "freeze")])
def test_lora_needs_a_rank_and_the_freeze_strategy(lora, strategy):
    with pytest.raises(ValueError, match="lora is a rank >= 1"):
        learner().fine_tune(1, lora=lora, strategy=strategy)


def test_lora_on_a_model_without_attention_names_its_linears():
    with pytest.raises(ValueError, match=r"its Linear layers are named \['1', '3'\]"):
        learner().fine_tune(1, lora=2)
