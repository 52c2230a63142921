"""The live loss/metric plot: on in a notebook, off in a terminal, switched by learn.live_plot or ProgressBar(plot=);
the graph update gets this fit's series (a fake fastprogress bar records the calls)."""
import pytest

import fastprogress.fastprogress as fp
from learnkit import Checkpoint, ProgressBar, accuracy
from learnkit.learner import progress
from learnkit.testing import InterruptAt, tiny_learner

BATCHES = 6


class FakeBar:
    """Stands in for fastprogress's master and child bars; records update_graph calls."""

    graph_calls: list = []

    def __init__(self, gen=None, parent=None, leave=True, **kwargs):
        self.names, self.comment = ["train", "valid"], ""

    def on_iter_begin(self): pass
    def on_iter_end(self): pass
    def update(self, value): pass
    def write(self, line, table=False): pass

    def update_graph(self, graphs, x_bounds=None, y_bounds=None):
        FakeBar.graph_calls.append((list(self.names), graphs, x_bounds, y_bounds))


@pytest.fixture
def fake_bars(monkeypatch):
    FakeBar.graph_calls = []
    monkeypatch.setattr(fp, "master_bar", FakeBar)
    monkeypatch.setattr(fp, "progress_bar", FakeBar)
    return FakeBar.graph_calls


@pytest.mark.parametrize("bar_plot,live_plot,notebook,expected", [
    (None, None, True, True), (None, None, False, False),     # automatic: the notebook decides
    (None, False, True, False), (None, True, False, True),    # learn.live_plot switches it
    (False, True, True, False), (True, False, False, True),   # ProgressBar(plot=) wins
])
def test_the_plot_is_on_in_notebooks_and_switchable(monkeypatch, bar_plot, live_plot, notebook, expected):
    monkeypatch.setattr(progress, "in_notebook", lambda: notebook)
    learn = tiny_learner()
    learn.live_plot = live_plot
    assert ProgressBar(plot=bar_plot).wants_plot(learn) is expected


def test_in_notebook_is_false_here():
    assert progress.in_notebook() is False  # pytest is no Jupyter kernel


def test_graph_updates_get_this_fits_series(monkeypatch, fake_bars):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    learn = tiny_learner(metrics=[accuracy])
    learn.fit(1, lr=1e-2)  # an earlier fit: the plot shows only the next one
    fake_bars.clear()
    learn.add_callback(ProgressBar())
    learn.fit(2, lr=1e-2)
    assert len(fake_bars) == 2  # once per epoch
    names, graphs, x_bounds, y_bounds = fake_bars[-1]
    hist = learn.history
    assert names == ["train", "valid", "accuracy"]
    assert graphs[0] == (list(range(2 * BATCHES)), pytest.approx(hist.losses[BATCHES:].tolist()))
    ends = [BATCHES - 1, 2 * BATCHES - 1]  # each epoch's last batch
    assert graphs[1] == (ends, pytest.approx([r["valid_loss"] for r in hist.epoch_records[1:]]))
    assert graphs[2] == (ends, pytest.approx([r["accuracy"] for r in hist.epoch_records[1:]]))
    assert x_bounds == (0, 2 * BATCHES - 1)
    assert y_bounds[0] == 0 and y_bounds[1] >= max(max(g[1]) for g in graphs)
    first_names, first_graphs, _, _ = fake_bars[0]
    assert len(first_graphs[0][0]) == BATCHES and first_graphs[1][0] == [BATCHES - 1]


def test_no_graph_in_a_terminal_or_when_switched_off(monkeypatch, fake_bars):
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    learn = tiny_learner(callbacks=[ProgressBar()])
    learn.fit(1, lr=1e-2)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    learn.live_plot = False
    learn.fit(1, lr=1e-2)
    assert fake_bars == []


def test_a_resumed_fit_plots_from_its_first_batch(tmp_path, monkeypatch, fake_bars):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    learn = tiny_learner(path=tmp_path, callbacks=[ProgressBar()])
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(2, 1e-2, callbacks=[Checkpoint("c.pth"), InterruptAt(1, 2)])
    fake_bars.clear()
    resumed = tiny_learner(path=tmp_path, callbacks=[ProgressBar()])
    resumed.fit_one_cycle(2, 1e-2, callbacks=[Checkpoint("c.pth")], resume_from=tmp_path / "models" / "c.pth")
    (names, graphs, _, _), = fake_bars  # one epoch ran
    assert graphs[0][0] == list(range(2 * BATCHES)) and graphs[1][0] == [BATCHES - 1, 2 * BATCHES - 1]
