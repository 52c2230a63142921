"""ClassificationInterpretation: a classifier's predictions on one loader and ways to look at them (confusion
matrix, most confused pairs, top losses, a classification report, pictures). Modality-free: the input block draws
its own items (`x_block.show`: an image, a text), so vision and text use this one class."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from learnkit.data.blocks import CategoryBlock
from learnkit.data.bunch import DataBunch
from learnkit.learner.confusion import confusion_matrix
from learnkit.learner.learner import Learner

__all__ = ["ClassificationInterpretation", "grid"]


def grid(n: int, ncols: int | None, figsize: Any) -> tuple[Any, Any]:
    """A figure with `n` axes in a near-square grid (the rest hidden): (figure, the n axes)."""
    import matplotlib.pyplot as plt

    ncols = ncols or max(1, min(n, int(math.ceil(math.sqrt(n)))))
    nrows = max(1, int(math.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (2.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


class ClassificationInterpretation:
    """Predictions of a single-label classifier on one loader, kept on the CPU, and ways to look at them.

    `losses` is the per-item cross-entropy of the raw outputs (`F.cross_entropy(..., reduction="none")`),
    whatever loss the learner trains with (label smoothing, MixUp): it says how wrong each prediction is.
    Only a `CategoryBlock` target is supported; other targets raise a `TypeError`.

    Args:
        data: the `DataBunch` (for the vocab, `transfer` and `x_block.show`).
        dl: the loader the outputs come from; it must yield the same items in the same order again.
        outputs: raw model outputs (logits), (N, n_classes).
        targets: class indices, (N,).

    Example:
        >>> interp = ClassificationInterpretation.from_learner(learn)
        >>> interp.most_confused()[:3]
        [('cat', 'dog', 7), ('dog', 'cat', 4), ('bird', 'plane', 2)]
        >>> fig = interp.plot_top_losses(9)
    """

    def __init__(self, data: DataBunch, dl: Any, outputs: torch.Tensor, targets: torch.Tensor):
        if not isinstance(data.y_block, CategoryBlock):
            raise TypeError(f"ClassificationInterpretation needs a single-label CategoryBlock target; this data's "
                            f"target block is {data.y_block!r}. For other targets use learn.get_preds() directly.")
        self.data, self.dl = data, dl
        self.classes: list[Any] = list(data.classes or [])
        self.outputs = outputs.detach().float().cpu()
        self.targets = targets.detach().long().cpu()
        self.probs = data.y_block.activation(self.outputs)
        self.preds = self.probs.argmax(-1)
        self.losses = F.cross_entropy(self.outputs, self.targets, reduction="none")

    @classmethod
    def from_learner(cls, learn: Learner, dl: Any = None) -> "ClassificationInterpretation":
        """Run `learn.model` over `dl` (default: the validation loader) and keep the results."""
        dl = dl if dl is not None else learn.data.valid_dl
        if isinstance(getattr(dl, "sampler", None), torch.utils.data.RandomSampler):
            raise ValueError("ClassificationInterpretation: the loader shuffles, so items cannot be found again "
                             "by position; use learn.data.valid_dl or a loader with shuffle=False")
        was_training = learn.model.training
        try:
            outputs, targets = learn.get_preds(dl, activation=False)
        finally:
            learn.model.train(was_training)
        if targets is None:
            raise ValueError("ClassificationInterpretation: the loader yields no targets; it needs labelled items")
        return cls(learn.data, dl, outputs, targets)

    # ------------------------------------------------------------------ numbers
    def confusion_matrix(self) -> torch.Tensor:
        """(n_classes, n_classes) int64 counts: rows are the actual classes, columns the predicted ones."""
        return confusion_matrix(self.preds, self.targets, len(self.classes))

    def most_confused(self, min_val: int = 1) -> list[tuple[Any, Any, int]]:
        """(actual, predicted, count) for every off-diagonal cell with count >= min_val, largest first."""
        cm = self.confusion_matrix()
        cells = [(self.classes[i], self.classes[j], int(cm[i, j])) for i in range(len(self.classes))
                 for j in range(len(self.classes)) if i != j and cm[i, j] >= min_val]
        return sorted(cells, key=lambda c: -c[2])  # stable: ties keep (actual, predicted) order

    def top_losses(self, k: int = 9, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses, indices into the loader's items) of the k highest (or lowest) per-item losses."""
        return self.losses.topk(min(k, len(self.losses)), largest=largest)

    def top_losses_table(self, k: int = 9) -> list[dict[str, Any]]:
        """The k items with the highest loss as rows: the decoded input (`x_block.decode`: a text, or the tensor),
        actual and predicted label, the probability of the prediction, the loss."""
        losses, indices = self.top_losses(k)
        items = self.items(indices.tolist())
        rows = []
        for x, loss, i in zip(items, losses.tolist(), indices.tolist()):
            pred, actual = int(self.preds[i]), int(self.targets[i])
            rows.append({"input": self.data.x_block.decode(x), "actual": self.classes[actual],
                         "predicted": self.classes[pred], "probability": float(self.probs[i, pred]), "loss": loss})
        return rows

    def classification_report(self, digits: int = 3) -> str:
        """Precision, recall, F1 and support per class, then accuracy and macro averages (sklearn's layout)."""
        cm = self.confusion_matrix().double()
        tp, support = cm.diag(), cm.sum(1)
        precision = tp / cm.sum(0).clamp_min(1)
        recall = tp / support.clamp_min(1)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        width = max([len(str(v)) for v in self.classes] + [12])
        lines = [f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}", ""]
        for i, name in enumerate(self.classes):
            lines.append(f"{str(name):>{width}} {precision[i]:>10.{digits}f} {recall[i]:>10.{digits}f} "
                         f"{f1[i]:>10.{digits}f} {int(support[i]):>10}")
        total = int(support.sum())
        acc = float(tp.sum() / max(1, total))
        lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {acc:>10.{digits}f} {total:>10}",
                  f"{'macro avg':>{width}} {precision.mean():>10.{digits}f} {recall.mean():>10.{digits}f} "
                  f"{f1.mean():>10.{digits}f} {total:>10}"]
        return "\n".join(lines)

    def print_classification_report(self, digits: int = 3) -> None:
        print(self.classification_report(digits))

    # ------------------------------------------------------------------ pictures
    def plot_confusion_matrix(self, normalize: bool = False, cmap: str = "Blues", figsize: Any = None) -> Any:
        """Draw the confusion matrix (rows actual, columns predicted) with the count (or the share of the
        row when `normalize`) in each cell. Returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        cm = self.confusion_matrix().double()
        if normalize:
            cm = cm / cm.sum(1, keepdim=True).clamp_min(1)
        n = len(self.classes)
        fig, ax = plt.subplots(figsize=figsize or (max(4.0, 0.6 * n + 2), max(4.0, 0.6 * n + 2)))
        ax.imshow(cm.numpy(), interpolation="nearest", cmap=cmap)
        ax.set_title("Confusion matrix" + (" (normalized)" if normalize else ""))
        names = [str(v) for v in self.classes]
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
        threshold = float(cm.max()) / 2
        for i in range(n):
            for j in range(n):
                value = float(cm[i, j])
                ax.text(j, i, f"{value:.2f}" if normalize else str(int(value)), ha="center", va="center",
                        color="white" if value > threshold else "black")
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Actual")
        fig.tight_layout()
        return fig

    def items(self, indices: Sequence[int]) -> torch.Tensor | list[torch.Tensor]:
        """The inputs (first input, as the model saw them: batch transforms in eval mode) of the items at
        `indices`, found by iterating the loader again in order: one stacked tensor, or a list when their shapes
        differ (texts padded to different lengths)."""
        wanted = [int(i) for i in indices]
        found: dict[int, torch.Tensor] = {}
        start = 0
        for batch in self.dl:
            n = len(batch[0])
            here = [i for i in wanted if start <= i < start + n and i not in found]
            if here:
                batch = self.data.transfer(batch, training=False)
                y = batch[self.data.n_inp].cpu()
                for i in here:
                    if int(y[i - start]) != int(self.targets[i]):
                        raise RuntimeError(f"ClassificationInterpretation: item {i} has another target on a second "
                                           f"pass over the loader; the loader must yield items in a fixed order")
                    found[i] = batch[0][i - start].detach().cpu()
            start += n
            if len(found) == len(set(wanted)):
                break
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise IndexError(f"items {missing[:5]} are beyond the loader's {start} items")
        items = [found[i] for i in wanted]
        return torch.stack(items) if len({tuple(t.shape) for t in items}) <= 1 else items

    def plot_top_losses(self, k: int = 9, ncols: int | None = None, figsize: Any = None) -> Any:
        """Draw the k items with the highest loss, titled 'predicted/actual/loss/probability of actual'."""
        losses, indices = self.top_losses(k)
        images = self.items(indices.tolist())
        fig, axes = grid(len(indices), ncols, figsize)
        for ax, img, loss, i in zip(axes, images, losses.tolist(), indices.tolist()):
            self.data.x_block.show(img, ax)
            pred, actual = int(self.preds[i]), int(self.targets[i])
            ax.set_title(f"{self.classes[pred]}/{self.classes[actual]}/{loss:.2f}/{float(self.probs[i, actual]):.2f}",
                         fontsize=9)
        fig.suptitle("predicted/actual/loss/probability of actual", fontsize=10)
        fig.tight_layout()
        return fig
