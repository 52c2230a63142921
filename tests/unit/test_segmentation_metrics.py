"""Segmentation metrics and losses against a NumPy / scikit-learn computation on random masks with void pixels and
an absent class; metrics accumulate over the whole set (not a mean of per-batch values)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from learnkit.learner.metrics import (MeanDice, MeanIoU, PixelAccuracy, SegmentationConfusion, as_metrics,
                                      default_metrics, dice_per_class, iou_per_class)
from learnkit.vision.losses import CrossEntropyDiceLoss, DiceLoss, SegmentationCrossEntropy

N_CLASSES, IGNORE = 5, 255


def _random_set(seed=0, n=6, size=12):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, N_CLASSES - 1, (n, size, size), generator=g)  # class 4 never in the targets
    target[torch.rand(target.shape, generator=g) < 0.2] = IGNORE
    pred = torch.randn(n, N_CLASSES, size, size, generator=g)
    pred[:, 3] -= 10  # class 3 is (almost) never predicted; class 4 is predicted but absent
    target[target == 2] = 1  # class 2: neither in targets ...
    pred[:, 2] -= 100  # ... nor predicted: its IoU is undefined (NaN) and left out of the mean
    return pred, target


def _reference(pred, target):
    y, p = target.reshape(-1).numpy(), pred.argmax(1).reshape(-1).numpy()
    keep = y != IGNORE
    cm = confusion_matrix(y[keep], p[keep], labels=list(range(N_CLASSES))).astype(float)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(cm.sum(0) + cm.sum(1) > 0, 2 * tp / (cm.sum(0) + cm.sum(1)), np.nan)
    return cm, tp.sum() / cm.sum(), iou, dice


def _run(metric, pred, target, batch=4):
    metric.reset()
    for i in range(0, len(pred), batch):  # uneven batches: the last one is smaller
        metric.update(pred[i:i + batch], target[i:i + batch])
    return metric.compute()


def test_metrics_match_sklearn_over_the_whole_set():
    pred, target = _random_set()
    cm, acc, iou, dice = _reference(pred, target)
    assert np.isnan(iou[2]) and iou[4] == 0  # absent and never predicted: NaN; predicted but absent: 0
    assert _run(PixelAccuracy(), pred, target).item() == pytest.approx(acc, abs=1e-6)
    assert _run(MeanIoU(), pred, target).item() == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert _run(MeanDice(), pred, target).item() == pytest.approx(np.nanmean(dice), abs=1e-6)
    m = MeanIoU()
    _run(m, pred, target)
    np.testing.assert_array_equal(m.matrix().numpy(), cm)
    np.testing.assert_allclose(iou_per_class(m.matrix()).numpy(), iou, atol=1e-6)
    np.testing.assert_allclose(dice_per_class(m.matrix()).numpy(), dice, atol=1e-6)
    # not a mean of per-batch IoUs (which would differ on this set)
    per_batch = np.mean([np.nanmean(_reference(pred[i:i + 4], target[i:i + 4])[2]) for i in (0, 4)])
    assert abs(per_batch - np.nanmean(iou)) > 1e-4


def test_invalid_target_values_raise_and_shapes_are_checked():
    pred, target = _random_set()
    target[0, 0, 0] = 7  # neither a class nor the void label
    m = MeanIoU()
    m.update(pred, target)
    with pytest.raises(ValueError, match="1 target pixel"):
        m.compute()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        PixelAccuracy().update(pred[:, 0], target)
    m = MeanIoU(ignore_index=None)  # no void label: 255 is then an invalid value
    m.update(pred, _random_set()[1])
    with pytest.raises(ValueError, match="ignore_index None"):
        m.compute()


def test_metrics_resolve_by_name_with_the_blocks_void_label():
    class Masks:  # what MaskBlock exposes to the metrics
        ignore_index = 0

        def default_metrics(self):
            return ["pixel_accuracy", "mean_iou", "dice"]

    metrics = default_metrics(Masks())
    assert [type(m) for m in metrics] == [PixelAccuracy, MeanIoU, MeanDice]
    assert all(m.ignore_index == 0 for m in metrics) and isinstance(metrics[0], SegmentationConfusion)
    assert [m.name for m in as_metrics([MeanIoU])] == ["mean_iou"]


def _dice_reference(pred, target, smooth=1.0):
    p = F.softmax(pred.double(), 1).numpy()
    y = target.numpy()
    valid = y != IGNORE
    scores = []
    for c in range(pred.shape[1]):
        t = (y == c) & valid
        if t.sum() == 0:
            continue  # classes absent from the batch's targets are left out
        pc = p[:, c] * valid
        scores.append((2 * (pc * t).sum() + smooth) / (pc.sum() + t.sum() + smooth))
    return 1 - np.mean(scores)


def test_losses_match_references_and_ignore_void_pixels():
    pred, target = _random_set(1)
    assert DiceLoss()(pred, target).item() == pytest.approx(_dice_reference(pred, target), abs=1e-5)
    keep = target != IGNORE
    ce = F.cross_entropy(pred.permute(0, 2, 3, 1)[keep], target[keep])
    assert SegmentationCrossEntropy()(pred, target).item() == pytest.approx(ce.item(), abs=1e-5)
    both = CrossEntropyDiceLoss(dice_weight=0.5)(pred, target).item()
    assert both == pytest.approx(ce.item() + 0.5 * _dice_reference(pred, target), abs=1e-5)
    # void pixels change nothing, whatever the model says there
    changed = torch.where(keep.unsqueeze(1), pred, torch.full_like(pred, 50.0))
    assert CrossEntropyDiceLoss()(changed, target).item() == pytest.approx(CrossEntropyDiceLoss()(pred, target).item(),
                                                                           abs=1e-5)
    # a perfect prediction: Dice loss near 0; gradients flow
    perfect = F.one_hot(target.clamp(max=N_CLASSES - 1), N_CLASSES).permute(0, 3, 1, 2).float() * 40
    assert DiceLoss()(perfect, target).item() < 1e-3
    p = pred.clone().requires_grad_()
    CrossEntropyDiceLoss()(p, target).backward()
    assert p.grad.abs().sum() > 0 and p.grad.permute(0, 2, 3, 1)[~keep].abs().max() == 0
    with pytest.raises(ValueError, match="integer masks"):
        DiceLoss()(pred, target.float())
