"""Model cards: the training-data fingerprint, the card's fields, its JSON + Markdown files, the bundle's card."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import learnkit as lk
from learnkit import Learner, load_learner
from learnkit.export.card import data_fingerprint, model_card, render_markdown, write_model_card
from learnkit.testing import synthetic_classification, tiny_mlp


def _folder(root, n=6, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("valid", n // 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def _images(root, resident):
    from learnkit.vision import ImageDataBunch
    return ImageDataBunch.from_folder(root, mode="L", batch_size=4, resident=resident, verbose=False, device="cpu")


def test_fingerprint_of_file_items_ignores_where_the_folder_lives(tmp_path):
    _folder(tmp_path / "one")
    first = data_fingerprint(_images(tmp_path / "one", resident=False))
    assert first["train_items"] == 12 and first["valid_items"] == 6 and len(first["sha256"]) == 64
    assert "file paths relative to their common folder" in first["over"]
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    assert data_fingerprint(_images(tmp_path / "elsewhere" / "two", resident=False)) == first
    (tmp_path / "one" / "train" / "a" / "0.png").rename(tmp_path / "one" / "train" / "b" / "9.png")  # relabelled
    assert data_fingerprint(_images(tmp_path / "one", resident=False))["sha256"] != first["sha256"]


def test_fingerprint_of_resident_tensors_follows_the_pixels(tmp_path):
    root = _folder(tmp_path)
    data = _images(root, resident=True)
    assert data.loader_kind == "resident"
    first = data_fingerprint(data)
    assert first["over"] == "the resident training tensors' bytes" and first["train_items"] == 12
    assert data_fingerprint(_images(root, resident=True)) == first            # deterministic
    data.train_dl.tensors[0][3, 0, 0, 0] ^= 1                                  # one pixel
    assert data_fingerprint(data)["sha256"] != first["sha256"]


def test_fingerprint_of_tensor_items_and_text_and_unhashable_items():
    a, b = synthetic_classification(seed=0), synthetic_classification(seed=0)
    assert data_fingerprint(a)["sha256"] == data_fingerprint(b)["sha256"]
    assert data_fingerprint(a)["sha256"] != data_fingerprint(synthetic_classification(seed=1))["sha256"]
    from learnkit.text import TextDataBunch
    texts, labels = [f"text number {i % 7}" for i in range(40)], ["x" if i % 2 else "y" for i in range(40)]
    text = data_fingerprint(TextDataBunch.from_lists(texts, labels, seed=0, batch_size=8, device="cpu", min_freq=1))
    assert text["over"].startswith("dataset[i] for every training item") and len(text["sha256"]) == 64

    class Opaque:
        pass

    class Items(list):
        items = property(lambda self: list(self))

    loader = torch.utils.data.DataLoader(Items([(Opaque(), "a")]))
    odd = data_fingerprint(lk.DataBunch(loader, loader, [lk.TensorBlock(), lk.CategoryBlock()], device="cpu"))
    assert odd["sha256"] is None and odd["over"] == ("not hashed: training items hold a Opaque value, which has no "
                                                     "deterministic byte form")


@pytest.fixture
def learn(tmp_path):
    lk.set_seed(3)
    learn = Learner(synthetic_classification(), tiny_mlp(), metrics=[lk.accuracy], path=tmp_path, progress=False)
    learn.fit(1, 1e-2)
    return learn


def test_model_card_fields_and_files(learn, tmp_path):
    learn.val_results["accuracy"] = math.nan  # strict JSON has no NaN: it must become null
    card = model_card(learn, {"format": "test", "files": ["m.bin"]}, {"dtype": "float32", "shape": ["batch", 8]},
                      {"name": "probs"}, "print('hi')")
    assert card["title"] == "mlp: CategoryBlock, 3 classes" and card["classes"] == ["class_0", "class_1", "class_2"]
    assert card["seed"] == 3 and card["mixed_precision"] is None and card["model"]["name"] == "mlp"
    assert card["model"]["parameters"] == sum(p.numel() for p in learn.model.parameters())
    assert card["metrics"]["values"]["accuracy"] is None and card["metrics"]["epochs_trained"] == 1
    assert set(card["metrics"]["last_epoch"]) >= {"epoch", "train_loss", "valid_loss", "accuracy"}
    assert card["training_data"]["train_items"] == 192 and card["training_data"]["valid_items"] == 64
    assert card["versions"]["torch"] == torch.__version__ and "learnkit" in card["versions"]
    json_path, md_path = write_model_card(card, tmp_path / "out" / "m.bin.card")
    assert json_path.name == "m.bin.card.json" and md_path.name == "m.bin.card.md"
    assert json.loads(json_path.read_text(), parse_constant=pytest.fail) == card
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["m.bin.card.json", "m.bin.card.md"]
    md = md_path.read_text()
    assert md == render_markdown(card)
    for text in ("# Model card: mlp: CategoryBlock, 3 classes", "3 classes, in output order: `class_0`",
                 "| accuracy | — |", "| valid_loss |", card["training_data"]["sha256"], "192 training, 64 validation",
                 "**seed** (`learnkit.set_seed`): 3", "```python\nprint('hi')\n```"):
        assert text in md


def test_bundle_export_writes_the_card_and_the_data_hash(learn):
    folder = learn.export("bundle")
    names = {p.name for p in folder.iterdir()}
    assert names == {"model_card.json", "model_card.md", "recipe.json", "weights.safetensors"}
    card = json.loads((folder / "model_card.json").read_text())
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["training"]["data_sha256"] == card["training_data"]["sha256"] is not None
    assert card["export"]["weights_sha256"] == recipe["weights"]["sha256"]
    assert card["input"]["block"] == {"type": "TensorBlock", "dtype": "float32"}
    assert "load_learner('bundle')" in card["usage"] and "predict_batch" in (folder / "model_card.md").read_text()
    assert load_learner(folder, device="cpu").predict(torch.zeros(8))[0] in card["classes"]
