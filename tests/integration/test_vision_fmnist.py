"""Vision on real images, on the CPU: the committed Fashion-MNIST PNG sample, real transfer learning with
EfficientNet-Lite0's ImageNet weights, and a subsample of Debian's full Fashion-MNIST written as PNGs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ci_rules import how_to_install, skip_or_fail, system_data_path
from learnkit import Learner, accuracy, create_model, read_idx, set_seed
from learnkit.vision import BatchResize, ImageDataBunch, vision_learner

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG = REPO / "datasets" / "fashion-mnist-sample" / "png"
DEBIAN = system_data_path("/usr/share/datasets/fashion-mnist", needs=[f"{s}-{k}-ubyte.gz" for s in ("train", "t10k")
                                                                       for k in ("images-idx3", "labels-idx1")])
SMALL = [16, 32, 64, 128]  # resnet9 widths small enough for a 2-core CPU


def _small_resnet9(data):
    model = create_model("resnet9", n_in=1, n_out=10, widths=SMALL)
    return Learner(data, model, metrics=[accuracy], splitter=lambda m: m.layer_groups(), progress=False)


def test_png_sample_folder_trains_well_above_chance():
    set_seed(0)
    data = ImageDataBunch.from_folder(PNG, mode="L", batch_size=64, seed=0, verbose=False)
    assert data.classes[:3] == ["Ankle_boot", "Bag", "Coat"] and data.train_dl.n_items == 2000
    assert data.loader_kind == "resident"
    learn = _small_resnet9(data)
    learn.fit_one_cycle(4, 5e-3)
    assert learn.validate()["accuracy"] >= 0.80  # chance: 0.10
    _check_exports_on_real_images(learn, sorted((PNG / "valid").rglob("*.png"))[::50])


def _check_exports_on_real_images(learn, files, tmp=None):
    """The three export formats agree with learn.predict on real PNG files: the bundle through
    predict_batch, the .pt2 through torch.export.load and the .onnx through onnxruntime (uint8 input)."""
    import tempfile

    from learnkit import load_learner
    from learnkit.vision import load_image
    out = Path(tmp or tempfile.mkdtemp())
    expected = torch.stack([learn.predict(f)[2] for f in files])
    labels, probs = load_learner(learn.export(out / "bundle"), device="cpu").predict_batch(files)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert labels == [learn.predict(f)[0] for f in files]
    x = torch.stack([load_image(f, mode="L") for f in files])  # uint8 (N, 1, 28, 28): the graphs' input
    program = torch.export.load(learn.export_torch(out / "model.pt2"))
    torch.testing.assert_close(program.module()(x), expected, atol=1e-4, rtol=0)
    onnx_file = learn.export_onnx(out / "model.onnx")
    for card in ("model.pt2.card.json", "model.pt2.card.md", "model.onnx.card.md", "bundle/model_card.md"):
        assert (out / card).stat().st_size > 0, card
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def _few(split: str, n_per_class: int) -> list[Path]:
    files = []
    for folder in sorted((PNG / split).iterdir()):
        files += sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:n_per_class]
    return files


def _lite0_accuracy(pretrained: bool, folder: Path) -> float:
    set_seed(0)
    data = ImageDataBunch.from_folder(folder, batch_size=32, seed=0, batch_tfms=[BatchResize(64)], verbose=False)
    assert (data.train_dl.n_items, data.valid_dl.n_items) == (300, 200)
    learn = vision_learner(data, "efficientnet_lite0", pretrained=pretrained, progress=False)
    if pretrained:
        learn.fine_tune(3, base_lr=4e-3)  # 1 frozen + 3 unfrozen epochs
    else:
        learn.fit_one_cycle(4, 4e-3)
    return learn.validate()["accuracy"]


def test_efficientnet_lite0_imagenet_weights_transfer_to_fashion_mnist(tmp_path):
    try:
        from learnkit.vision.efficientnet import efficientnet_lite0_weights_file
        efficientnet_lite0_weights_file()
    except FileNotFoundError as e:
        skip_or_fail(f"EfficientNet-Lite0 weights unavailable: {e}")
    for split, n_per_class in (("train", 30), ("valid", 20)):  # a smaller copy of the sample, same layout
        for f in _few(split, n_per_class):
            target = tmp_path / split / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    pretrained, scratch = _lite0_accuracy(True, tmp_path), _lite0_accuracy(False, tmp_path)
    # 300 training images (30 per class), 200 to evaluate, the same network and number of epochs. Measured on
    # the H100 (benchmarks/vision_transfer_small.py, 500 valid images): 0.47-0.54 pretrained vs 0.17-0.19.
    assert pretrained >= 0.40 and pretrained >= scratch + 0.2, (pretrained, scratch)


def test_full_fashion_mnist_subsample_as_png_folder(tmp_path):
    if not (DEBIAN / "train-images-idx3-ubyte.gz").exists():
        skip_or_fail(f"Fashion-MNIST not found in {DEBIAN}. {how_to_install('dataset-fashion-mnist')}")
    classes = [c.replace("/", "_") for c in (REPO / "datasets/fashion-mnist-sample/classes.txt").read_text().split("\n") if c]
    for split, prefix, n in (("train", "train", 6000), ("valid", "t10k", 1000)):
        images, labels = read_idx(DEBIAN / f"{prefix}-images-idx3-ubyte.gz"), read_idx(DEBIAN / f"{prefix}-labels-idx1-ubyte.gz")
        step = len(images) // n  # an even spread over the whole file
        for i in range(0, step * n, step):
            folder = tmp_path / split / classes[int(labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i].numpy()).save(folder / f"{i}.png")
    set_seed(0)
    data = ImageDataBunch.from_folder(tmp_path, mode="L", batch_size=128, seed=0, verbose=False)
    assert data.train_dl.n_items == 6000 and data.valid_dl.n_items == 1000
    learn = _small_resnet9(data)
    learn.fit_one_cycle(2, 5e-3)
    assert learn.validate()["accuracy"] >= 0.83
    assert torch.isfinite(torch.tensor(learn.history.epoch_records[-1]["train_loss"]))
