"""unet_learner on CUDA: bf16 autocast and channels_last train a U-Net whose masks improve, on the device; predict and
the ONNX-free serving path give the mask. Run on the lent GPU: `pytest -m gpu tests/gpu/test_unet_gpu.py`."""
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_unet_trains_in_bf16_channels_last_on_cuda():
    pytest.importorskip("timm")
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from test_unet import seg_data
    from learnkit.vision.learner import unet_learner

    torch.manual_seed(0)
    data, x, _ = seg_data(n=256, size=64, batch_size=32)
    learn = unet_learner(data.to("cuda"), "resnet18", pretrained=False, progress=False)
    assert learn.amp_dtype == torch.bfloat16
    assert learn.model.head.weight.is_contiguous(memory_format=torch.channels_last)
    before = learn.validate()["mean_iou"]
    learn.fit_one_cycle(8, 3e-3)
    after = learn.validate()
    assert after["mean_iou"] > max(0.6, before + 0.2), (before, after)
    mask, _, probs = learn.predict(x[-1])
    assert mask.shape == (64, 64) and probs.shape == (3, 64, 64)
