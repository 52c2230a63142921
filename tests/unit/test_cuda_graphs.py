"""When a fit may run as whole-step CUDA graphs (learner/graphs.py), decided on any machine: the switch, and
each reason that keeps a fit eager. The graphs themselves are tested on the GPU (tests/gpu/test_cuda_graphs.py)."""
import pytest
import torch
from torch import nn

from learnkit import Learner
from learnkit.callbacks import GradientAccumulation, GradientClipping, TerminateOnNaN
from learnkit.learner.graphs import graph_blockers
from learnkit.optim.optimizer import SGD
from learnkit.testing import synthetic_classification, tiny_mlp


def _learner(**kwargs):
    data = synthetic_classification(n=64, batch_size=16)
    return Learner(data, kwargs.pop("model", tiny_mlp(8, 3)), progress=False, **kwargs)


def test_the_switch_and_the_cpu_reason():
    with pytest.raises(ValueError, match="cuda_graphs='on'.*'auto', True or False"):
        _learner(cuda_graphs="on")
    learn = _learner()
    learn.fit(1, lr=1e-2)
    assert learn.cuda_graph_report == {"used": False, "reason": "the device is cpu, not CUDA"}
    assert learn.graphs is None
    with pytest.raises(ValueError, match="cuda_graphs=True, but .*the device is cpu, not CUDA"):
        _learner(cuda_graphs=True).fit(1)
    off = _learner(cuda_graphs=False)
    off.fit(1)
    assert off.cuda_graph_report == {"used": False, "reason": "cuda_graphs=False"}


def test_each_blocker_is_named():
    learn = _learner(callbacks=[GradientAccumulation(2), TerminateOnNaN(), GradientClipping(1.0)])
    learn.create_opt()
    reasons = graph_blockers(learn)
    assert any(r.startswith("GradientAccumulation.after_loss") for r in reasons)
    assert any(r.startswith("GradientAccumulation.after_backward") for r in reasons)
    assert any(r.startswith("TerminateOnNaN.after_loss") for r in reasons)
    assert not any("GradientClipping" in r for r in reasons)  # graph_safe: recorded with the step
    sgd = _learner(opt_fn=SGD)
    sgd.create_opt()
    assert any("SGD is not Adam/AdamW" in r for r in graph_blockers(sgd))
    half = _learner()
    half.amp_dtype = torch.float16
    assert any("fp16" in r for r in graph_blockers(half))


def test_soft_reasons_count_only_in_auto():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = nn.GRU(8, 4, batch_first=True), nn.Linear(4, 3)

        def forward(self, x):
            return self.out(self.rnn(x[:, None])[0][:, -1])

    class Custom(Learner):
        def train_step(self, batch):
            return super().train_step(batch)
    rnn = _learner(model=Recurrent())
    assert any("recurrent" in r for r in graph_blockers(rnn))
    custom = Custom(synthetic_classification(n=64, batch_size=16), tiny_mlp(8, 3), progress=False)
    assert any("overridden" in r for r in graph_blockers(custom))
    assert graph_blockers(custom, forced=True) == ["the device is cpu, not CUDA"]
    # a capture that failed in one fit (DeBERTa-v2's TorchScript helpers) is not attempted again in the next
    failed = _learner()
    failed.cuda_graph_report = {"used": False, "reason": "capture failed (RuntimeError: TorchScript op)",
                                "capture_failed": "capture failed (RuntimeError: TorchScript op)"}
    assert "an earlier fit's capture failed (RuntimeError: TorchScript op) (cuda_graphs=True retries)" in \
        graph_blockers(failed)
    assert graph_blockers(failed, forced=True) == ["the device is cpu, not CUDA"]
    failed.fit(1, lr=1e-2)  # the reason carries over from fit to fit
    assert "capture failed (RuntimeError: TorchScript op)" in failed.cuda_graph_report["reason"]
    failed.fit(1, lr=1e-2)
    assert failed.cuda_graph_report["reason"].endswith(
        "an earlier fit's capture failed (RuntimeError: TorchScript op) (cuda_graphs=True retries)")


@pytest.mark.parametrize("opt_class,weight_decay", [(torch.optim.AdamW, 0.01), (torch.optim.Adam, 0.01),
                                                    (torch.optim.AdamW, 0.0)])
def test_the_recorded_adam_step_is_torchs(opt_class, weight_decay):
    """adam_step (what a graph records) gives torch.optim's update, also with a schedule moving lr and betas and a
    parameter group that joined late (fewer steps: its own bias correction)."""
    import copy
    from learnkit.learner.graphs import adam_hypers, adam_step
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3, generator=g)), nn.Parameter(torch.randn(3, generator=g))]
    late = nn.Parameter(torch.randn(4, generator=g))
    ref = opt_class([{"params": params}, {"params": [late], "weight_decay": 0.0}], lr=1e-2,
                    betas=(0.9, 0.99), eps=1e-5, weight_decay=weight_decay)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    ref.step()  # state for the first group only: the second group's parameter joins a step later
    mine_params = [nn.Parameter(p.detach().clone()) for p in params + [late]]
    mine = opt_class([{"params": mine_params[:2]}, {"params": mine_params[2:], "weight_decay": 0.0}], lr=1e-2,
                     betas=(0.9, 0.99), eps=1e-5, weight_decay=weight_decay)
    mine.load_state_dict(copy.deepcopy(ref.state_dict()))
    for i, (lr, beta1) in enumerate([(1e-2, 0.95), (3e-2, 0.85), (5e-3, 0.9)]):
        grads = [torch.randn(p.shape, generator=g) for p in params + [late]]
        for p, q, gr in zip(params + [late], mine_params, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        for opt in (ref, mine):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (beta1, 0.99)
        ref.step()
        if i == 0:
            mine.step()  # eager, as the loop's warm-up would be
            continue
        hypers = adam_hypers(mine)
        assert [(h[2], h[3], float(h[0])) for h in hypers[:3]] == [("lr", None, pytest.approx(lr)),
                                                                  ("betas", 0, pytest.approx(beta1)), ("betas", 1, pytest.approx(0.99))]
        adam_step(mine, hypers)
        for p, q in zip(params + [late], mine_params):
            torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


def test_a_refused_cuda_graphs_true_leaves_the_learner_as_it_was():
    learn = _learner(cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs=True"):
        learn.fit(1, lr=1e-2, callbacks=[GradientClipping(1.0)])
    assert not any(isinstance(cb, GradientClipping) for cb in learn.callbacks)  # this fit's callbacks removed
    learn.cuda_graphs = "auto"
    learn.fit(1, lr=1e-2)
    assert len(learn.history.losses) == 3


def test_the_image_factories_pass_the_switch_on():
    from learnkit.testing import quadrant_images
    from learnkit.vision import unet_learner, vision_learner
    data = quadrant_images(n=32, channels=3, batch_size=8)
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False, cuda_graphs=False)
    assert learn.cuda_graphs is False
    with pytest.raises(ValueError, match="cuda_graphs='yes'"):
        unet_learner(data, "resnet18", pretrained=False, progress=False, cuda_graphs="yes")
