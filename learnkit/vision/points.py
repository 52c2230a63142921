"""Keypoint data: `PointBlock` (K points per image, (x, y) in pixels; batches in [-1, 1]) and `PointsDataBunch`
(`from_csv`: a file column and x0, y0, x1, y1, ... columns; `from_func`), through the one `DataBlock.databunch`.

Coordinates: x to the right, y down, 0 at the image's left/top edge (a pixel's centre is at i + 0.5). Per item the
points stay in pixels while the image's deterministic item transforms move them (`Resize`: the same crop, scale
and padding), then they are scaled by the size of the transformed image: x_s = 2 x / W - 1, y_s = 2 y / H - 1,
which are `grid_sample`'s normalized coordinates (align_corners=False), the ones `BatchAugment` works in. Batch
augmentation moves them with the image's own homography (`Warp.points`).

Points that a flip, rotation, zoom or crop moves out of the picture are kept where they land, beyond [-1, 1]
(never clamped: a clamped point would be a wrong label on the border). A horizontal or vertical flip mirrors the
picture, so a "left eye" point then lies on the right: identities are not swapped unless
`PointBlock(flip_permutation=[...])` says which point becomes which under a mirror.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from learnkit.core.args import checked_keywords
from learnkit.data.blocks import TransformBlock, register_block
from learnkit.data.datablock import check_on_bad, report_bad
from learnkit.data.splitters import RandomSplitter, is_valid_flag
from learnkit.data.tables import read_csv
from learnkit.vision.data import ImageDataBunch, _column, csv_splitter
from learnkit.vision.files import label_files
from learnkit.vision.image import DEFAULT_MAX_PIXELS
from learnkit.vision.targets import FollowPoints, image_size, show_points

__all__ = ["PointBlock", "PointsDataBunch"]


def _as_points(value: Any, where: str) -> torch.Tensor:
    """(K,2) float64 from a (K,2) array-like or a flat [x0, y0, x1, y1, ...]."""
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: points must be numbers, (K,2) or [x0, y0, x1, y1, ...], got {value!r} "
                         f"({e})") from None
    if t.ndim == 1 and t.numel() % 2 == 0:
        t = t.reshape(-1, 2)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"{where}: points must have shape (K, 2) as (x, y) pairs, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{where}: points must be finite numbers, got {t.tolist()}")
    return t


@register_block
class PointBlock(TransformBlock):
    """A keypoint target: `n_points` (x, y) pixel coordinates per image (see the module doc for the conventions).

    In a DataBlock its getter gives the points ((K,2) or [x0, y0, x1, y1, ...]) and the DataBlock pairs them with
    the input's value (a path, an array), whose size scales them; `encode` takes such a pair, (points, image or
    (H, W)). Encoded per item to float32 (K,2) in [-1, 1] relative to the image after item transforms; batches are
    float32 (N,K,2). `decode(tensor, size)` gives pixels back.

    Args:
        n_points: K; None takes it from the first training item (every item must have K points).
        flip_permutation: which point a point becomes when augmentation mirrors the picture (a flip), e.g.
            [1, 0, 3, 2] for (left eye, right eye, left ear, right ear); None keeps the order (the default).

    The model outputs `n_outputs = 2 * n_points` numbers, read as (N, K, 2). Loss: `nn.MSELoss()`.

    Example:
        >>> dblock = DataBlock((ImageBlock(mode="L"), PointBlock(4)), get_items=..., get_y=lambda r: r[1])
    """

    follows_input = True
    bad_items = "items whose points cannot be read"

    def __init__(self, n_points: int | None = None, *, flip_permutation: Sequence[int] | None = None):
        if n_points is not None and (not isinstance(n_points, int) or isinstance(n_points, bool) or n_points < 1):
            raise ValueError(f"PointBlock(n_points={n_points!r}): a positive int, or None to read it from the data")
        self.n_points = n_points
        self.flip_permutation = None if flip_permutation is None else [int(i) for i in flip_permutation]
        self._check_permutation()

    def _check_permutation(self) -> None:
        perm = self.flip_permutation
        if perm is not None and self.n_points is not None and sorted(perm) != list(range(self.n_points)):
            raise ValueError(f"PointBlock(flip_permutation={perm}): must reorder the {self.n_points} points "
                             f"0..{self.n_points - 1}, each once")

    @property
    def n_outputs(self) -> int | None:
        """Numbers the model predicts per image: 2 per point."""
        return None if self.n_points is None else 2 * self.n_points

    # --- values ---
    def setup(self, values: Sequence[Any]) -> None:
        counts = [len(_as_points(v, f"PointBlock: training item {i}")) for i, v in enumerate(values)]
        if self.n_points is None and counts:
            self.n_points = counts[0]
            self._check_permutation()
        self.check(values, "training", counts)

    def check(self, values: Sequence[Any], split: str, counts: Sequence[int] | None = None) -> None:
        counts = counts if counts is not None else [len(_as_points(v, f"PointBlock: {split} item {i}"))
                                                    for i, v in enumerate(values)]
        odd = [(i, k) for i, k in enumerate(counts) if k != self.n_points]
        if odd:
            listed = ", ".join(f"item {i}: {k}" for i, k in odd[:10])
            raise ValueError(f"PointBlock: every image needs {self.n_points} points (n_points), but the {split} set "
                             f"has {len(odd)} item(s) with another count ({listed}). Fix: give each image the same "
                             "points (mark missing ones, e.g. outside the image) or pass n_points=")

    def read(self, pair: tuple[Any, Any]) -> tuple[torch.Tensor, tuple[int, int]]:
        """(points, image or (H, W)) → ((K,2) float64 pixels, (H, W))."""
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"PointBlock: the value must be (points, image) — the image (a path, an array) or its "
                            f"(height, width) gives the size the points are scaled by — got {type(pair).__name__}")
        points, image = pair
        xy = _as_points(points, f"PointBlock (points of {image})")
        if self.n_points is not None and len(xy) != self.n_points:
            raise ValueError(f"PointBlock: {len(xy)} points for {image}, expected n_points={self.n_points}")
        if isinstance(image, (tuple, list)) and len(image) == 2 and all(isinstance(v, int) for v in image):
            return xy, (int(image[0]), int(image[1]))
        return xy, image_size(image)

    @staticmethod
    def scale(value: tuple[torch.Tensor, tuple[int, int]]) -> torch.Tensor:
        """((K,2) pixels, (H, W)) → float32 (K,2) in [-1, 1]: x_s = 2 x / W - 1, y_s = 2 y / H - 1."""
        xy, (h, w) = value
        return (xy * torch.tensor([2 / w, 2 / h], dtype=torch.float64) - 1).to(torch.float32)

    def encode(self, value: tuple[Any, Any]) -> torch.Tensor:
        """(points, image or (H, W)) → float32 (K,2) in [-1, 1] relative to that image."""
        return self.scale(self.read(value))

    def target_steps(self, tfms: Sequence[Callable]) -> list[tuple[str, Callable[[Any], Any]]]:
        steps: list[tuple[str, Callable[[Any], Any]]] = [("PointBlock.read (points, image)", self.read)]
        for t in tfms:
            follow = FollowPoints(t)
            steps.append((follow.__qualname__, follow))
        return steps + [("PointBlock.scale", self.scale)]

    def decode(self, tensor: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """[-1, 1] coordinates (K,2) (or (2K,), a model's output) → pixels of an image of `size` = (H, W)."""
        if size is None:
            raise ValueError("PointBlock.decode: pass size=(height, width) of the image the points are drawn on "
                             "(points are stored relative to the image: x_s = 2 x / W - 1)")
        t = tensor.detach().cpu().float().reshape(-1, 2)
        h, w = size
        return (t + 1) * torch.tensor([w / 2, h / 2])

    # --- on the device ---
    def warp(self, batch: torch.Tensor, warp: Any) -> torch.Tensor:
        """Move points (N,K,2) with the image's `Warp` (the inverse of its sampling homography); a mirrored image
        reorders them by `flip_permutation` when given."""
        out = warp.points(batch)
        if self.flip_permutation is not None:
            mirrored = warp.mirrored().to(out.device, non_blocking=True).view(-1, 1, 1)
            out = torch.where(mirrored, out[:, self.flip_permutation], out)
        return out.to(batch.dtype)

    # --- target role ---
    def loss_fn(self) -> Callable:
        return nn.MSELoss()

    def default_metrics(self) -> list[str]:
        """Names of the metrics a learner shows by default (resolved by learnkit.learner.metrics)."""
        return ["mae"]

    def decode_prediction(self, probs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return probs.detach().cpu().float().reshape(-1, 2), None

    # --- display ---
    def show(self, tensor: torch.Tensor, ax: Any, size: tuple[int, int] | None = None, **options: Any) -> None:
        """Draw (K,2) [-1, 1] points over the image `ax` shows (its size read from the axis unless `size`)."""
        if size is None:
            shown = ax.get_images()
            if not shown:
                raise ValueError("PointBlock.show: draw the image on the axis first, or pass size=(height, width)")
            size = tuple(shown[0].get_array().shape[:2])
        show_points(self.decode(tensor, size), ax, **options)

    def title(self, tensor: torch.Tensor) -> str:
        return f"{tensor.reshape(-1, 2).shape[0]} points"

    def to_config(self) -> dict[str, Any]:
        return {"type": "PointBlock", "n_points": self.n_points, "flip_permutation": self.flip_permutation}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PointBlock":
        return cls(config.get("n_points"), flip_permutation=config.get("flip_permutation"))

    def __repr__(self) -> str:
        return f"PointBlock(n_points={self.n_points})"


class PointsDataBunch(ImageDataBunch):
    """Images and their keypoints → a DataBunch, through a DataBlock (ImageBlock + PointBlock) and its
    `databunch()` (GPU-resident when the images fit; the points come along as float32 (N,K,2)).

    Keyword arguments are ImageDataBunch's, plus `n_points` and `flip_permutation` (PointBlock's). Item transforms
    must be deterministic (`Resize`); random crops, flips and rotations go in `batch_tfms=aug_transforms(...)`,
    which moves the points with the images. `data.n_classes` is None; `data.y_block.n_outputs` = 2 * n_points.

    Example:
        >>> data = PointsDataBunch.from_csv("datasets/segmentation-sample/keypoints/points.csv", mode="L", seed=0)
        >>> data.show_batch()
    """

    @classmethod
    @checked_keywords
    def from_csv(cls, csv_path: str | Path, *, folder: str | Path | None = None, fn_col: int | str = 0,
                 point_cols: Sequence[int | str] | None = None, valid_col: int | str | None = None,
                 valid_pct: float = 0.2, suffix: str = "", encoding: str | None = None, n_points: int | None = None,
                 flip_permutation: Sequence[int] | None = None, seed: int | None = None, item_tfms: Any = (),
                 batch_tfms: Any = (), batch_size: int = 64, mode: str | None = "RGB", normalize: Any = "auto",
                 resident: Any = "auto", memory_budget: int | None = None, num_workers: int | None = None,
                 device: torch.device | str | None = None, on_bad: str = "error",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                 verbose: bool = True) -> "PointsDataBunch":
        """A CSV with a header: a file-name column (`fn_col`, relative to `folder`, default the CSV's folder) and
        the points as x0, y0, x1, y1, ... columns (`point_cols`, default every other column but `valid_col`), in
        pixels. `valid_col` (1/true/yes/valid = validation) gives the split, else a seeded random one."""
        csv_path = Path(csv_path)
        check_on_bad(on_bad)
        folder = csv_path.parent if folder is None else Path(folder)
        header, rows = read_csv(csv_path, encoding=encoding)
        if not rows:
            raise ValueError(f"PointsDataBunch.from_csv: {csv_path} has no data rows")
        fi = _column(header, fn_col, csv_path)
        vi = _column(header, valid_col, csv_path) if valid_col is not None else None
        cols = [_column(header, c, csv_path) for c in point_cols] if point_cols is not None else \
            [i for i in range(len(header)) if i not in (fi, vi)]
        if not cols or len(cols) % 2:
            raise ValueError(f"PointsDataBunch.from_csv: {len(cols)} point columns {[header[i] for i in cols]} in "
                             f"{csv_path}; give x, y pairs (x0, y0, x1, y1, ...) or point_cols=[...]")
        files, points, is_valid, bad = [], [], [], []
        for row in rows:
            if len(row) <= max([fi, vi or 0] + cols):
                bad.append((f"{csv_path}:{row.line}", f"row has {len(row)} cells: {list(row)}"))
                continue
            try:
                xy = [float(row[i]) for i in cols]
                if not all(math.isfinite(v) for v in xy):
                    raise ValueError("not finite")
            except ValueError:
                bad.append((f"{csv_path}:{row.line}", f"point cells are not all numbers: {[row[i] for i in cols]}"))
                continue
            files.append(folder / f"{row[fi]}{suffix}")
            points.append(xy)
            if vi is not None:
                is_valid.append(is_valid_flag(row[vi]))
        report_bad(bad, on_bad, "rows without a file or numeric points", f"fill in the point columns of {csv_path}")
        return cls._images(files, points, csv_splitter(is_valid if vi is not None else None, valid_pct, seed), False,
                           None, skipped=bad,
                           y_block=PointBlock(n_points, flip_permutation=flip_permutation), item_tfms=item_tfms,
                           batch_tfms=batch_tfms, batch_size=batch_size, mode=mode, normalize=normalize,
                           resident=resident, memory_budget=memory_budget, num_workers=num_workers, device=device,
                           on_bad=on_bad, max_pixels=max_pixels, verify=verify, drop_last=drop_last, seed=seed,
                           verbose=verbose)

    @classmethod
    @checked_keywords
    def from_func(cls, path: str | Path, fnames: Sequence[str | Path], points_func: Callable[[Path], Any], *,
                  valid_pct: float = 0.2, n_points: int | None = None, flip_permutation: Sequence[int] | None = None,
                  seed: int | None = None, item_tfms: Any = (), batch_tfms: Any = (), batch_size: int = 64,
                  mode: str | None = "RGB", normalize: Any = "auto", resident: Any = "auto",
                  memory_budget: int | None = None, num_workers: int | None = None,
                  device: torch.device | str | None = None, on_bad: str = "error",
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = True, drop_last: bool | None = None,
                  verbose: bool = True) -> "PointsDataBunch":
        """Images `path/fname` and their points `points_func(image_path)` ((K,2) pixels, or [x0, y0, ...]), as
        fastai's `get_y` for head pose. Files where points_func fails are listed together (`on_bad`)."""
        check_on_bad(on_bad)
        files, points, bad = label_files([Path(path) / name for name in fnames], points_func, "points_func")
        report_bad(bad, on_bad, "images without points", "fix points_func or remove these files")
        if not files:
            raise ValueError(f"PointsDataBunch.from_func: no images (of {len(fnames)} names) have points")
        return cls._images(files, points, RandomSplitter(valid_pct, seed=seed if seed is not None else 0), False, None,
                           skipped=bad, y_block=PointBlock(n_points, flip_permutation=flip_permutation),
                           item_tfms=item_tfms, batch_tfms=batch_tfms, batch_size=batch_size, mode=mode,
                           normalize=normalize, resident=resident, memory_budget=memory_budget,
                           num_workers=num_workers, device=device, on_bad=on_bad, max_pixels=max_pixels,
                           verify=verify, drop_last=drop_last, seed=seed, verbose=verbose)
