"""Whole-step CUDA graphs (learner/graphs.py) on the GPU: the same training as eager, dropout still random per
step, the schedule reaching the recorded step, clipping recorded with it, fine_tune, lr_find leaving no trace,
resume, and the eager fall-backs with their reasons. Marked `gpu`: skipped without CUDA."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from learnkit import Learner, accuracy, set_seed
from learnkit.callbacks import Checkpoint, GradientAccumulation, GradientClipping
from learnkit.testing import synthetic_classification, tiny_bn_mlp

pytestmark = pytest.mark.gpu
PNG = Path(__file__).resolve().parents[2] / "datasets" / "fashion-mnist-sample" / "png"


def _data(**kwargs):
    # 768 training items in batches of 64: 12 equal batches, so every training step can be replayed
    return synthetic_classification(n=1024, n_features=8, n_classes=3, seed=0, batch_size=64, device="cuda",
                                    num_workers=0, **kwargs)


def _learner(cuda_graphs, model=None, **kwargs):
    set_seed(0)
    model = model if model is not None else tiny_bn_mlp(8, 3, hidden=32)
    return Learner(_data(), model, metrics=[accuracy], progress=False, cuda_graphs=cuda_graphs,
                   mixed_precision=None, **kwargs)


def test_graph_training_follows_the_eager_loss_curve_and_validation():
    eager = _learner(False)  # each built and fitted after set_seed(0): the same batches in the same order
    eager.fit_one_cycle(4, max_lr=1e-2)
    graphed = _learner(True)
    graphed.fit_one_cycle(4, max_lr=1e-2)
    report = graphed.cuda_graph_report
    assert report["used"] and report["replays"] > 40 and report["shapes"] == [[64, 8], [64]], report
    assert eager.cuda_graph_report == {"used": False, "reason": "cuda_graphs=False"}
    # fp32, the same batches in the same order: the graph (foreach AdamW) and eager (fused AdamW) agree closely
    torch.testing.assert_close(graphed.history.losses, eager.history.losses, rtol=1e-3, atol=1e-4)
    for a, b in zip(graphed.history.epoch_records, eager.history.epoch_records):  # 48 steps of drift apart
        assert abs(a["valid_loss"] - b["valid_loss"]) < 0.03 and abs(a["accuracy"] - b["accuracy"]) < 0.03
    # the validation graph itself: the same model validated eagerly (outside a fit) gives the in-fit figures
    again = graphed.validate()
    assert again["valid_loss"] == pytest.approx(graphed.history.epoch_records[-1]["valid_loss"], rel=1e-5)
    assert again["accuracy"] == pytest.approx(graphed.history.epoch_records[-1]["accuracy"], abs=1e-6)
    assert graphed.history.epoch_records[-1]["accuracy"] > 0.8
    # The param groups hold floats again (checkpoints, get_hyper), with the optimizer's own flags
    group = graphed.opt.param_groups[0]
    assert type(group["lr"]) is float and all(type(b) is float for b in group["betas"]) and not group["capturable"]


def test_the_schedule_reaches_the_recorded_step():
    """lr 0 in the second half of a fit must freeze the weights from there on: the graph reads the live lr."""
    from learnkit import Callback
    learn = _learner(True)
    snaps = {}

    class Snapshot(Callback):
        def after_batch(self, learn):
            if learn.training and learn.iter == 12:  # the last step with lr 1e-2 (the first epoch's last batch)
                snaps["w"] = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(2, schedules={"lr": lambda progress: 1e-2 if progress < 0.5 else 0.0}, callbacks=[Snapshot()])
    assert learn.cuda_graph_report["replays"] >= 20
    for k, v in learn.model.state_dict().items():
        if v.is_floating_point() and "running" not in k:  # BatchNorm statistics keep moving
            assert torch.equal(v, snaps["w"][k]), k


def test_dropout_stays_random_per_replay():
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 3))
    learn = _learner(True, model=model)
    learn.fit(1, lr=1e-12)  # no learning to speak of: the losses differ by the dropout masks
    losses = learn.history.losses[3:]  # the replays (after 2 warm-ups and the capture)
    assert learn.cuda_graph_report["replays"] >= 8
    assert len(set(losses.tolist())) == len(losses), losses


def test_clipping_is_recorded_and_accumulation_goes_eager():
    eager = _learner(False, callbacks=[GradientClipping(0.05)])
    eager.fit(2, lr=1e-2)
    graphed = _learner("auto", callbacks=[GradientClipping(0.05)])
    graphed.fit(2, lr=1e-2)
    assert graphed.cuda_graph_report["used"]
    torch.testing.assert_close(graphed.history.losses, eager.history.losses, rtol=1e-3, atol=1e-4)
    acc = _learner("auto", callbacks=[GradientAccumulation(2)])
    acc.fit(1, lr=1e-2)
    assert not acc.cuda_graph_report["used"] and "GradientAccumulation" in acc.cuda_graph_report["reason"]
    with pytest.raises(ValueError, match="GradientAccumulation"):
        _learner(True, callbacks=[GradientAccumulation(2)]).fit(1)


def test_a_capture_failure_falls_back_to_eager():
    class Syncs(nn.Module):  # reads a value on the host in forward: cannot be recorded
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 3)

        def forward(self, x):
            return self.lin(x) * (1.0 if float(x.abs().sum()) > -1 else 0.0)
    learn = _learner("auto", model=Syncs())
    learn.fit(2, lr=1e-2)
    report = learn.cuda_graph_report
    assert not report["used"] and report["reason"].startswith("capture failed"), report
    assert len(learn.history.losses) == 24 and torch.isfinite(learn.history.losses).all()


def test_lr_find_leaves_no_trace_and_fine_tune_trains():
    from learnkit.vision import ImageDataBunch, vision_learner
    set_seed(0)
    data = ImageDataBunch.from_folder(PNG, mode="L", batch_size=64, device="cuda", drop_last=True, verbose=False)
    learn = vision_learner(data, "resnet9", pretrained=False, progress=False)
    before = copy.deepcopy(learn.model.state_dict())
    learn.lr_find(num_it=30)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    learn.fine_tune(2, base_lr=3e-3, freeze_epochs=1)
    assert learn.cuda_graph_report["used"] and learn.cuda_graph_report["replays"] > 0
    assert learn.validate()["accuracy"] > 0.6


def test_resume_matches_the_uninterrupted_fit(tmp_path):
    from learnkit import Callback

    class InterruptAt(Callback):
        def after_batch(self, learn):
            if learn.training and learn.epoch == 1 and learn.batch_idx == 5:
                raise KeyboardInterrupt

    full = _learner(True, path=tmp_path / "full")
    full.fit_one_cycle(3, max_lr=1e-2)
    part = _learner(True, path=tmp_path / "run")  # set_seed(0) again: the same order as the full fit
    with pytest.raises(KeyboardInterrupt):
        part.fit_one_cycle(3, max_lr=1e-2, callbacks=[Checkpoint("c.pth"), InterruptAt()])
    resumed = _learner(True, path=tmp_path / "run")
    resumed.fit_one_cycle(3, max_lr=1e-2, callbacks=[Checkpoint("c.pth")],
                          resume_from=tmp_path / "run" / "models" / "c.pth")
    assert resumed.cuda_graph_report["used"]
    # the resumed fit replays from its own warm-up on: equal to the uninterrupted one within float noise
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor([r["train_loss"] for r in resumed.history.epoch_records]),
                               torch.tensor([r["train_loss"] for r in full.history.epoch_records]), rtol=1e-4, atol=0)
