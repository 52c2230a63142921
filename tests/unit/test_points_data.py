"""PointBlock and PointsDataBunch: the [-1, 1] convention, points following Resize and batch augmentation (a dot
drawn at a point lands where the moved point says), out-of-picture points kept, mirror permutations, the CSV
constructor and its errors, show_batch."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from learnkit.data import DataBlock
from learnkit.vision import BatchAugment, ImageBlock, PointBlock, PointsDataBunch, Resize


def test_point_block_contract():
    block = PointBlock(2)
    assert block.n_points == 2 and block.n_outputs == 4 and isinstance(block.loss_fn(), nn.MSELoss)
    # x_s = 2x/W - 1, y_s = 2y/H - 1 with the image's (H, W) = (20, 40)
    out = block.encode(([[0, 0], [40, 10]], (20, 40)))
    assert out.dtype == torch.float32 and out.tolist() == [[-1, -1], [1, 0]]
    assert block.encode(([0, 0, 40, 10], np.zeros((20, 40), np.uint8))).tolist() == [[-1, -1], [1, 0]]
    assert block.decode(out, size=(20, 40)).tolist() == [[0, 0], [40, 10]]
    with pytest.raises(ValueError, match="size=\\(height, width\\)"):
        block.decode(out)
    assert PointBlock.from_config(block.to_config()).to_config() == block.to_config()
    with pytest.raises(ValueError, match="expected n_points=2"):
        block.encode(([[1, 2]], (8, 8)))
    with pytest.raises(ValueError, match="flip_permutation"):
        PointBlock(2, flip_permutation=[0, 0])


def test_n_points_from_the_data_and_count_errors():
    block = PointBlock()
    block.setup([[[1, 2], [3, 4], [5, 6]], [[0, 0], [1, 1], [2, 2]]])
    assert block.n_points == 3 and block.n_outputs == 6
    with pytest.raises(ValueError, match=r"needs 3 points.*item 1: 2"):
        block.check([[[1, 2], [3, 4], [5, 6]], [[0, 0], [1, 1]]], "validation")


@pytest.mark.parametrize("method,pad_mode", [("crop", "reflection"), ("squish", "reflection"), ("pad", "zeros")])
def test_resize_moves_points(method, pad_mode):
    # a 20x40 (HxW) image with a bright 2x2 square at pixels x 25..26, y 5..6: its centre is (26, 6)
    img = torch.zeros(1, 20, 40, dtype=torch.uint8)
    img[0, 5:7, 25:27] = 255
    tfm = Resize(10, method=method, pad_mode=pad_mode)
    value = ([[26.0, 6.0]], img)
    for _, fn in PointBlock(1).target_steps([tfm]):
        value = fn(value)
    out = tfm(img)[0].float()
    ys, xs = torch.meshgrid(torch.arange(out.shape[0]) + 0.5, torch.arange(out.shape[1]) + 0.5, indexing="ij")
    centre = torch.stack([(xs * out).sum() / out.sum(), (ys * out).sum() / out.sum()])
    moved = PointBlock(1).decode(value, size=tuple(out.shape))[0]
    assert torch.allclose(moved, centre, atol=0.1), (moved, centre)


def dots(n, h, w, seed):
    """Images with one 3x3 dot each, and the dot's centre as a point, (N,1,2) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    pts = torch.zeros(n, 1, 2)
    for i in range(n):
        x, y = (int(torch.randint(6, w - 6, (), generator=g)), int(torch.randint(6, h - 6, (), generator=g)))
        imgs[i, 0, y - 1:y + 2, x - 1:x + 2] = 255
        pts[i, 0] = torch.tensor([2 * (x + 0.5) / w - 1, 2 * (y + 0.5) / h - 1])
    return imgs, pts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_dot_lands_where_the_moved_point_says(seed):
    imgs, pts = dots(24, 40, 56, seed)
    aug = BatchAugment(size=(32, 48), p_flip=0.5, p_flip_vert=0.5, max_rotate=45, min_zoom=0.9, max_zoom=1.4,
                       max_warp=0.3, p_affine=1.0, max_lighting=0.0, pad_mode="zeros", min_scale=0.6, seed=seed)
    aug.train()
    x, moved = aug.transform_batch((imgs, pts), [ImageBlock(mode="L"), PointBlock(1)], 1)
    assert moved.shape == (24, 1, 2) and moved.dtype == torch.float32
    assert not torch.allclose(moved, pts)
    block, checked = PointBlock(1), 0
    for i in range(24):
        where = block.decode(moved[i], size=(32, 48))[0]
        picture = x[i, 0]
        if not (2 <= where[0] <= 46 and 2 <= where[1] <= 30) or picture.sum() < 1:
            continue  # moved out of (or to the border of) the picture: checked in the next test
        ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(48) + 0.5, indexing="ij")
        centre = torch.stack([(xs * picture).sum() / picture.sum(), (ys * picture).sum() / picture.sum()])
        assert (centre - where).norm() < 1.0, (i, centre, where)
        checked += 1
    assert checked >= 12


def test_points_leaving_the_picture_are_kept_not_clamped():
    aug = BatchAugment(p_flip=0.0, max_rotate=0.0, min_zoom=2.0, max_zoom=2.0, max_warp=0.0, p_affine=1.0,
                       max_lighting=0.0, seed=0)
    aug.train()
    imgs = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    pts = torch.tensor([[[-0.9, -0.9], [0.9, 0.9]]]).repeat(4, 1, 1)
    params = aug.draw_params(4, (16, 16))
    params.zoom_x[:] = 0.0
    params.zoom_y[:] = 0.0
    warp = aug.warp_of(params, (16, 16), imgs.device)
    moved = PointBlock(2).warp(pts, warp)
    assert torch.allclose(moved, pts * 2, atol=1e-5)  # a zoom by 2 about the centre: beyond [-1, 1], kept


def test_flip_permutation_swaps_identities_on_mirrors_only():
    imgs = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    pts = torch.tensor([[[-0.5, 0.0], [0.5, 0.0]]]).repeat(2, 1, 1)  # (left, right)
    flip = BatchAugment(p_flip=1.0, max_rotate=0.0, max_zoom=1.0, max_warp=0.0, max_lighting=0.0, seed=0)
    flip.train()
    plain = flip.transform_batch((imgs, pts), [ImageBlock(mode="L"), PointBlock(2)], 1)[1]
    assert torch.allclose(plain[0], torch.tensor([[0.5, 0.0], [-0.5, 0.0]]))  # positions mirrored, order kept
    swapped = flip.transform_batch((imgs, pts), [ImageBlock(mode="L"), PointBlock(2, flip_permutation=[1, 0])], 1)[1]
    assert torch.allclose(swapped[0], pts[0])  # the left point is on the left again
    both = BatchAugment(p_flip=1.0, p_flip_vert=1.0, max_rotate=0.0, max_zoom=1.0, max_warp=0.0, max_lighting=0.0,
                        seed=0)
    both.train()
    turned = both.transform_batch((imgs, pts), [ImageBlock(mode="L"), PointBlock(2, flip_permutation=[1, 0])], 1)[1]
    assert torch.allclose(turned[0], -pts[0])  # two flips = a half turn, not a mirror: no permutation


def test_eval_centre_resize_moves_points():
    aug = BatchAugment(size=32)
    aug.eval()
    imgs = torch.zeros(1, 1, 64, 80, dtype=torch.uint8)
    pts = PointBlock(2).encode(([[40.0, 32.0], [8.0, 0.0]], (64, 80)))[None]
    x, moved = aug.transform_batch((imgs, pts), [ImageBlock(mode="L"), PointBlock(2)], 1)
    # centre 64x64 window = columns 8..72, then / 2: (40, 32) → (16, 16); (8, 0) → (0, 0)
    assert torch.allclose(PointBlock(2).decode(moved[0], size=(32, 32)), torch.tensor([[16.0, 16.0], [0.0, 0.0]]),
                          atol=1e-4)


def write_csv(root, rows, header=("file", "x0", "y0", "x1", "y1")):
    (root / "images").mkdir(exist_ok=True)
    for i in range(8):
        Image.fromarray(np.zeros((20, 40), np.uint8)).save(root / "images" / f"{i}.png")
    with open(root / "points.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root / "points.csv"


@pytest.mark.parametrize("resident", [True, False])
def test_from_csv(tmp_path, resident):
    rows = [[f"images/{i}.png", 0, 0, 40, 10] for i in range(8)]
    data = PointsDataBunch.from_csv(write_csv(tmp_path, rows), mode="L", seed=0, batch_size=4, resident=resident,
                                    item_tfms=Resize(10, method="squish"), verbose=False)
    assert data.n_classes is None and data.y_block.n_points == 2 and data.y_block.n_outputs == 4
    x, y = data.one_batch("train")
    assert x.shape == (4, 1, 10, 10) and y.shape == (4, 2, 2) and y.dtype == torch.float32
    assert torch.allclose(y, torch.tensor([[-1.0, -1.0], [1.0, 0.0]]).expand(4, 2, 2))


def test_from_csv_errors_and_from_func(tmp_path):
    rows = [[f"images/{i}.png", 0, 0, 4, 1] for i in range(7)] + [["images/7.png", "a", 0, 4, 1]]
    path = write_csv(tmp_path, rows)
    with pytest.raises(ValueError, match=r"points\.csv:9: point cells are not all numbers"):
        PointsDataBunch.from_csv(path, mode="L", verbose=False)
    with pytest.warns(UserWarning, match="skipped 1"):
        data = PointsDataBunch.from_csv(path, mode="L", on_bad="skip", verbose=False)
    assert len(data.skipped) == 1
    with pytest.raises(ValueError, match="x, y pairs"):
        PointsDataBunch.from_csv(path, point_cols=["x0"], mode="L", verbose=False)
    rows = [[f"images/{i}.png", 0, 0, 4, 1] for i in range(8)]
    rows[3][0] = "images/missing.png"
    with pytest.raises(ValueError, match=r"missing\.png: file not found"):
        PointsDataBunch.from_csv(write_csv(tmp_path, rows), mode="L", verbose=False)
    data = PointsDataBunch.from_func(tmp_path / "images", [f"{i}.png" for i in range(8)], lambda f: [[20, 10]],
                                     mode="L", seed=0, batch_size=4, verbose=False)
    assert data.y_block.n_points == 1 and torch.allclose(data.one_batch("valid")[1], torch.zeros(2, 1, 2))


def test_datablock_and_show_batch(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    imgs, pts = dots(8, 24, 24, 0)
    items = [(imgs[i, 0].numpy(), PointBlock(1).decode(pts[i], size=(24, 24)).numpy()) for i in range(8)]
    data = DataBlock((ImageBlock(mode="L"), PointBlock(1)), item_tfms=Resize(12)).databunch(items, batch_size=4,
                                                                                              seed=0)
    x, y = data.one_batch("train")
    assert y.shape == (4, 1, 2)
    fig = data.show_batch(4)
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and ax.get_xlim() == (-0.5, 11.5)  # the points, the picture's frame kept
