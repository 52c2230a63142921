"""Segmentation data: `MaskBlock` (one class index per pixel, moved with its image by item transforms and batch
augmentation) and `SegmentationDataBunch` (`from_folder` with parallel images/ and masks/ folders,
`from_label_func`), which describe their data as a DataBlock and go through the one `DataBlock.databunch`.

How a mask moves with its image: a `MaskBlock` target `follows_input`, so the DataBlock encodes it from (mask,
image) (the sizes must agree), applies each deterministic item transform's geometry to it (`Resize`: nearest,
never blending labels), and `BatchAugment.transform_batch` samples it with the image's own grid (nearest; pixels
that come from outside the image become `ignore_index`). On the device `finish_batch` makes the uint8 batch int64.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from learnkit.core.args import checked_keywords
from learnkit.data.blocks import TransformBlock, register_block
from learnkit.data.datablock import check_on_bad, report_bad
from learnkit.data.splitters import RandomSplitter
from learnkit.vision.data import ImageDataBunch
from learnkit.vision.files import find_image_files, label_files
from learnkit.vision.image import DEFAULT_MAX_PIXELS
from learnkit.vision.targets import FollowMask, image_size, mask_legend, show_mask

__all__ = ["MaskBlock", "SegmentationDataBunch", "read_codes"]

_MASK_MODES = ("L", "P", "1", "I;16", "I")  # single-band modes whose values are class indices


def read_codes(codes: Sequence[str] | str | Path) -> list[str]:
    """Class names from a list, or from a text file with one name per line (fastai's codes.txt).

    Example:
        >>> read_codes("datasets/segmentation-sample/segmentation/codes.txt")[:3]
        ['background', 'T-shirt/top', 'Trouser']
    """
    if isinstance(codes, (str, Path)):
        path = Path(codes)
        if not path.is_file():
            raise FileNotFoundError(f"codes={str(codes)!r}: no such file; pass the class names as a list "
                                    "(codes=['background', 'road', ...]) or a text file with one name per line")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(c) for c in codes]


@register_block
class MaskBlock(TransformBlock):
    """A segmentation target: one class index per pixel.

    A mask is a PNG (or other single-band image) in mode 'L' or 'P' (palette indices are the classes), or a 2-D
    integer array / tensor, of the same height and width as its image. Encoded to uint8 (H,W); a batch is uint8
    (N,H,W) on the loader and int64 (N,H,W) after `DataBunch.transfer`. Every value must be < len(codes) or equal
    to `ignore_index` (void pixels the loss and the metrics skip; also where augmentation brings in pixels from
    outside the image).

    Args:
        codes: the class names, index 0 first (e.g. ['background', 'road', 'car']).
        ignore_index: the void label, 0..255 and not a class index (default 255).

    Loss: `nn.CrossEntropyLoss(ignore_index=...)`; activation: softmax over dim 1; metrics: pixel accuracy, mean IoU.

    Example:
        >>> dblock = DataBlock((ImageBlock(mode="L"), MaskBlock(["background", "item"])), get_items=...,
        ...                    get_y=lambda f: f.parent.parent / "masks" / f.name)
    """

    follows_input = True
    bad_items = "unreadable masks"

    def __init__(self, codes: Sequence[str], ignore_index: int = 255):
        if isinstance(codes, (str, Path)):
            raise TypeError(f"MaskBlock(codes={codes!r}): give the class names as a list; read a codes file with "
                            "read_codes(path)")
        self.codes = [str(c) for c in codes]
        if not 1 <= len(self.codes) <= 255:
            raise ValueError(f"MaskBlock: {len(self.codes)} codes; a uint8 mask holds 1 to 255 classes")
        if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255 or ignore_index < len(self.codes):
            raise ValueError(f"MaskBlock(ignore_index={ignore_index!r}): must be an int in {len(self.codes)}..255, "
                             f"outside the {len(self.codes)} class indices 0..{len(self.codes) - 1} (default 255)")
        self.ignore_index = ignore_index

    @property
    def classes(self) -> list[str]:
        return list(self.codes)

    @property
    def n_classes(self) -> int:
        return len(self.codes)

    # --- reading and checking ---
    def read(self, value: Any) -> torch.Tensor:
        """A mask as uint8 (H,W), its values checked against the codes (errors name the file and the fix)."""
        name = value
        if isinstance(value, (str, Path)):
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"mask {path}: file not found. Fix: check the masks folder / label_func, or "
                                        "pass on_bad='skip' to leave this image out")
            try:
                with Image.open(path) as im:
                    im.load()
                    if im.mode not in _MASK_MODES:
                        raise ValueError(f"mask {path} is a {im.mode} image; a mask has one band of class indices "
                                         "(mode 'L' or 'P'). Fix: save class indices, e.g. "
                                         "Image.fromarray(indices.astype(np.uint8)).save(path), or map the "
                                         "colours to indices first")
                    arr = np.asarray(im)
            except (ValueError, FileNotFoundError):
                raise
            except Exception as e:
                raise ValueError(f"mask {path} cannot be read: {type(e).__name__}: {e}") from None
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            name = f"<{type(value).__name__} of shape {tuple(arr.shape)}>"
            if arr.ndim != 2 or not (arr.dtype.kind in "iub"):
                raise ValueError(f"mask {name}: a mask array must be 2-D (H,W) of integers (class indices), got "
                                 f"shape {tuple(arr.shape)} and dtype {arr.dtype}")
        else:
            raise TypeError(f"MaskBlock: cannot read a mask from a {type(value).__name__}; give a file path or a "
                            "2-D integer array/tensor")
        arr = np.asarray(arr)
        bad = (arr >= len(self.codes)) & (arr != self.ignore_index) | (arr < 0)
        if bad.any():
            values = sorted(int(v) for v in np.unique(arr[bad]))[:10]
            raise ValueError(f"mask {name} holds values {values} outside the {len(self.codes)} codes (0.."
                             f"{len(self.codes) - 1}) and ignore_index={self.ignore_index}. Fix: give every class "
                             "in codes=, or map void pixels to ignore_index")
        return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C"))  # a copy: writable, owns its memory

    def encode(self, value: Any) -> torch.Tensor:
        """A mask (a path, or a 2-D array/tensor) → uint8 (H,W). A (mask, image) pair is also checked for size."""
        if isinstance(value, tuple) and len(value) == 2:
            return self.encode_pair(value)
        return self.read(value)

    def encode_pair(self, pair: tuple[Any, Any]) -> torch.Tensor:
        """(mask, its image) → the mask as uint8 (H,W), after checking it has the image's height and width."""
        mask_value, image_value = pair
        mask = self.read(mask_value)
        hw = image_size(image_value)
        if tuple(mask.shape) != hw:
            image = "" if isinstance(image_value, tuple) else f" {image_value}"  # a tuple: the size of a decoded image
            raise ValueError(f"mask {mask_value} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image{image} is "
                             f"{hw[1]}x{hw[0]}; a mask needs one label per image pixel. Fix: pair each image with its "
                             "own mask, or resize the mask with nearest-neighbour")
        return mask

    def target_steps(self, tfms: Sequence[Callable]) -> list[tuple[str, Callable[[Any], Any]]]:
        steps: list[tuple[str, Callable[[Any], Any]]] = [("MaskBlock.encode (mask, image)", self.encode_pair)]
        for t in tfms:
            follow = FollowMask(t, self.ignore_index)
            steps.append((follow.__qualname__, follow))
        return steps

    def estimate_bytes(self, values: Sequence[Any], item_tfms: Sequence[Any]) -> int | None:
        """Bytes of all masks (uint8) after the (eval) item transforms, from a few files' headers (for the resident
        path's memory budget); None when they cannot be read that way (arrays: counted as they are)."""
        values = list(values)
        sizes = set()
        for v in values[::max(1, len(values) // 16)][:17]:
            try:
                h, w = image_size(v)
            except Exception:
                continue  # a bad mask: reported when it is encoded
            for t in item_tfms:
                layout = getattr(t, "layout", None)
                if layout is not None:
                    _, (h, w), _ = layout(h, w)
                    h, w = getattr(t, "size", (h, w))
            sizes.add(h * w)
        return max(sizes) * len(values) if sizes else None

    # --- on the device ---
    def warp(self, batch: torch.Tensor, warp: Any) -> torch.Tensor:
        """Move a mask batch (N,H,W) with the image's `Warp`: nearest sampling (labels never blend); output pixels
        that sample outside the image become `ignore_index`."""
        inside = torch.ones_like(batch, dtype=torch.float32)
        stacked = torch.stack([batch.float(), inside], 1)  # one grid_sample: labels and where they came from
        out = warp.sample(stacked, "nearest", "zeros")
        labels = torch.where(out[:, 1] > 0.5, out[:, 0], float(self.ignore_index))
        return labels.round().to(batch.dtype)

    def finish_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.long()  # what nn.CrossEntropyLoss wants; uint8 until here (8x less to move and warp)

    # --- target role ---
    def loss_fn(self) -> Callable:
        return nn.CrossEntropyLoss(ignore_index=self.ignore_index)

    def default_metrics(self) -> list[str]:
        """Names of the metrics a learner shows by default (resolved by learnkit.learner.metrics)."""
        return ["pixel_accuracy", "mean_iou"]

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return F.softmax(output.float(), dim=1 if output.ndim == 4 else 0)

    def decode(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().cpu().long()

    def decode_prediction(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One item's probabilities (C,H,W) → (the mask of most probable codes (H,W), the same mask)."""
        mask = probs.argmax(0).cpu()
        return mask, mask

    # --- display ---
    def show(self, tensor: torch.Tensor, ax: Any, alpha: float = 0.5, background: bool = False) -> None:
        """Draw a mask (H,W) over the image `ax` shows (a colour per code, code 0 and void left clear)."""
        show_mask(tensor, ax, len(self.codes), self.ignore_index, alpha, background)

    def legend(self, fig: Any, masks: torch.Tensor) -> None:
        """A legend of the codes present in `masks` under the figure."""
        mask_legend(fig, masks, self.codes)

    def title(self, tensor: torch.Tensor) -> str:
        present = [self.codes[v] for v in torch.unique(tensor.cpu()).tolist() if 0 < v < len(self.codes)]
        return ", ".join(present[:3]) + ("..." if len(present) > 3 else "")

    def to_config(self) -> dict[str, Any]:
        return {"type": "MaskBlock", "codes": self.codes, "ignore_index": self.ignore_index}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskBlock":
        return cls(codes=config["codes"], ignore_index=config.get("ignore_index", 255))

    def __repr__(self) -> str:
        return f"MaskBlock(n_codes={len(self.codes)}, ignore_index={self.ignore_index})"


class SegmentationDataBunch(ImageDataBunch):
    """Images and their masks → a DataBunch, through a DataBlock (ImageBlock + MaskBlock) and its `databunch()`.
    GPU-resident when the decoded images fit (the masks come along as uint8 (N,H,W)), else DataLoader workers.

    Keyword arguments are ImageDataBunch's (batch_size, seed, valid_pct, item_tfms, batch_tfms, device,
    num_workers, on_bad, verbose, resident, memory_budget, normalize, mode, verify, drop_last, max_pixels), plus
    `codes` and `ignore_index` (MaskBlock's). Item transforms must be deterministic (`Resize`); random crops,
    flips and rotations belong in `batch_tfms=aug_transforms(...)`, which moves the masks with the images.
    `data.classes` is the codes, `data.n_classes` their number.

    Bad items (a missing mask, an RGB mask, a mask whose size differs from its image, values outside the codes)
    are listed in one error naming each file, or with `on_bad='skip'` left out and listed in `data.skipped`.

    Example:
        >>> data = SegmentationDataBunch.from_folder("datasets/segmentation-sample/segmentation", mode="L",
        ...                                          batch_tfms=aug_transforms(), seed=0)
        >>> data.show_batch()
    """

    @classmethod
    @checked_keywords
    def from_folder(cls, path: str | Path, *, images: str = "images", masks: str = "masks",
                    codes: Sequence[str] | str | Path | None = None, ignore_index: int = 255,
                    valid_pct: float = 0.2, seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (),
                    batch_size: int = 64, mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                    memory_budget: int | None = None, num_workers: int | None = None,
                    device: torch.device | str | None = None, on_bad: str = "error",
                    max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                    verbose: bool = True) -> "SegmentationDataBunch":
        """Images in `path/images`, masks in `path/masks`, matched by their path below those folders without the
        suffix (`images/a/001.jpg` ↔ `masks/a/001.png`). `codes`: the class names, or a file of them (default:
        `path/codes.txt`). A seeded random split (`valid_pct`)."""
        path = Path(path)
        check_on_bad(on_bad)
        image_dir, mask_dir = path / images, path / masks
        for d, what in ((image_dir, "images"), (mask_dir, "masks")):
            if not d.is_dir():
                raise FileNotFoundError(f"SegmentationDataBunch.from_folder: {d} is not a folder; put the {what} "
                                        f"there or pass {what}='<sub-folder>'")
        if codes is None:
            if not (path / "codes.txt").is_file():
                raise ValueError(f"SegmentationDataBunch.from_folder: no codes given and no {path / 'codes.txt'}; "
                                 "pass codes=['background', ...] (the class names, index 0 first)")
            codes = path / "codes.txt"
        files, odd = find_image_files(image_dir)
        mask_files, odd_masks = find_image_files(mask_dir)
        def stem(file: Path, root: Path) -> str:  # 'a/001' for root/a/001.png; strings: Path hashing was slow,
            name, prefix = str(file), os.path.join(str(root), "")  # and relpath took 1.1 s for 40,000 files
            return os.path.splitext(name[len(prefix):] if name.startswith(prefix) else os.path.relpath(name, root))[0]
        by_stem: dict[str, Path] = {}
        bad = list(odd) + list(odd_masks)
        for m in mask_files:
            key = stem(m, mask_dir)
            if key in by_stem:
                bad.append((m, f"a second mask for the same image stem as {by_stem[key]}"))
            by_stem[key] = m
        pairs = []
        for f in files:
            key = stem(f, image_dir)
            if key in by_stem:
                pairs.append((f, by_stem[key]))
            else:
                bad.append((f, f"no mask for it in {mask_dir} (expected {mask_dir / key}.png)"))
        report_bad(bad, on_bad, "images without a mask (or unreadable entries)",
                   f"give every image in {image_dir} a mask with the same name in {mask_dir}")
        if not pairs:
            raise ValueError(f"SegmentationDataBunch.from_folder: no image in {image_dir} has a mask in {mask_dir}")
        block = MaskBlock(read_codes(codes), ignore_index=ignore_index)
        return cls._images([p[0] for p in pairs], [p[1] for p in pairs],
                           RandomSplitter(valid_pct, seed=seed if seed is not None else 0), False, None, skipped=bad,
                           y_block=block, item_tfms=item_tfms,
                           batch_tfms=batch_tfms, batch_size=batch_size, mode=mode, normalize=normalize,
                           resident=resident, memory_budget=memory_budget, num_workers=num_workers, device=device,
                           on_bad=on_bad, max_pixels=max_pixels, verify=verify, drop_last=drop_last, seed=seed,
                           verbose=verbose)

    @classmethod
    @checked_keywords
    def from_label_func(cls, path: str | Path, fnames: Sequence[str | Path], label_func: Callable[[Path], Any],
                        codes: Sequence[str] | str | Path, *, ignore_index: int = 255, valid_pct: float = 0.2,
                        seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (), batch_size: int = 64,
                        mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                        memory_budget: int | None = None, num_workers: int | None = None,
                        device: torch.device | str | None = None, on_bad: str = "error",
                        max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True,
                        drop_last: bool | None = None, verbose: bool = True) -> "SegmentationDataBunch":
        """Images `path/fname` and their masks `label_func(image_path)` (a mask path, or a 2-D array), as fastai's
        `SegmentationDataLoaders.from_label_func`. Files where label_func fails are listed together (`on_bad`)."""
        check_on_bad(on_bad)
        files, masks, bad = label_files([Path(path) / name for name in fnames], label_func, "label_func")
        report_bad(bad, on_bad, "images without a mask", "fix label_func or remove these files")
        if not files:
            raise ValueError(f"SegmentationDataBunch.from_label_func: no images (of {len(fnames)} names) have a mask")
        block = MaskBlock(read_codes(codes), ignore_index=ignore_index)
        return cls._images(files, masks,
                           RandomSplitter(valid_pct, seed=seed if seed is not None else 0), False, None, skipped=bad,
                           y_block=block, item_tfms=item_tfms,
                           batch_tfms=batch_tfms, batch_size=batch_size, mode=mode, normalize=normalize,
                           resident=resident, memory_budget=memory_budget, num_workers=num_workers, device=device,
                           on_bad=on_bad, max_pixels=max_pixels, verify=verify, drop_last=drop_last, seed=seed,
                           verbose=verbose)
