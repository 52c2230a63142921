"""CUDA graphs for text batches (learner/graphs.py with SubwordTextBlock.pad_multiple): one graph per padded
length, the same training and validation figures as eager, parameters' .grad pointing at the replayed graph's
buffers. A tiny random BERT, and a DeBERTa-v3-style model (relative positions: text/hf.py's RelativePositions keeps
its host-to-GPU copy out of the step), saved with save_pretrained (tests/unit/hf_models.py). Marked `gpu`."""
import sys
from pathlib import Path

import pytest
import torch

from learnkit import Callback, set_seed
from learnkit.text import TextDataBunch, text_classifier_learner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
pytest.importorskip("transformers")
from hf_models import DEBERTA_V3, write_hf_model  # noqa: E402

pytestmark = pytest.mark.gpu
WORDS = "the cat sat on the mat hello world big dog a and play".split()
TEXTS = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + (i * 7) % 26)) for i in range(160)]
LABELS = ["long" if len(t.split()) > 13 else "short" for t in TEXTS]


class HeadGrads(Callback):
    """The head's gradient after every optimizer step, as a callback reading `.grad` sees it."""

    def __init__(self):
        self.norms = []

    def after_step(self, learn):
        self.norms.append(learn.model.head[1].weight.grad.norm().item())


def _fit(cuda_graphs, folder):
    set_seed(0)
    data = TextDataBunch.from_lists(TEXTS, LABELS, seed=0, batch_size=16, device="cuda", min_freq=1)
    grads = HeadGrads()
    learn = text_classifier_learner(data, "transformers", weights=folder, max_len=32, progress=False,
                                    mixed_precision=None, cuda_graphs=cuda_graphs, callbacks=[grads])
    learn.fit_one_cycle(4, 1e-3)
    return learn, grads.norms


@pytest.mark.parametrize("arch,config", [("bert", {}), ("deberta-v2", DEBERTA_V3)], ids=["bert", "deberta-v3"])
def test_text_batches_replay_one_graph_per_length_with_the_eager_figures(arch, config, tmp_path):
    folder = write_hf_model(tmp_path / arch, arch, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            **config)
    eager, eager_grads = _fit(False, folder)
    graphed, graph_grads = _fit("auto", folder)
    report = graphed.cuda_graph_report
    lengths = {x.shape[1] for x, _ in graphed.data.train_dl}
    assert lengths <= {8, 16, 24, 32} and len(lengths) >= 3, lengths  # padded to multiples of 8 up to max_len
    assert report["used"] and report["captures"] >= len(lengths) and report["replays"] >= 12, report
    assert report["eager_batches"] == 0, report
    # fp32, no dropout, the same batches: the same losses, validation figures (warm-up batches counted once)
    # and gradients as the eager fit, whichever graph ran the step
    # (fp32 on CUDA still reduces in a different order inside a graph: measured up to 1.4e-3 relative by step 30)
    torch.testing.assert_close(graphed.history.losses, eager.history.losses, rtol=3e-3, atol=1e-4)
    for a, b in zip(graphed.history.epoch_records, eager.history.epoch_records):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-3) and a["accuracy"] == b["accuracy"]
    assert len(graph_grads) == len(eager_grads) == 4 * len(graphed.data.train_dl)
    torch.testing.assert_close(torch.tensor(graph_grads), torch.tensor(eager_grads), rtol=2e-3, atol=1e-5)
    assert graphed.opt_steps == eager.opt_steps
