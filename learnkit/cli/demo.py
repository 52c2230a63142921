"""`learnkit demo`: train a small CNN on the bundled Fashion-MNIST sample and write its plots, exported model and
run record: the shortest check that an install works end to end.

Example:
    $ python -m learnkit demo --out runs/demo --epochs 3
"""
from __future__ import annotations

import time
from pathlib import Path

from learnkit.cli.args import CliError
from learnkit.cli.record import fingerprint, write_run_record

__all__ = ["demo", "SAMPLE_DIR"]

SAMPLE_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz", "classes.txt")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (after scaling to [0, 1])

# The sample lives in the source checkout next to the package (<repo>/datasets/...), not inside the wheel.
# This file is learnkit/cli/demo.py, so this is <repo>/datasets/...
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "datasets" / "fashion-mnist-sample"
REBUILD = "python datasets/build_fashion_mnist_sample.py  (needs: apt-get install dataset-fashion-mnist)"


def _read_sample(folder: Path) -> tuple[list[str], tuple, tuple]:
    """(classes, (train images, labels), (test images, labels)) from the sample's IDX files; CliError if unusable."""
    from learnkit.data import read_idx
    missing = [name for name in SAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        raise CliError(f"the Fashion-MNIST sample is missing from {folder} (no {', '.join(missing)}); rebuild it "
                       f"from a source checkout with: {REBUILD}")
    try:
        classes = (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
        train = tuple(read_idx(folder / f"train-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1"))
        test = tuple(read_idx(folder / f"t10k-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1"))
    except (OSError, ValueError, EOFError) as e:
        raise CliError(f"cannot read the sample in {folder} ({type(e).__name__}: {e}); rebuild it with: "
                       f"{REBUILD}") from None
    if len(classes) != 10 or train[0].shape[1:] != (28, 28) or len(train[0]) != len(train[1]) \
            or len(test[0]) != len(test[1]):
        raise CliError(f"the sample in {folder} has unexpected shapes (images {tuple(train[0].shape)}, "
                       f"{len(classes)} classes); rebuild it with: {REBUILD}")
    return classes, train, test


def _output_folder(out: Path) -> Path:
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a folder; pass another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create the output folder {out}: {e.strerror or e}", status=1) from None
    return out


def demo(out: Path, epochs: int = 3, seed: int = 0, progress: bool = True) -> int:
    """Train simple_cnn on the Fashion-MNIST sample and write the run's artefacts to `out`. Returns 0; a missing
    or damaged sample is a CliError (exit 2), an output folder that cannot be created one with status 1."""
    start = time.perf_counter()
    classes, (train_x, train_y), (test_x, test_y) = _read_sample(SAMPLE_DIR)
    out = _output_folder(out)

    import matplotlib
    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt
    import torch

    from learnkit.core import create_model, set_seed
    from learnkit.data import CategoryBlock, DataBlock, IndexSplitter, Normalize, TensorBlock
    from learnkit.learner import Learner, ProgressBar, accuracy
    from learnkit.vision.interpret import ClassificationInterpretation

    set_seed(seed)
    # One item list: the training images, then the test images, which are the validation split.
    images, labels = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
    dblock = DataBlock(
        blocks=(TensorBlock(dtype=None), CategoryBlock(vocab=classes)),  # vocab in label order
        get_x=lambda i: images[i].unsqueeze(0),  # (1, 28, 28) uint8; Normalize makes floats on the device
        get_y=lambda i: classes[int(labels[i])],
        splitter=IndexSplitter(range(len(train_x), len(images))),
        batch_tfms=[Normalize(MEAN, STD)])
    data = dblock.databunch(list(range(len(images))), batch_size=32, seed=seed)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=10), metrics=[accuracy], path=out,
                    progress=progress)
    print(f"learnkit demo: {len(train_x)} training and {len(test_x)} test images from {SAMPLE_DIR}, "
          f"device {data.device}, seed {seed}")

    # The sweep gets no progress bar: its bars and table rows would read like training epochs.
    bar = next((cb for cb in learn.callbacks if isinstance(cb, ProgressBar)), None)
    if bar is not None:
        learn.remove_callback(bar)
    suggestions = learn.lr_find(show_plot=False)
    if bar is not None:
        learn.add_callback(bar)
    lr = suggestions.valley
    print(f"lr_find: valley {suggestions.valley:.2e}, minimum {suggestions.minimum:.2e}, "
          f"steepest {suggestions.steepest:.2e}; training {epochs} epoch(s) with max_lr={lr:.2e}")

    fit_start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    fit_seconds = time.perf_counter() - fit_start

    interp = ClassificationInterpretation.from_learner(learn)
    matrix = interp.confusion_matrix()
    accuracy_now = learn.history.epoch_records[-1]["accuracy"]
    confusion = interp.plot_confusion_matrix(figsize=(7.5, 7.5))
    confusion.axes[0].set_title(f"Fashion-MNIST sample, {int(matrix.sum())} test images, accuracy {accuracy_now:.3f}")
    for name, fig in (("loss.png", learn.plot_loss()), ("lr_find.png", learn.plot_lr_find()),
                      ("sched.png", learn.plot_sched()), ("confusion_matrix.png", confusion)):
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
    learn.export(out / "model")

    record = write_run_record(out, "demo", learn, {
        "seed": seed, "epochs": epochs,
        "sample": {"folder": str(SAMPLE_DIR), "train_items": len(train_x), "valid_items": len(test_x),
                   "sha256": {name: fingerprint(SAMPLE_DIR / name) for name in SAMPLE_FILES}},
        "lr": lr, "lr_find": suggestions._asdict(),
        "confusion_matrix": {"classes": classes, "rows_actual_cols_predicted": matrix.tolist()},
    }, {"fit_one_cycle": fit_seconds}, start, ["loss.png", "lr_find.png", "sched.png", "confusion_matrix.png",
                                              "model/"])
    print(f"accuracy {accuracy_now:.4f} on {len(test_x)} test images (chance 0.10); "
          f"{record['seconds']['total']:.1f} s; wrote {out}")
    return 0
