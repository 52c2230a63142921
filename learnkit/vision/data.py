"""ImageDataBunch: image folders, CSV files and file lists → a DataBunch, on the GPU-resident fast path when
the decoded images fit a memory budget, else on DataLoader workers.

Both paths yield the same batches: (uint8 images (B,C,H,W), targets), with the batch transforms
(augmentation, then Normalize) applied on the device by `DataBunch.transfer`. Bad files are found before
training starts (every file is decoded once) and are either an error listing them or a logged skip.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from learnkit.core.device import default_device
from learnkit.data.blocks import CategoryBlock, MultiCategoryBlock, TransformBlock
from learnkit.data.bunch import DataBunch, make_loader
from learnkit.data.datablock import _ItemGetter
from learnkit.data.pipeline import BlockDataset
from learnkit.data.resident import ResidentLoader, memory_budget
from learnkit.data.splitters import RandomSplitter
from learnkit.data.tables import is_missing, read_csv
from learnkit.data.transforms import Normalize
from learnkit.vision.image import (DEFAULT_MAX_PIXELS, ImageBlock, RegexLabeller, decode_images, find_image_files,
                                   verify_images)

__all__ = ["ImageDataBunch", "IMAGENET_STATS"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
log = logging.getLogger("learnkit")


def _is_random(tfm: Any) -> bool:
    """An item transform is random in training when its eval version differs from it."""
    make_eval = getattr(tfm, "eval_transform", None)
    if make_eval is None:
        return False
    other = make_eval()
    if other is tfm:
        return False
    config = getattr(tfm, "to_config", None)
    return config is None or config() != other.to_config()


def _eval_version(tfm: Any) -> Any:
    make_eval = getattr(tfm, "eval_transform", None)
    return make_eval() if make_eval is not None else tfm


def _listing(pairs: Sequence[tuple[Any, str]], limit: int = 20) -> str:
    lines = [f"  {p}: {why}" for p, why in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"  ... and {len(pairs) - limit} more")
    return "\n".join(lines)


def _check_on_bad(on_bad: str) -> None:
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad={on_bad!r}: use 'error' or 'skip'")


def _handle_bad(bad: Sequence[tuple[Any, str]], on_bad: str, what: str, fix: str) -> None:
    """on_bad='error': raise listing every offender; 'skip': warn and log the list (never a silent drop)."""
    _check_on_bad(on_bad)
    if not bad:
        return
    if on_bad == "error":
        raise ValueError(f"{len(bad)} {what}:\n{_listing(bad)}\nFix: {fix}, or pass on_bad='skip' to leave them "
                         f"out (they are then listed in a warning and in data.skipped).")
    text = f"learnkit skipped {len(bad)} {what}:\n{_listing(bad)}"
    warnings.warn(text, stacklevel=4)
    log.warning(text)


class ImageDataBunch(DataBunch):
    """A DataBunch of images and their labels. Build one with a `from_*` constructor.

    Attributes (besides DataBunch's):
        loader_kind: 'resident' (decoded once, kept on the device as uint8) or 'dataloader' (workers decode).
        loader_report: one line saying which path was chosen and why.
        skipped: (file, reason) of every item left out with on_bad='skip'.

    Common keyword arguments of every constructor:
        item_tfms: per-item transforms on uint8 tensors (e.g. `Resize(460)`); random ones (RandomResizedCrop)
            run in training only, their `eval_transform()` in validation and inference.
        batch_tfms: device batch transforms, e.g. `aug_transforms(size=224)`; `Normalize` is appended.
        batch_size: items per batch. mode: 'RGB' (default), 'L' (grayscale) or None (as stored).
        normalize: 'auto' (statistics of the training images), 'imagenet', (mean, std), or None.
        resident: 'auto' (when the decoded images fit `memory_budget` bytes and no item transform is random),
            True (insist) or False (always DataLoader workers).
        on_bad: 'error' (default) lists unreadable files, unlabelled files and empty class folders in one error;
            'skip' leaves them out with a warning listing them.
        seed: seeds the split, the shuffling order and nothing else.
        verify: decode every file up front on the DataLoader path too (default), so bad files are reported
            before training; False skips that pass for very large folders (a bad file then stops training
            with an error naming it).
        num_workers, device, max_pixels (decompression-bomb guard), verbose (print the loader report).

    Example:
        >>> data = ImageDataBunch.from_folder("datasets/fashion-mnist-sample/png", mode="L", batch_size=128)
        >>> data.show_batch()
    """

    _auto_stats: tuple[list[float], list[float]] | None = None
    loader_kind: str = "dataloader"
    loader_report: str = ""
    skipped: list[tuple[Path, str]]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_folder(cls, path: str | Path, train: str = "train", valid: str = "valid", valid_pct: float | None = None,
                    seed: int | None = None, **kwargs: Any) -> "ImageDataBunch":
        """Labels = parent folder names. With `path/train` and `path/valid` sub-folders they are the split;
        otherwise (or with `valid_pct`) a seeded random split of every image (of `path/train` and `path/valid`
        when they exist, else of the class folders directly under `path`)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"ImageDataBunch.from_folder: {path} is not a folder")
        on_bad = kwargs.get("on_bad", "error")
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
        _handle_bad(bad, on_bad, "files without a label or empty class folders",
                    f"put every image in a class sub-folder of {roots[0]} and remove empty folders")
        if not files:
            raise ValueError(f"ImageDataBunch.from_folder: no image files under {[str(r) for r in roots]}")
        if use_folders:
            train_idx = [i for i, v in enumerate(in_valid) if not v]
            valid_idx = [i for i, v in enumerate(in_valid) if v]
            if not train_idx:
                raise ValueError(f"ImageDataBunch.from_folder: no training images in {path / train}")
        else:
            train_idx, valid_idx = RandomSplitter(0.2 if valid_pct is None else valid_pct, seed=seed or 0)(files)
        return cls._build(files, labels, list(train_idx), list(valid_idx), seed=seed, **kwargs)

    @classmethod
    def from_lists(cls, path: str | Path, fnames: Sequence[str | Path], labels: Sequence[Any],
                   valid_pct: float = 0.2, seed: int | None = None, multi_label: bool = False,
                   label_delim: str | None = None, **kwargs: Any) -> "ImageDataBunch":
        """Files (relative to `path`, or absolute) with their labels; a seeded random split."""
        files = [Path(path) / f for f in fnames]
        labels = list(labels)
        if len(files) != len(labels):
            raise ValueError(f"ImageDataBunch.from_lists: {len(files)} files but {len(labels)} labels; give one "
                             "label per file")
        train_idx, valid_idx = RandomSplitter(valid_pct, seed=seed or 0)(files)
        return cls._build(files, labels, list(train_idx), list(valid_idx), seed=seed, multi_label=multi_label,
                          label_delim=label_delim, **kwargs)

    @classmethod
    def from_name_func(cls, path: str | Path, fnames: Sequence[str | Path], label_func: Callable[[Path], Any],
                       valid_pct: float = 0.2, seed: int | None = None, **kwargs: Any) -> "ImageDataBunch":
        """Labels = `label_func(file)`; files where it fails are listed together (see `on_bad`)."""
        files = [Path(path) / f for f in fnames]
        keep, labels, bad = [], [], []
        for f in files:
            try:
                labels.append(label_func(f))
                keep.append(f)
            except Exception as e:  # every failing file is reported, not just the first
                bad.append((f, f"label_func failed: {type(e).__name__}: {e}"))
        _handle_bad(bad, kwargs.get("on_bad", "error"), "files without a label",
                    "fix label_func or rename/remove these files")
        return cls.from_lists(".", keep, labels, valid_pct=valid_pct, seed=seed, **kwargs)

    @classmethod
    def from_name_re(cls, path: str | Path, fnames: Sequence[str | Path], pattern: str, valid_pct: float = 0.2,
                     seed: int | None = None, **kwargs: Any) -> "ImageDataBunch":
        """Labels = group 1 of `pattern` searched in each file name (e.g. r'^([a-z_]+)_\\d+\\.jpg$')."""
        re.compile(pattern)
        return cls.from_name_func(path, fnames, RegexLabeller(pattern), valid_pct=valid_pct, seed=seed, **kwargs)

    @classmethod
    def from_csv(cls, path: str | Path, csv_file: str = "labels.csv", folder: str = ".", fn_col: int | str = 0,
                 label_col: int | str = 1, label_delim: str | None = None, valid_col: int | str | None = None,
                 valid_pct: float = 0.2, suffix: str = "", seed: int | None = None, encoding: str | None = None,
                 **kwargs: Any) -> "ImageDataBunch":
        """A CSV with a file-name column and a label column (several labels per cell with `label_delim`:
        multi-label). `valid_col` (truthy = validation) gives the split, else a seeded random one. The CSV is
        read by `learnkit.data.tables.read_csv` (strict UTF-8 unless `encoding=`); missing labels (empty, 'nan',
        'None', 'null'...: `tables.MISSING_LABELS`; with `label_delim` an empty cell means no labels) are refused
        by line, or skipped with on_bad='skip'."""
        path = Path(path)
        table = path / csv_file
        if not table.exists():
            raise FileNotFoundError(f"ImageDataBunch.from_csv: {table} not found")
        header, rows = read_csv(table, encoding=encoding)
        if not rows:
            raise ValueError(f"ImageDataBunch.from_csv: {table} has no data rows")

        def column(spec: int | str) -> int:
            if isinstance(spec, int):
                if not 0 <= spec < len(header):
                    raise ValueError(f"from_csv: column {spec} does not exist in {table} (columns: {header})")
                return spec
            if spec not in header:
                raise ValueError(f"from_csv: no column {spec!r} in {table}; columns: {header}")
            return header.index(spec)
        fi, li = column(fn_col), column(label_col)
        vi = column(valid_col) if valid_col is not None else None
        files, labels, is_valid, bad = [], [], [], []
        for row in rows:
            n = row.line
            if len(row) <= max(fi, li, vi or 0):
                bad.append((f"{table}:{n}", f"row has {len(row)} cells: {row}"))
                continue
            file = path / folder / f"{row[fi]}{suffix}"
            label = row[li].strip()
            if is_missing(label) and (label or label_delim is None):  # multi-label: '' is "no labels"
                bad.append((file, f"missing label {row[li]!r} in {table} line {n}"))
                continue
            files.append(file)
            labels.append(label)
            if vi is not None:
                is_valid.append(row[vi].strip().lower() in ("1", "true", "yes", "valid", "y", "t"))
        _handle_bad(bad, kwargs.get("on_bad", "error"), "rows without a file or a label",
                    f"fill in the label column {header[li]!r} of {table}")
        if vi is not None:
            train_idx = [i for i, v in enumerate(is_valid) if not v]
            valid_idx = [i for i, v in enumerate(is_valid) if v]
        else:
            train_idx, valid_idx = (list(s) for s in RandomSplitter(valid_pct, seed=seed or 0)(files))
        return cls._build(files, labels, train_idx, valid_idx, seed=seed, multi_label=label_delim is not None,
                          label_delim=label_delim, **kwargs)

    # ------------------------------------------------------------------ the one builder
    @classmethod
    def _build(cls, files: list[Path], labels: list[Any], train_idx: list[int], valid_idx: list[int], *,
               multi_label: bool = False, label_delim: str | None = None, item_tfms: Sequence[Any] = (),
               batch_tfms: Sequence[nn.Module] = (), batch_size: int = 64, mode: str | None = "RGB",
               normalize: Any = "auto", resident: Any = "auto", memory_budget_bytes: int | None = None,
               num_workers: int | None = None, device: torch.device | str | None = None, on_bad: str = "error",
               seed: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, verbose: bool = True,
               drop_last: bool | None = None, verify: bool = True) -> "ImageDataBunch":
        _check_on_bad(on_bad)
        if resident not in ("auto", True, False):
            raise ValueError(f"resident={resident!r}: use 'auto', True or False")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive int")
        device = default_device() if device is None else torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        x_block = ImageBlock(mode=mode, max_pixels=max_pixels)
        y_block: TransformBlock = MultiCategoryBlock(delim=label_delim) if multi_label else CategoryBlock()
        y_block.setup([labels[i] for i in train_idx])  # single class, unseen labels: fail before decoding
        if valid_idx:
            y_block.check([labels[i] for i in valid_idx], "validation")
        train_tfms = list(item_tfms)
        eval_tfms = [_eval_version(t) for t in train_tfms]
        random_items = any(_is_random(t) for t in train_tfms)

        # Choose the path, then decode (resident) or verify (workers) every file once.
        budget = memory_budget(device) if memory_budget_bytes is None else int(memory_budget_bytes)
        want, reason = resident, f"resident={resident}"
        if resident == "auto":
            if random_items:
                want, reason = False, "item transforms are random per item"
            else:
                need = _estimate_bytes(files, x_block, eval_tfms)
                want = need is not None and need <= budget
                reason = (f"about {need / 2**20:.0f} MB decoded {'fits' if want else 'exceeds'} the budget of "
                          f"{budget / 2**20:.0f} MB" if need is not None else "images have different sizes")
        elif resident is True and random_items:
            raise ValueError("resident=True but some item transforms are random per item "
                             f"({[t for t in train_tfms if _is_random(t)]}); use batch augmentation "
                             "(aug_transforms(min_scale=...)) instead, or resident=False")
        order = train_idx + valid_idx  # decode only what is used
        used = [files[i] for i in order]
        if want:
            images, bad = decode_images(used, mode=mode, num_workers=num_workers, on_bad="skip",
                                        max_pixels=max_pixels)
        else:
            images = None
            bad = verify_images(used, mode=mode, max_pixels=max_pixels, num_workers=num_workers) if verify else []
        _handle_bad(bad, on_bad, "unreadable image files", "delete or replace them")
        bad_files = {Path(f) for f, _ in bad}
        keep_pos = [k for k, f in enumerate(used) if f not in bad_files] if bad_files else list(range(len(used)))
        n_train = sum(1 for k in keep_pos if k < len(train_idx))
        kept = [order[k] for k in keep_pos]
        items = [(files[i], labels[i]) for i in kept]
        pipelines = [[("item[0]", _ItemGetter(0)), ("ImageBlock.encode", x_block.encode)] +
                     [(type(t).__name__, t) for t in eval_tfms],
                     [("item[1]", _ItemGetter(1)), (f"{type(y_block).__name__}.encode", y_block.encode)]]
        train_pipelines = [pipelines[0][:2] + [(type(t).__name__, t) for t in train_tfms], pipelines[1]]
        input_pipelines = [[step for step in pipelines[0][1:]]]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if drop_last is None:
            drop_last = n_train > batch_size
        names = [repr(x_block), repr(y_block)]
        if want:
            x = _apply_and_stack(images, eval_tfms)  # decode_images returned the good files only, in order
            y = torch.stack(_encode_labels(y_block, [lab for _, lab in items]))
            x, y = x.to(device), y.to(device)
            train_dl = ResidentLoader((x[:n_train], y[:n_train]), batch_size, shuffle=True, drop_last=drop_last,
                                      generator=generator)
            valid_dl = ResidentLoader((x[n_train:], y[n_train:]), batch_size)
            kind = "resident"
            report = ("GPU-resident path" if device.type == "cuda" else "resident path (host memory)") + \
                f": {len(items)} images decoded once, uint8 {tuple(x.shape[1:])}, {x.numel() / 2**20:.1f} MB on " \
                f"{device}; no worker processes ({reason})"
        else:
            train_ds = BlockDataset(items[:n_train], train_pipelines, kept[:n_train])
            valid_ds = BlockDataset(items[n_train:], pipelines, kept[n_train:])
            train_dl = make_loader(train_ds, batch_size, True, device, num_workers, names, drop_last, generator)
            valid_dl = make_loader(valid_ds, batch_size, False, device, num_workers, names)
            kind = "dataloader"
            report = (f"DataLoader path: {len(items)} images decoded per epoch by {train_dl.num_workers} worker "
                      f"process(es) ({reason})")
        data = cls(train_dl, valid_dl, [x_block, y_block], 1, list(batch_tfms), device, pipelines, eval_tfms,
                   input_pipelines)
        data.loader_kind, data.loader_report, data.skipped = kind, report, list(bad)
        data.set_normalize(normalize)
        data.normalize_user_set = not (isinstance(normalize, str) and normalize == "auto")  # vision_learner keeps it
        if verbose:
            print(report)
        log.info(report)
        return data

    # ------------------------------------------------------------------ normalization
    def set_normalize(self, normalize: Any) -> None:
        """Replace (or add) the final Normalize batch transform: 'auto' (training-image statistics),
        'imagenet', (mean, std), or None (remove it)."""
        tfms = [t for t in self.batch_tfms if not isinstance(t, Normalize)]
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

    def image_stats(self, max_items: int = 10000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of (up to `max_items`) training images scaled to [0, 1]."""
        dl = self.train_dl
        if isinstance(dl, ResidentLoader):
            x = dl.tensors[0]
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:max_items].to(x.device)
            sample = x.index_select(0, idx)
        else:
            chunks, n = [], 0
            valid_like = make_loader(dl.dataset, 256, False, torch.device("cpu"), 0, [repr(b) for b in self.blocks])
            for batch in valid_like:
                chunks.append(batch[0])
                n += len(batch[0])
                if n >= min(max_items, 2048):
                    break
            sample = torch.cat(chunks)
        total = torch.zeros(sample.shape[1], dtype=torch.float64, device=sample.device)
        squares = torch.zeros_like(total)
        count = 0
        for chunk in sample.split(1024):
            c = chunk.double() / 255
            total += c.sum(dim=(0, 2, 3))
            squares += (c * c).sum(dim=(0, 2, 3))
            count += c.numel() // c.shape[1]
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-12).sqrt().clamp_min(1e-3)
        return mean.tolist(), std.tolist()

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", path={self.loader_kind!r})"


def _encode_labels(block: TransformBlock, labels: Sequence[Any]) -> list[torch.Tensor]:
    """block.encode per label, each distinct label encoded once (70,000 labels, 10 classes); unhashable
    labels (multi-label lists) are encoded one by one."""
    encoded: dict[Any, torch.Tensor] = {}
    out = []
    for lab in labels:
        try:
            hash(lab)
        except TypeError:  # a list of labels
            out.append(block.encode(lab))
            continue
        if lab not in encoded:
            encoded[lab] = block.encode(lab)
        out.append(encoded[lab])
    return out


def _per_channel(values: Any, n: int) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == n:
        return values
    if n == 1:
        return [sum(values) / len(values)]
    if len(values) == 1:
        return values * n
    return [values[i % len(values)] for i in range(n)]


def _estimate_bytes(files: Sequence[Path], block: ImageBlock, eval_tfms: Sequence[Any]) -> int | None:
    """Decoded bytes after the item transforms, from a few files' headers (None: sizes differ and no
    transform makes them equal)."""
    from PIL import Image
    shapes = set()
    step = max(1, len(files) // 16)
    for f in list(files)[::step][:17]:
        try:
            with Image.open(f) as im:
                w, h = im.size
                bands = len(im.getbands())
        except Exception:
            continue  # a bad file: verified (and reported) later
        channels = block.n_channels or (1 if bands == 1 else 3)
        x = torch.zeros(channels, h, w, dtype=torch.uint8)
        for t in eval_tfms:
            x = t(x)
        shapes.add(tuple(x.shape))
    if len(shapes) != 1:
        return None
    return int(math.prod(next(iter(shapes)))) * len(files)


def _apply_and_stack(images: Any, eval_tfms: Sequence[Any]) -> torch.Tensor:
    if not eval_tfms and isinstance(images, torch.Tensor):
        return images
    out = []
    for im in images:
        for t in eval_tfms:
            im = t(im)
        out.append(im)
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise ValueError(f"resident=True needs images of one size, found {sorted(shapes)[:5]}; add an item "
                         "transform such as Resize(224), or use resident=False")
    return torch.stack(out)
