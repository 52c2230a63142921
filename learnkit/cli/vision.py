"""`learnkit train FOLDER`: the image-folder half of the train / lr-find / predict commands (cli layer).

A folder with train/ and valid/ sub-folders of class folders (or class folders only: a seeded random split)
becomes an ImageDataBunch and a `vision_learner`: a pretrained ImageNet body fine-tuned (`fine_tune`) when
its weights are available, or a network trained from scratch (`fit_one_cycle`) with `--no-pretrained`.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_IMAGE_ARCH", "build_image_learner", "folder_digest", "image_inputs"]

DEFAULT_IMAGE_ARCH = "resnet34"


class ImageDataError(Exception):
    """Bad image data or arguments (printed as one line by cli_train)."""


def build_image_learner(args: argparse.Namespace, path: Path, out: Path) -> Any:
    """The DataBunch and Learner for `learnkit train FOLDER` (errors → ImageDataError, one line)."""
    from learnkit.core import set_seed
    from learnkit.vision import ImageDataBunch, aug_transforms, vision_learner
    set_seed(args.seed)
    arch = args.arch or DEFAULT_IMAGE_ARCH
    size = args.size
    try:
        data = ImageDataBunch.from_folder(
            path, valid_pct=None if (path / "train").is_dir() and (path / "valid").is_dir() else args.valid_pct,
            seed=args.seed, batch_size=args.batch_size, on_bad="skip" if args.skip_bad else "error",
            batch_tfms=aug_transforms(size=size) if args.augment else ([] if size is None else
                                                                        _resize(size)),
            mode="L" if args.grayscale else "RGB", verbose=True)
    except (ValueError, OSError) as e:
        raise ImageDataError(_one_line(e).replace("pass on_bad='skip'", "pass --skip-bad")) from None
    try:
        return vision_learner(data, arch, pretrained=not args.no_pretrained, weights=args.weights, path=out,
                              progress=not args.no_progress)
    except FileNotFoundError as e:
        text = _one_line(e).replace("pass weights=<file>", "pass --weights FILE")
        raise ImageDataError(f"{text} (or train from scratch with --no-pretrained)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ImageDataError(f"cannot build a {arch!r} image classifier: {_one_line(e)}") from None


def _resize(size: int) -> list[Any]:
    from learnkit.vision import BatchResize
    return [BatchResize(size)]


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split())


def folder_digest(path: Path) -> str:
    """sha256 over the sorted relative file names and sizes under `path` (a cheap fingerprint of a folder)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\t{f.stat().st_size}\n".encode())
    return h.hexdigest()


def image_inputs(files: list[Path], texts: list[str]) -> list[tuple[str, Path]]:
    """(name, file) pairs for `learnkit predict` on an image model."""
    if texts:
        raise ImageDataError("--text given, but this model classifies images; pass image files")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise ImageDataError(f"no such file: {', '.join(missing[:5])}")
    return [(str(f), Path(f)) for f in files]
