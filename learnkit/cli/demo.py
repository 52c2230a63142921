"""`learnkit demo`: train a small CNN on the Fashion-MNIST PNG sample that ships with learnkit, through the image
pipeline a user would use (`ImageDataBunch.from_folder`), and write its plots, exported model and run record: the
shortest check that an install works end to end. The exported model predicts on image files
(`learnkit predict OUT/model some.png`).

Example:
    $ python -m learnkit demo --out runs/demo --epochs 3
    $ learnkit predict runs/demo/model shirt.png
"""
from __future__ import annotations

import time
from pathlib import Path

from learnkit.cli.args import CliError, one_line
from learnkit.cli.record import fingerprint, write_run_record
from learnkit.datasets.registry import SAMPLES

__all__ = ["demo", "SAMPLE_DIR"]

# The sample is package data (learnkit/datasets/samples/), so the demo works from an installed wheel too.
SAMPLE_DIR = SAMPLES / "fashion-mnist-sample" / "png"
REBUILD = ("reinstall learnkit, or in a source checkout: python datasets/build_fashion_mnist_sample.py && "
           "python datasets/build_fashion_mnist_png_sample.py  (needs: apt-get install dataset-fashion-mnist)")
# The plots, in the order they are written and printed.
PLOTS = ("show_batch.png", "lr_find.png", "loss.png", "sched.png", "confusion_matrix.png", "top_losses.png")


def _check_sample(folder: Path) -> None:
    """CliError (exit 2) when the PNG sample is not a train/ + valid/ folder of class folders."""
    missing = [name for name in ("train", "valid") if not (folder / name).is_dir()]
    if missing:
        raise CliError(f"the Fashion-MNIST PNG sample is missing from {folder} (no {', '.join(missing)}/ folder); "
                       f"{REBUILD}")


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
    """Train simple_cnn on the Fashion-MNIST PNG sample and write the run's artefacts to `out`. Returns 0; a
    missing or damaged sample is a CliError (exit 2), an output folder that cannot be created one with status 1."""
    start = time.perf_counter()
    _check_sample(SAMPLE_DIR)
    out = _output_folder(out)

    import matplotlib
    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    from learnkit.core import create_model, set_seed
    from learnkit.data.bunch import n_items
    from learnkit.learner import Learner, ProgressBar, accuracy
    from learnkit.vision import ImageDataBunch
    from learnkit.vision.interpret import ClassificationInterpretation

    set_seed(seed)
    # The same path as the README's quick start: class folders → ImageBlock (grayscale) + CategoryBlock, decoded
    # once, normalized with the training images' statistics; valid/ (the upstream test images) is the split.
    try:
        data = ImageDataBunch.from_folder(SAMPLE_DIR, mode="L", batch_size=32, seed=seed, verbose=False)
    except (ValueError, OSError) as e:
        raise CliError(f"cannot read the sample in {SAMPLE_DIR} ({one_line(e)}); {REBUILD}") from None
    n_train, n_valid = n_items(data.train_dl), n_items(data.valid_dl)
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=data.n_classes), metrics=[accuracy], path=out,
                    progress=progress)
    print(f"learnkit demo: {n_train} training and {n_valid} test images from {SAMPLE_DIR}, "
          f"{data.n_classes} classes, device {data.device}, seed {seed}")

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
    figures = {"show_batch.png": data.show_batch(9), "lr_find.png": learn.plot_lr_find(), "loss.png": learn.plot_loss(),
               "sched.png": learn.plot_sched(), "confusion_matrix.png": confusion,
               "top_losses.png": interp.plot_top_losses(9)}
    for name in PLOTS:
        figures[name].savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(figures[name])
    learn.export(out / "model")

    record = write_run_record(out, "demo", learn, {
        "seed": seed, "epochs": epochs,
        "sample": {"folder": str(SAMPLE_DIR), "train_items": n_train, "valid_items": n_valid,
                   "classes": list(data.classes), "sha256": fingerprint(SAMPLE_DIR)},
        "lr": lr, "lr_find": suggestions._asdict(),
        "confusion_matrix": {"classes": list(data.classes), "rows_actual_cols_predicted": matrix.tolist()},
    }, {"fit_one_cycle": fit_seconds}, start, list(PLOTS) + ["model/"])
    print(f"accuracy {accuracy_now:.4f} on {n_valid} test images (chance {1 / data.n_classes:.2f}); "
          f"{record['seconds']['total']:.1f} s; wrote:")
    what = {"show_batch.png": "nine training images with their labels",
            "lr_find.png": "the learning-rate sweep", "loss.png": "training and validation loss",
            "sched.png": "the one-cycle learning rate and momentum",
            "confusion_matrix.png": "actual vs predicted on the test images",
            "top_losses.png": "the 9 test images the model is most wrong about",
            "model/": "the exported model (weights.safetensors, recipe.json, model card)",
            "run.json": "seed, versions, data digest, metrics, history, seconds"}
    for name in record["files"]:
        print(f"  {out / name}  {what[name]}")
    example = next(iter(sorted((SAMPLE_DIR / "valid" / data.classes[0]).glob("*.png"))), None)
    if example is not None:
        print(f"next: learnkit predict {out / 'model'} {example}")
    return 0
