"""Masks and points on the GPU: the sample is resident on the device (images, uint8 masks, float points), and
augmentation on the device moves them exactly as on the CPU for one seed. Run on the lent GPU:
`pytest -m gpu tests/gpu/test_segmentation_gpu.py` (not run on this branch: its author had no device time)."""
from pathlib import Path

import pytest
import torch

from learnkit.vision import PointsDataBunch, SegmentationDataBunch, aug_transforms

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "segmentation-sample"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def build(kind, device):
    tfms = aug_transforms(max_rotate=30, max_lighting=0.0, mode="nearest", seed=0)
    if kind == "masks":
        return SegmentationDataBunch.from_folder(SAMPLE / "segmentation", mode="L", seed=0, batch_size=64,
                                                 batch_tfms=tfms, normalize=None, device=device, verbose=False)
    return PointsDataBunch.from_csv(SAMPLE / "keypoints" / "points.csv", mode="L", seed=0, batch_size=64,
                                    batch_tfms=tfms, normalize=None, device=device, verbose=False)


@pytest.mark.parametrize("kind", ["masks", "points"])
def test_resident_on_the_gpu_and_augmented_like_the_cpu(kind):
    gpu, cpu = build(kind, "cuda"), build(kind, "cpu")
    assert gpu.loader_kind == "resident" and gpu.train_dl.tensors[1].device.type == "cuda"
    assert gpu.train_dl.tensors[1].dtype == (torch.uint8 if kind == "masks" else torch.float32)
    (xg, yg), (xc, yc) = gpu.one_batch("train"), cpu.one_batch("train")
    assert yg.device.type == "cuda" and yg.dtype == yc.dtype
    if kind == "masks":
        assert (yg.cpu() != yc).float().mean() < 1e-3  # nearest sampling: rare ties at exact pixel borders
    else:
        assert torch.allclose(yg.cpu(), yc, atol=1e-4)
