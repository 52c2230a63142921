"""The loop itself: event order, equivalence with a hand-written loop, optimizer defaults, layer groups,
freezing, seeds, interrupts, save/load and inference helpers."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import learnkit as lk
from learnkit import Callback, CancelBatch, Learner
from learnkit.learner.events import EVENTS
from learnkit.testing import synthetic_classification, synthetic_regression, tiny_bn_mlp, tiny_mlp


class Recorder(Callback):
    def __init__(self):
        self.events = []


for _e in EVENTS:
    setattr(Recorder, _e, (lambda name: lambda self, learn: self.events.append(name))(_e))


def test_exact_event_order():
    data = synthetic_classification(n=48, batch_size=16, valid_pct=0.25)  # 36 train -> 2 batches, 12 valid -> 1
    rec = Recorder()
    learn = Learner(data, tiny_mlp(), progress=False, callbacks=[rec])
    learn.fit(1)
    train_batch = ["before_batch", "after_forward", "after_loss", "after_backward", "after_step", "after_batch"]
    valid_batch = ["before_batch", "after_forward", "after_loss", "after_batch"]
    assert rec.events == (["before_fit", "before_epoch", "before_train"] + train_batch * 2 + ["after_train",
                          "before_validate"] + valid_batch + ["after_validate", "after_epoch", "after_fit"])


def test_fit_equals_hand_written_loop_weight_for_weight():
    model = tiny_mlp()
    reference = copy.deepcopy(model)
    learn = Learner(synthetic_classification(seed=3, batch_size=16), model, progress=False)
    learn.fit(2, lr=1e-2)

    data = synthetic_classification(seed=3, batch_size=16)  # same items, same seeded shuffle
    decay = [p for p in reference.parameters() if p.ndim > 1]
    no_decay = [p for p in reference.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2,
                            betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    for _ in range(2):
        reference.train()
        for xb, yb in data.train_dl:
            F.cross_entropy(reference(xb), yb).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert learn.opt_steps == 2 * len(data.train_dl) and learn.iter == learn.n_iter


def test_adamw_defaults_and_no_decay_on_norm_and_bias():
    learn = Learner(synthetic_classification(), tiny_bn_mlp(), progress=False)
    opt = learn.create_opt()
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["eps"] == 1e-5
    assert opt.defaults["weight_decay"] == 0.01
    bn_params = {id(p) for m in learn.model.modules() if isinstance(m, nn.BatchNorm1d) for p in m.parameters()}
    for group in opt.param_groups:
        assert group["layer_group"] == 0
        for p in group["params"]:
            expected = 0.0 if (p.ndim <= 1 or id(p) in bn_params) else 0.01
            assert group["weight_decay"] == expected


def _three_group_learner(**kwargs):
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    return Learner(synthetic_classification(), model, progress=False,
                   splitter=lambda m: [m[:3], m[3:5], m[5:]], **kwargs)


def test_discriminative_learning_rates_per_group():
    learn = _three_group_learner()
    assert learn.lr_per_group(slice(1e-4, 1e-2)) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert learn.lr_per_group(slice(1e-2)) == pytest.approx([1e-3, 1e-3, 1e-2])
    learn.fit(1, lr=slice(1e-4, 1e-2))
    by_group = {g["layer_group"]: g["lr"] for g in learn.opt.param_groups}
    assert by_group == pytest.approx({0: 1e-4, 1: 1e-3, 2: 1e-2})
    learn.fit_one_cycle(1, slice(1e-5, 1e-3), pct_start=0.5)
    peak = max(learn.history.hypers[-len(learn.data.train_dl):], key=lambda h: h["lr"][2])["lr"]
    assert peak[1] / peak[0] == pytest.approx(10) and peak[2] / peak[1] == pytest.approx(10)
    with pytest.raises(ValueError, match="2 learning rates given for 3 layer groups"):
        learn.fit(1, lr=[1e-3, 1e-3])


def test_freeze_keeps_batchnorm_trainable_and_frozen_weights_fixed():
    learn = _three_group_learner()
    learn.freeze()
    linear0, bn, linear1, head = learn.model[0], learn.model[1], learn.model[3], learn.model[5]
    assert not linear0.weight.requires_grad and not linear1.weight.requires_grad
    assert bn.weight.requires_grad and bn.bias.requires_grad and head.weight.requires_grad
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(1, lr=1e-2)
    after = learn.model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"]) and torch.equal(before["3.weight"], after["3.weight"])
    assert not torch.equal(before["1.weight"], after["1.weight"])  # BN trained
    assert not torch.equal(before["5.weight"], after["5.weight"])
    learn.freeze_to(1)
    assert not linear0.weight.requires_grad and linear1.weight.requires_grad
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    frozen_bn = _three_group_learner(train_bn=False)
    frozen_bn.freeze()
    assert not frozen_bn.model[1].weight.requires_grad


def test_splitter_must_cover_every_parameter():
    with pytest.raises(ValueError, match="leave out parameters"):
        Learner(synthetic_classification(), tiny_mlp(), progress=False, splitter=lambda m: [m[1]])


def _seeded_run():
    lk.set_seed(42)
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock)).databunch(
        lk.testing.classification_items(128), batch_size=16, device="cpu")  # shuffle from the global RNG
    learn = Learner(data, tiny_bn_mlp(), progress=False)
    learn.fit_one_cycle(2, 1e-2)
    return learn.model.state_dict()


def test_set_seed_gives_bit_identical_weights():
    a, b = _seeded_run(), _seeded_run()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lk.set_seed(43)
    c = tiny_bn_mlp().state_dict()
    lk.set_seed(42)
    assert not torch.equal(c["1.weight"], tiny_bn_mlp().state_dict()["1.weight"])
    with pytest.raises(TypeError, match="seed must be an int"):
        lk.set_seed("42")


class Interrupt(Callback):
    def after_batch(self, learn):
        if learn.epoch == 1 and learn.batch_idx == 2:
            raise KeyboardInterrupt


def test_keyboard_interrupt_leaves_learner_usable_with_history():
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3, callbacks=[Interrupt()])
    assert len(learn.history.epoch_records) == 1 and len(learn.history.losses) == len(learn.data.train_dl) + 3
    assert all(p.grad is None for p in learn.model.parameters())
    assert not any(isinstance(c, Interrupt) for c in learn.callbacks)
    learn.fit(1)
    assert len(learn.history.epoch_records) == 2


def test_cancel_batch_skips_step_but_not_after_batch():
    class SkipAll(Callback):
        def __init__(self):
            self.after = 0

        def before_batch(self, learn):
            if learn.training:
                raise CancelBatch()

        def after_batch(self, learn):
            self.after += learn.training

    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    before = copy.deepcopy(learn.model.state_dict())
    skip = SkipAll()
    learn.fit(1, callbacks=[skip])
    assert skip.after == len(learn.data.train_dl) and learn.opt_steps == 0
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())


def test_callback_error_names_callback_and_event():
    class Broken(Callback):
        def after_loss(self, learn):
            raise ValueError("boom")

    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    with pytest.raises(ValueError, match="boom") as info:
        learn.fit(1, callbacks=[Broken()])
    assert "Broken" in str(getattr(info.value, "__notes__", [str(info.value)]))
    assert "after_loss" in str(getattr(info.value, "__notes__", [str(info.value)]))


def test_save_load_round_trip(tmp_path):
    learn = Learner(synthetic_classification(), tiny_bn_mlp(), progress=False, path=tmp_path)
    learn.fit(1, lr=1e-2)
    saved = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(learn.opt.state_dict())
    file = learn.save("stage1")
    assert file == tmp_path / "models" / "stage1.pth"
    learn.fit(1, lr=1e-2)
    learn.load("stage1")
    assert all(torch.equal(saved[k], v) for k, v in learn.model.state_dict().items())
    for pid, state in opt_state["state"].items():
        assert torch.equal(state["exp_avg"], learn.opt.state_dict()["state"][pid]["exp_avg"])
    with pytest.raises(FileNotFoundError, match="stage1"):
        learn.load("nope")


def test_validate_get_preds_predict_agree():
    learn = Learner(synthetic_classification(n=320), tiny_mlp(), metrics=[lk.accuracy], progress=False)
    learn.fit_one_cycle(8, 3e-2)
    results = learn.validate()
    assert results["valid_loss"] == pytest.approx(learn.history.epoch_records[-1]["valid_loss"], rel=1e-6)
    assert results["accuracy"] > 0.8
    probs, targets = learn.get_preds()
    assert probs.shape == (len(learn.data.valid_dl.dataset), 3)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
    assert (probs.argmax(1) == targets).float().mean().item() == pytest.approx(results["accuracy"], abs=1e-6)
    x, label = learn.data.valid_dl.dataset.items[0]
    decoded, index, p = learn.predict(x)
    assert decoded == learn.data.classes[index] and torch.allclose(p, probs[0], atol=1e-6)


def test_regression_learner_trains():
    learn = Learner(synthetic_regression(), tiny_mlp(4, 1, 32), metrics=[lk.mse, lk.RMSE()], progress=False)
    learn.fit_one_cycle(15, 3e-2)
    rec = learn.history.epoch_records[-1]
    assert rec["mse"] < 0.1 and rec["rmse"] == pytest.approx(rec["mse"] ** 0.5, rel=1e-4)
    value, index, _ = learn.predict(torch.zeros(4))
    assert isinstance(value, float) and index is None


def test_cpu_bf16_autocast_opt_in():
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False, mixed_precision="bf16")
    assert learn.amp_dtype == torch.bfloat16
    learn.fit(1)
    assert torch.isfinite(learn.history.losses).all()
    assert Learner(synthetic_classification(), tiny_mlp(), progress=False).amp_dtype is None
    with pytest.raises(ValueError, match="mixed_precision"):
        Learner(synthetic_classification(), tiny_mlp(), progress=False, mixed_precision="fp8")


def test_summary_and_show_training_loop(capsys):
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=True)
    text = learn.summary()
    assert "(32, 16)" in text and "trainable" in text and "Total params: 195" in text
    learn.show_training_loop()
    out = capsys.readouterr().out
    assert "    before_train: History, ProgressBar" in out and "after_fit: ProgressBar" in out


def test_progress_bar_runs_and_prints_table(capsys):
    learn = Learner(synthetic_classification(), tiny_mlp(), metrics=[lk.accuracy], progress=True)
    learn.fit(2)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_loss" in out and "accuracy" in out


def test_plots_return_figures():
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    learn.fit_one_cycle(2, 1e-2)
    for fig in (learn.plot_loss(), learn.plot_sched()):
        assert fig.axes and fig.axes[0].lines


def test_cancelled_batches_and_epochs_record_nothing_stale():
    from learnkit import CancelEpoch

    class SkipOdd(Callback):
        def before_batch(self, learn):
            if learn.training and learn.batch_idx % 2:
                raise CancelBatch()

    class SkipEpoch1(Callback):
        def before_epoch(self, learn):
            if learn.epoch == 1:
                raise CancelEpoch()

    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False)
    learn.fit(3, callbacks=[SkipOdd(), SkipEpoch1()])
    n = len(learn.data.train_dl)
    assert len(learn.history.losses) == 2 * ((n + 1) // 2)
    records = learn.history.epoch_records
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert "train_loss" not in records[1] and "valid_loss" not in records[1]
    assert records[0]["train_loss"] != records[2]["train_loss"]


def test_checkpoint_must_fall_on_accumulated_steps(tmp_path):
    learn = Learner(synthetic_classification(), tiny_mlp(), progress=False, path=tmp_path)
    with pytest.raises(ValueError, match="multiple of 2"):
        learn.fit(1, callbacks=[lk.GradientAccumulation(2), lk.Checkpoint(every_n_batches=3)])
