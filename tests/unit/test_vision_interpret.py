"""ClassificationInterpretation, show_results and tta on tiny synthetic images (class = the bright quadrant)."""
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnkit.data.transforms import Normalize
from learnkit.testing import QUADRANT_STATS, tiny_data, tiny_learner
from learnkit.vision.interpret import ClassificationInterpretation, show_results, tta


def quadrant_data(batch_tfms=(), multi=False, channels=1, n=160):
    return tiny_data("images", n=n, channels=channels, multi=multi, batch_tfms=batch_tfms)


def make_learner(data, channels=1, seed=0):
    return tiny_learner("images", data=data, channels=channels, seed=seed)


def valid_batches(data):
    """(normalized inputs, targets) of the whole validation set, by hand."""
    xs, ys = zip(*[(Normalize(*QUADRANT_STATS)(x), y) for x, y in data.valid_dl])
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------- confusion matrix and friends
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
PREDS = torch.tensor([0, 1, 1, 1, 0, 2, 3, 3, 3, 0])
HAND_CM = torch.tensor([[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 2], [1, 0, 0, 1]])


def fixed_interp():
    data = quadrant_data()
    return ClassificationInterpretation(data, data.valid_dl, F.one_hot(PREDS, 4).float() * 4, TARGETS)


def test_confusion_matrix_equals_hand_count():
    cm = fixed_interp().confusion_matrix()
    assert cm.dtype == torch.int64
    assert torch.equal(cm, HAND_CM)


def test_most_confused_order_and_values():
    interp = fixed_interp()
    assert interp.most_confused() == [("q0", "q1", 2), ("q2", "q3", 2), ("q1", "q0", 1), ("q3", "q0", 1)]
    assert interp.most_confused(min_val=2) == [("q0", "q1", 2), ("q2", "q3", 2)]


def test_classification_report_per_class_values():
    lines = {line.split()[0]: line.split()[1:] for line in fixed_interp().classification_report().splitlines()
             if line.strip()}
    assert lines["q0"] == ["0.333", "0.333", "0.333", "3"]   # tp 1, predicted 3, actual 3
    assert lines["q1"] == ["0.333", "0.500", "0.400", "2"]   # tp 1, predicted 3, actual 2
    assert lines["q3"] == ["0.333", "0.500", "0.400", "2"]
    assert lines["accuracy"] == ["0.400", "10"]


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix_cells_and_names(normalize):
    fig = fixed_interp().plot_confusion_matrix(normalize=normalize)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    expected = HAND_CM.double() / HAND_CM.sum(1, keepdim=True) if normalize else HAND_CM
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(cells) == 16
    for (i, j), text in cells.items():
        assert text == (f"{float(expected[i, j]):.2f}" if normalize else str(int(expected[i, j])))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["q0", "q1", "q2", "q3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q0", "q1", "q2", "q3"]


# ---------------------------------------------------------------- from a learner: losses and images
def test_from_learner_losses_equal_hand_cross_entropy_and_top_losses():
    learn = make_learner(quadrant_data())
    learn.model.train()
    interp = ClassificationInterpretation.from_learner(learn)
    assert learn.model.training  # left as it was
    x, y = valid_batches(learn.data)
    learn.model.eval()
    with torch.no_grad():
        out = learn.model(x)
    hand = F.cross_entropy(out, y, reduction="none")
    assert torch.equal(interp.targets, y)
    torch.testing.assert_close(interp.losses, hand)
    torch.testing.assert_close(interp.probs, out.softmax(-1))
    assert torch.equal(interp.preds, out.argmax(-1))
    losses, idx = interp.top_losses(5)
    assert torch.equal(idx, hand.argsort(descending=True)[:5])
    torch.testing.assert_close(losses, hand[idx])


def test_plot_top_losses_draws_those_exact_items():
    learn = make_learner(quadrant_data())
    interp = ClassificationInterpretation.from_learner(learn)
    x, y = valid_batches(learn.data)
    losses, idx = interp.top_losses(7)
    assert idx.max() >= 16  # the items come from several batches
    fig = interp.plot_top_losses(7, ncols=4)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 8 and len(drawn) == 7
    for ax, i, loss in zip(drawn, idx.tolist(), losses.tolist()):
        img = x[i, 0]
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        torch.testing.assert_close(torch.as_tensor(ax.images[0].get_array().data).float(), img)
        pred, actual = int(interp.preds[i]), int(y[i])
        assert ax.get_title() == f"q{pred}/q{actual}/{loss:.2f}/{float(interp.probs[i, actual]):.2f}"


def test_show_results_titles_and_colours():
    learn = make_learner(quadrant_data())  # untrained: some right, some wrong
    fig = show_results(learn, n=20)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 20  # more than one batch of 16
    x, y = valid_batches(learn.data)
    learn.model.eval()
    with torch.no_grad():
        pred = learn.model(x[:20]).argmax(-1)
    colours = set()
    for ax, a, p in zip(drawn, y[:20].tolist(), pred.tolist()):
        assert ax.get_title() == f"q{a}/q{p}"
        colour = ax.title.get_color()
        assert colour == ("green" if a == p else "red")
        colours.add(colour)
    assert colours == {"green", "red"}


def test_interpretation_refuses_non_categorical_targets_and_shuffled_loaders():
    multi = quadrant_data(multi=True)
    learn = make_learner(multi)
    with pytest.raises(TypeError, match="CategoryBlock"):
        ClassificationInterpretation.from_learner(learn)
    learn = make_learner(quadrant_data())
    with pytest.raises(ValueError, match="shuffles"):
        ClassificationInterpretation.from_learner(learn, learn.data.train_dl)


# ---------------------------------------------------------------- TTA
class Flip(nn.Module):
    """Deterministic stand-in for augmentation: flips left-right in training mode, drawing (and discarding)
    random numbers from its own generator and the global RNG as a real augmentation would."""

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(1)

    def forward(self, x):
        if not self.training:
            return x
        torch.rand(1, generator=self.generator)
        torch.rand(1)
        return x.flip(-1)


class CoinFlip(nn.Module):
    """Random augmentation driven by its own generator: per batch, flip left-right or up-down."""

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(7)

    def forward(self, x):
        if not self.training:
            return x
        return x.flip(-1) if torch.rand(1, generator=self.generator) < 0.5 else x.flip(-2)


def test_tta_equals_hand_combination_and_leaves_no_trace():
    flip = Flip()
    learn = make_learner(quadrant_data([flip]))
    learn.data.batch_tfms.train(False)
    learn.model.train()
    gen_state, torch_state = flip.generator.get_state(), torch.get_rng_state()
    out = tta(learn, n=3, beta=0.25)
    assert torch.equal(flip.generator.get_state(), gen_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert not any(m.training for m in learn.data.batch_tfms.modules())
    assert learn.model.training
    x, y = valid_batches(learn.data)
    learn.model.eval()
    with torch.no_grad():
        plain, augmented = learn.model(x).softmax(-1), learn.model(x.flip(-1)).softmax(-1)
    torch.testing.assert_close(out["probs"], 0.25 * plain + 0.75 * augmented)
    torch.testing.assert_close(out["plain_probs"], plain)
    assert torch.equal(out["targets"], y)
    assert out["accuracy"] == pytest.approx(float((plain.argmax(-1) == y).float().mean()))
    tta_acc = float(((0.25 * plain + 0.75 * augmented).argmax(-1) == y).float().mean())
    assert out["tta_accuracy"] == pytest.approx(tta_acc)
    learn.data.batch_tfms.train(True)
    tta(learn, n=1)
    assert all(m.training for m in learn.data.batch_tfms.modules())


def test_tta_averages_random_passes_and_restores_their_generator():
    coin = CoinFlip()
    learn = make_learner(quadrant_data([coin]))
    start = coin.generator.get_state()
    out = tta(learn, n=3, beta=None)
    assert torch.equal(coin.generator.get_state(), start)
    replay = torch.Generator().manual_seed(7)
    learn.model.eval()
    total = 0
    with torch.no_grad():
        for _ in range(3):
            probs = []
            for xb, _ in learn.data.valid_dl:
                xb = Normalize(0.25, 0.3)(xb)
                xb = xb.flip(-1) if torch.rand(1, generator=replay) < 0.5 else xb.flip(-2)
                probs.append(learn.model(xb).softmax(-1))
            total = total + torch.cat(probs)
    torch.testing.assert_close(out["probs"], total / 3)
    torch.testing.assert_close(tta(learn, n=3, beta=None)["probs"], out["probs"])  # no trace: same again


def test_tta_warns_without_random_augmentation():
    learn = make_learner(quadrant_data())
    with pytest.warns(UserWarning, match="no random augmentation"):
        out = tta(learn, n=2)
    torch.testing.assert_close(out["probs"], out["plain_probs"])
    assert out["accuracy"] == out["tta_accuracy"]


def test_tta_multi_label_accuracy_is_per_label():
    learn = make_learner(quadrant_data([Flip()], multi=True))
    out = tta(learn, n=1, beta=0.5)
    assert out["targets"].shape == out["probs"].shape
    hand = float(((out["plain_probs"] >= 0.5) == out["targets"].bool()).float().mean())
    assert out["accuracy"] == pytest.approx(hand)
