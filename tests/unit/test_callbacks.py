"""Unit tests of the optional callbacks in `learnkit.callbacks` (and of the loop's callback contract:
error notes, Cancel* exceptions), on tiny synthetic data on the CPU.

The shared set-up: 256 items, 25% validation → 192 training items, batch_size 32 → 6 training batches
per epoch (drop_last leaves none out) and 2 validation batches.
"""
from __future__ import annotations

import csv
import functools
import math
import sys

import pytest
import torch
from torch import nn

import learnkit
from learnkit import (CSVLogger, Callback, CancelBatch, CancelEpoch, CancelFit, CancelStep, Checkpoint, EarlyStopping,
                      GradientAccumulation, GradientClipping, Learner, ReduceLROnPlateau, SaveBestModel,
                      TerminateOnNaN, accuracy)
from learnkit.testing import InterruptAt, synthetic_classification, synthetic_regression, tiny_learner, tiny_mlp

N_BATCHES = 6  # training batches per epoch in `make_learner`'s data


def make_learner(tmp_path, seed: int = 0, batch_size: int = 32, **kwargs) -> Learner:
    return tiny_learner(seed=seed, batch_size=batch_size, path=tmp_path, **kwargs)


def weights(learn: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


class Inject(Callback):
    """Overwrites (or adds) `name` in each epoch's record with values[epoch]; runs after History (-20)
    and before the monitoring callbacks (60)."""

    order = 50

    def __init__(self, name: str, values):
        self.name, self.values = name, list(values)

    def after_epoch(self, learn):
        learn.history.epoch_records[-1][self.name] = float(self.values[learn.epoch])


class NoStepAfterEpoch0(Callback):
    """Skip every optimizer step after the first epoch: from then on the weights, hence valid_loss, stay put."""

    def after_backward(self, learn):
        if learn.epoch >= 1:
            raise CancelStep()


class SnapshotPerEpoch(Callback):
    """Clones the weights at the end of every epoch (after every other callback)."""

    order = 100

    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def after_epoch(self, learn):
        self.states.append(weights(learn))


def records(learn: Learner) -> list[dict]:
    return learn.history.epoch_records


# ---------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, patience):
    learn = make_learner(tmp_path)
    cb = EarlyStopping("valid_loss", patience=patience)
    learn.fit(10, lr=1e-2, callbacks=[NoStepAfterEpoch0(), cb])
    recs = records(learn)
    assert len(recs) == 1 + patience
    assert [r["epoch"] for r in recs] == list(range(1 + patience))
    # epoch 0 is the best; the later ones repeat it exactly (no step was taken)
    assert all(r["valid_loss"] == recs[0]["valid_loss"] for r in recs)
    assert cb.best == recs[0]["valid_loss"]
    assert cb.wait == patience
    assert learn.opt_steps == N_BATCHES
    assert cb not in learn.callbacks  # a fit-only callback is removed after the fit


def test_early_stopping_improvement_resets_the_wait(tmp_path):
    learn = make_learner(tmp_path)
    #        e0   e1   e2   e3   e4   e5   e6   e7 ...
    values = [5.0, 4.0, 4.0, 3.0, 3.0, 3.5, 3.0, 1.0, 0.0, 0.0]
    learn.fit(10, lr=1e-3, callbacks=[Inject("fake_loss", values), EarlyStopping("fake_loss", patience=3)])
    # e1 improves, e2 waits 1, e3 improves, e4..e6 wait 1..3 -> stop after epoch 6
    assert len(records(learn)) == 7


def test_early_stopping_min_delta(tmp_path):
    learn = make_learner(tmp_path)
    values = [1.0, 0.95, 0.91, 0.5, 0.45, 0.42, 0.0]
    learn.fit(7, lr=1e-3, callbacks=[Inject("fake_loss", values), EarlyStopping("fake_loss", patience=2,
                                                                                min_delta=0.1)])
    # e1, e2 are improvements smaller than 0.1 -> stop after epoch 2 although the value keeps falling
    assert len(records(learn)) == 3


@pytest.mark.parametrize("monitor, mode", [("valid_loss", "min"), ("train_loss", "min"), ("error_rate", "min"),
                                           ("accuracy", "max"), ("top_5_accuracy", "max"), ("f1_macro", "max"),
                                           ("mse", "min"), ("mae", "min"), ("rmse", "min")])
def test_monitor_auto_mode(monitor, mode):
    for cls in (EarlyStopping, SaveBestModel, ReduceLROnPlateau):
        assert cls(monitor).mode == mode, cls
    assert EarlyStopping(monitor, mode="max").mode == "max"
    assert EarlyStopping(monitor, mode="min").mode == "min"


def test_monitor_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode='up'"):
        EarlyStopping(mode="up")


def test_early_stopping_auto_mode_maximizes_accuracy(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    # max: e0..e2 improve, e3..e5 do not (0.7 is not > 0.7) -> stop after epoch 5 (6 epochs)
    # (in min mode it would stop after epoch 3)
    values = [0.5, 0.6, 0.7, 0.6, 0.65, 0.7, 0.9, 0.95]
    cb = EarlyStopping("accuracy", patience=3)
    learn.fit(8, lr=1e-3, callbacks=[Inject("accuracy", values), cb])
    assert len(records(learn)) == 6
    assert cb.best == 0.7


def test_early_stopping_auto_mode_minimizes_a_loss(tmp_path):
    learn = make_learner(tmp_path)
    values = [0.5, 0.6, 0.7, 0.8, 0.9]
    learn.fit(5, lr=1e-3, callbacks=[Inject("my_loss", values), EarlyStopping("my_loss", patience=2)])
    assert len(records(learn)) == 3  # in max mode it would never stop


def test_early_stopping_unknown_monitor_lists_available_names(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    with pytest.raises(KeyError) as info:
        learn.fit(2, lr=1e-3, callbacks=[EarlyStopping("valid_acc")])
    msg = str(info.value)
    assert "'valid_acc'" in msg
    for name in ("train_loss", "valid_loss", "accuracy"):
        assert f"'{name}'" in msg
    assert "'time'" not in msg and "'epoch'" not in msg
    assert len(records(learn)) == 1


def test_early_stopping_state_resets_between_fits(tmp_path):
    learn = make_learner(tmp_path)
    cb = EarlyStopping("valid_loss", patience=2)
    learn.add_callback(cb)
    learn.fit(10, lr=1e-2, callbacks=[NoStepAfterEpoch0()])
    assert len(records(learn)) == 3
    learn.fit(10, lr=1e-2, callbacks=[NoStepAfterEpoch0()])  # a fresh best and wait: again 1 + 2 epochs
    assert len(records(learn)) == 6


# ---------------------------------------------------------------- SaveBestModel
def test_save_best_model_reloads_the_best_epoch_real_valid_loss(tmp_path):
    learn = make_learner(tmp_path)
    snap = SnapshotPerEpoch()
    cb = SaveBestModel()
    learn.fit(5, lr=0.3, callbacks=[cb, snap])  # a large lr: valid_loss bounces
    losses = [r["valid_loss"] for r in records(learn)]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert cb.best_epoch == best
    assert cb.best == losses[best]
    assert_same_weights(weights(learn), snap.states[best])
    file = tmp_path / "models" / "best.pth"
    assert file.is_file()
    state = torch.load(file, weights_only=True)
    assert set(state) == {"model"}  # with_opt=False
    assert_same_weights(state["model"], snap.states[best])


def test_save_best_model_reloads_an_earlier_epoch(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    snap = SnapshotPerEpoch()
    cb = SaveBestModel("accuracy", name="top")
    learn.fit(4, lr=1e-2, callbacks=[Inject("accuracy", [0.2, 0.9, 0.5, 0.8]), cb, snap])
    assert cb.best_epoch == 1
    assert differs(snap.states[1], snap.states[3])  # training went on after the best epoch...
    assert_same_weights(weights(learn), snap.states[1])  # ...and the best weights came back
    assert (tmp_path / "models" / "top.pth").is_file()
    assert not (tmp_path / "models" / "best.pth").exists()


def test_save_best_model_without_reload_keeps_the_last_weights(tmp_path):
    learn = make_learner(tmp_path)
    snap = SnapshotPerEpoch()
    learn.fit(3, lr=1e-2, callbacks=[Inject("fake_loss", [0.1, 0.5, 0.9]), SaveBestModel("fake_loss", reload=False),
                                     snap])
    assert_same_weights(weights(learn), snap.states[-1])
    saved = torch.load(tmp_path / "models" / "best.pth", weights_only=True)["model"]
    assert_same_weights(saved, snap.states[0])


def test_save_best_model_forgets_the_previous_fit(tmp_path):
    learn = make_learner(tmp_path)
    cb = SaveBestModel("fake_loss")
    learn.fit(2, lr=1e-2, callbacks=[Inject("fake_loss", [1.0, 0.5]), cb])
    assert cb.best_epoch == 1
    snap = SnapshotPerEpoch()
    learn.fit(2, lr=1e-2, callbacks=[Inject("fake_loss", [float("nan")] * 2), cb, snap])
    # nothing improved in this fit: nothing to reload, the weights of its last epoch stay
    assert cb.best_epoch is None
    assert_same_weights(weights(learn), snap.states[-1])


# ---------------------------------------------------------------- ReduceLROnPlateau
def lrs(learn: Learner) -> list[float]:
    return [h["lr"][-1] for h in learn.history.hypers]


def test_reduce_lr_on_plateau_scales_the_lr_after_patience_epochs(tmp_path):
    learn = make_learner(tmp_path)
    cb = ReduceLROnPlateau("fake_loss", patience=2, factor=0.5, min_lr=0.03)
    learn.fit(7, lr=0.1, callbacks=[Inject("fake_loss", [1.0] * 7), cb])
    # e0 sets the best; e1, e2 wait -> x0.5 from e3; e3, e4 -> x0.25 (0.025 < min_lr) from e5; e6 -> x0.125
    expected = [0.1] * (3 * N_BATCHES) + [0.05] * (2 * N_BATCHES) + [0.03] * (2 * N_BATCHES)
    assert lrs(learn) == pytest.approx(expected, rel=1e-12, abs=0)
    assert cb.scale == pytest.approx(0.125)
    assert learn.opt.param_groups[0]["lr"] == pytest.approx(0.03)


def test_reduce_lr_on_plateau_improvement_resets_the_wait(tmp_path):
    learn = make_learner(tmp_path)
    values = [5.0, 4.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0]
    learn.fit(8, lr=0.1, callbacks=[Inject("fake_loss", values), ReduceLROnPlateau("fake_loss", patience=2,
                                                                                    factor=0.1)])
    # e3 waits 1, e4 improves (wait 0), e5, e6 wait 1, 2 -> reduced from e7 on
    expected = [0.1] * (7 * N_BATCHES) + [0.01] * N_BATCHES
    assert lrs(learn) == pytest.approx(expected, rel=1e-12, abs=0)


def test_reduce_lr_on_plateau_scales_each_layer_group_schedule(tmp_path):
    data = synthetic_classification(n=256, seed=0, batch_size=32)
    torch.manual_seed(0)
    model = tiny_mlp(8, 3)
    learn = Learner(data, model, path=tmp_path, progress=False, splitter=lambda m: [m[:3], m[3:]])
    learn.fit(4, lr=[0.01, 0.1], callbacks=[Inject("fake_loss", [1.0] * 4),
                                            ReduceLROnPlateau("fake_loss", patience=1, factor=0.5)])
    # e0 sets the best, e1 waits 1 = patience -> x0.5 from e2; e2 -> x0.25 from e3
    hyp = [h["lr"] for h in learn.history.hypers]
    assert hyp == [[0.01, 0.1]] * (2 * N_BATCHES) + [[0.005, 0.05]] * N_BATCHES + [[0.0025, 0.025]] * N_BATCHES
    assert sorted({g["lr"] for g in learn.opt.param_groups}) == [0.0025, 0.025]


# ---------------------------------------------------------------- CSVLogger
def read_csv(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def assert_rows_match(rows: list[list[str]], header: list[str], recs: list[dict], epochs=None) -> None:
    """rows match recs; the epoch column is `epochs` (the logger's running count) or else each record's epoch."""
    assert len(rows) == len(recs)
    epochs = [rec["epoch"] for rec in recs] if epochs is None else epochs
    for row, rec, epoch in zip(rows, recs, epochs):
        assert list(rec) == header
        for name, cell in zip(header, row):
            if name == "epoch":
                assert int(cell) == epoch
            else:
                assert float(cell) == pytest.approx(rec[name], rel=1e-5)


def test_csv_logger_writes_header_and_one_row_per_epoch(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    learn.fit(3, lr=1e-2, callbacks=[CSVLogger()])
    rows = read_csv(tmp_path / "history.csv")
    header = ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert rows[0] == header
    assert_rows_match(rows[1:], header, records(learn))


def test_csv_logger_append(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(2, lr=1e-2, callbacks=[CSVLogger("logs/run.csv")])
    learn.fit(3, lr=1e-2, callbacks=[CSVLogger("logs/run.csv", append=True)])
    rows = read_csv(tmp_path / "logs" / "run.csv")
    header = ["epoch", "train_loss", "valid_loss", "time"]
    assert rows[0] == header
    assert rows.count(header) == 1  # no second header
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]  # epochs counted on from the file's last row
    assert_rows_match(rows[1:], header, records(learn), epochs=range(5))


def test_csv_logger_without_append_overwrites(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(3, lr=1e-2, callbacks=[CSVLogger()])
    learn.fit(1, lr=1e-2, callbacks=[CSVLogger()])
    rows = read_csv(tmp_path / "history.csv")
    assert len(rows) == 2
    assert_rows_match(rows[1:], rows[0], records(learn)[-1:])


class CancelEpochBeforeTrain(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def before_train(self, learn):
        if learn.epoch == self.epoch:
            raise CancelEpoch()


def test_csv_logger_keeps_columns_aligned_when_values_are_missing(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(3, lr=1e-2, callbacks=[CancelEpochBeforeTrain(1), CSVLogger()])
    rows = read_csv(tmp_path / "history.csv")
    assert rows[0] == ["epoch", "train_loss", "valid_loss", "time"]
    assert set(records(learn)[1]) == {"epoch", "time"}  # the cancelled epoch has no losses
    assert rows[2][:3] == ["1", "", ""]
    assert float(rows[2][3]) == pytest.approx(records(learn)[1]["time"], rel=1e-5)
    assert_rows_match([rows[1], rows[3]], rows[0], [records(learn)[0], records(learn)[2]])


def test_csv_logger_append_follows_the_existing_header(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    (tmp_path / "history.csv").write_text("epoch,valid_loss,train_loss\n")
    with pytest.warns(UserWarning, match=r"\['accuracy', 'time'\] are not columns"):
        learn.fit(2, lr=1e-2, callbacks=[CSVLogger(append=True)])
    rows = read_csv(tmp_path / "history.csv")
    assert len(rows) == 3
    for row, rec in zip(rows[1:], records(learn)):
        assert row[0] == str(rec["epoch"])
        assert float(row[1]) == pytest.approx(rec["valid_loss"], rel=1e-5)
        assert float(row[2]) == pytest.approx(rec["train_loss"], rel=1e-5)


# ---------------------------------------------------------------- GradientClipping
class GradNormProbe(Callback):
    """The global gradient norm the optimizer stepped with (read after the step, before zero_grad)."""

    order = 10  # after GradientClipping (0)

    def __init__(self):
        self.norms: list[float] = []

    def after_step(self, learn):
        grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def _clip_run(tmp_path, clip: float | None) -> list[float]:
    data = synthetic_regression(n=256, n_features=4, seed=0, batch_size=32)
    torch.manual_seed(0)
    mse = nn.MSELoss()
    learn = Learner(data, tiny_mlp(4, 1), loss_fn=lambda pred, y: 100 * mse(pred, y), path=tmp_path, progress=False)
    probe = GradNormProbe()
    cbs = [probe] + ([GradientClipping(clip)] if clip is not None else [])
    learn.fit(2, lr=1e-3, callbacks=cbs)
    assert len(probe.norms) == 2 * N_BATCHES
    return probe.norms


def test_gradient_clipping_bounds_the_global_norm(tmp_path):
    max_norm = 0.5
    unclipped = _clip_run(tmp_path, None)
    assert min(unclipped) > 10 * max_norm  # the set-up makes big gradients
    clipped = _clip_run(tmp_path, max_norm)
    assert all(n <= max_norm + 1e-6 for n in clipped)
    assert clipped == pytest.approx([max_norm] * len(clipped), rel=1e-4)  # scaled down to max_norm, not below


def test_gradient_clipping_leaves_small_gradients_alone(tmp_path):
    assert _clip_run(tmp_path, 1e9) == _clip_run(tmp_path, None)


# ---------------------------------------------------------------- GradientAccumulation
def _sgd_run(tmp_path, batch_size: int, callbacks=()) -> Learner:
    data = synthetic_classification(n=256, seed=3, batch_size=batch_size, drop_last=True)
    torch.manual_seed(0)
    learn = Learner(data, tiny_mlp(8, 3), opt_fn=functools.partial(learnkit.SGD, momentum=0.0), path=tmp_path,
                    progress=False)
    learn.fit(2, lr=0.5, callbacks=callbacks)
    return learn


def test_gradient_accumulation_equals_a_double_batch(tmp_path):
    # Same seed, same number of items: the shuffle draws the same permutation, so two consecutive batches
    # of 16 are exactly one batch of 32; the mean loss of 32 is the mean of the two means of 16.
    big = _sgd_run(tmp_path, 32)
    acc = _sgd_run(tmp_path, 16, callbacks=[GradientAccumulation(steps=2)])
    assert len(acc.data.train_dl) == 2 * len(big.data.train_dl) == 2 * N_BATCHES
    assert big.opt_steps == 2 * N_BATCHES
    assert acc.opt_steps == 2 * N_BATCHES  # half of its 24 batches
    assert acc.iter == 4 * N_BATCHES
    small = _sgd_run(tmp_path, 16)  # the comparison can fail: without accumulation the result differs
    assert small.opt_steps == 4 * N_BATCHES
    moved = False
    for name, w in big.model.state_dict().items():
        assert torch.allclose(acc.model.state_dict()[name], w, atol=1e-6, rtol=0), name
        moved |= not torch.allclose(small.model.state_dict()[name], w, atol=1e-3, rtol=0)
    assert moved
    # the recorded loss is the unscaled one
    assert acc.history.losses.shape == (4 * N_BATCHES,)
    assert big.history.losses[0] == pytest.approx(float(acc.history.losses[:2].mean()), rel=1e-5)


class GradsAtEpochStart(Callback):
    def __init__(self):
        self.seen: list[bool] = []

    def before_batch(self, learn):
        if learn.training and learn.batch_idx == 0:
            self.seen.append(any(p.grad is not None for p in learn.model.parameters()))


def test_gradient_accumulation_discards_an_incomplete_group(tmp_path):
    probe = GradsAtEpochStart()
    learn = make_learner(tmp_path)
    learn.fit(3, lr=1e-2, callbacks=[GradientAccumulation(steps=4), probe])
    assert learn.opt_steps == 3  # 6 batches per epoch: one step of 4, the last 2 batches dropped
    assert probe.seen == [False, False, False]


def test_gradient_accumulation_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps=0"):
        GradientAccumulation(steps=0)


# ---------------------------------------------------------------- TerminateOnNaN
class NaNAt:
    """Cross-entropy, but NaN on the `at`-th training call (0-based; calls without grad are not counted)."""

    def __init__(self, at: int):
        self.at, self.calls, self.ce = at, 0, nn.CrossEntropyLoss()

    def __call__(self, pred, y):
        loss = self.ce(pred, y)
        if pred.requires_grad:
            self.calls += 1
            if self.calls - 1 == self.at:
                return loss * float("nan")
        return loss


class StepSnapshots(Callback):
    order = 100

    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def after_step(self, learn):
        self.states.append(weights(learn))


def test_terminate_on_nan_stops_before_the_nan_step(tmp_path, capsys):
    at = N_BATCHES + 2  # epoch 1, batch 2, iteration 8
    data = synthetic_classification(n=256, seed=0, batch_size=32)
    torch.manual_seed(0)
    learn = Learner(data, tiny_mlp(8, 3), loss_fn=NaNAt(at), path=tmp_path, progress=False)
    cb, snaps = TerminateOnNaN(), StepSnapshots()
    learn.fit(5, lr=1e-2, callbacks=[cb, snaps])
    assert learn.opt_steps == at
    assert learn.history.losses.shape == (at,)
    last = float(learn.history.losses[-1])
    assert math.isfinite(last)
    assert cb.message is not None
    assert "epoch 1, batch 2 (iteration 8)" in cb.message
    assert f"the last finite loss was {last:.6g} at iteration 7" in cb.message
    assert cb.message in capsys.readouterr().out
    w = weights(learn)
    assert all(torch.isfinite(v).all() for v in w.values())
    assert_same_weights(w, snaps.states[-1])  # exactly the weights after the last finite step
    assert all(p.grad is None for p in learn.model.parameters())
    assert len(records(learn)) == 1  # epoch 1 never ended


def test_terminate_on_nan_on_the_first_batch(tmp_path):
    data = synthetic_classification(n=256, seed=0, batch_size=32)
    torch.manual_seed(0)
    learn = Learner(data, tiny_mlp(8, 3), loss_fn=NaNAt(0), path=tmp_path, progress=False)
    before = weights(learn)
    cb = TerminateOnNaN()
    learn.fit(2, lr=1e-2, callbacks=[cb])
    assert "no finite loss was seen" in cb.message
    assert learn.opt_steps == 0
    assert_same_weights(weights(learn), before)


def test_terminate_on_nan_leaves_a_finite_fit_alone(tmp_path):
    learn = make_learner(tmp_path)
    cb = TerminateOnNaN()
    learn.fit(2, lr=1e-2, callbacks=[cb])
    assert cb.message is None
    assert learn.opt_steps == 2 * N_BATCHES


# ---------------------------------------------------------------- Checkpoint
CKPT_KEYS = {"format", "model", "opt", "epoch", "batches_done"}


class ReadCheckpoint(Callback):
    order = 100  # after Checkpoint (90)

    def __init__(self, file):
        self.file, self.at_epoch_end, self.mid_epoch = file, [], []

    def after_epoch(self, learn):
        state = torch.load(self.file, weights_only=True)
        self.at_epoch_end.append((state["epoch"], state["batches_done"], state["iter"]))
        assert_same_weights(state["model"], weights(learn))

    def after_batch(self, learn):
        if not learn.training or not self.file.exists():
            return
        state = torch.load(self.file, weights_only=True)
        if state["batches_done"] == learn.batch_idx + 1 and state["epoch"] == learn.epoch:
            self.mid_epoch.append((state["epoch"], state["batches_done"], state["iter"]))
            assert_same_weights(state["model"], weights(learn))


def test_checkpoint_written_at_each_epoch_end(tmp_path):
    learn = make_learner(tmp_path)
    file = tmp_path / "models" / "ckpt.pth"
    reader = ReadCheckpoint(file)
    learn.fit(2, lr=1e-2, callbacks=[Checkpoint("ckpt.pth"), reader])
    assert reader.at_epoch_end == [(1, 0, N_BATCHES), (2, 0, 2 * N_BATCHES)]
    assert reader.mid_epoch == []
    state = torch.load(file, weights_only=True)
    assert CKPT_KEYS <= set(state)
    assert state["format"] == "learnkit-checkpoint-1"
    assert state["epoch"] == 2 and state["batches_done"] == 0
    assert_same_weights(state["model"], weights(learn))
    assert state["opt"]["param_groups"][0]["lr"] == 1e-2
    assert sorted(p.name for p in file.parent.iterdir()) == ["ckpt.pth"]  # no temporary file left


def test_checkpoint_every_n_batches_writes_mid_epoch(tmp_path):
    learn = make_learner(tmp_path)
    file = tmp_path / "models" / "checkpoint.pth"
    reader = ReadCheckpoint(file)
    learn.fit(2, lr=1e-2, callbacks=[Checkpoint(every_n_batches=4), reader])
    # batch 4 of each epoch (batch 6 is the epoch's end, written by after_epoch instead)
    assert reader.mid_epoch == [(0, 4, 4), (1, 4, N_BATCHES + 4)]
    assert reader.at_epoch_end == [(1, 0, N_BATCHES), (2, 0, 2 * N_BATCHES)]
    assert learn.iter == 2 * N_BATCHES  # the checkpoint's own iter bump is undone


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    learn.fit(1, lr=1e-2, callbacks=[Checkpoint("ckpt.pth")])
    file = tmp_path / "models" / "ckpt.pth"
    good = file.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        learn.fit(1, lr=1e-2, callbacks=[Checkpoint("ckpt.pth")])
    monkeypatch.setattr(torch, "save", real_save)
    assert file.read_bytes() == good
    assert sorted(p.name for p in file.parent.iterdir()) == ["ckpt.pth"]
    assert torch.load(file, weights_only=True)["epoch"] == 1


class StopAfterEpoch(Callback):
    order = 100  # after Checkpoint (90) wrote the epoch

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch:
            raise CancelFit()


def test_monitor_states_survive_a_resume(tmp_path):
    # fit(resume_from=...) restores the callbacks' states before before_fit, which must not reset them.
    values = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]

    def callbacks():
        return [Inject("fake_loss", values), EarlyStopping("fake_loss", patience=4),
                ReduceLROnPlateau("fake_loss", patience=1, factor=0.5), SaveBestModel("fake_loss"),
                Checkpoint("ckpt.pth")]

    whole = make_learner(tmp_path / "whole")
    whole.fit(6, lr=0.1, callbacks=callbacks())
    assert len(records(whole)) == 5  # e0 best, e1..e4 wait 1..4
    expected_lrs = [0.1] * (2 * N_BATCHES) + [0.05] * N_BATCHES + [0.025] * N_BATCHES + [0.0125] * N_BATCHES
    assert lrs(whole) == pytest.approx(expected_lrs, rel=1e-12, abs=0)

    learn = make_learner(tmp_path / "parts")
    snap = SnapshotPerEpoch()
    learn.fit(6, lr=0.1, callbacks=callbacks() + [snap, StopAfterEpoch(1)])
    assert len(records(learn)) == 2
    cbs = callbacks()  # fresh instances, as in a new process
    early, plateau, best = cbs[1], cbs[2], cbs[3]
    learn.fit(6, lr=0.1, callbacks=cbs, resume_from=tmp_path / "parts" / "models" / "ckpt.pth")
    assert len(records(learn)) == 5  # the wait carried over: stopped after epoch 4, not 6
    assert early.wait == 4 and early.best == 1.0
    assert plateau.scale == pytest.approx(0.125)  # EarlyStopping (same order, added first) ended e4 first
    assert lrs(learn) == pytest.approx(expected_lrs, rel=1e-12, abs=0)
    assert best.best_epoch == 0
    assert_same_weights(weights(learn), snap.states[0])  # the best weights (epoch 0, before the resume) came back


# ---------------------------------------------------------------- errors in callbacks
class Boom(Callback):
    def __init__(self, event: str):
        setattr(self, event, self._boom)

    def _boom(self, learn):
        raise ValueError("boom")


class AfterFitSpy(Callback):
    def __init__(self):
        self.calls = 0

    def after_fit(self, learn):
        self.calls += 1


@pytest.mark.parametrize("event", ["before_fit", "after_loss", "after_epoch"])
def test_error_in_a_callback_is_reraised_with_a_note(tmp_path, event):
    learn = make_learner(tmp_path)
    spy = AfterFitSpy()
    with pytest.raises(ValueError, match="boom") as info:
        learn.fit(2, lr=1e-2, callbacks=[Boom(event), spy])
    if sys.version_info >= (3, 11):
        notes = getattr(info.value, "__notes__", [])
        assert any("Boom" in n and f"'{event}'" in n for n in notes), notes
    assert spy.calls == 1  # after_fit ran anyway
    assert all(p.grad is None for p in learn.model.parameters())


# ---------------------------------------------------------------- Cancel* exceptions
class Events(Callback):
    """Logs every event (with the epoch/batch it ran at); runs first, so it sees an event a later callback cancels."""

    order = -100

    def __init__(self):
        self.log: list[tuple[str, int, int]] = []

    def __getattribute__(self, name):  # test-only: records every event without writing 14 methods
        if name in learnkit.learner.events.EVENTS:
            log = object.__getattribute__(self, "log")
            return lambda learn: log.append((name, learn.epoch, learn.batch_idx if learn.training else -1))
        return object.__getattribute__(self, name)

    def count(self, name: str) -> int:
        return sum(1 for e in self.log if e[0] == name)


class CancelBatchAt(Callback):
    def __init__(self, iteration: int):
        self.iteration, self.before, self.after_batch_ran = iteration, None, False

    def before_batch(self, learn):
        if learn.training and learn.iter == self.iteration:
            self.before = weights(learn)
            raise CancelBatch()

    def after_batch(self, learn):
        if learn.training and learn.iter == self.iteration:
            self.after_batch_ran = True
            assert_same_weights(weights(learn), self.before)


def test_cancel_batch_skips_the_step_but_after_batch_runs(tmp_path):
    learn = make_learner(tmp_path)
    cb, ev = CancelBatchAt(3), Events()
    learn.fit(1, lr=1e-2, callbacks=[cb, ev])
    assert cb.after_batch_ran
    assert learn.opt_steps == N_BATCHES - 1
    assert learn.iter == N_BATCHES  # the cancelled batch still counts as an iteration
    train_steps = [e for e in ev.log if e[0] == "after_step"]
    assert [b for _, _, b in train_steps] == [0, 1, 2, 4, 5]
    assert ev.count("after_batch") == N_BATCHES + 2  # 6 training + 2 validation batches
    assert ev.count("after_forward") == N_BATCHES - 1 + 2


class CancelEpochAt(Callback):
    def __init__(self, epoch: int, event: str):
        self.epoch = epoch
        setattr(self, event, self._cancel)

    def _cancel(self, learn):
        if learn.epoch == self.epoch:
            raise CancelEpoch()


def test_cancel_epoch_skips_the_rest_of_the_epoch(tmp_path):
    learn = make_learner(tmp_path)
    ev = Events()
    learn.fit(3, lr=1e-2, callbacks=[CancelEpochAt(1, "before_train"), ev])
    assert learn.opt_steps == 2 * N_BATCHES
    assert ev.count("after_epoch") == 3
    assert ev.count("before_train") == 3 and ev.count("after_train") == 2  # only the matching after_ runs
    assert ev.count("before_validate") == 2
    assert [r["epoch"] for r in records(learn)] == [0, 1, 2]
    assert "valid_loss" in records(learn)[2]
    assert ev.log[-1][0] == "after_fit"


def test_cancel_epoch_mid_training(tmp_path):
    learn = make_learner(tmp_path)
    ev = Events()

    class Mid(Callback):
        def after_step(self, learn):
            if learn.epoch == 0 and learn.batch_idx == 1:
                raise CancelEpoch()

    learn.fit(2, lr=1e-2, callbacks=[Mid(), ev])
    assert learn.opt_steps == 2 + N_BATCHES
    assert ev.count("after_epoch") == 2 and ev.count("before_validate") == 1


def test_cancel_fit_in_before_fit_still_runs_after_fit(tmp_path):
    learn = make_learner(tmp_path)
    before = weights(learn)
    ev = Events()

    class Stop(Callback):
        def before_fit(self, learn):
            raise CancelFit()

    learn.fit(3, lr=1e-2, callbacks=[Stop(), ev])
    assert [e[0] for e in ev.log] == ["before_fit", "after_fit"]
    assert learn.opt_steps == 0
    assert records(learn) == []
    assert_same_weights(weights(learn), before)


def test_cancel_fit_mid_epoch(tmp_path):
    learn = make_learner(tmp_path)
    ev = Events()

    class Stop(Callback):
        def after_batch(self, learn):
            if learn.training and learn.iter == N_BATCHES + 1:
                raise CancelFit()

    learn.fit(3, lr=1e-2, callbacks=[Stop(), ev])
    assert learn.opt_steps == N_BATCHES + 2
    assert ev.count("after_epoch") == 1  # the cancelled epoch does not end
    assert ev.log[-1][0] == "after_fit"
    assert all(p.grad is None for p in learn.model.parameters())


# CSVLogger across fits and resumes: one log, epochs counted across fits, no epoch lost or written twice
def test_csv_logger_fine_tune_keeps_both_fits_with_a_running_epoch(tmp_path):
    learn = make_learner(tmp_path, metrics=[accuracy])
    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1, callbacks=[CSVLogger()])  # two fits: 1 frozen + 2
    rows = read_csv(tmp_path / "history.csv")
    header = ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert rows[0] == header and rows.count(header) == 1
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [rec["epoch"] for rec in records(learn)] == [0, 0, 1]  # each fit counts from 0 in History
    assert_rows_match(rows[1:], header, records(learn), epochs=range(3))


def test_csv_logger_held_by_the_learner_logs_every_fit(tmp_path):
    learn = make_learner(tmp_path, callbacks=[CSVLogger("log.csv")])
    learn.fit(1, lr=1e-2)
    learn.fit(2, lr=1e-2)
    rows = read_csv(tmp_path / "log.csv")
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert_rows_match(rows[1:], rows[0], records(learn), epochs=range(3))


class InterruptAfterEpoch(Callback):
    """Ctrl-C at the end of `epoch`, after CSVLogger (70) wrote its row and before Checkpoint (90) saved."""

    order = 80

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("interrupt,every_n_batches,kept", [
    (InterruptAt(2, 1), None, 2),       # checkpoint at the end of epoch 1: rows 0, 1 stay
    (InterruptAt(1, 4), 3, 1),          # mid-epoch checkpoint in epoch 1: row 0 stays
    (InterruptAfterEpoch(1), None, 1),  # row 1 written after the checkpoint: dropped, epoch 1 runs again
])
def test_csv_logger_resumed_fit_appends_from_the_checkpoint(tmp_path, interrupt, every_n_batches, kept):
    learn = make_learner(tmp_path, metrics=[accuracy])
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint("c.pth", every_n_batches), CSVLogger(), interrupt])
    before = read_csv(tmp_path / "history.csv")
    assert len(before) - 1 == (kept + 1 if isinstance(interrupt, InterruptAfterEpoch) else kept)
    resumed = make_learner(tmp_path, metrics=[accuracy])  # a new process: new learner, new logger
    resumed.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint("c.pth", every_n_batches), CSVLogger()],
                          resume_from=tmp_path / "models" / "c.pth")
    rows = read_csv(tmp_path / "history.csv")
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]  # nothing lost, nothing twice
    assert rows[:kept + 1] == before[:kept + 1]  # rows from before the interruption are kept as written
    assert_rows_match(rows[1:], rows[0], records(resumed))  # and agree with the restored history
