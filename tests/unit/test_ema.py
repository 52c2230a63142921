"""Unit tests of the `EMA` callback (exponential moving average of the weights), on tiny synthetic data
on the CPU: 256 items, 25% validation, batch_size 32 → 6 training batches (optimizer steps) per epoch."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from learnkit import Callback, CancelFit, Checkpoint, Learner, accuracy
from learnkit.callbacks import EMA
from learnkit.testing import tiny_bn_mlp, tiny_learner, tiny_mlp

N_BATCHES = 6


def make_learner(tmp_path, model_fn=tiny_bn_mlp, seed: int = 0, n: int = 256, **kwargs) -> Learner:
    return tiny_learner(seed=seed, n=n, bn=model_fn is tiny_bn_mlp, path=tmp_path, **kwargs)


def weights(learn: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


class Recorder(Callback):
    """Snapshots the model at before_fit, after each step, and around validation (after EMA, order 20)."""

    order = 100

    def __init__(self, ema: EMA | None = None):
        self.ema, self.steps, self.in_validation, self.after_validation = ema, [], [], []

    def before_fit(self, learn):
        self.initial = weights(learn)

    def after_step(self, learn):
        self.steps.append(weights(learn))

    def before_validate(self, learn):
        self.in_validation.append(weights(learn))
        if self.ema is not None:
            assert_same(self.in_validation[-1], {k: v.clone() for k, v in self.ema.shadow.items()})

    def after_validate(self, learn):
        self.after_validation.append(weights(learn))


def hand_average(initial, steps, decay: float, warmup: bool, every: int) -> tuple[dict, int]:
    """The average in float64, from the recorded live weights (integer buffers are copied)."""
    shadow, n = {k: v.double() if v.is_floating_point() else v.clone() for k, v in initial.items()}, 0
    for i, state in enumerate(steps):
        if (i + 1) % every:
            continue
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        shadow = {k: d * shadow[k] + (1 - d) * v.double() if v.is_floating_point() else v.clone()
                  for k, v in state.items()}
        n += 1
    return shadow, n


@pytest.mark.parametrize("warmup,every,decay", [(True, 1, 0.99), (False, 1, 0.9), (True, 2, 0.9), (False, 3, 0.8)])
def test_shadow_equals_a_hand_computed_average(tmp_path, warmup, every, decay):
    learn = make_learner(tmp_path)
    ema, rec = EMA(decay, warmup=warmup, every=every), Recorder()
    learn.fit(2, lr=1e-2, callbacks=[ema, rec])
    assert len(rec.steps) == 2 * N_BATCHES
    expected, n = hand_average(rec.initial, rec.steps, decay, warmup, every)
    assert ema.num_updates == n == 2 * N_BATCHES // every
    assert ema.shadow.keys() == expected.keys()
    assert any(not v.is_floating_point() for v in expected.values())  # BN's num_batches_tracked: copied
    for k, v in expected.items():
        assert ema.shadow[k].dtype == rec.initial[k].dtype, k
        torch.testing.assert_close(ema.shadow[k].double(), v.double(), rtol=1e-6, atol=1e-6, msg=k)
    # Not trivially equal to the start or to the live weights.
    assert differs(ema.shadow, rec.initial) and differs(ema.shadow, rec.steps[-1])


def test_validation_uses_the_average_then_puts_the_live_weights_back(tmp_path):
    learn = make_learner(tmp_path)
    ema = EMA(0.9, apply_at_end=False)
    rec = Recorder(ema)  # asserts at each before_validate that the model holds the average
    learn.fit(2, lr=1e-2, callbacks=[ema, rec])
    assert len(rec.in_validation) == len(rec.after_validation) == 2
    for epoch, after in enumerate(rec.after_validation):  # bit-exact: the epoch's last step
        assert_same(after, rec.steps[(epoch + 1) * N_BATCHES - 1])
        assert differs(rec.in_validation[epoch], after)
    valid_loss = learn.history.epoch_records[-1]["valid_loss"]
    live_preds, targets = learn.get_preds(activation=False)
    averaged = copy.deepcopy(learn.model)
    ema.apply_to(averaged)
    with torch.no_grad():
        averaged.eval()
        xs = torch.cat([learn.data.transfer(b, False)[0] for b in learn.data.valid_dl])
        ema_loss = float(learn.loss_fn(averaged(xs), targets))
    live_loss = float(learn.loss_fn(live_preds, targets))
    assert math.isclose(valid_loss, ema_loss, rel_tol=1e-5)
    assert not math.isclose(valid_loss, live_loss, rel_tol=1e-3)
    # Outside a fit, validate() uses the model as it is (here: the live weights).
    assert math.isclose(learn.validate()["valid_loss"], live_loss, rel_tol=1e-5)


class FailInValidation(Callback):
    def __init__(self, error: type[BaseException]):
        self.error = error

    def after_forward(self, learn):
        if not learn.training:
            raise self.error("boom")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_during_validation_restores_the_live_weights_and_does_not_apply(tmp_path, error):
    learn = make_learner(tmp_path)
    ema, rec = EMA(0.9), Recorder()
    with pytest.raises(error, match="boom"):
        learn.fit(1, lr=1e-2, callbacks=[ema, rec, FailInValidation(error)])
    assert_same(weights(learn), rec.steps[-1])
    assert differs(ema.shadow, rec.steps[-1])


@pytest.mark.parametrize("apply_at_end", [True, False])
def test_apply_at_end(tmp_path, apply_at_end):
    learn = make_learner(tmp_path)
    ema, rec = EMA(0.9, apply_at_end=apply_at_end), Recorder()
    learn.fit(2, lr=1e-2, callbacks=[ema, rec])
    live = rec.steps[-1]
    assert differs(ema.shadow, live)
    assert_same(weights(learn), ema.shadow if apply_at_end else live)
    ema.restore_live(learn)  # puts the trained weights back after apply_at_end; a no-op otherwise
    assert_same(weights(learn), live)


class StopAt(Callback):
    order = 95  # after Checkpoint (90) wrote the epoch

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch:
            raise CancelFit()


def test_cancel_fit_is_a_normal_end_and_applies_the_average(tmp_path):
    learn = make_learner(tmp_path)
    ema = EMA(0.9)
    learn.fit(3, lr=1e-2, callbacks=[ema, StopAt(0)])
    assert ema.num_updates == N_BATCHES
    assert_same(weights(learn), ema.shadow)


def test_the_optimizer_keeps_updating_the_live_parameters(tmp_path):
    learn = make_learner(tmp_path)
    ids = [id(p) for p in learn.model.parameters()]
    ema, rec = EMA(0.9), Recorder()
    learn.fit(2, lr=1e-2, callbacks=[ema, rec])
    assert [id(p) for p in learn.model.parameters()] == ids
    assert sorted(id(p) for g in learn.opt.param_groups for p in g["params"]) == sorted(ids)
    assert differs(rec.steps[-1], rec.steps[N_BATCHES - 1])  # training went on after the first validation


def test_state_dict_round_trip(tmp_path):
    learn = make_learner(tmp_path)
    ema = EMA(0.9)
    learn.fit(1, lr=1e-2, callbacks=[ema])
    state = ema.state_dict()
    other = EMA(0.9)
    other.load_state_dict(state)
    assert other.num_updates == ema.num_updates == N_BATCHES
    assert_same(other.shadow, ema.shadow)
    first = next(iter(ema.shadow.values()))
    first.add_(1.0)  # the loaded copy is independent of the source
    assert differs(other.shadow, ema.shadow)


def test_a_resumed_fit_continues_the_same_average(tmp_path):
    whole, ema_whole = make_learner(tmp_path / "whole", model_fn=tiny_mlp), EMA(0.9)
    whole.fit(2, lr=1e-2, callbacks=[ema_whole])
    part = make_learner(tmp_path / "part", model_fn=tiny_mlp)
    part.fit(2, lr=1e-2, callbacks=[EMA(0.9), Checkpoint("ckpt.pth"), StopAt(0)])
    ema = EMA(0.9)
    part.fit(2, lr=1e-2, callbacks=[ema, Checkpoint("ckpt.pth")], resume_from=tmp_path / "part/models/ckpt.pth")
    assert ema.num_updates == ema_whole.num_updates == 2 * N_BATCHES
    assert_same(ema.shadow, ema_whole.shadow)
    assert_same(weights(part), weights(whole))


def test_each_fit_starts_a_fresh_average(tmp_path):
    ema = EMA(0.9, apply_at_end=False)
    learn = make_learner(tmp_path, callbacks=[ema])
    learn.fit(1, lr=1e-2)
    rec = Recorder()
    learn.fit(1, lr=1e-2, callbacks=[rec])
    assert ema.num_updates == N_BATCHES
    expected, _ = hand_average(rec.initial, rec.steps, 0.9, True, 1)
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k].double(), v.double(), rtol=1e-6, atol=1e-6, msg=k)


@pytest.mark.parametrize("decay", [0, 1, -0.5, 1.5, float("nan")])
def test_decay_outside_0_1_raises(decay):
    with pytest.raises(ValueError, match=rf"decay={decay!r}.*\(0, 1\)"):
        EMA(decay)


@pytest.mark.parametrize("every", [0, -2, 1.5])
def test_every_below_1_raises(every):
    with pytest.raises(ValueError, match=rf"every={every!r}.*>= 1"):
        EMA(every=every)


def test_apply_to_without_an_average_raises():
    with pytest.raises(ValueError, match="no average yet"):
        EMA().apply_to(tiny_mlp(8, 3))


def test_training_with_ema_is_as_accurate_as_without(tmp_path):
    def run(callbacks) -> float:
        learn = make_learner(tmp_path, n=512, metrics=[accuracy])
        learn.fit_one_cycle(6, 1e-2, callbacks=callbacks)
        return learn.validate()["accuracy"]  # after apply_at_end: the averaged weights and BN statistics

    plain, averaged = run([]), run([EMA(0.99)])
    assert plain > 0.7  # well above chance (1/3)
    assert averaged >= plain - 0.05
