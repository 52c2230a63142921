"""One data path: every constructor is a DataBlock through `DataBlock.databunch`, one contract for vision and text,
fastai's spellings accepted with a warning, typos refused at once, and plain PyTorch loaders accepted."""
import warnings

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import learnkit as lk
from learnkit.data.loaders import LMLoader
from learnkit.data.resident import ResidentLoader
from learnkit.testing import classification_items
from learnkit.text import TextDataBunch
from learnkit.vision import ImageDataBunch, Resize


def _images(root, n=6, size=8):
    for split in ("train", "valid"):
        for k, label in enumerate(("a", "b")):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("L", (size, size), color=40 + 160 * k + i).save(root / split / label / f"{label}_{i}.png")
    return root


def _texts(root):
    for split in ("train", "valid"):
        for label in ("x", "y"):
            (root / split / label).mkdir(parents=True)
            for i in range(8):
                (root / split / label / f"{i}.txt").write_text(f"{label} {label} doc {i}")
    return root


@pytest.fixture
def calls(monkeypatch):
    """Count DataBlock.databunch calls (the one builder every constructor must go through)."""
    seen = []
    original = lk.DataBlock.databunch.__wrapped__

    def spy(self, source, **kwargs):
        seen.append(type(self.blocks[0]).__name__)
        return original(self, source, **kwargs)
    monkeypatch.setattr(lk.DataBlock, "databunch", spy)
    return seen


def test_every_constructor_goes_through_datablock_databunch(tmp_path, calls):
    root = _images(tmp_path / "img")
    files = sorted((root / "train").rglob("*.png"))
    (root / "labels.csv").write_text("name,label\n" + "".join(f"train/{f.parent.name}/{f.name},{f.parent.name}\n"
                                                             for f in files))
    built = [ImageDataBunch.from_folder(root, verbose=False, device="cpu"),
             ImageDataBunch.from_lists(root, files, [f.parent.name for f in files], verbose=False, device="cpu"),
             ImageDataBunch.from_name_func(root, files, lambda f: f.parent.name, verbose=False, device="cpu"),
             ImageDataBunch.from_name_re(root, files, r"^([ab])_", verbose=False, device="cpu"),
             ImageDataBunch.from_csv(root / "labels.csv", fn_col="name", label_col="label", verbose=False,
                                     device="cpu")]
    text_root = _texts(tmp_path / "txt")
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"word{i % 2} doc,{i % 2}\n" for i in range(20)))
    built += [TextDataBunch.from_folder(text_root, min_freq=1, device="cpu"),
              TextDataBunch.from_csv(tmp_path / "t.csv", min_freq=1, device="cpu"),
              TextDataBunch.from_lists(["a b", "c d"] * 10, ["p", "q"] * 10, min_freq=1, device="cpu")]
    assert calls == ["ImageBlock"] * 5 + ["TextBlock"] * 3
    for data in built:
        assert isinstance(data.datablock, lk.DataBlock) and data.loader_kind in ("resident", "padded")


def test_summary_walks_an_item_of_every_constructor(tmp_path, capsys):
    data = ImageDataBunch.from_folder(_images(tmp_path / "img"), verbose=False, device="cpu")
    data.summary()
    out = capsys.readouterr().out
    assert "ImageBlock.encode -> Tensor(shape=(3, 8, 8), dtype=torch.uint8)" in out and "CategoryBlock" in out
    text = TextDataBunch.from_folder(_texts(tmp_path / "txt"), min_freq=1, device="cpu")
    text.summary()
    out = capsys.readouterr().out
    assert "TextBlock.encode -> Tensor(shape=" in out and "collate block 0" in out


def test_vision_and_text_from_folder_split_the_same_way(tmp_path):
    img, txt = _images(tmp_path / "img"), _texts(tmp_path / "txt")
    # with train/ and valid/ the folders are the split, in both
    assert ImageDataBunch.from_folder(img, verbose=False, device="cpu").valid_dl.n_items == 12
    assert len(TextDataBunch.from_folder(txt, min_freq=1, device="cpu").valid_dl.dataset) == 16
    # valid_pct: a seeded random split of every file, in both (text ignored it before)
    image_split = ImageDataBunch.from_folder(img, valid_pct=0.5, seed=1, verbose=False, device="cpu")
    text_split = TextDataBunch.from_folder(txt, valid_pct=0.5, seed=1, min_freq=1, device="cpu")
    assert image_split.valid_dl.n_items == 12 and len(text_split.valid_dl.dataset) == 16
    assert len(text_split.split[0]) == 16
    # no valid/ folder: a random split of train/, in both (text required valid/ before)
    for d in ("img", "txt"):
        for f in sorted((tmp_path / d / "valid").rglob("*")):
            if f.is_file():
                f.unlink()
    assert len(TextDataBunch.from_folder(txt, valid="none", min_freq=1, device="cpu").split[1]) == 3


def test_a_typo_fails_at_once_naming_the_nearest_argument(tmp_path):
    with pytest.raises(TypeError, match=r"from_folder\(\) got an unexpected keyword argument 'batchsize'; did you "
                                        r"mean 'batch_size'"):
        ImageDataBunch.from_folder(tmp_path / "does-not-exist", batchsize=3)   # before the folder is even looked at
    with pytest.raises(TypeError, match="'num_worker'; did you mean 'num_workers'"):
        TextDataBunch.from_folder(tmp_path / "does-not-exist", num_worker=2)
    with pytest.raises(TypeError, match="'seeds'; did you mean 'seed'"):
        lk.DataBlock().databunch([(0.0, 1)], seeds=1)


def test_fastai_spellings_work_with_a_deprecation_warning(tmp_path):
    root = _images(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"from_folder\(bs=...\) is deprecated: use batch_size="):
        data = ImageDataBunch.from_folder(root, bs=4, verbose=False, device="cpu")
    assert data.train_dl.batch_size == 4
    files = sorted((root / "train").rglob("*.png"))
    with pytest.warns(DeprecationWarning, match="use pattern="):
        data = ImageDataBunch.from_name_re(root, files, pat=r"^([ab])_", verbose=False, device="cpu")
    assert data.classes == ["a", "b"]
    with pytest.warns(DeprecationWarning, match="use data.n_classes"):
        assert data.c == 2
    with pytest.warns(DeprecationWarning, match="use data.classes"):
        assert data.vocab == ["a", "b"]
    with pytest.warns(DeprecationWarning, match="use classes="):
        assert lk.CategoryBlock(vocab=["b", "a"]).classes == ["b", "a"]
    with pytest.warns(DeprecationWarning, match="use memory_budget="):
        ImageDataBunch.from_folder(root, memory_budget_bytes=1, verbose=False, device="cpu")
    with pytest.raises(TypeError, match="got both 'bs' and 'batch_size'"):
        ImageDataBunch.from_folder(root, bs=4, batch_size=8)
    with pytest.warns(DeprecationWarning, match="a folder is deprecated"):  # fastai's from_csv(path, csv_fname)
        (root / "labels.csv").write_text("name,label\n" + "".join(f"train/a/a_{i}.png,a\ntrain/b/b_{i}.png,b\n"
                                                                 for i in range(6)))
        data = ImageDataBunch.from_csv(root, fn_col="name", label_col="label", verbose=False, device="cpu")
    assert data.n_classes == 2


def test_a_single_transform_and_a_label_function_over_names(tmp_path):
    root = _images(tmp_path, size=12)
    files = sorted((root / "train").rglob("*.png"))
    # fastai tutorials index the file NAME (f[0]); a Path fails there, so the name is given
    data = ImageDataBunch.from_name_func(root, files, lambda f: "upper" if f[0] == "a" else "lower",
                                         item_tfms=Resize(6), verbose=False, device="cpu")   # no list needed
    assert data.classes == ["lower", "upper"] and data.one_batch()[0].shape[-2:] == (6, 6)
    block = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock), item_tfms=lambda x: x * 2,
                         batch_tfms=lk.Normalize(0.0, 1.0))
    assert len(block.item_tfms) == 1 and len(block.batch_tfms) == 1


def test_loader_strategies_are_chosen_in_one_place():
    items = [(torch.randn(4), i % 2) for i in range(40)]
    block = lk.DataBlock(blocks=(lk.TensorBlock, lk.CategoryBlock))
    assert isinstance(block.databunch(items, batch_size=8, device="cpu").train_dl, DataLoader)
    resident = block.databunch(items, batch_size=8, device="cpu", resident=True)
    assert isinstance(resident.train_dl, ResidentLoader) and resident.loader_kind == "resident"
    lm = TextDataBunch.from_lists(["one two three four five six"] * 20, is_lm=True, batch_size=2, bptt=4,
                                  min_freq=1, device="cpu")
    assert isinstance(lm.train_dl, LMLoader) and lm.loader_kind == "stream"
    with pytest.raises(ValueError, match="batch_size=0"):
        TextDataBunch.from_lists(["a b"] * 10, ["x", "y"] * 5, batch_size=0, device="cpu")


def test_text_classification_cuts_long_documents_by_default():
    texts = [" ".join(f"w{i}" for i in range(5000)), "short text here"] * 6
    with pytest.warns(UserWarning, match="longer than max_len=1440"):
        data = TextDataBunch.from_lists(texts, ["a", "b"] * 6, min_freq=1, device="cpu", seed=0)
    assert max(b[0].shape[1] for b in data.train_dl) == 1440


def test_plain_pytorch_loaders_train_without_blocks(capsys):
    pairs = classification_items(n=256, n_features=8, n_classes=3, seed=0)
    x = torch.stack([p[0] for p in pairs])
    y = torch.tensor([int(p[1][-1]) for p in pairs])
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True)
    valid = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64)
    data = lk.DataBunch(train, valid, device="cpu")
    assert "integer targets: CategoryBlock with 3 classes" in capsys.readouterr().out
    assert data.n_classes == 3 and isinstance(data.y_block, lk.CategoryBlock)
    learn = lk.Learner(data, nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)), metrics=[lk.accuracy],
                       progress=False)
    learn.fit_one_cycle(6, 3e-2)
    assert learn.val_results["accuracy"] > 0.7  # chance is 1/3
    reg = lk.DataBunch(DataLoader(TensorDataset(x, x[:, :1]), batch_size=32), DataLoader(TensorDataset(x, x[:, :1])),
                       device="cpu")
    assert isinstance(reg.y_block, lk.RegressionBlock) and reg.n_classes is None


class _Dicts(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"pixels": torch.zeros(3), "label": i % 2}


def test_unreadable_plain_batches_fail_before_training_showing_their_structure():
    with pytest.raises(TypeError, match=r"a batch is dict\('pixels': Tensor\(shape=\(4, 3\).*'label': "
                                        r"Tensor\(shape=\(4,\).*tuple of tensors"):
        lk.DataBunch(DataLoader(_Dicts(), batch_size=4), DataLoader(_Dicts(), batch_size=4), device="cpu")
    ragged = DataLoader(list(zip(torch.zeros(8, 3), torch.zeros(8))), batch_size=4,
                        collate_fn=lambda s: (torch.zeros(4, 3), torch.zeros(3)))
    with pytest.raises(ValueError, match=r"different lengths \[4, 3\]"):
        lk.DataBunch(ragged, ragged, device="cpu")


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)

    def forward(self, x1, x2):
        return self.a(x1) + self.b(x2)


def test_predict_on_a_two_input_datablock_feeds_each_input_its_own_value():
    items = [((float(i), 0.0), (0.0, float(i % 3)), i % 2) for i in range(20)]
    block = lk.DataBlock(blocks=(lk.TensorBlock, lk.TensorBlock, lk.CategoryBlock), n_inp=2,
                         getters=[lambda r: r[0], lambda r: r[1], lambda r: r[2]])
    data = block.databunch(items, batch_size=4, device="cpu", seed=0)
    model = _TwoInputs()
    learn = lk.Learner(data, model, progress=False)
    x1, x2 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    _, _, probs = learn.predict((x1.tolist(), x2.tolist()))
    expected = torch.softmax(model(x1[None], x2[None]), -1)[0]
    assert torch.allclose(probs, expected, atol=1e-6)
    with pytest.raises(ValueError, match="2 inputs, so each entry must be a tuple of 2 values"):
        learn.predict(5.0)


def test_one_classification_interpretation_for_images_and_texts():
    from learnkit.text import ClassificationInterpretation as TextInterp, text_classifier_learner, top_losses
    from learnkit.vision import ClassificationInterpretation
    assert TextInterp is ClassificationInterpretation
    texts = [("good fine great " if i % 2 else "bad awful poor ") + f"w{i % 7}" for i in range(60)]
    data = TextDataBunch.from_lists(texts, ["pos" if i % 2 else "neg" for i in range(60)], seed=0, batch_size=8,
                                    min_freq=1, device="cpu")
    learn = text_classifier_learner(data, config=dict(emb_size=16, hidden_size=16, n_layers=1), progress=False)
    interp = ClassificationInterpretation.from_learner(learn)
    cm = interp.confusion_matrix()
    assert cm.shape == (2, 2) and int(cm.sum()) == len(data.split[1])
    rows = top_losses(learn, k=3)
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert all(r["text"].split()[0] in ("good", "bad") for r in rows)  # decoded texts, not ids
    assert rows[0]["loss"] == pytest.approx(float(interp.losses.max()), rel=1e-5)
