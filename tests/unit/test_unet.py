"""U-Net over the vision zoo: stage discovery, output size, ICNR upsampling, layer groups and freezing, training,
predict / export / load_learner / ONNX for segmentation. Tiny bodies (timm's `test_*` models), 32-96 px."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learnkit.core.registry import create_model, model_spec
from learnkit.data.blocks import TensorBlock, TransformBlock, register_block
from learnkit.data.datablock import DataBlock
from learnkit.learner.metrics import MeanIoU, PixelAccuracy
from learnkit.vision.learner import unet_learner
from learnkit.vision.losses import CrossEntropyDiceLoss
from learnkit.vision.unet import DynamicUnet, PixelShuffleICNR, unet_model

pytest.importorskip("timm")


@register_block
class StandInMasks(TransformBlock):
    """What the segmentation target block (MaskBlock, vision/segment.py) gives the model side: codes as classes,
    a void label, softmax over channels, the (H, W) mask as the decoded prediction."""

    def __init__(self, codes=("bg", "a", "b"), ignore_index=255):
        self.codes = self.classes = list(codes)
        self.ignore_index = ignore_index

    def encode(self, value):
        return torch.as_tensor(value, dtype=torch.long)

    def activation(self, output):
        return F.softmax(output.float(), dim=1)

    def decode_prediction(self, probs):
        mask = probs.argmax(0)
        return mask, mask

    def default_metrics(self):
        return ["pixel_accuracy", "mean_iou"]

    def to_config(self):
        return {"type": "StandInMasks", "codes": self.codes, "ignore_index": self.ignore_index}

    @classmethod
    def from_config(cls, config):
        return cls(config["codes"], config["ignore_index"])


def seg_data(n=48, size=32, batch_size=8, seed=0):
    """Images whose mask is computable from the pixels: class 1 where red > 0.6, class 2 where green > 0.6 (and
    red not), a void border row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x = F.avg_pool2d(x, 3, 1, 1)
    x = (x - x.mean()) / x.std() * 0.3 + 0.5
    y = torch.where(x[:, 0] > 0.6, 1, torch.where(x[:, 1] > 0.6, 2, 0))
    y[:, 0] = 255
    items = list(range(n))
    block = DataBlock([TensorBlock(), StandInMasks()], get_items=lambda _: items, get_x=lambda i: x[i],
                      get_y=lambda i: y[i], splitter=lambda it: (list(range(int(n * .75))), list(range(int(n * .75), n))))
    return block.databunch(None, batch_size=batch_size, seed=seed), x, y


@pytest.mark.parametrize("arch", ["timm:test_efficientnet", "timm:test_convnext", "resnet18", "efficientnet_lite0"])
def test_output_at_input_size_for_every_body(arch):
    model = unet_model(arch, n_out=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 4, 64, 96) and model.stride == 32
    assert model_spec(create_model("unet_model", arch=arch, n_out=4)) == {
        "name": "unet_model", "kwargs": {"arch": arch, "n_out": 4}}
    with pytest.raises(ValueError, match="not a multiple of the body's stride 32.*64x64"):
        model(torch.randn(1, 3, 48, 64))


def test_stages_found_at_each_halving():
    resnet = unet_model("resnet18", n_out=2)
    assert resnet.skip_channels == [64, 64, 128, 256]  # relu (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16)
    assert [resnet._units[i] for i in resnet._keep] == [resnet.body.relu, resnet.body.layer1, resnet.body.layer2,
                                                          resnet.body.layer3, resnet.body.layer4]
    assert unet_model("timm:test_efficientnet", n_out=2).skip_channels == [16, 24, 32, 48]
    with pytest.raises(ValueError, match="convolutional"):
        unet_model("timm:test_vit", n_out=2)


def test_icnr_pixel_shuffle_starts_as_nearest_neighbour():
    up = PixelShuffleICNR(8, 4)
    out = up(torch.randn(2, 8, 5, 5))
    assert out.shape == (2, 4, 10, 10)
    blocks = out.reshape(2, 4, 5, 2, 5, 2)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))  # every 2x2 group equal: no checkerboard


def test_channel_multiple_widens_the_cross_with_zero_channels_that_change_nothing():
    torch.manual_seed(0)
    plain = unet_model("resnet18", n_out=3).eval()  # fastai's widths: 96 + 3 = 99 channels at full resolution
    wide = unet_model("resnet18", n_out=3, channel_multiple=8).eval()
    assert plain.cross_pad == 0 and plain.res.convs[0][0].in_channels == 99
    assert wide.cross_pad == 5 and wide.res.convs[0][0].in_channels == wide.head.in_channels == 104
    # the plain model's weights in the wide one, zero weights for the added channels: the same function
    state = {}
    for k, v in wide.state_dict().items():
        old = plain.state_dict()[k]
        if v.shape == old.shape:
            state[k] = old
        else:
            pad = torch.ones_like(v) if k.endswith(("running_var", "bn.weight", ".1.weight")) and v.ndim == 1 else \
                torch.zeros_like(v)
            pad[tuple(slice(0, n) for n in old.shape)] = old
            state[k] = pad
    wide.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(wide(x), plain(x), atol=1e-5)
        channels_last = wide.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(channels_last, plain(x), atol=1e-4)
    data, _, _ = seg_data()
    learn = unet_learner(data, "resnet18", pretrained=False, progress=False)  # what the learner builds, and records
    assert learn.model.head.in_channels % 8 == 0
    assert model_spec(learn.model)["kwargs"]["channel_multiple"] == 8


def test_layer_groups_partition_and_pretrained_body_frozen():
    data, _, _ = seg_data()
    learn = unet_learner(data, "efficientnet_lite0", pretrained=True, progress=False)  # weights from the package
    groups = learn.layer_groups
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) == len(list(learn.model.parameters()))
    body_conv = next(m for m in learn.model.body.modules() if isinstance(m, torch.nn.Conv2d))
    assert not body_conv.weight.requires_grad and learn.model.head.weight.requires_grad
    assert learn.pretrained_source and "efficientnet_lite0" in learn.pretrained_source
    assert isinstance(learn.loss_fn, CrossEntropyDiceLoss) and learn.loss_fn.ignore_index == 255
    assert [type(m) for m in learn.metrics] == [PixelAccuracy, MeanIoU]
    learn.unfreeze()
    assert body_conv.weight.requires_grad


def trained_learner():
    torch.manual_seed(0)
    data, x, y = seg_data(n=64)
    learn = unet_learner(data, "timm:test_efficientnet", pretrained=False, progress=False)
    before = learn.validate()["mean_iou"]
    learn.fine_tune(4, base_lr=1e-2, freeze_epochs=1)  # the decoder alone, then everything at discriminative rates
    after = learn.validate()
    assert after["mean_iou"] > max(0.45, before + 0.2), (before, after)
    return learn, after, x, y


def test_fine_tune_learns_masks_and_predict_export_roundtrip(tmp_path):
    learn, after, x, y = trained_learner()
    mask, _, probs = learn.predict(x[60])
    assert mask.shape == (32, 32) and probs.shape == (3, 32, 32) and mask.dtype == torch.int64
    assert torch.allclose(probs.sum(0), torch.ones(32, 32), atol=1e-5)
    from learnkit.export.bundle import load_learner
    learn.export(tmp_path / "bundle")
    predictor = load_learner(tmp_path / "bundle")
    assert isinstance(predictor.model, DynamicUnet)
    masks, batch_probs = predictor.predict_batch([x[60], x[61]])
    assert torch.equal(masks[0], mask) and torch.allclose(batch_probs[0], probs, atol=1e-5)
    from learnkit.vision.interpret import SegmentationInterpretation, show_results
    import matplotlib
    matplotlib.use("Agg")
    interp = SegmentationInterpretation.from_learner(learn)
    table = interp.iou_table()
    assert [row[0] for row in table] == ["bg", "a", "b"]
    assert np.nanmean([row[1] for row in table]) == pytest.approx(after["mean_iou"], abs=1e-5)
    assert sum(row[3] for row in table) == int((y[48:] != 255).sum())
    losses, index = interp.top_losses(3)
    assert losses.tolist() == sorted(interp.losses.tolist(), reverse=True)[:3] and len(interp.losses) == 16
    assert len(interp.plot_top_losses(2).axes) == 4 and len(show_results(learn, n=4).axes) >= 4
    from learnkit.export.graph import ServingModule
    serving = ServingModule.from_learner(learn)  # what export_onnx / export_torch put in the graph
    with torch.no_grad():
        np.testing.assert_allclose(serving(x[60:62])[0].numpy(), probs.numpy(), atol=1e-5)
