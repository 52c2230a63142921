"""`learnkit train FOLDER`: the image-folder half of the train / lr-find / predict commands (cli layer).

A folder with train/ and valid/ sub-folders of class folders (or class folders only: a seeded random split)
becomes an ImageDataBunch and a `vision_learner`: a pretrained ImageNet body fine-tuned (`fine_tune`) when
its weights are available, or a network trained from scratch (`fit_one_cycle`) with `--no-pretrained`.
"""
from __future__ import annotations

import argparse
import struct
from pathlib import Path
from typing import Any

from learnkit.cli.args import CliError, one_line

__all__ = ["DEFAULT_IMAGE_ARCH", "build_image_learner", "image_inputs", "image_kind"]

DEFAULT_IMAGE_ARCH = "resnet34"
# The first bytes of the image formats Pillow reads most often (BMP is checked further below: 'BM' alone is text).
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def build_image_learner(args: argparse.Namespace, path: Path, out: Path) -> Any:
    """The DataBunch and Learner for `learnkit train FOLDER` (errors: a one-line CliError)."""
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
        raise CliError(one_line(e).replace("pass on_bad='skip'", "pass --skip-bad")) from None
    try:
        return vision_learner(data, arch, pretrained=not args.no_pretrained, weights=args.weights, path=out,
                              progress=not args.no_progress)
    except FileNotFoundError as e:
        text = one_line(e).replace("pass weights=<file>", "pass --weights FILE")
        raise CliError(f"{text} (or train from scratch with --no-pretrained)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CliError(f"cannot build a {arch!r} image classifier: {one_line(e)}") from None


def _resize(size: int) -> list[Any]:
    from learnkit.vision import BatchResize
    return [BatchResize(size)]


def image_kind(path: Path) -> str | None:
    """The image format of a file by its first bytes ('PNG', 'JPEG', 'GIF', 'TIFF', 'WEBP', 'BMP'), else None."""
    with open(path, "rb") as f:
        head = f.read(32)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    # BMP: 'BM', then a DIB header of one of the known sizes at offset 14
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    return None


def image_inputs(files: list[Path], texts: list[str], model: Path | None = None) -> list[tuple[str, Path]]:
    """(name, file) pairs for `learnkit predict` on an image model."""
    if texts:
        raise CliError(f"--text given, but {'this model' if model is None else model} classifies images; pass image "
                       "files (or a text model for --text)")
    missing = [str(f) for f in files if not Path(f).exists()]
    if missing:
        raise CliError(f"no such file: {', '.join(missing[:5])}")
    irregular = [str(f) for f in files if not Path(f).is_file()]
    if irregular:
        raise CliError(f"not a regular file (a folder, FIFO or device): {', '.join(irregular[:5])}; pass image files")
    return [(str(f), Path(f)) for f in files]
