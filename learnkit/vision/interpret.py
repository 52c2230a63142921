"""Images: predictions drawn next to their inputs (`show_results`). `ClassificationInterpretation` (confusion
matrix, top losses, report) and test-time augmentation (`tta`) are modality-free, in learner/interpret.py and
learner/tta.py, and re-exported here."""
from __future__ import annotations

from typing import Any

import torch

from learnkit.learner.interpret import ClassificationInterpretation, grid
from learnkit.learner.inference import inference_forward
from learnkit.learner.learner import Learner
from learnkit.learner.tta import tta

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
