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

__all__ = ["ClassificationInterpretation", "show_results", "tta"]


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
    for ax, xi, yi, pi in zip(axes, x, y, p):
        data.x_block.show(xi, ax)
        actual, predicted = y_block.decode(yi), y_block.decode_prediction(pi)[0]
        ax.set_title(f"{y_block.title(yi)}/{predicted}", fontsize=9,
                     color="green" if actual == predicted else "red")
    fig.tight_layout()
    return fig
