"""The Kaggle submission: a trained Learner's predictions for an unlabelled test folder or CSV, written as a CSV
of an id column and the predicted label (or one probability column per class), in the input's order.

It uses the learner's own inference path: `data.test_dl` (the input block's encoding and the item transforms),
`Learner.get_preds` (the one inference forward) or `tta`, and the target block's `decode_prediction`.

Example:
    >>> write_submission(learn, "test/", "submission.csv")                          # doctest: +SKIP
    >>> write_submission(load_learner("runs/demo/model"), "test/", "submission.csv")  # doctest: +SKIP
    >>> write_submission(learn, "test.csv", "submission.csv", id_col="id", input_col="text",
    ...                  probabilities=True)                                         # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from learnkit.core.serialization import atomic_write
from learnkit.data.tables import read_csv

__all__ = ["write_submission", "submission_inputs"]


def _folder_inputs(folder: Path) -> tuple[list[str], list[Path]]:
    files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    odd = [str(p) for p in files if not p.is_file()]
    if odd:
        raise ValueError(f"write_submission: {folder} holds entries that are not regular files ({', '.join(odd[:5])}); "
                         "the test folder must hold only the test inputs (e.g. image files)")
    if not files:
        raise ValueError(f"write_submission: the test folder {folder} is empty")
    return [p.stem for p in files], files


def _csv_inputs(file: Path, id_col: str, input_col: str | None, folder: str | Path | None, suffix: str,
                encoding: str | None) -> tuple[list[str], list[Any]]:
    try:
        header, rows = read_csv(file, encoding=encoding)
    except OSError as e:
        raise OSError(e.errno, f"write_submission: cannot read {file}: {e.strerror or e}", str(file)) from None
    if input_col is None:  # a text CSV has a text column; an image CSV names its files by id
        input_col = "text" if "text" in header and folder is None else id_col
    for role, name in (("id_col", id_col), ("input_col", input_col)):
        if name not in header:
            raise KeyError(f"write_submission: {file} has no column {name!r} ({role}); its columns are {header}. "
                           f"Pass {role}= with one of them")
    if not rows:
        raise ValueError(f"write_submission: {file} has a header but no rows")
    i_id, i_in = header.index(id_col), header.index(input_col)
    short = [r.line for r in rows if len(r) <= max(i_id, i_in)]
    if short:
        raise ValueError(f"write_submission: {file} lines {short[:5]} have fewer cells than the header")
    ids = [r[i_id] for r in rows]
    values: list[Any] = [r[i_in] for r in rows]
    if folder is not None:  # image competitions: the column names a file in the test folder
        root = Path(folder) if Path(folder).is_absolute() else file.parent / folder
        values = [root / f"{v}{suffix}" for v in values]
        missing = [str(v) for v in values if not v.is_file()]
        if missing:
            raise FileNotFoundError(f"write_submission: {len(missing)} input file(s) named by {file} column "
                                    f"{input_col!r} do not exist, e.g. {missing[:3]}; check folder= and suffix=")
    return ids, values


def submission_inputs(source: str | Path | Sequence[Any], *, id_col: str = "id", input_col: str | None = None,
                      folder: str | Path | None = None, suffix: str = "", ids: Sequence[Any] | None = None,
                      encoding: str | None = None) -> tuple[list[Any], list[Any]]:
    """(ids, raw inputs) of a test set, in its order: what `write_submission` predicts.

    Args:
        source: a folder (every file, sorted by name; the id is the file name without its extension), a CSV file
            (one row per test item: the id in `id_col`, the input in `input_col`), or a list of raw inputs (image
            paths, texts) with `ids`.
        id_col: the CSV's id column (also the submission's first column).
        input_col: the CSV column holding the input: the text, or a file name. Default: 'text' when the CSV has
            one (and no `folder` is given), else the id column (image competitions name files by id).
        folder: for a CSV whose `input_col` names files: the folder holding them (relative to the CSV's folder).
        suffix: appended to those names (e.g. '.png' when the ids carry no extension).
        ids: with a list `source`, one id per input (default: 0, 1, ...).
        encoding: the CSV's encoding (default: strict UTF-8, see `learnkit.data.tables.read_csv`).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _folder_inputs(path)
        if not path.exists():
            raise FileNotFoundError(f"write_submission: {path}: no such file or folder; pass a test folder or a "
                                    "test CSV")
        return _csv_inputs(path, id_col, input_col, folder, suffix, encoding)
    items = list(source)
    if not items:
        raise ValueError("write_submission: no test inputs given (an empty list)")
    ids = list(range(len(items))) if ids is None else list(ids)
    if len(ids) != len(items):
        raise ValueError(f"write_submission: {len(items)} inputs but {len(ids)} ids; give one id per input")
    return ids, items


def _check_out(out: Path) -> Path:
    if out.is_dir():
        raise IsADirectoryError(f"write_submission: the output path {out} is a folder; pass a file name, e.g. "
                                f"{out / 'submission.csv'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise NotADirectoryError(f"write_submission: {out.parent} (the output's folder) is a file")
    return out


def write_submission(learn: Any, source: str | Path | Sequence[Any], out: str | Path = "submission.csv", *,
                     id_col: str = "id", input_col: str | None = None, label_col: str = "label",
                     probabilities: bool = False, tta: bool = False, tta_n: int = 4, folder: str | Path | None = None,
                     suffix: str = "", ids: Sequence[Any] | None = None, batch_size: int | None = None,
                     encoding: str | None = None) -> Path:
    """Predict a test folder, CSV or list with `learn` and write a submission CSV, atomically. Returns `out`.

    The file has a header and one row per test item, in the input's order: `id_col`, then either `label_col`
    (the predicted class) or, with `probabilities=True`, one column per class (named by the class, in
    `learn.data.classes` order; each row sums to 1 for single-label models).

    Args:
        learn: a trained Learner whose data was built by a DataBlock (`data.test_dl` reuses its input pipeline), or
            an exported model (`load_learner(folder)`, a Predictor: its `predict_batch`; no TTA).
        source, id_col, input_col, folder, suffix, ids, encoding: the test set, see `submission_inputs`.
        out: the CSV file to write (its folder is created; an existing file is replaced in one step).
        label_col: the name of the label column (without `probabilities`).
        probabilities: write class probabilities instead of labels.
        tta: test-time augmentation (`learnkit.learner.tta.tta` with `n=tta_n`): needs random batch transforms.
        batch_size: items per forward pass (default: the validation loader's).

    Raises:
        FileNotFoundError / OSError: a missing or unreadable test file (named).
        KeyError: a missing CSV column (named, with the columns there are).
        IsADirectoryError: `out` is a folder.

    Example:
        >>> write_submission(learn, "test/", "submission.csv", probabilities=True, tta=True)  # doctest: +SKIP
        PosixPath('submission.csv')
    """
    out = _check_out(Path(out))
    data = getattr(learn, "data", None)
    predictor = data is None and hasattr(learn, "predict_batch")  # an exported model, from load_learner
    if predictor:
        y_block, classes = learn.blocks[learn.n_inp], learn.classes
    elif data is not None:
        y_block, classes = data.y_block, data.classes
    else:
        raise TypeError(f"write_submission: expected a Learner or a Predictor (load_learner), got "
                        f"{type(learn).__name__}")
    if y_block is None or classes is None:
        raise ValueError("write_submission: the model has no class target block; a submission needs classes "
                         "(regression: use learn.get_preds(learn.data.test_dl(items)))")
    if predictor and tta:
        raise ValueError("write_submission(tta=True) needs the Learner (its data's augmentation); an exported model "
                         "(load_learner) has no random transforms: pass tta=False")
    ids, items = submission_inputs(source, id_col=id_col, input_col=input_col, folder=folder, suffix=suffix, ids=ids,
                                   encoding=encoding)
    if predictor:
        _, probs = learn.predict_batch(items, batch_size=batch_size or 256)
    elif tta:
        from learnkit.learner.tta import tta as run_tta
        probs = run_tta(learn, dl=data.test_dl(items, batch_size=batch_size), n=tta_n)["probs"]
    else:
        probs, _ = learn.get_preds(data.test_dl(items, batch_size=batch_size))
    if probs.shape[0] != len(ids):
        raise RuntimeError(f"write_submission: got {probs.shape[0]} predictions for {len(ids)} inputs")
    classes = [str(c) for c in classes]
    header = [id_col] + (classes if probabilities else [label_col])
    if len(set(header)) != len(header):
        raise ValueError(f"write_submission: the columns {header} repeat a name; pass another id_col= or label_col=")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i, p in zip(ids, probs):
        if probabilities:
            writer.writerow([i] + [f"{float(v):.6g}" for v in p])
        else:
            writer.writerow([i, y_block.decode_prediction(p)[0]])
    with atomic_write(out) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return out
