"""ImageDataBunch: image folders, CSV files and file lists → a DataBunch. Every constructor describes its data as
a `DataBlock` (ImageBlock + CategoryBlock or MultiCategoryBlock) and goes through the one `DataBlock.databunch`:
data/loaders.py chooses the GPU-resident path when the decoded images fit a memory budget, else batches decoded on
the GPU for JPEG folders (nvJPEG, vision/jpeg.py), else DataLoader workers.

Both paths yield the same batches: (uint8 images (B,C,H,W), targets), with the batch transforms
(augmentation, then Normalize) applied on the device by `DataBunch.transfer`. Bad files are found before
training starts (every file is decoded once) and are either an error listing them or a logged skip.
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Subset

from learnkit.core.args import checked_keywords
from learnkit.data.blocks import CategoryBlock, MultiCategoryBlock, TransformBlock
from learnkit.data.bunch import DataBunch, make_loader, n_items
from learnkit.data.datablock import DataBlock, check_on_bad, report_bad
from learnkit.data.decode_loader import DecodeLoader
from learnkit.data.resident import ResidentLoader
from learnkit.data.splitters import IndexSplitter, RandomSplitter, is_valid_flag
from learnkit.data.tables import is_missing, read_csv
from learnkit.data.transforms import Normalize
from learnkit.vision.image import DEFAULT_MAX_PIXELS, ImageBlock, RegexLabeller, find_image_files
from learnkit.vision.files import label_files
from learnkit.vision.transforms import IntToFloat

__all__ = ["ImageDataBunch", "IMAGENET_STATS"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
log = logging.getLogger("learnkit")


def _name_or_path(label_func: Callable[[Any], Any], files: Sequence[Path]) -> Callable[[Path], Any]:
    """fastai tutorials write label functions over the file NAME (`lambda f: f[0].isupper()`); learnkit passes the
    Path. Accept both where unambiguous: if the function fails on the first Path with a TypeError or
    AttributeError (a Path is not a string) but works on its name, it gets names."""
    if not files:
        return label_func
    try:
        label_func(files[0])
        return label_func
    except (TypeError, AttributeError):
        try:
            label_func(files[0].name)
        except Exception:
            return label_func  # fails either way: the per-file loop reports it
        log.info("label_func takes file names (a Path failed): it is given each file's name")
        return lambda f: label_func(f.name)
    except Exception:
        return label_func


class ImageDataBunch(DataBunch):
    """A DataBunch of images and their labels. Build one with a `from_*` constructor; each builds a `DataBlock`
    (`data.datablock`; `data.summary()` walks one item through it) and calls its `databunch()`.

    Attributes (besides DataBunch's `loader_kind`, `loader_report`, `skipped`):
        normalize_user_set: the constructor was given an explicit `normalize=` (vision_learner keeps it).

    Keyword arguments shared by every constructor (and, for the common ones, by TextDataBunch's):
        batch_size: items per batch. num_workers: DataLoader workers (None: 0 on the CPU, min(8, cores) on CUDA);
            on the device-decode path, processes decoding JPEGs on the host (None: all cores but one on CUDA with
            8+ cores; 0: reader threads, with nvJPEG decoding on the GPU).
        device: where batches go (None: CUDA if available). seed: seeds the split and the shuffling order.
        drop_last: drop a last partial training batch (None: when there is more than one batch).
        on_bad: 'error' (default) lists unreadable files, unlabelled files and empty class folders in one error;
            'skip' leaves them out with a warning listing them (`data.skipped`).
        verbose: print which loader path was chosen and why.
        item_tfms: per-item transforms on uint8 tensors (e.g. `Resize(460)`); random ones (RandomResizedCrop)
            run in training only, their `eval_transform()` in validation and inference.
        batch_tfms: device batch transforms, e.g. `aug_transforms(size=224)`; `Normalize` is appended.
        mode: 'RGB' (default), 'L' (grayscale) or None (as stored).
        normalize: 'auto' (statistics of the training images), 'imagenet', (mean, std), or None.
        resident: 'auto' (when the decoded images fit `memory_budget` bytes and no item transform is random),
            True (insist) or False (always DataLoader workers).
        device_decode: when not resident, 'auto' decodes JPEG folders in whole batches on the GPU (nvJPEG) with the
            Resize there, reading the files in background threads (bounded memory: it streams folders larger than
            host memory); True insists (on the CPU too), False keeps Pillow in DataLoader workers. Other formats,
            random item transforms and masks/points use the workers; `data.loader_report` says why.
        verify: decode every file up front on the DataLoader path too (default), so bad files are reported
            before training; False skips that pass for very large folders.
        max_pixels: the decompression-bomb guard.

    Example:
        >>> data = ImageDataBunch.from_folder("datasets/fashion-mnist-sample/png", mode="L", batch_size=128)
        >>> data.show_batch()
    """

    _auto_stats: tuple[list[float], list[float]] | None = None
    normalize_user_set: bool = False

    # ------------------------------------------------------------------ constructors
    @classmethod
    @checked_keywords
    def from_folder(cls, path: str | Path, *, train: str = "train", valid: str = "valid",
                    valid_pct: float | None = None, seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (),
                    batch_size: int = 64, mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                    device_decode: Any = "auto",
                    memory_budget: int | None = None, num_workers: int | None = None,
                    device: torch.device | str | None = None, on_bad: str = "error",
                    max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                    verbose: bool = True) -> "ImageDataBunch":
        """Labels = parent folder names. With `path/train` and `path/valid` sub-folders they are the split;
        otherwise (or with `valid_pct`) a seeded random split of every image (of `path/train` and `path/valid`
        when they exist, else of the class folders directly under `path`)."""
        path = Path(path)
        check_on_bad(on_bad)
        if not path.is_dir():
            raise FileNotFoundError(f"ImageDataBunch.from_folder: {path} is not a folder")
        has_train, has_valid = (path / train).is_dir(), (path / valid).is_dir()
        use_folders = valid_pct is None and has_train and has_valid
        # With train/ (and valid/) sub-folders their class folders hold the labels, also for a random split.
        roots = [path / train] + ([path / valid] if has_valid else []) if has_train else [path]
        files, labels, bad, in_valid = [], [], [], []
        for r, root in enumerate(roots):
            classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            loose, odd = find_image_files(root, recurse=False)
            bad += odd + [(f, f"not inside a class folder of {root}: its label is unknown") for f in loose]
            for d in classes:
                found, odd = find_image_files(d)  # odd: FIFOs, broken links, links out of the class folder
                bad += odd
                if not found:
                    bad.append((d, "empty class folder (no image files)"))
                files += found
                labels += [d.name] * len(found)
                in_valid += [r == 1] * len(found)
        report_bad(bad, on_bad, "files without a label or empty class folders",
                   f"put every image in a class sub-folder of {roots[0]} and remove empty folders")
        if not files:
            raise ValueError(f"ImageDataBunch.from_folder: no image files under {[str(r) for r in roots]}")
        if use_folders:
            if all(in_valid):
                raise ValueError(f"ImageDataBunch.from_folder: no training images in {path / train}")
            splitter: Any = IndexSplitter([i for i, v in enumerate(in_valid) if v])
        else:
            splitter = RandomSplitter(0.2 if valid_pct is None else valid_pct, seed=seed if seed is not None else 0)
        return cls._images(files, labels, splitter, False, None, skipped=bad, item_tfms=item_tfms,
                           batch_tfms=batch_tfms, batch_size=batch_size, mode=mode, normalize=normalize,
                           resident=resident, device_decode=device_decode, memory_budget=memory_budget,
                           num_workers=num_workers, device=device,
                           on_bad=on_bad, max_pixels=max_pixels, verify=verify, drop_last=drop_last, seed=seed,
                           verbose=verbose)

    @classmethod
    @checked_keywords
    def from_lists(cls, path: str | Path, fnames: Sequence[str | Path], labels: Sequence[Any], *,
                   valid_idx: Sequence[int] | None = None, valid_pct: float = 0.2, seed: int | None = None,
                   multi_label: bool = False,
                   label_delim: str | None = None, item_tfms: Any = (), batch_tfms: Any = (), batch_size: int = 64,
                   mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                   device_decode: Any = "auto",
                   memory_budget: int | None = None, num_workers: int | None = None,
                   device: torch.device | str | None = None, on_bad: str = "error",
                   max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                   verbose: bool = True) -> "ImageDataBunch":
        """Files (relative to `path`, or absolute) with their labels; validation = the positions `valid_idx` (as
        `TextDataBunch.from_lists`; e.g. a cross-validation fold's), else a seeded random `valid_pct` split."""
        files = [Path(path) / f for f in fnames]
        labels = list(labels)
        if len(files) != len(labels):
            raise ValueError(f"ImageDataBunch.from_lists: {len(files)} files but {len(labels)} labels; give one "
                             "label per file")
        splitter = (RandomSplitter(valid_pct, seed=seed if seed is not None else 0) if valid_idx is None
                    else IndexSplitter(valid_idx))
        return cls._images(files, labels, splitter,
                           multi_label, label_delim, item_tfms=item_tfms, batch_tfms=batch_tfms,
                           batch_size=batch_size, mode=mode, normalize=normalize, resident=resident,
                           device_decode=device_decode,
                           memory_budget=memory_budget, num_workers=num_workers, device=device, on_bad=on_bad,
                           max_pixels=max_pixels, verify=verify, drop_last=drop_last, seed=seed, verbose=verbose)

    @classmethod
    @checked_keywords
    def from_name_func(cls, path: str | Path, fnames: Sequence[str | Path], label_func: Callable[[Path], Any], *,
                       valid_pct: float = 0.2, seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (),
                       batch_size: int = 64, mode: str | None = "RGB", normalize: Any = "auto",
                       resident: Any = "auto",
                       device_decode: Any = "auto", memory_budget: int | None = None, num_workers: int | None = None,
                       device: torch.device | str | None = None, on_bad: str = "error",
                       max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True,
                       drop_last: bool | None = None, verbose: bool = True) -> "ImageDataBunch":
        """Labels = `label_func(file)`: it receives the file's Path; a function written for the file's name
        (`lambda name: name[0].isupper()`, as in fastai's tutorials) is given the name instead when a Path fails
        with a TypeError/AttributeError. Files where it fails are listed together (see `on_bad`)."""
        check_on_bad(on_bad)
        files = [Path(path) / f for f in fnames]
        func = _name_or_path(label_func, files)
        keep, labels, bad = label_files(files, func, "label_func")
        report_bad(bad, on_bad, "files without a label", "fix label_func or rename/remove these files")
        return cls._images(keep, labels, RandomSplitter(valid_pct, seed=seed if seed is not None else 0), False,
                           None, skipped=bad, item_tfms=item_tfms, batch_tfms=batch_tfms, batch_size=batch_size,
                           mode=mode, normalize=normalize, resident=resident,
                           device_decode=device_decode, memory_budget=memory_budget,
                           num_workers=num_workers, device=device, on_bad=on_bad, max_pixels=max_pixels,
                           verify=verify, drop_last=drop_last, seed=seed, verbose=verbose)

    @classmethod
    @checked_keywords
    def from_name_re(cls, path: str | Path, fnames: Sequence[str | Path], pattern: str, *, valid_pct: float = 0.2,
                     seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (), batch_size: int = 64,
                     mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                     device_decode: Any = "auto",
                     memory_budget: int | None = None, num_workers: int | None = None,
                     device: torch.device | str | None = None, on_bad: str = "error",
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                     verbose: bool = True) -> "ImageDataBunch":
        """Labels = group 1 of `pattern` searched in each file name (e.g. r'^([a-z_]+)_\\d+\\.jpg$');
        fastai's `pat=` is accepted."""
        re.compile(pattern)
        return cls.from_name_func(path, fnames, RegexLabeller(pattern), valid_pct=valid_pct, seed=seed,
                                  item_tfms=item_tfms, batch_tfms=batch_tfms, batch_size=batch_size, mode=mode,
                                  normalize=normalize, resident=resident,
                                  device_decode=device_decode, memory_budget=memory_budget,
                                  num_workers=num_workers, device=device, on_bad=on_bad, max_pixels=max_pixels,
                                  verify=verify, drop_last=drop_last, verbose=verbose)

    @classmethod
    @checked_keywords
    def from_csv(cls, csv_path: str | Path, *, folder: str | Path | None = None, fn_col: int | str = 0,
                 label_col: int | str = 1, label_delim: str | None = None, valid_col: int | str | None = None,
                 valid_pct: float = 0.2, suffix: str = "", encoding: str | None = None, seed: int | None = None,
                 csv_file: str | None = None, item_tfms: Any = (), batch_tfms: Any = (), batch_size: int = 64,
                 mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto", device_decode: Any = "auto",
                 memory_budget: int | None = None, num_workers: int | None = None,
                 device: torch.device | str | None = None, on_bad: str = "error",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                 verbose: bool = True) -> "ImageDataBunch":
        """A CSV file with a header, a file-name column and a label column (several labels per cell with
        `label_delim`: multi-label). `csv_path` is the CSV file (as in TextDataBunch.from_csv); file names are
        relative to `folder` (default: the CSV's folder). `valid_col` (1/true/yes/valid = validation) gives the
        split, else a seeded random one. `encoding`: the CSV's text encoding (default: UTF-8, BOM accepted).

        The older call `from_csv(folder, csv_file="labels.csv")` (fastai's `from_csv(path, csv_fname)`) still
        works with a DeprecationWarning."""
        csv_path = Path(csv_path)
        check_on_bad(on_bad)
        if csv_path.is_dir():
            warnings.warn(f"ImageDataBunch.from_csv({str(csv_path)!r}) with a folder is deprecated: pass the CSV "
                          f"file's path, e.g. from_csv({str(csv_path / (csv_file or 'labels.csv'))!r})",
                          DeprecationWarning, stacklevel=3)
            folder = csv_path / (folder if folder is not None else ".")
            csv_path = csv_path / (csv_file or "labels.csv")
        elif csv_file is not None:
            raise TypeError(f"ImageDataBunch.from_csv: csv_file={csv_file!r} only goes with a folder as first "
                            f"argument; {csv_path} is already the CSV file")
        folder = csv_path.parent if folder is None else Path(folder)
        header, rows = read_csv(csv_path, encoding=encoding)
        if not rows:
            raise ValueError(f"ImageDataBunch.from_csv: {csv_path} has no data rows")
        fi, li = _column(header, fn_col, csv_path), _column(header, label_col, csv_path)
        vi = _column(header, valid_col, csv_path) if valid_col is not None else None
        files, labels, is_valid, bad = [], [], [], []
        for row in rows:
            n = row.line
            if len(row) <= max(fi, li, vi or 0):
                bad.append((f"{csv_path}:{n}", f"row has {len(row)} cells: {list(row)}"))
                continue
            file = folder / f"{row[fi]}{suffix}"
            label = row[li].strip()
            # an empty cell is "no labels" for multi-label; 'nan'/'None'/'null' (or empty, single-label) would
            # become a class of their own
            if is_missing(label) and not (label == "" and label_delim is not None):
                bad.append((file, f"no label ({row[li]!r}) in {csv_path} line {n}"))
                continue
            files.append(file)
            labels.append(label)
            if vi is not None:
                is_valid.append(is_valid_flag(row[vi]))
        report_bad(bad, on_bad, "rows without a file or a label", f"fill in the label column {header[li]!r} of {csv_path}")
        return cls._images(files, labels, csv_splitter(is_valid if vi is not None else None, valid_pct, seed), label_delim is not None, label_delim, skipped=bad,
                           item_tfms=item_tfms, batch_tfms=batch_tfms, batch_size=batch_size, mode=mode,
                           normalize=normalize, resident=resident,
                           device_decode=device_decode, memory_budget=memory_budget,
                           num_workers=num_workers, device=device, on_bad=on_bad, max_pixels=max_pixels,
                           verify=verify, drop_last=drop_last, seed=seed, verbose=verbose)

    # ------------------------------------------------------------------ the one path
    @classmethod
    def _images(cls, files: list[Path], labels: list[Any], splitter: Any, multi_label: bool,
                label_delim: str | None, *, skipped: Sequence[tuple[Any, str]] = (),
                y_block: TransformBlock | None = None, item_tfms: Any, batch_tfms: Any,
                batch_size: int, mode: str | None, normalize: Any, resident: Any, memory_budget: int | None,
                device_decode: Any = "auto",
                num_workers: int | None, device: Any, on_bad: str, max_pixels: int | None, verify: bool,
                drop_last: bool | None, seed: int | None, verbose: bool) -> "ImageDataBunch":
        """(file, label) items described as a DataBlock and built by its `databunch()`, then normalized. `y_block`:
        the target block (default: CategoryBlock, or MultiCategoryBlock when `multi_label`); masks and points
        constructors (vision/segment.py, vision/points.py) pass theirs."""
        if y_block is None:
            y_block = MultiCategoryBlock(delim=label_delim) if multi_label else CategoryBlock()
        dblock = DataBlock(blocks=(ImageBlock(mode=mode, max_pixels=max_pixels), y_block), splitter=splitter,
                           item_tfms=item_tfms, batch_tfms=batch_tfms)
        data = dblock.databunch(list(zip(files, labels)), batch_size=batch_size, num_workers=num_workers,
                                device=device, seed=seed, drop_last=drop_last, resident=resident,
                                device_decode=device_decode,
                                memory_budget=memory_budget, on_bad=on_bad, verify=verify, verbose=verbose,
                                bunch_type=cls)
        data.skipped = list(skipped) + data.skipped
        data.set_normalize(normalize)
        data.normalize_user_set = not (isinstance(normalize, str) and normalize == "auto")  # vision_learner keeps it
        return data

    # ------------------------------------------------------------------ normalization
    def set_normalize(self, normalize: Any) -> None:
        """Replace (or add) the final Normalize batch transform: 'auto' (training-image statistics),
        'imagenet', (mean, std), or None (remove it: then ImageBlock's IntToFloat alone scales to [0, 1])."""
        tfms = [t for t in self.batch_tfms if not isinstance(t, Normalize)]
        if normalize is not None:  # Normalize converts uint8 itself: ImageBlock's default IntToFloat is not needed
            tfms = [t for t in tfms if not isinstance(t, IntToFloat)]
        elif not any(isinstance(t, IntToFloat) for t in tfms):
            tfms.insert(0, IntToFloat())
        if normalize is not None:
            if isinstance(normalize, str) and normalize == "imagenet":
                mean, std = IMAGENET_STATS
            elif isinstance(normalize, str) and normalize == "auto":
                # The training images do not change: computed once (the worker path decodes 2,048 images for it),
                # then reused when vision_learner sets 'auto' again.
                if self._auto_stats is None:
                    self._auto_stats = self.image_stats()
                mean, std = self._auto_stats
            elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
                mean, std = normalize
            else:
                raise ValueError(f"normalize={normalize!r}: use 'auto', 'imagenet', (mean, std) or None")
            n_channels = self.n_channels
            mean, std = _per_channel(mean, n_channels), _per_channel(std, n_channels)
            tfms.append(Normalize(mean, std))
        self.batch_tfms = nn.ModuleList(tfms).to(self.device)

    @property
    def n_channels(self) -> int:
        """Channels of the input images."""
        dl = self.train_dl
        if isinstance(dl, ResidentLoader):
            return int(dl.tensors[0].shape[1])
        fixed = getattr(self.x_block, "n_channels", None)
        if fixed:
            return int(fixed)
        return int(dl.dataset[0][0].shape[0])

    def image_stats(self, max_items: int = 2048) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of (up to `max_items`, a seeded random sample of) training images scaled to
        [0, 1]. 2,048 images pin the statistics to about 1e-3; the 10,000 used before cost 10 s on a CPU for
        20,000 128 px images, for nothing the model can tell apart. The sample is random on every path (files
        come sorted by class: the first 2,048 could be one class's) and decoded as the loader decodes them."""
        dl = self.train_dl
        pick = torch.randperm(n_items(dl), generator=torch.Generator().manual_seed(0))[:max_items]
        if isinstance(dl, ResidentLoader):
            x = dl.tensors[0]
            sample = x.index_select(0, pick.to(x.device))
        else:  # decoded the loader's own way: whole batches on the device, or Pillow in its worker processes
            view = dl.subset(pick.tolist(), shuffle=False, drop_last=False) if isinstance(dl, DecodeLoader) else \
                make_loader(Subset(dl.dataset, pick.tolist()), 256, False, torch.device("cpu"),
                            getattr(dl, "num_workers", 0), self.blocks)
            sample = torch.cat([batch[0] for batch in view])
        total = torch.zeros(sample.shape[1], dtype=torch.float64, device=sample.device)
        squares = torch.zeros_like(total)
        for chunk in sample.split(256):  # float32 within a chunk (relative error about 1e-6), float64 across chunks
            c = chunk.float().div_(255)
            total += c.sum(dim=(0, 2, 3)).double()
            squares += c.square_().sum(dim=(0, 2, 3)).double()
        count = sample.numel() // sample.shape[1]
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-12).sqrt().clamp_min(1e-3)
        return mean.tolist(), std.tolist()

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", path={self.loader_kind!r})"


def csv_splitter(is_valid: Sequence[bool] | None, valid_pct: float, seed: int | None) -> Any:
    """The split of a `from_csv`: the rows flagged by its valid column (`is_valid`, one flag per kept row), or,
    without one, a seeded random `valid_pct` split."""
    if is_valid is not None:
        return IndexSplitter([i for i, v in enumerate(is_valid) if v])
    return RandomSplitter(valid_pct, seed=seed if seed is not None else 0)


def _column(header: list[str], spec: int | str, table: Path) -> int:
    """A column's position from its index or its name, with an error listing the columns."""
    if isinstance(spec, int):
        if not 0 <= spec < len(header):
            raise ValueError(f"from_csv: column {spec} does not exist in {table} (columns: {header})")
        return spec
    if spec not in header:
        raise ValueError(f"from_csv: no column {spec!r} in {table}; columns: {header}")
    return header.index(spec)


def _per_channel(values: Any, n: int) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == n:
        return values
    if n == 1:
        return [sum(values) / len(values)]
    if len(values) == 1:
        return values * n
    return [values[i % len(values)] for i in range(n)]
