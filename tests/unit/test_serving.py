"""Serving export: batch resize + normalization + model + softmax in one graph (torch.export and ONNX)."""
import json

import pytest
import torch

import learnkit as lk
from learnkit import Learner
from learnkit.core.registry import create_model
from learnkit.learner.serving import ServingModule, export_onnx, export_torch
from learnkit.vision.augment import BatchAugment, BatchResize


def _items(n=96, seed=0):
    # class k: a bright stripe in rows 2k..2k+2 of an 8x8 uint8 image, plus noise
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 3
        img = torch.randint(0, 60, (1, 8, 8), generator=g, dtype=torch.uint8)
        img[:, 2 * label:2 * label + 2] += 150
        items.append((img, f"c{label}"))
    return items


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    lk.set_seed(0)
    # BatchAugment (no size) is identity in eval and to_config() None: it must be left out of the graph
    data = lk.DataBlock(blocks=(lk.TensorBlock(dtype=None), lk.CategoryBlock),
                        batch_tfms=[BatchAugment(max_rotate=0.0), BatchResize(12), lk.Normalize(0.3, 0.3)],
                        splitter=lk.RandomSplitter(0.25, seed=0)).databunch(_items(), batch_size=16, device="cpu",
                                                                            seed=0)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=3, widths=(8, 16)),
                    path=tmp_path_factory.mktemp("serving"), progress=False)
    learn.fit_one_cycle(2, 1e-2)
    return learn


def _reference(learn):
    x = next(iter(learn.data.valid_dl))[0]
    preds, _ = learn.get_preds(learn.data.test_dl([img for img in x]))
    return x, preds


def _snapshot(learn):
    model = learn.model
    return (next(model.parameters()).device, model.training,
            {k: v.clone() for k, v in model.state_dict().items()})


def _assert_unchanged(learn, before):
    device, training, state = before
    assert next(learn.model.parameters()).device == device and learn.model.training == training
    assert all(torch.equal(v, state[k]) for k, v in learn.model.state_dict().items())


def test_serving_module_drops_augmentation_and_matches_get_preds(learn):
    serving = ServingModule.from_learner(learn)
    assert [type(t).__name__ for t in serving.batch_tfms] == ["BatchResize", "Normalize"]
    x, ref = _reference(learn)
    with torch.no_grad():
        torch.testing.assert_close(serving(x), ref, atol=1e-5, rtol=0)


def test_export_torch_matches_get_preds_with_dynamic_batch(learn, tmp_path):
    learn.model.train()
    before = _snapshot(learn)
    path = export_torch(learn, tmp_path / "model.pt2")
    _assert_unchanged(learn, before)
    module = torch.export.load(path).module()
    x, ref = _reference(learn)
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)
    torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(module(x[:5]), ref[:5], atol=1e-5, rtol=0)  # another batch size
    card = json.loads((tmp_path / "model.pt2.card.json").read_text())
    assert card["classes"] == ["c0", "c1", "c2"]
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"] == ["batch", 1, 8, 8]
    assert card["input"]["channels"] == 1 and card["output"]["shape"] == ["batch", 3]
    assert card["train_items"] == 72 and "valid_loss" in card["last_epoch"]


def test_export_onnx_matches_get_preds(learn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    before = _snapshot(learn)
    path = export_onnx(learn, tmp_path / "model.onnx")
    _assert_unchanged(learn, before)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    x, ref = _reference(learn)
    for xb, expected in ((x, ref), (x[:3], ref[:3])):
        (probs,) = session.run(["probs"], {"images": xb.numpy()})
        torch.testing.assert_close(torch.from_numpy(probs), expected, atol=1e-4, rtol=0)
    card = json.loads((tmp_path / "model.onnx.card.json").read_text())
    assert card["classes"] == ["c0", "c1", "c2"] and card["input"]["shape"] == ["batch", 1, 8, 8]


def test_export_failure_names_step_and_suggests_recipe_export(learn, tmp_path):
    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return x.float() * float(x.sum() > 0)  # data-dependent Python control flow

        def to_config(self):
            return {"type": "Untraceable"}

    learn.data.batch_tfms.append(Untraceable())
    try:
        with pytest.raises(RuntimeError, match=r"(?s)export_torch: torch.export.export.*learn.export\(\)"):
            export_torch(learn, tmp_path / "bad.pt2")
    finally:
        del learn.data.batch_tfms[-1]


def test_variable_length_text_inputs_are_not_supported_yet():
    from types import SimpleNamespace

    class PaddedTokens(lk.TensorBlock):
        def collate(self, tensors):
            return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)

    fake = SimpleNamespace(model=torch.nn.Identity(), data=SimpleNamespace(blocks=[PaddedTokens()], n_inp=1))
    with pytest.raises(NotImplementedError, match=r"variable-length.*learn.export\(\)"):
        ServingModule.from_learner(fake)
