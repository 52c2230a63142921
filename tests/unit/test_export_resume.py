"""Export → load_learner (no pickle, tamper-evident) and resuming an interrupted fit_one_cycle."""
import json

import pytest
import torch

import learnkit as lk
from learnkit import Checkpoint, Learner, load_learner
from learnkit.testing import InterruptAt, synthetic_classification, tiny_bn_mlp, tiny_mlp


def _trained(tmp_path, **kwargs):
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock), batch_tfms=[lk.Normalize(0.1, 2.0)],
                        splitter=lk.RandomSplitter(0.25, seed=0)).databunch(
        lk.testing.classification_items(200), batch_size=32, device="cpu", seed=0)
    learn = Learner(data, tiny_bn_mlp(), path=tmp_path, progress=False, **kwargs)
    learn.fit_one_cycle(2, 1e-2)
    return learn


def test_export_load_learner_predictions_identical(tmp_path):
    lk.set_seed(7)
    learn = _trained(tmp_path)
    folder = learn.export("bundle")
    assert sorted(p.name for p in folder.iterdir()) == ["model_card.json", "model_card.md", "recipe.json",
                                                        "weights.safetensors"]
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["model"] == {"name": "mlp", "kwargs": {"n_in": 8, "n_out": 3, "hidden": [16, 16],
                                                          "batch_norm": True, "dropout": 0.1}}
    assert recipe["classes"] == ["class_0", "class_1", "class_2"] and recipe["seed"] == 7
    assert recipe["batch_tfms"] == [{"type": "Normalize", "mean": [pytest.approx(0.1)], "std": [2.0]}]
    assert recipe["versions"]["torch"] == torch.__version__
    predictor = load_learner(folder, device="cpu")
    for x, _ in learn.data.valid_dl.dataset.items[:10]:
        label, index, probs = learn.predict(x)
        label2, index2, probs2 = predictor.predict(x)
        assert (label, index) == (label2, index2) and torch.equal(probs, probs2)
    labels, probs = predictor.predict_batch([x for x, _ in learn.data.valid_dl.dataset.items[:5]])
    assert len(labels) == 5 and probs.shape == (5, 3)


def _rewrite(folder, recipe, rehash=True):
    """Write an edited recipe; with rehash, also its meaning hash (as a careful editor would)."""
    if rehash:
        recipe["meaning_sha256"] = lk.export.recipe.meaning_sha256(recipe)
    (folder / "recipe.json").write_text(json.dumps(recipe))


def test_tampered_or_incompatible_exports_are_clear_errors(tmp_path):
    folder = _trained(tmp_path).export("bundle")
    weights = folder / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match the sha256.*modified or damaged"):
        load_learner(folder)
    folder = _trained(tmp_path).export("bundle2")
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["format_version"] = 99
    (folder / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match="format version 99"):
        load_learner(folder)
    recipe["format_version"] = 2
    recipe["model"]["name"] = "evil_builder"
    _rewrite(folder, recipe)
    with pytest.raises(ValueError, match="'evil_builder' is not registered"):
        load_learner(folder)
    recipe["model"] = {"name": "mlp", "kwargs": {"n_in": 8, "n_out": 5}}
    _rewrite(folder, recipe)
    with pytest.raises(ValueError, match=r"weights.safetensors lacks tensor '3.weight', which model 'mlp'.*do not fit the model"):
        load_learner(folder)
    recipe["model"] = {"name": "mlp", "kwargs": {"n_in": 8, "n_out": 3, "hidden": [16, 16], "batch_norm": True}}
    _rewrite(folder, recipe, rehash=False)  # a plausible edit, but not re-hashed: tampering
    with pytest.raises(ValueError, match="recipe.json was edited after export: its model no longer match"):
        load_learner(folder)
    (folder / "recipe.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_learner(folder)
    with pytest.raises(FileNotFoundError, match="recipe.json not found"):
        load_learner(tmp_path / "nowhere")


class _PlainNet(torch.nn.Module):
    """A user's own module (not from create_model)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.BatchNorm1d(12), torch.nn.ReLU())
        self.head = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_plain_pytorch_module_exports_and_loads_back_with_model_argument(tmp_path):
    torch.manual_seed(0)
    learn = Learner(synthetic_classification(n=128), _PlainNet(), path=tmp_path, progress=False)
    learn.fit(1, 1e-2)
    folder = learn.export("plain")
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["model"] == {"name": None, "kwargs": None, "class": f"{__name__}._PlainNet"}
    with pytest.raises(ValueError, match=r"recipe.json holds a .*_PlainNet model that was not built by a registered "
                                         r"builder.*load_learner\(folder, model=MyModel"):
        load_learner(folder, device="cpu")
    predictor = load_learner(folder, device="cpu", model=_PlainNet())  # fresh random weights: replaced
    xs = [x for x, _ in learn.data.valid_dl.dataset.items[:16]]
    learn.model.eval()
    with torch.no_grad():
        expected = torch.softmax(learn.model(torch.stack(xs)), 1)
    _, probs = predictor.predict_batch(xs)
    assert torch.equal(probs, expected)
    with pytest.raises(ValueError, match=r"weights.safetensors do not fit the given model.*'body.0.weight' has shape "
                                         r"\(12, 8\) in the file but \(12, 4\)"):
        bad = _PlainNet()
        bad.body[0] = torch.nn.Linear(4, 12)
        load_learner(folder, device="cpu", model=bad)


def test_export_refuses_unrecordable_transforms(tmp_path):
    data = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock), item_tfms=[lambda t: t * 2]).databunch(
        lk.testing.classification_items(64), device="cpu")
    with pytest.raises(ValueError, match="item transform .* cannot be recorded"):
        Learner(data, tiny_mlp(), path=tmp_path, progress=False).export("y")


def _fresh_learner(tmp_path):
    data = synthetic_classification(n=192, seed=5, batch_size=16)  # seeded shuffle
    lk.set_seed(0)
    return Learner(data, tiny_bn_mlp(), path=tmp_path, progress=False)  # dropout + BN: RNG and buffers matter


@pytest.mark.parametrize("every_n_batches,stop", [(None, (1, 4)), (3, (1, 4))])
def test_resume_interrupted_fit_one_cycle_gives_same_weights(tmp_path, every_n_batches, stop):
    reference = _fresh_learner(tmp_path / "ref")
    reference.fit_one_cycle(3, 1e-2)
    expected = reference.model.state_dict()

    learn = _fresh_learner(tmp_path / "run")
    ckpt = Checkpoint("ckpt.pth", every_n_batches=every_n_batches)
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(3, 1e-2, callbacks=[ckpt, InterruptAt(*stop)])
    # a new process would start from scratch: new learner, same set-up
    resumed = _fresh_learner(tmp_path / "run")
    torch.manual_seed(1234)  # whatever the RNG is now, the checkpoint restores it
    resumed.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint("ckpt.pth", every_n_batches)],
                          resume_from=tmp_path / "run" / "models" / "ckpt.pth")
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert len(resumed.history.epoch_records) == 3
    assert [round(r["train_loss"], 6) for r in resumed.history.epoch_records] == \
        [round(r["train_loss"], 6) for r in reference.history.epoch_records]


def test_resume_with_other_fit_arguments_is_refused(tmp_path):
    learn = _fresh_learner(tmp_path)
    learn.fit_one_cycle(1, 1e-2, callbacks=[Checkpoint("c.pth")])
    with pytest.raises(ValueError, match="same fit method with the same arguments"):
        _fresh_learner(tmp_path).fit_one_cycle(2, 1e-2, resume_from=tmp_path / "models" / "c.pth")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        _fresh_learner(tmp_path).fit_one_cycle(1, 1e-2, resume_from=tmp_path / "missing.pth")
