"""Serving export: batch resize + normalization + model + softmax in one graph (torch.export and ONNX), for
images (dynamic batch) and text (dynamic batch and length); Predictor.predict_batch / predict_tensors."""
import json
from types import SimpleNamespace

import pytest
import torch

import learnkit as lk
from learnkit import Learner, load_learner
from learnkit.core.registry import create_model
from learnkit.export.graph import ServingModule, export_onnx, export_torch
from learnkit.vision.augment import BatchAugment, BatchResize
from test_transformer import VOCAB, write_model_dir  # the tiny random BERT folder in Hugging Face's layout


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
    path = learn.export_torch(tmp_path / "model.pt2")  # the Learner method
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
    assert card["training_data"]["train_items"] == 72 and card["training_data"]["valid_items"] == 24
    assert len(card["training_data"]["sha256"]) == 64 and "valid_loss" in card["metrics"]["values"]
    assert card["export"]["files"] == ["model.pt2"] and card["metrics"]["epochs_trained"] == 2
    markdown = (tmp_path / "model.pt2.card.md").read_text()
    assert markdown.startswith("# Model card: simple_cnn: CategoryBlock, 3 classes")
    for section in ("## Intended input", "## Classes", "## Validation metrics", "| valid_loss |", "## Training data",
                    card["training_data"]["sha256"], "## How to load and run", "torch.export.load('model.pt2')"):
        assert section in markdown


def test_export_onnx_matches_get_preds(learn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    before = _snapshot(learn)
    path = learn.export_onnx(tmp_path / "model.onnx")  # the Learner method
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


def test_variable_length_inputs_without_a_pad_id_are_refused():
    class PaddedTokens(lk.TensorBlock):
        def collate(self, tensors):
            return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)

    fake = SimpleNamespace(model=torch.nn.Identity(), data=SimpleNamespace(blocks=[PaddedTokens()], n_inp=1))
    with pytest.raises(NotImplementedError, match=r"variable-length.*without a pad id.*learn.export\(\)"):
        ServingModule.from_learner(fake)


# ----------------------------------------------------------------------------------------------- text
TEXTS = [("the cat sat on the mat" if i % 2 else "hello world big dog") + " !" * (i % 4) for i in range(48)]
LABELS = ["cat" if i % 2 else "dog" for i in range(48)]


@pytest.fixture(scope="module")
def text_learn(tmp_path_factory):
    from learnkit.text import TextDataBunch, text_classifier_learner
    root = tmp_path_factory.mktemp("serving_text")
    lk.set_seed(0)
    data = TextDataBunch.from_lists(TEXTS, LABELS, seed=0, batch_size=8, device="cpu", min_freq=1)
    learn = text_classifier_learner(data, weights=write_model_dir(root / "tiny-bert"), progress=False, path=root, max_len=12)
    learn.fit_one_cycle(1, 1e-3)
    return learn


def _text_reference(learn):
    """Every validation batch (different lengths: the loader sorts by length) and get_preds over them."""
    batches = [xb for xb, _ in learn.data.valid_dl]
    preds, _ = learn.get_preds()
    assert len({b.shape[1] for b in batches}) > 1
    return batches, preds


def test_text_export_torch_has_dynamic_batch_and_length(text_learn, tmp_path):
    path = export_torch(text_learn, tmp_path / "text.pt2")
    module = torch.export.load(path).module()
    batches, ref = _text_reference(text_learn)
    start = 0
    for xb in batches:
        torch.testing.assert_close(module(xb), ref[start:start + len(xb)], atol=1e-4, rtol=0)
        start += len(xb)
    label, _, probs = text_learn.predict("the cat sat on the mat")           # one item, its own length
    ids = text_learn.data.x_block.encode("the cat sat on the mat")[None]
    torch.testing.assert_close(module(ids)[0], probs, atol=1e-4, rtol=0)
    card = json.loads((tmp_path / "text.pt2.card.json").read_text())
    spec = card["input"]
    assert spec["name"] == "input_ids" and spec["shape"] == ["batch", "tokens"] and spec["dtype"] == "int64"
    assert spec["pad_id"] == 0 and spec["max_tokens"] == 16 and spec["block"] == "SubwordTextBlock"
    assert spec["vocab_size"] == len(VOCAB) and "vocab" not in spec["tokenizer"] and spec["tokenizer"]["do_lower_case"]
    assert card["export"]["files"] == ["text.pt2", "text.pt2.tokenizer.json"] and card["classes"] == ["cat", "dog"]
    # the side file rebuilds the exact numericalization
    side = json.loads((tmp_path / spec["tokenizer_file"]).read_text())
    block = lk.data.block_from_config(side["block"])
    assert side["pad_id"] == 0 and torch.equal(block.encode("hello world big dog !"),
                                               text_learn.data.x_block.encode("hello world big dog !"))
    assert "pad_id" in (tmp_path / "text.pt2.card.md").read_text()


def test_text_export_onnx_matches_get_preds(text_learn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = export_onnx(text_learn, tmp_path / "text.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input_ids" and inp.shape == ["batch", "tokens"]
    batches, ref = _text_reference(text_learn)
    start = 0
    for xb in batches + [batches[0][:1, :1]]:
        (probs,) = session.run(["probs"], {"input_ids": xb.numpy()})
        with torch.no_grad():
            expected = ref[start:start + len(xb)] if start < len(ref) else ServingModule.from_learner(text_learn)(xb)
        torch.testing.assert_close(torch.from_numpy(probs), expected, atol=1e-4, rtol=0)
        start += len(xb)


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # torch.export's note on the LSTM's cached state
def test_awd_lstm_text_export_is_refused_with_the_alternative(tmp_path):
    from learnkit.text import TextDataBunch, text_classifier_learner
    data = TextDataBunch.from_lists(TEXTS, LABELS, seed=0, batch_size=8, device="cpu", min_freq=1)
    learn = text_classifier_learner(data, config={"emb_size": 8, "hidden_size": 8, "n_layers": 1}, progress=False,
                                    path=tmp_path)
    with pytest.raises(NotImplementedError, match=r"TextClassifier cannot be captured with a dynamic sequence "
                                                  r"length.*learn.export\(\).*predict_batch"):
        export_torch(learn, tmp_path / "awd.pt2")
    assert not (tmp_path / "awd.pt2").exists()


# ----------------------------------------------------------------------------------------------- Predictor
@pytest.fixture(scope="module")
def predictor(learn):
    return load_learner(learn.export("bundle"), device="cpu", num_workers=0)


def test_predict_batch_matches_predict_item_by_item_and_get_preds(learn, predictor):
    images = [img for img, _ in _items(40, seed=1)]
    labels, probs = predictor.predict_batch(images)
    assert probs.dtype == torch.float32 and probs.shape == (40, 3) and probs.device.type == "cpu"
    for img, label, row in zip(images, labels, probs):
        label1, index1, probs1 = predictor.predict(img)
        assert label == label1 == ["c0", "c1", "c2"][index1]
        torch.testing.assert_close(row, probs1, atol=1e-6, rtol=0)
    ref, _ = learn.get_preds(learn.data.test_dl(images))
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=0)
    probs.mul_(1)  # an ordinary tensor, not an inference-mode one


def test_predict_batch_chunks_and_threads_give_the_same_result(learn, predictor):
    images = [img for img, _ in _items(100, seed=2)]
    labels, probs = predictor.predict_batch(images)
    for batch_size in (1, 7, 64):
        labels2, probs2 = predictor.predict_batch(images, batch_size=batch_size)
        assert labels2 == labels
        torch.testing.assert_close(probs2, probs, atol=1e-6, rtol=0)
    threaded = load_learner(learn.path / "bundle", device="cpu", num_workers=3)
    labels3, probs3 = threaded.predict_batch(images, batch_size=16)  # 100 items: decoded in 3 threads
    assert labels3 == labels
    torch.testing.assert_close(probs3, probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(predictor.predict_tensors(torch.stack(images), batch_size=32), probs, atol=1e-6, rtol=0)


def test_predict_batch_errors_are_clear(predictor):
    with pytest.raises(ValueError, match=r"predict_batch: no items given \(an empty list\)"):
        predictor.predict_batch([])
    with pytest.raises(ValueError, match=r"batch_size=0.*positive int"):
        predictor.predict_batch([torch.zeros(1, 8, 8, dtype=torch.uint8)], batch_size=0)
    with pytest.raises(ValueError, match=r"predict_tensors: expected a non-empty batch tensor"):
        predictor.predict_tensors(torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"different shapes"):
        predictor.predict_batch([torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(1, 9, 8, dtype=torch.uint8)])


def test_predictor_autocast_is_off_on_cpu_and_follows_training_on_cuda():
    from learnkit.export.predictor import _autocast_dtype
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert _autocast_dtype("auto", {"mixed_precision": "bfloat16"}, cpu) is None
    assert _autocast_dtype(None, {"mixed_precision": "bfloat16"}, cuda) is None
    assert _autocast_dtype("auto", {"mixed_precision": "float16"}, cuda) == torch.float16
    assert _autocast_dtype("fp16", {"mixed_precision": None}, cuda) == torch.float16
    with pytest.raises(ValueError, match=r"mixed_precision='fp8'.*'auto', 'bf16', 'fp16' or None"):
        _autocast_dtype("fp8", {}, cpu)
