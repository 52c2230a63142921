"""ImageDataBunch: constructors, both loader paths, bad-input handling, export round trip."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from learnkit import Checkpoint, Learner, accuracy, create_model, load_learner, set_seed
from learnkit.data.resident import ResidentLoader
from learnkit.testing import InterruptAt
from learnkit.vision import ImageDataBunch, Resize, RandomResizedCrop, aug_transforms, vision_learner


def _image(rng, label, size=8):
    """Class 'a' is bright in the top half, 'b' in the bottom half: learnable from a few images."""
    a = rng.integers(0, 60, (size, size), dtype=np.uint8)
    if label == "a":
        a[: size // 2] += 150
    else:
        a[size // 2:] += 150
    return Image.fromarray(a)


def make_folder(root, n=12, classes=("a", "b"), size=8, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("valid", n // 2)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(rng, c, size).save(root / split / c / f"{c}_{i}.png")
    return root


def test_from_folder_uses_the_folders_as_split_and_labels(tmp_path):
    data = ImageDataBunch.from_folder(make_folder(tmp_path), batch_size=4, verbose=False)
    assert data.classes == ["a", "b"]
    assert len(data.train_dl) == 6 and data.valid_dl.n_items == 12
    x, y = data.one_batch("valid")
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32  # RGB by default, normalized
    assert data.loader_kind == "resident" and "resident" in data.loader_report


def test_resident_and_dataloader_paths_give_the_same_validation_batches(tmp_path):
    make_folder(tmp_path)
    fast = ImageDataBunch.from_folder(tmp_path, batch_size=5, mode="L", verbose=False, drop_last=False)
    slow = ImageDataBunch.from_folder(tmp_path, batch_size=5, mode="L", resident=False, verbose=False,
                                      drop_last=False)
    assert isinstance(fast.valid_dl, ResidentLoader) and slow.loader_kind == "dataloader"
    pairs = list(zip(fast.valid_dl, slow.valid_dl))
    assert len(pairs) == len(slow.valid_dl) == 3
    for (xf, yf), (xs, ys) in pairs:
        assert xf.dtype == xs.dtype == torch.uint8 and torch.equal(xf, xs) and torch.equal(yf, ys)
    (mean_f, std_f), (mean_s, std_s) = fast.image_stats(), slow.image_stats()  # the same training images
    assert mean_f == pytest.approx(mean_s, rel=1e-6) and std_f == pytest.approx(std_s, rel=1e-6)
    # training batches hold the same items too (shuffled): the multiset of images is the same
    def contents(dl):
        return sorted((int(y), x.flatten().tolist()) for xb, yb in dl for x, y in zip(xb, yb))
    assert len(contents(fast.train_dl)) == 24 and contents(fast.train_dl) == contents(slow.train_dl)


def _dark_and_bright(root, suffix=".png", n=20):
    """train/a: dark images, train/b: bright ones (files sorted by class: the first half all dark)."""
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for c, (lo, hi) in (("a", (0, 40)), ("b", (200, 255))):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(lo, hi, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}{suffix}")
    return root


def test_image_stats_sample_at_random_the_same_items_on_every_path(tmp_path):
    _dark_and_bright(tmp_path)
    resident = ImageDataBunch.from_folder(tmp_path, batch_size=4, verbose=False)
    workers = ImageDataBunch.from_folder(tmp_path, batch_size=4, resident=False, verbose=False)
    assert resident.loader_kind == "resident" and workers.loader_kind == "dataloader"
    (mean_r, std_r), (mean_w, std_w) = resident.image_stats(max_items=10), workers.image_stats(max_items=10)
    assert mean_r == pytest.approx(mean_w, rel=1e-6) and std_r == pytest.approx(std_w, rel=1e-6)
    # the first 10 files are all dark (mean about 0.08); a random 10 of the 40 hold both classes
    assert all(0.2 < m < 0.8 for m in mean_w)


def test_random_item_transforms_choose_the_dataloader_path_and_say_why(tmp_path):
    make_folder(tmp_path, size=12)
    data = ImageDataBunch.from_folder(tmp_path, batch_size=4, item_tfms=[RandomResizedCrop(8)], verbose=False)
    assert data.loader_kind == "dataloader" and "random" in data.loader_report
    assert data.one_batch()[0].shape[-2:] == (8, 8)
    # validation and export use the deterministic version
    assert [t.to_config() for t in data.item_tfms] == [Resize(8).to_config()]
    with pytest.raises(ValueError, match="random per item"):
        ImageDataBunch.from_folder(tmp_path, item_tfms=[RandomResizedCrop(8)], resident=True, verbose=False)


def test_item_resize_before_residency(tmp_path):
    make_folder(tmp_path, size=10)
    data = ImageDataBunch.from_folder(tmp_path, batch_size=4, item_tfms=[Resize(6, method="squish")], verbose=False)
    assert data.loader_kind == "resident" and data.one_batch()[0].shape[-2:] == (6, 6)


def test_a_memory_budget_too_small_falls_back_to_workers(tmp_path):
    make_folder(tmp_path)
    data = ImageDataBunch.from_folder(tmp_path, memory_budget_bytes=100, verbose=False)
    assert data.loader_kind == "dataloader" and "exceeds the budget" in data.loader_report


def _break_files(root):
    (root / "train" / "a" / "zero.png").write_bytes(b"")
    (root / "train" / "b" / "text.png").write_text("not an image")
    good = (root / "train" / "a" / "a_0.png").read_bytes()
    (root / "train" / "a" / "cut.png").write_bytes(good[: len(good) // 2])


@pytest.mark.parametrize("resident", [True, False])
def test_bad_files_are_listed_in_one_error(tmp_path, resident):
    make_folder(tmp_path)
    _break_files(tmp_path)
    with pytest.raises(ValueError) as e:
        ImageDataBunch.from_folder(tmp_path, resident=resident, verbose=False)
    text = str(e.value)
    assert "3 unreadable image files" in text and "on_bad='skip'" in text
    for name in ("zero.png", "text.png", "cut.png"):
        assert name in text


def test_skip_leaves_bad_files_out_with_a_warning_listing_them(tmp_path):
    make_folder(tmp_path)
    _break_files(tmp_path)
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        data = ImageDataBunch.from_folder(tmp_path, on_bad="skip", verbose=False)
    assert sorted(p.name for p, _ in data.skipped) == ["cut.png", "text.png", "zero.png"]
    assert data.train_dl.n_items == 24  # only the good ones


def test_empty_class_folders_and_loose_files_are_reported(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "c").mkdir()
    _image(np.random.default_rng(0), "a").save(tmp_path / "train" / "loose.png")
    with pytest.raises(ValueError) as e:
        ImageDataBunch.from_folder(tmp_path, verbose=False)
    assert "empty class folder" in str(e.value) and "loose.png" in str(e.value)


def test_a_single_class_is_a_clear_error(tmp_path):
    make_folder(tmp_path, classes=("a",))
    with pytest.raises(ValueError, match="at least two"):
        ImageDataBunch.from_folder(tmp_path, verbose=False)


def test_random_split_without_train_valid_folders_is_seeded(tmp_path):
    make_folder(tmp_path)
    root = tmp_path / "train"
    one = ImageDataBunch.from_folder(root, valid_pct=0.25, seed=3, verbose=False)
    two = ImageDataBunch.from_folder(root, valid_pct=0.25, seed=3, verbose=False)
    assert one.valid_dl.n_items == 6 and torch.equal(one.valid_dl.tensors[0], two.valid_dl.tensors[0])


def test_valid_pct_with_train_valid_folders_pools_them_and_keeps_class_labels(tmp_path):
    make_folder(tmp_path)
    data = ImageDataBunch.from_folder(tmp_path, valid_pct=0.5, seed=1, verbose=False)
    assert data.classes == ["a", "b"]  # the class folders, not 'train'/'valid'
    assert data.train_dl.n_items + data.valid_dl.n_items == 36 and data.valid_dl.n_items == 18


def test_from_csv_single_and_multi_label(tmp_path):
    make_folder(tmp_path)
    files = sorted((tmp_path / "train").rglob("*.png"))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "label", "tags"])
        for i, p in enumerate(files):
            w.writerow([p.relative_to(tmp_path).as_posix(), p.parent.name, f"{p.parent.name} x" if i % 2 else p.parent.name])
    single = ImageDataBunch.from_csv(tmp_path, fn_col="name", label_col="label", seed=0, verbose=False)
    assert single.classes == ["a", "b"]
    multi = ImageDataBunch.from_csv(tmp_path, fn_col="name", label_col="tags", label_delim=" ", seed=0, verbose=False)
    assert multi.classes == ["a", "b", "x"] and multi.one_batch()[1].shape[1] == 3
    with pytest.raises(ValueError, match="no column 'nope'"):
        ImageDataBunch.from_csv(tmp_path, label_col="nope", verbose=False)


def test_from_name_re_lists_every_file_without_a_label(tmp_path):
    make_folder(tmp_path)
    files = sorted((tmp_path / "train").rglob("*.png"))
    data = ImageDataBunch.from_name_re(".", files, r"^([ab])_\d+\.png$", seed=0, verbose=False)
    assert data.classes == ["a", "b"]
    odd = tmp_path / "train" / "a" / "odd-name.png"
    _image(np.random.default_rng(1), "a").save(odd)
    with pytest.raises(ValueError) as e:
        ImageDataBunch.from_name_re(".", files + [odd], r"^([ab])_\d+\.png$", verbose=False)
    assert "odd-name.png" in str(e.value) and "without a label" in str(e.value)


def test_from_lists_checks_lengths(tmp_path):
    make_folder(tmp_path)
    files = sorted((tmp_path / "train").rglob("*.png"))
    with pytest.raises(ValueError, match="24 files but 3 labels"):
        ImageDataBunch.from_lists(".", files, ["a", "b", "a"], verbose=False)
    data = ImageDataBunch.from_name_func(".", files, lambda p: p.parent.name, verbose=False)
    assert data.classes == ["a", "b"]


def test_vision_learner_trains_exports_and_predicts_the_same(tmp_path):
    set_seed(0)
    make_folder(tmp_path, n=24, size=16)
    data = ImageDataBunch.from_folder(tmp_path, batch_size=8, mode="L", seed=0, verbose=False,
                                      batch_tfms=aug_transforms(max_rotate=0, max_warp=0, max_lighting=0))
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False, path=tmp_path)
    assert learn.pretrained_source is None and len(learn.layer_groups) == 3
    learn.fit_one_cycle(5, 3e-3)
    assert learn.validate()["accuracy"] >= 0.9
    folder = learn.export("export")
    predictor = load_learner(folder)
    files = sorted((tmp_path / "valid").rglob("*.png"))[:5]
    preds, _ = learn.get_preds(data.test_dl(files))
    _, probs = predictor.predict_batch(files)
    assert torch.allclose(preds, probs, atol=1e-5)
    assert predictor.predict(files[0])[0] == "a"


def test_vision_learner_small_net_needs_pretrained_false(tmp_path):
    make_folder(tmp_path)
    data = ImageDataBunch.from_folder(tmp_path, verbose=False)
    with pytest.raises(ValueError, match="pretrained=False"):
        vision_learner(data, "resnet9")
    learn = vision_learner(data, "resnet9", pretrained=False, progress=False, metrics=[accuracy])
    assert type(learn.model).__name__ == "ResNet9" and len(learn.layer_groups) == 3
    assert create_model("resnet9", n_in=3, n_out=2)(torch.zeros(2, 3, 8, 8)).shape == (2, 2)


def test_multi_label_csv_gets_bce_and_accuracy_multi(tmp_path):
    make_folder(tmp_path, n=16, size=16)
    files = sorted((tmp_path / "train").rglob("*.png")) + sorted((tmp_path / "valid").rglob("*.png"))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "tags", "is_valid"])
        for p in files:  # every image is 'img'; its class folder is its second tag
            w.writerow([p.relative_to(tmp_path).as_posix(), f"img {p.parent.name}", int(p.parts[-3] == "valid")])
    data = ImageDataBunch.from_csv(tmp_path, fn_col="name", label_col="tags", label_delim=" ", valid_col="is_valid",
                                   batch_size=8, seed=0, verbose=False)
    assert data.classes == ["a", "b", "img"] and data.valid_dl.n_items == 16
    set_seed(0)
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False)
    assert isinstance(learn.loss_fn, torch.nn.BCEWithLogitsLoss)
    assert [m.name for m in learn.metrics] == ["accuracy_multi"]
    learn.fit_one_cycle(4, 3e-3)
    assert learn.validate()["accuracy_multi"] >= 0.9  # per label, threshold 0.5
    labels, _, probs = learn.predict(files[-1])
    assert probs.shape == (3,) and labels == [lab for lab, p in zip(data.classes, probs) if p >= 0.5]


def _augmented_learner(root, run):
    set_seed(0)
    data = ImageDataBunch.from_folder(root, mode="L", batch_size=6, seed=3, verbose=False,
                                      batch_tfms=aug_transforms())  # its generator is seeded from the global RNG
    model = create_model("simple_cnn", n_in=1, n_out=2, widths=[4, 8])
    return Learner(data, model, path=run, progress=False)


def test_resume_mid_epoch_replays_the_augmentation_bit_exactly(tmp_path):
    make_folder(tmp_path / "data", size=16)
    reference = _augmented_learner(tmp_path / "data", tmp_path / "ref")
    reference.fit_one_cycle(2, 1e-2)
    expected = reference.model.state_dict()
    learn = _augmented_learner(tmp_path / "data", tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(2, 1e-2, callbacks=[Checkpoint("ckpt.pth", every_n_batches=1), InterruptAt(1, 1)])
    resumed = _augmented_learner(tmp_path / "data", tmp_path / "run")
    resumed.data.batch_tfms[0].generator.manual_seed(999)  # whatever its state now, the checkpoint restores it
    resumed.fit_one_cycle(2, 1e-2, callbacks=[Checkpoint("ckpt.pth", every_n_batches=1)],
                          resume_from=tmp_path / "run" / "models" / "ckpt.pth")
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_vision_learner_keeps_an_explicit_normalization(tmp_path):
    from learnkit import Normalize
    make_folder(tmp_path)
    auto = ImageDataBunch.from_folder(tmp_path, verbose=False)
    vision_learner(auto, "resnet18", pretrained=False, progress=False)
    norm = [t for t in auto.batch_tfms if isinstance(t, Normalize)]
    assert len(norm) == 1 and norm[0].mean.tolist() == pytest.approx(auto.image_stats()[0], rel=1e-5)
    given = ImageDataBunch.from_folder(tmp_path, normalize=((0.5,) * 3, (0.25,) * 3), verbose=False)
    vision_learner(given, "resnet18", pretrained=False, progress=False)
    assert [t.std.tolist() for t in given.batch_tfms if isinstance(t, Normalize)] == [[0.25] * 3]
    none = ImageDataBunch.from_folder(tmp_path, normalize=None, verbose=False)
    vision_learner(none, "resnet18", pretrained=False, progress=False)
    assert not any(isinstance(t, Normalize) for t in none.batch_tfms)
