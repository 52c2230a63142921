"""Segmentation losses over (N, C, H, W) class scores and (N, H, W) integer masks with a void label:
cross-entropy, soft Dice, and their sum (`CrossEntropyDiceLoss`, `unet_learner`'s default; see its docstring)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossEntropyDiceLoss", "DiceLoss", "SegmentationCrossEntropy"]


def _check(pred: torch.Tensor, target: torch.Tensor, who: str) -> None:
    if pred.ndim != target.ndim + 1 or pred.shape[0] != target.shape[0] or pred.shape[2:] != target.shape[1:] \
            or target.is_floating_point():
        raise ValueError(f"{who} needs class scores (N, C, H, W) and integer masks (N, H, W) of the same size, got "
                         f"pred {tuple(pred.shape)} and {str(target.dtype).replace('torch.', '')} target "
                         f"{tuple(target.shape)}")


class SegmentationCrossEntropy(nn.Module):
    """Per-pixel cross-entropy, mean over the non-ignored pixels (`F.cross_entropy(ignore_index=...)`), in float32."""

    def __init__(self, ignore_index: int = 255, weight: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(pred, target, type(self).__name__)
        return F.cross_entropy(pred.float(), target.long(), weight=self.weight, ignore_index=self.ignore_index)


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss: 1 - mean over classes of (2 Σ p·t + smooth) / (Σ p + Σ t + smooth), with p the
    softmax and t the one-hot target, summed over the whole batch; ignored pixels count in neither. Classes absent
    from the batch's targets are left out of the mean (as segmentation_models_pytorch): their soft Dice would only
    say "predict nothing", which the cross-entropy term already says, and would dominate small batches.

    Example:
        >>> DiceLoss()(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(pred, target, type(self).__name__)
        n = pred.shape[1]
        target = target.long()
        valid = (target != self.ignore_index).unsqueeze(1)  # (N, 1, H, W)
        probs = F.softmax(pred.float(), dim=1) * valid
        onehot = F.one_hot(torch.where(valid.squeeze(1), target, 0).clamp(0, n - 1), n).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        inter, present = (probs * onehot).sum(dims), onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (probs.sum(dims) + present + self.smooth)
        keep = (present > 0).float()
        return 1 - (dice * keep).sum() / keep.sum().clamp_min(1)


class CrossEntropyDiceLoss(nn.Module):
    """`SegmentationCrossEntropy + dice_weight * DiceLoss` (the same ignore_index for both).

    Example:
        >>> learn = unet_learner(data, "resnet34", loss_fn=CrossEntropyDiceLoss(dice_weight=0.5))
    """

    def __init__(self, ignore_index: int = 255, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.ce, self.dice = SegmentationCrossEntropy(ignore_index), DiceLoss(ignore_index, smooth)
        self.ignore_index, self.dice_weight = ignore_index, dice_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(pred, target) + self.dice_weight * self.dice(pred, target)
