"""The public step seam: `Learner.train_step` / `eval_step` overridden in a subclass, trained for real on tiny
data (a two-network GAN with `optimizer_step`, a loss over two model outputs), while the loop keeps the rest."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import learnkit as lk
from learnkit import Callback, Learner
from learnkit.data.blocks import RegressionBlock, TensorBlock
from learnkit.data.datablock import DataBlock
from learnkit.data.splitters import RandomSplitter
from learnkit.optim.optimizer import AdamW
from learnkit.testing import synthetic_classification


def gaussian_gan_data(n=384, seed=0):
    """(noise (4,), real sample of N(3, 0.5²)) pairs: the generator must learn to map noise to the real samples."""
    g = torch.Generator().manual_seed(seed)
    noise, real = torch.randn(n, 4, generator=g), 3.0 + 0.5 * torch.randn(n, generator=g)
    return DataBlock(blocks=(TensorBlock, RegressionBlock), splitter=RandomSplitter(0.25, seed=seed)).databunch(
        [(noise[i], float(real[i])) for i in range(n)], batch_size=32, device="cpu", seed=seed)


class GANLearner(Learner):
    """learn.model is the generator (trained by the loop's optimizer); the critic has its own optimizer, stepped
    inside the step with `optimizer_step`."""

    def __init__(self, data, generator, critic, critic_lr, **options):
        super().__init__(data, generator, **options)
        self.critic = critic.to(self.device)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=(0.5, 0.99))
        self.critic_losses = []

    def train_step(self, batch):
        noise, real = batch
        fake = self.model(noise)
        ones, zeros = torch.ones_like(real), torch.zeros_like(real)
        critic_loss = (F.binary_cross_entropy_with_logits(self.critic(real), ones)
                       + F.binary_cross_entropy_with_logits(self.critic(fake.detach()), zeros))
        self.optimizer_step(critic_loss, self.critic_opt)
        self.critic_losses.append(critic_loss.detach())
        return F.binary_cross_entropy_with_logits(self.critic(fake), ones)  # the generator's: the loop steps it


class CountEvents(Callback):
    def __init__(self):
        self.counts = {}

    def _add(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def after_loss(self, learn):
        if learn.training:
            self._add("after_loss")

    def after_backward(self, learn):
        self._add("after_backward")

    def after_step(self, learn):
        self._add("after_step")


def test_gan_step_trains_both_networks_towards_the_real_distribution():
    lk.set_seed(0)
    generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    critic = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))
    events = CountEvents()
    learn = GANLearner(gaussian_gan_data(), generator, critic, critic_lr=1e-2, progress=False, callbacks=[events],
                       opt_fn=functools.partial(AdamW, betas=(0.5, 0.99)))
    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean_before = generator(noise).mean().item()
    g_before = [p.detach().clone() for p in generator.parameters()]
    c_before = [p.detach().clone() for p in critic.parameters()]
    learn.fit(6, lr=2e-2)
    with torch.no_grad():
        mean_after = generator(noise).mean().item()
    n_steps = 6 * len(learn.data.train_dl)
    # the loop did its part once per batch: backward, the generator's step, counters, events
    assert learn.opt_steps == n_steps and events.counts == {"after_loss": n_steps, "after_backward": n_steps,
                                                             "after_step": n_steps}
    assert all(not torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(c_before, critic.parameters()))
    assert {id(p) for g in learn.opt.param_groups for p in g["params"]}.isdisjoint(id(p) for p in critic.parameters())
    assert abs(mean_before - 3.0) > 2.5 and abs(mean_after - 3.0) < 0.5  # generated mean moved to the real one
    critic_losses, generator_losses = torch.stack(learn.critic_losses), learn.history.losses
    assert len(critic_losses) == len(generator_losses) == n_steps
    # the critic first tells real from fake (below chance, 2 ln 2), then it cannot: both losses at equilibrium
    assert critic_losses[:9].min() < 2 * math.log(2) - 0.05
    assert critic_losses[-9:].mean().item() == pytest.approx(2 * math.log(2), abs=0.05)
    assert generator_losses[-9:].mean().item() == pytest.approx(math.log(2), abs=0.1)


class TwoHeads(nn.Module):
    """A classifier that also regresses the sum of its inputs: returns (logits, value)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.classify, self.regress = nn.Linear(32, 3), nn.Linear(32, 1)

    def forward(self, x):
        h = self.body(x)
        return self.classify(h), self.regress(h).squeeze(1)


class TwoHeadLearner(Learner):
    def train_step(self, batch):
        x, y = batch
        logits, value = self.model(x)
        return F.cross_entropy(logits, y) + F.mse_loss(value, x.sum(1))

    def eval_step(self, batch):
        x, y = batch
        logits, value = self.model(x)
        self.valid_mse = F.mse_loss(value, x.sum(1))
        return logits, F.cross_entropy(logits, y) + self.valid_mse  # logits feed the metrics


def test_loss_over_two_model_outputs_trains_both_heads():
    lk.set_seed(0)
    model = TwoHeads()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learn = TwoHeadLearner(synthetic_classification(n=320), model, metrics=[lk.accuracy], progress=False,
                           preflight=False)  # the pre-flight check runs the plain loss_fn on the model's tuple
    learn.fit_one_cycle(8, 3e-2)
    after = learn.model.state_dict()
    for name in ("classify.weight", "regress.weight", "body.0.weight"):
        assert not torch.equal(before[name], after[name]), name
    losses, n = learn.history.losses, len(learn.data.train_dl)
    assert losses[-n:].mean() < 0.3 * losses[:n].mean()  # the summed loss falls
    records = learn.history.epoch_records
    assert records[-1]["valid_loss"] < 0.3 * records[0]["valid_loss"]
    assert records[-1]["accuracy"] > 0.8  # the metric saw eval_step's pred: the logits
    assert learn.valid_mse.item() < 1.0  # the regression head learned x.sum() (variance 8 at the start)


def test_default_steps_are_the_plain_forward_and_loss():
    learn = Learner(synthetic_classification(n=64), lk.testing.tiny_mlp(), progress=False)
    batch = learn.data.one_batch("valid")
    learn.model.eval()
    with torch.no_grad():
        pred, loss = learn.eval_step(batch)
        assert torch.equal(pred, learn.model(batch[0])) and torch.equal(loss, F.cross_entropy(pred, batch[1]))
        assert torch.equal(learn.train_step(batch), loss) and learn.pred is not None
    assert learn.train_module is learn.model  # outside a fit under torchrun: the model itself
