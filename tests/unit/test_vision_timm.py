"""vision_model / vision_learner on real timm architectures, randomly initialised (timm in the dev extra): the body
cut and layer groups for ConvNeXt, EfficientNet and ViT/DeiT (any image size: padded to the patch size), timm's
own normalization statistics, and its weights from the Hugging Face cache (offline) or one clear error. Then what an
adversarial pass found: balanced layer groups, full timm state_dict files, Swin/PiT/distilled DeiT sizes and pooling,
name and tag errors, `_cut` on custom models, URL-only timm weights offline."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from learnkit.vision.models import PretrainedWeightsNotFound, load_pretrained, pretrained_stats, vision_model

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


def _groups_cover(model):
    groups = model.layer_groups()
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(groups) == 3 and len(ids) == len(set(ids)) == len(list(model.parameters()))
    return groups


@pytest.mark.parametrize("arch,features", [("timm/convnext_atto", 320), ("timm:efficientnet_b0", 1280)])
def test_convolutional_bodies_keep_their_feature_map(arch, features):
    model = vision_model(arch, n_out=3).eval()
    assert not model.pooled and model.num_features == features
    with torch.no_grad():
        assert model.body(torch.zeros(2, 3, 64, 64)).ndim == 4
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    groups = _groups_cover(model)
    assert sum(p.numel() for p in groups[0].parameters()) > 0 and sum(p.numel() for p in groups[1].parameters()) > 0


@pytest.mark.parametrize("arch", ["timm/vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_vit_and_deit_pool_themselves_and_take_any_size(arch):
    model = vision_model(arch, n_out=4, n_in=1).eval()
    assert model.pooled and model.num_features == 192
    with torch.no_grad():
        for size in (64, 72, 224):  # 72 is not a multiple of 16: padded up to 80
            assert model(torch.zeros(2, 1, size, size)).shape == (2, 4)
    groups = _groups_cover(model)
    assert "patch_embed" in groups[0]._modules and "norm" in groups[1]._modules


def test_timm_statistics_follow_the_pretrained_config():
    clip = pretrained_stats("timm/vit_base_patch16_clip_224.openai")
    assert clip[0] == pytest.approx((0.48145466, 0.4578275, 0.40821073))   # CLIP's, not ImageNet's
    assert pretrained_stats("timm/convnext_atto")[0] == pytest.approx((0.485, 0.456, 0.406))


def test_offline_and_not_cached_names_the_hub_repo_and_the_command(tmp_path):
    model = vision_model("timm/convnext_atto", n_out=2)
    with pytest.raises(PretrainedWeightsNotFound) as info:
        load_pretrained(model, "timm/convnext_atto")
    message = str(info.value)
    for part in ("'timm/convnext_atto.d2_in1k'", str(tmp_path / "hub" / "models--timm--convnext_atto.d2_in1k"),
                 "HF_HUB_OFFLINE=1", "hf download timm/convnext_atto.d2_in1k", "weights=<file>"):
        assert part in message, part


def test_weights_from_the_standard_cache_layout_load_offline(tmp_path):
    from learnkit import save_tensors
    torch.manual_seed(1)
    reference = timm.create_model("convnext_atto", num_classes=0, global_pool="")
    repo = tmp_path / "hub" / "models--timm--convnext_atto.d2_in1k"
    snapshot = repo / "snapshots" / ("cd" * 20)
    full = timm.create_model("convnext_atto").state_dict()  # with its classifier, as on the hub
    save_tensors(full, snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("cd" * 20)
    model = vision_model("timm/convnext_atto", n_out=2)
    source = load_pretrained(model, "timm/convnext_atto")
    assert "timm/convnext_atto.d2_in1k" in source
    own = model.body.state_dict()
    assert all(torch.equal(own[k], full[k]) for k in reference.state_dict())


# ---------------------------------------------------------------------------------------------- adversarial pass
_TINY_CLIP = {"embed_dim": 64, "depth": 4, "num_heads": 2}  # vit_base_patch16_clip_224's layout (a pre-norm), small


@pytest.mark.parametrize("arch,kwargs", [("timm/efficientnet_b0", {}), ("timm/regnety_002", {}),
                                         ("timm/vit_base_patch16_clip_224", _TINY_CLIP), ("timm/convnext_atto", {})])
def test_body_groups_are_balanced_contiguous_and_cover_the_body(arch, kwargs):
    model = vision_model(arch, n_out=2, arch_kwargs=kwargs)
    early, late, head = _groups_cover(model)
    order = [id(p) for p in model.body.parameters()]
    first = {id(p) for p in early.parameters()}
    assert set(order[:len(first)]) == first and {id(p) for p in late.parameters()} == set(order[len(first):])
    counts = [sum(p.numel() for p in g.parameters()) for g in (early, late)]
    assert max(counts) <= 0.75 * sum(counts), counts
    assert head is model.head


def test_timm_resnets_keep_fastais_split():
    groups = vision_model("timm/resnet10t", n_out=2).layer_groups()
    assert list(groups[1]._modules)[:2] == ["layer3", "layer4"]


@pytest.mark.parametrize("arch", ["convnext_atto", "edgenext_xx_small"])
def test_a_full_timm_state_dict_file_loads_without_its_classifier(arch, tmp_path):
    torch.manual_seed(2)
    full = timm.create_model(arch).state_dict()  # head.fc.* included: the head the body does not have
    torch.save(full, tmp_path / "full.pth")
    model = vision_model(f"timm/{arch}", n_out=2)
    load_pretrained(model, f"timm/{arch}", tmp_path / "full.pth")
    own = model.body.state_dict()
    assert own and all(torch.equal(v, full[k]) for k, v in own.items())
    del full[next(k for k in full if k.startswith("stem"))]  # a real mismatch still fails, naming the file
    torch.save(full, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*missing \['stem"):
        load_pretrained(model, f"timm/{arch}", tmp_path / "broken.pth")


def test_swin_takes_a_non_native_image_size():
    model = vision_model("timm/swin_tiny_patch4_window7_224", n_out=3, arch_kwargs={
        "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}).eval()
    assert model.pooled
    if model.input_size is not None:  # a timm whose Swin still asserts its native size (1.0.29): a clear error
        with pytest.raises(ValueError, match=r"built for 224x224 images and fails at 64x64"):
            model(torch.zeros(2, 3, 64, 64))
        return
    with torch.no_grad():
        for size in (64, 72):  # neither a multiple of its 7x7 windows at every stage nor 224
            assert model(torch.zeros(2, 3, size, size)).shape == (2, 3)


def test_a_fixed_size_patch_model_names_the_size_it_takes():
    model = vision_model("timm/pit_ti_224", n_out=2).eval()
    with pytest.raises(ValueError, match=r"'pit_ti_224' was built for 224x224 images and fails at 64x64 \(.*Error.*"
                                         r"'img_size': \(64, 64\)"):
        model(torch.zeros(1, 3, 64, 64))
    assert model.input_size == (224, 224)
    small = vision_model("timm/pit_ti_224", n_out=2, arch_kwargs={"img_size": 64}).eval()  # what the error advises
    with torch.no_grad():
        assert small(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("arch", ["coatnet_nano_rw_224", "hiera_tiny_224"])
def test_a_fixed_size_model_without_a_patch_embedding_image_size_gets_the_clear_error(arch):
    model = vision_model(f"timm/{arch}", n_out=2).eval()  # timm's config says fixed_input_size
    assert model.input_size == (224, 224)
    with torch.no_grad(), pytest.raises(ValueError, match=f"'{arch}' was built for 224x224 images and fails at 96x96"):
        model(torch.zeros(1, 3, 96, 96))


def test_a_patch_model_that_takes_any_size_without_an_option_is_not_refused():
    model = vision_model("timm/xcit_nano_12_p16_224", n_out=2, arch_kwargs={"depth": 2}).eval()
    with torch.no_grad():  # XCiT has no dynamic_img_size and works at any multiple of its patch size
        assert model(torch.zeros(1, 3, 96, 96)).shape == (1, 2)


def test_keys_of_a_stateless_module_that_is_not_the_classifier_still_fail(tmp_path):
    full = timm.create_model("vit_tiny_patch16_224", depth=1).state_dict()
    full["norm_pre.weight"] = torch.full((192,), 5.0)  # the body's norm_pre is an Identity: these would be lost
    torch.save(full, tmp_path / "vit.pth")
    model = vision_model("timm/vit_tiny_patch16_224", n_out=2, arch_kwargs={"depth": 1})
    with pytest.raises(ValueError, match=r"vit\.pth.*unexpected \['norm_pre.weight'\]"):
        load_pretrained(model, "timm/vit_tiny_patch16_224", tmp_path / "vit.pth")


def test_distilled_deit_pools_its_class_and_distillation_tokens():
    model = vision_model("timm/deit_tiny_distilled_patch16_224", n_out=2).eval()
    assert model.pooled and model.num_features == 192
    with torch.no_grad():
        tokens = model.body.forward_features(torch.zeros(1, 3, 64, 64))
        assert torch.allclose(model.body(torch.zeros(1, 3, 64, 64)), (tokens[:, 0] + tokens[:, 1]) / 2)
        assert model(torch.zeros(2, 3, 72, 72)).shape == (2, 2)
    _groups_cover(model)


@pytest.mark.parametrize("arch,expected", [("resnt18", "resnet18"), ("convnxt_atto", "timm/convnext_atto"),
                                           ("timm/convnxt_atto", "timm/convnext_atto")])
def test_misspelled_names_suggest_each_name_once_as_it_is_accepted(arch, expected):
    with pytest.raises(ValueError, match="close names") as info:
        vision_model(arch, n_out=2)
    names = str(info.value).split("close names: ")[1].split(". Use")[0].split(", ")
    assert expected in names and len(names) == len({n.removeprefix("timm/") for n in names})
    assert "timm:" not in str(info.value)
    for name in names:
        assert pretrained_stats(name)  # each one resolves as written


def test_a_bad_pretrained_tag_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'resnet18'.*'not_a_tag'.*a1_in1k.*tv_in1k"):
        vision_model("resnet18.not_a_tag", n_out=2)
    assert vision_model("timm/resnet18.a1_in1k", n_out=2).num_features == 512


def test_cut_keeps_a_last_child_that_is_not_a_classifier():
    class Net(nn.Module):
        def __init__(self, last: nn.Module):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2)
            self.last = last

        def forward(self, x):
            return self.last(self.stem(x))
    block = vision_model(lambda: Net(nn.Sequential(nn.Conv2d(8, 12, 3), nn.BatchNorm2d(12), nn.ReLU())), n_out=2)
    assert list(block.body._modules) == ["stem", "last"] and block.num_features == 12
    pool = vision_model(lambda: Net(nn.MaxPool2d(2)), n_out=2)
    assert list(pool.body._modules) == ["stem", "last"] and pool.num_features == 8
    classifier = vision_model(lambda: Net(nn.Sequential(nn.Flatten(), nn.Linear(8, 5))), n_out=2)
    assert list(classifier.body._modules) == ["stem"]


def test_url_only_timm_weights_offline_name_the_file_and_never_download(tmp_path, monkeypatch):
    downloads = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *a, **k: downloads.append(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    url = timm.models.get_pretrained_cfg("legacy_seresnet18").url
    assert url and not timm.models.get_pretrained_cfg("legacy_seresnet18").hf_hub_id  # only at a URL
    model = vision_model("timm/legacy_seresnet18", n_out=2)
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    with pytest.raises(PretrainedWeightsNotFound, match=r"HF_HUB_OFFLINE=1") as info:
        load_pretrained(model, "timm/legacy_seresnet18")
    assert str(cached) in str(info.value) and url in str(info.value) and not downloads
    torch.manual_seed(4)
    full = timm.create_model("legacy_seresnet18").state_dict()
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    load_pretrained(model, "timm/legacy_seresnet18")
    assert all(torch.equal(v, full[k]) for k, v in model.body.state_dict().items()) and not downloads
