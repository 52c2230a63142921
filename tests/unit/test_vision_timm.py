"""vision_model / vision_learner on real timm architectures, randomly initialised (timm in the dev extra): the body
cut and layer groups for ConvNeXt, EfficientNet and ViT/DeiT (any image size: padded to the patch size), timm's
own normalization statistics, and its weights from the Hugging Face cache (offline) or one clear error."""
from __future__ import annotations

import pytest
import torch

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
