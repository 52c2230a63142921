"""Images: predictions drawn next to their inputs (`show_results`) and test-time augmentation (`tta`).
`ClassificationInterpretation` (confusion matrix, top losses, report) is modality-free, in learner/interpret.py,
and re-exported here."""
from __future__ import annotations

import warnings
from typing import Any

import torch

from learnkit.core.random import get_rng_state, set_rng_state
from learnkit.learner.interpret import ClassificationInterpretation, grid
from learnkit.learner.inference import inference_forward
from learnkit.learner.learner import Learner

__all__ = ["ClassificationInterpretation", "SegmentationInterpretation", "show_results", "tta"]


def show_results(learn: Learner, n: int = 9, dl: Any = None, ncols: int | None = None, figsize: Any = None) -> Any:
    """Draw the first `n` items of `dl` (default: validation) titled 'actual/predicted', green when right
    and red when wrong. Returns the matplotlib figure.

    Example:
        >>> fig = show_results(learn, n=6)
    """
    dl = dl if dl is not None else learn.data.valid_dl
    data, y_block = learn.data, learn.data.y_block
    if y_block is None:
        raise ValueError("show_results: the data has no target block, so there is nothing to compare with")
    xs, ys, probs = [], [], []
    was_training = learn.model.training
    learn.model.eval()
    try:
        with torch.no_grad():
            for batch in dl:
                batch = data.transfer(batch, training=False)
                xs.append(batch[0].cpu())
                ys.append(batch[data.n_inp].cpu())
                probs.append(inference_forward(learn.model, batch[:data.n_inp], learn.amp_dtype, y_block.activation).cpu())
                if sum(len(x) for x in xs) >= n:
                    break
    finally:
        learn.model.train(was_training)
    if not xs:
        raise ValueError("show_results: the loader is empty")
    x, y, p = torch.cat(xs)[:n], torch.cat(ys)[:n], torch.cat(probs)[:n]
    fig, axes = grid(len(x), ncols, figsize)
    if y.ndim == 3 and not y.is_floating_point() or y.ndim == 3 and y.shape[-1] == 2:  # masks or keypoints
        _show_dense(axes, x, y, p, y_block)
        fig.tight_layout()
        return fig
    for ax, xi, yi, pi in zip(axes, x, y, p):
        data.x_block.show(xi, ax)
        actual, predicted = y_block.decode(yi), y_block.decode_prediction(pi)[0]
        ax.set_title(f"{y_block.title(yi)}/{predicted}", fontsize=9,
                     color="green" if actual == predicted else "red")
    fig.tight_layout()
    return fig


def _show_dense(axes: Any, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor, y_block: Any) -> None:
    """Segmentation: the predicted mask over the image, titled with the item's pixel accuracy; keypoints: targets
    as green dots, predictions as red crosses."""
    from learnkit.vision.show_targets import show_mask_overlay, show_points_overlay

    ignore = getattr(y_block, "ignore_index", 255)
    for ax, xi, yi, pi in zip(axes, x, y, p):
        if yi.is_floating_point():
            show_points_overlay(ax, xi, yi, color="lime", marker="o")
            show_points_overlay(ax, xi, pi, color="red", marker="x")
            ax.set_title(f"mean error {float((pi - yi).abs().mean()):.3f}", fontsize=9)
        else:
            pred = pi.argmax(0)
            show_mask_overlay(ax, xi, pred, getattr(y_block, "classes", None), ignore_index=ignore)
            keep = yi != ignore
            acc = float((pred[keep] == yi[keep]).float().mean()) if keep.any() else float("nan")
            ax.set_title(f"pixel accuracy {acc:.2f}", fontsize=9)


def _accuracy(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> float | None:
    if not targets.is_floating_point() and targets.ndim == 1 and probs.ndim == 2:
        return float((probs.argmax(-1) == targets).float().mean())
    if targets.is_floating_point() and targets.shape == probs.shape:  # multi-label: every (item, label) decision
        return float(((probs >= threshold) == targets.bool()).float().mean())
    return None


def tta(learn: Learner, dl: Any = None, n: int = 4, beta: float | None = 0.25) -> dict[str, Any]:
    """Test-time augmentation: predictions averaged over `n` augmented passes, mixed with the plain pass.

    The augmented passes run the batch transforms in training mode (`data.transfer(batch, training=True)`,
    which turns random augmentation on) while the model stays in eval mode, under no_grad and autocast.
    As in fastai, the result is `beta * plain + (1 - beta) * mean(augmented)` (with `beta=None`: the mean
    of the augmented passes alone). The random generators the augmentation draws from (the global ones
    and every `generator` attribute of `learn.data.batch_tfms`) and the transforms' training flags are
    restored afterwards, so TTA leaves no trace (and calling it twice gives the same result).

    Returns:
        {"accuracy": plain accuracy, "tta_accuracy": TTA accuracy, "probs": TTA probabilities,
         "plain_probs": plain probabilities, "targets": targets}. Accuracy is arg-max accuracy for class
        indices, per-label accuracy at the block's threshold for multi-label targets, None otherwise.

    Example:
        >>> out = tta(learn, n=4)
        >>> print(f"{out['accuracy']:.3f} -> {out['tta_accuracy']:.3f}")
    """
    if n < 1:
        raise ValueError(f"tta(n={n}): n must be at least 1")
    if beta is not None and not 0 <= beta <= 1:
        raise ValueError(f"tta(beta={beta}): beta must be in [0, 1] (or None for the augmented mean only)")
    data, y_block = learn.data, learn.data.y_block
    if y_block is None:
        raise ValueError("tta: the data has no target block")
    dl = dl if dl is not None else data.valid_dl
    modules = list(data.batch_tfms.modules())
    flags, was_training = [m.training for m in modules], learn.model.training
    generators = [m.generator for m in modules if isinstance(getattr(m, "generator", None), torch.Generator)]
    if isinstance(getattr(dl, "generator", None), torch.Generator):
        generators.append(dl.generator)
    generators = list({id(g): g for g in generators}.values())
    state = get_rng_state(generators)
    try:
        plain, targets = learn.get_preds(dl)
        learn.model.eval()
        total = torch.zeros_like(plain)
        with torch.no_grad():
            for _ in range(n):
                outs = []
                for batch in dl:
                    batch = data.transfer(batch, training=True)
                    outs.append(inference_forward(learn.model, batch[:data.n_inp], learn.amp_dtype,
                                                  y_block.activation).cpu())
                total += torch.cat(outs)
    finally:
        set_rng_state(state, generators)
        for m, flag in zip(modules, flags):
            m.training = flag
        learn.model.train(was_training)
    augmented = total / n
    if torch.equal(augmented, plain):
        warnings.warn(f"tta: the batch transforms ({[type(m).__name__ for m in data.batch_tfms]}) changed nothing "
                      f"in training mode: the data has no random augmentation, so TTA equals the plain prediction. "
                      f"Add augmentation batch transforms to the DataBlock to use TTA.", stacklevel=2)
    probs = augmented if beta is None else beta * plain + (1 - beta) * augmented
    threshold = float(getattr(y_block, "threshold", 0.5))
    return {"accuracy": None if targets is None else _accuracy(plain, targets, threshold),
            "tta_accuracy": None if targets is None else _accuracy(probs, targets, threshold),
            "probs": probs, "plain_probs": plain, "targets": targets}


class SegmentationInterpretation:
    """Per-class IoU and Dice over a whole loader and the images with the highest loss.

    Attributes: `confusion` ((n, n) pixel counts, rows: target, columns: prediction, void pixels left out),
    `losses` (one per item, the learner's loss on that item alone), `classes`.

    Example:
        >>> interp = SegmentationInterpretation.from_learner(learn)
        >>> interp.iou_table()            # [(code, iou, dice, target pixels), ...]
        >>> interp.plot_top_losses(4)
    """

    def __init__(self, learn: Learner, dl: Any, confusion: torch.Tensor, losses: torch.Tensor):
        self.learn, self.dl, self.confusion, self.losses = learn, dl, confusion, losses
        classes = getattr(learn.data.y_block, "classes", None)
        self.classes = list(classes) if classes is not None else list(range(confusion.shape[0]))

    @classmethod
    def from_learner(cls, learn: Learner, dl: Any = None) -> "SegmentationInterpretation":
        from learnkit.learner.metrics import SegmentationConfusion

        dl = dl if dl is not None else learn.data.valid_dl
        data = learn.data
        metric = SegmentationConfusion(getattr(data.y_block, "ignore_index", 255))
        losses = []
        was_training = learn.model.training
        learn.model.eval()
        try:
            with torch.no_grad():
                for batch in dl:
                    batch = data.transfer(batch, training=False)
                    out = inference_forward(learn.model, batch[:data.n_inp], learn.amp_dtype)
                    target = batch[data.n_inp]
                    metric.update(out, target)
                    losses += [learn.loss_fn(out[i:i + 1], target[i:i + 1]).float().cpu() for i in range(len(out))]
        finally:
            learn.model.train(was_training)
        return cls(learn, dl, metric.matrix().cpu(), torch.stack(losses))

    def iou_table(self) -> list[tuple[Any, float, float, int]]:
        """(code, IoU, Dice, target pixels) per class; NaN where a class is neither in the targets nor predicted."""
        from learnkit.learner.metrics import dice_per_class, iou_per_class

        iou, dice = iou_per_class(self.confusion), dice_per_class(self.confusion)
        pixels = self.confusion.sum(1)
        return [(c, float(iou[i]), float(dice[i]), int(pixels[i])) for i, c in enumerate(self.classes)]

    def top_losses(self, k: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses, item indices in the loader's order) of the k worst items."""
        return self.losses.topk(min(k, len(self.losses)))

    def plot_top_losses(self, k: int = 4, figsize: Any = None) -> Any:
        """Each of the k worst items: the target mask and the predicted mask over the image. Returns the figure."""
        import matplotlib.pyplot as plt
        from learnkit.vision.show_targets import show_mask_overlay

        losses, index = self.top_losses(k)
        items = {int(i) for i in index}
        found: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        data, start = self.learn.data, 0
        with torch.no_grad():
            for batch in self.dl:
                n = len(batch[0])
                wanted = [i - start for i in items if start <= i < start + n]
                if wanted:
                    batch = data.transfer(batch, training=False)
                    out = inference_forward(self.learn.model.eval(), batch[:data.n_inp], self.learn.amp_dtype)
                    for j in wanted:
                        found[start + j] = (batch[0][j].cpu(), batch[data.n_inp][j].cpu(), out[j].argmax(0).cpu())
                start += n
        fig, axes = plt.subplots(len(index), 2, figsize=figsize or (6, 3 * len(index)), squeeze=False)
        ignore = getattr(data.y_block, "ignore_index", 255)
        for row, (loss, i) in enumerate(zip(losses.tolist(), index.tolist())):
            image, target, pred = found[i]
            show_mask_overlay(axes[row][0], image, target, self.classes, ignore_index=ignore)
            show_mask_overlay(axes[row][1], image, pred, self.classes, ignore_index=ignore)
            axes[row][0].set_title(f"item {i}: target", fontsize=9)
            axes[row][1].set_title(f"predicted (loss {loss:.3f})", fontsize=9)
        fig.tight_layout()
        return fig
