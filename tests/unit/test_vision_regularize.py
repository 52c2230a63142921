"""MixUp, CutMix and label-smoothing cross-entropy on tiny synthetic images (class = the bright quadrant)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnkit.core.registry import create_model
from learnkit.data.blocks import CategoryBlock, MultiCategoryBlock, TensorBlock
from learnkit.data.datablock import DataBlock
from learnkit.data.splitters import RandomSplitter
from learnkit.data.transforms import Normalize
from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner
from learnkit.testing import quadrant_image_items
from learnkit.learner.metrics import accuracy
from learnkit.vision.regularize import CutMix, LabelSmoothingCrossEntropy, MixUp


def quadrant_data(multi=False, n=320):
    dblock = DataBlock(blocks=(TensorBlock(dtype=None), MultiCategoryBlock if multi else CategoryBlock),
                       splitter=RandomSplitter(0.25, seed=0), batch_tfms=[Normalize(0.25, 0.3)])
    return dblock.databunch(quadrant_image_items(n, multi=multi), batch_size=16, device="cpu", seed=0)


def make_learner(data, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Learner(data, create_model("simple_cnn", n_in=1, n_out=4), progress=False, **kwargs)


def fake_learner(training, x, y, n_classes=4):
    """The few attributes before_batch reads."""
    return SimpleNamespace(training=training, xb=(x,), yb=(y,), data=SimpleNamespace(n_classes=n_classes))


def expand(lam, t):
    return lam.reshape((-1,) + (1,) * (t.ndim - 1))


# ---------------------------------------------------------------- label smoothing
def test_label_smoothing_equals_hand_formula_for_index_targets():
    g = torch.Generator().manual_seed(0)
    logits, y, eps = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g), 0.1
    logp = logits.log_softmax(-1)
    hand = (1 - eps) * -logp[torch.arange(6), y] + eps * (-logp).mean(-1)
    torch.testing.assert_close(LabelSmoothingCrossEntropy(eps, reduction="none")(logits, y), hand)
    torch.testing.assert_close(LabelSmoothingCrossEntropy(eps)(logits, y), hand.mean())
    assert not torch.allclose(hand.mean(), F.cross_entropy(logits, y))  # the smoothing changes something


def test_label_smoothing_accepts_probability_targets():
    g = torch.Generator().manual_seed(1)
    logits, q, eps = torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g).softmax(-1), 0.2
    hand = -(((1 - eps) * q + eps / 3) * logits.log_softmax(-1)).sum(-1).mean()
    loss = LabelSmoothingCrossEntropy(eps)
    torch.testing.assert_close(loss(logits, q), hand)
    assert loss.accepts_soft_targets and isinstance(loss, nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="eps"):
        LabelSmoothingCrossEntropy(eps=1.5)


# ---------------------------------------------------------------- MixUp
def test_mixup_mixes_inputs_and_one_hot_targets_with_the_same_lam():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)
    mix = MixUp(alpha=0.4, seed=0)
    torch_state = torch.get_rng_state()
    learn = fake_learner(True, x, y)
    mix.before_batch(learn)
    assert torch.equal(torch.get_rng_state(), torch_state)  # own generator only
    lam, perm = mix.lam, mix.perm
    assert lam.shape == (8,) and (lam >= 0.5).all() and lam.unique().numel() > 1  # per item, max(lam, 1 - lam)
    assert sorted(perm.tolist()) == list(range(8)) and not torch.equal(perm, torch.arange(8))
    torch.testing.assert_close(learn.xb[0], expand(lam, x) * x + (1 - expand(lam, x)) * x[perm])
    onehot = F.one_hot(y, 4).float()
    torch.testing.assert_close(learn.yb[0], expand(lam, onehot) * onehot + (1 - expand(lam, onehot)) * onehot[perm])
    torch.testing.assert_close(learn.yb[0].sum(-1), torch.ones(8))


def test_mixup_mixes_multi_hot_targets_directly():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 1, 8, 8, generator=g), (torch.rand(8, 4, generator=g) < 0.5).float()
    mix = MixUp(alpha=0.4, seed=1)
    learn = fake_learner(True, x, y)
    mix.before_batch(learn)
    lam = expand(mix.lam, y)
    torch.testing.assert_close(learn.yb[0], lam * y + (1 - lam) * y[mix.perm])


def test_mix_callbacks_leave_validation_batches_alone_and_refuse_bad_inputs():
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for cb in (MixUp(seed=0), CutMix(seed=0)):
        learn = fake_learner(False, x, y)
        cb.before_batch(learn)
        assert learn.xb[0] is x and learn.yb[0] is y
    with pytest.raises(TypeError, match="Normalize"):
        MixUp(seed=0).before_batch(fake_learner(True, x.to(torch.uint8), y))
    with pytest.raises(ValueError, match=r"\(4, 64\)"):
        CutMix(seed=0).before_batch(fake_learner(True, x.reshape(4, 64), y))


def test_seeded_mixup_repeats_and_unseeded_follows_global_seed():
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
    runs = []
    for seed in (5, 5, 6):
        mix = MixUp(seed=seed)
        mix.before_batch(fake_learner(True, x, y))
        runs.append((mix.lam, mix.perm))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])
    torch.manual_seed(0)
    a = MixUp().generator.get_state()
    torch.manual_seed(0)
    assert torch.equal(MixUp().generator.get_state(), a)


# ---------------------------------------------------------------- CutMix
def test_cutmix_box_area_matches_lam_and_targets():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 3, 10, 12, generator=g), torch.randint(0, 4, (6,), generator=g)
    cut = CutMix(alpha=1.0, seed=0)
    nonempty = 0
    for _ in range(10):
        learn = fake_learner(True, x, y)
        cut.before_batch(learn)
        top, bottom, left, right = cut.box
        area = (bottom - top) * (right - left)
        nonempty += area > 0
        assert float(cut.lam) == pytest.approx(1 - area / (10 * 12))
        out = learn.xb[0]
        inside = torch.zeros(10, 12, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(out[:, :, inside], x[cut.perm][:, :, inside])
        assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
        onehot = F.one_hot(y, 4).float()
        torch.testing.assert_close(learn.yb[0], cut.lam * onehot + (1 - cut.lam) * onehot[cut.perm])
        torch.testing.assert_close(learn.yb[0].sum(-1), torch.ones(6))
    assert nonempty >= 5
    assert x.shape == (6, 3, 10, 12) and not torch.equal(out, x)  # the input tensor itself is not written into


# ---------------------------------------------------------------- in a Learner
class Record(Callback):
    """Records (training, x, y) at before_batch, and the mix callback's lam/perm if given."""

    def __init__(self, order, mix=None):
        self.order, self.mix, self.seen = order, mix, []

    def before_batch(self, learn):
        extra = (self.mix.lam.clone(), self.mix.perm.clone()) if self.mix is not None and learn.training else None
        self.seen.append((learn.training, learn.xb[0].clone(), learn.yb[0].clone(), extra))


def test_mixup_in_a_fit_mixes_training_batches_only():
    data = quadrant_data(n=96)
    mix = MixUp(seed=0)
    before, after = Record(-1), Record(1, mix)
    learn = make_learner(data, callbacks=[mix, before, after])
    learn.fit(1, lr=1e-3)
    assert len(before.seen) == len(after.seen) and any(not s[0] for s in before.seen)
    for (training, x0, y0, _), (_, x1, y1, extra) in zip(before.seen, after.seen):
        if not training:
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
            continue
        lam, perm = extra
        torch.testing.assert_close(x1, expand(lam, x0) * x0 + (1 - expand(lam, x0)) * x0[perm])
        torch.testing.assert_close(y1.sum(-1), torch.ones(len(y0)))
        assert torch.equal(y1.argmax(-1), y0)  # lam >= 0.5: each item keeps its own label on top


def test_wrong_loss_raises_a_clear_error():
    def my_loss(pred, y):
        return F.cross_entropy(pred, y)

    for cb in (MixUp(seed=0), CutMix(seed=0)):
        learn = make_learner(quadrant_data(n=64), loss_fn=my_loss, callbacks=[cb])
        with pytest.raises(TypeError, match="my_loss.*accepts_soft_targets"):
            learn.fit(1)
    my_loss.accepts_soft_targets = True
    make_learner(quadrant_data(n=64), loss_fn=my_loss, callbacks=[MixUp(seed=0)]).fit(1)
    make_learner(quadrant_data(n=64, multi=True), callbacks=[MixUp(seed=0)]).fit(1)  # BCEWithLogitsLoss
    make_learner(quadrant_data(n=64), loss_fn=LabelSmoothingCrossEntropy(), callbacks=[CutMix(seed=0)]).fit(1)


def test_training_with_mixup_still_learns():
    learn = make_learner(quadrant_data(), metrics=[accuracy], callbacks=[MixUp(alpha=0.4, seed=0)])
    learn.fit_one_cycle(6, max_lr=1e-2)
    assert learn.val_results["accuracy"] >= 0.9


def test_mix_callbacks_state_dict_round_trip():
    mix = MixUp(seed=3)
    state = mix.state_dict()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
    mix.before_batch(fake_learner(True, x, y))
    first = mix.lam.clone()
    mix.load_state_dict(state)
    mix.before_batch(fake_learner(True, x, y))
    assert torch.equal(mix.lam, first)
