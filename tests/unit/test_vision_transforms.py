"""Unit tests of learnkit.vision.transforms: output sizes, pixel-level results, the random-in-training /
deterministic-in-eval contract, config round trips and argument errors."""
import json
import pickle

import pytest
import torch

from learnkit.data.transforms import transform_from_config
from learnkit.vision.transforms import RandomResizedCrop, Resize


def columns(h=4, w=8, c=3):
    """uint8 image whose pixel value is 10 * column + row, the same in every channel."""
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    return (10 * cols + rows).to(torch.uint8).expand(c, h, w).contiguous()


@pytest.mark.parametrize("method", ["squish", "crop", "pad"])
@pytest.mark.parametrize("shape", [(3, 20, 40), (1, 40, 20), (3, 7, 7), (3, 1, 50)])
def test_resize_output_size_and_dtype(method, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    for size, expected in [(16, (16, 16)), ((12, 30), (12, 30))]:
        y = Resize(size, method)(x)
        assert y.shape == (shape[0], *expected) and y.dtype == torch.uint8
    assert Resize(5, method)(x.float()).dtype == torch.float32


def test_resize_crop_takes_the_centre_columns_exactly():
    x = columns()
    assert torch.equal(Resize(4)(x), x[:, :, 2:6])
    assert torch.equal(Resize((4, 8), "crop")(x), x)  # already the size: untouched


def test_resize_crop_then_scale_matches_interpolating_the_centre():
    x = torch.randint(0, 256, (3, 40, 80), dtype=torch.uint8)
    expected = torch.nn.functional.interpolate(x[None, :, :, 20:60].float(), size=(10, 10), mode="bilinear",
                                               antialias=True)[0]
    assert (Resize(10)(x).float() - expected).abs().max() <= 1


def test_resize_squish_keeps_all_content():
    x = torch.zeros(1, 4, 8, dtype=torch.uint8)
    x[:, :, -2:] = 255  # a bright right edge survives squishing (it would be cropped away)
    y = Resize(4, "squish")(x)
    assert y.shape == (1, 4, 4) and int(y[0, 0, -1]) > 200 and int(y[0, 0, 0]) == 0
    assert Resize(4, "crop")(x).sum() == 0  # control: a centre crop loses it


def test_resize_pad_modes_pixel_values():
    x = columns(4, 8, 1)  # fits (8, 8) at scale 1: two rows of padding above and below
    zeros = Resize(8, "pad", "zeros")(x)
    assert torch.equal(zeros[:, 2:6], x) and zeros[:, :2].sum() == 0 and zeros[:, 6:].sum() == 0
    reflect = Resize(8, "pad", "reflection")(x)
    assert torch.equal(reflect[:, 2:6], x)
    assert torch.equal(reflect[:, 1], x[:, 1]) and torch.equal(reflect[:, 0], x[:, 2])  # mirror, edge once
    assert torch.equal(reflect[:, 6], x[:, 2]) and torch.equal(reflect[:, 7], x[:, 1])
    border = Resize(8, "pad", "border")(x)
    assert torch.equal(border[:, 0], x[:, 0]) and torch.equal(border[:, 7], x[:, 3])
    thin = Resize((9, 9), "pad", "reflection")(torch.full((3, 1, 9), 7, dtype=torch.uint8))
    assert thin.shape == (3, 9, 9) and (thin == 7).all()  # reflection wider than the image itself


def test_random_crop_in_training_and_centre_in_eval():
    x = columns()
    tfm = Resize(4, random=True)
    lefts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        y = tfm(x)
        left = int(y[0, 0, 0]) // 10
        assert torch.equal(y, x[:, :, left:left + 4])  # always a window of the original columns
        lefts.add(left)
    assert len(lefts) > 2
    valid = tfm.eval_transform()
    assert valid.random is False and valid.to_config() != tfm.to_config()
    assert all(torch.equal(valid(x), x[:, :, 2:6]) for _ in range(5))
    plain = Resize(4)
    assert plain.eval_transform() is plain


def test_random_resized_crop_size_seeds_and_eval():
    x = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    tfm = RandomResizedCrop((24, 32), min_scale=0.1)
    outs = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        outs.append(tfm(x))
    assert all(o.shape == (3, 24, 32) and o.dtype == torch.uint8 for o in outs)
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    valid = tfm.eval_transform()
    assert isinstance(valid, Resize) and valid.to_config() == Resize((24, 32), "crop").to_config()
    assert torch.equal(valid(x), Resize((24, 32))(x))
    grid = (torch.arange(50)[:, None] * 50 + torch.arange(50)[None, :]).float()[None]  # every pixel unique
    fixed = RandomResizedCrop(25, min_scale=0.25, max_scale=0.25, ratio=(1, 1))  # always a 25x25 window
    corners = set()
    for seed in range(10):
        torch.manual_seed(seed)
        y = fixed(grid)
        top, left = divmod(int(y[0, 0, 0]), 50)
        assert torch.equal(y, grid[:, top:top + 25, left:left + 25])
        corners.add((top, left))
    assert len({t for t, _ in corners}) > 1 and len({c for _, c in corners}) > 1  # random rows and columns
    # no draw fits a 2x200 strip with square crops of at least half its area: the fallback centre crop
    strip = torch.randint(0, 256, (1, 2, 200), dtype=torch.uint8)
    assert RandomResizedCrop(8, min_scale=0.5, ratio=(1, 1))(strip).shape == (1, 8, 8)


@pytest.mark.parametrize("tfm", [Resize(10), Resize((12, 8), "pad", "zeros", random=True), Resize(7, "squish"),
                                 RandomResizedCrop((20, 10), min_scale=0.35, ratio=(0.5, 2.0), max_scale=0.9)])
def test_config_round_trip(tfm):
    config = json.loads(json.dumps(tfm.to_config()))
    clone = transform_from_config(config)
    assert type(clone) is type(tfm) and clone.to_config() == tfm.to_config() and repr(clone) == repr(tfm)
    x = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    torch.manual_seed(0)
    a = tfm(x)
    torch.manual_seed(0)
    assert torch.equal(clone(x), a)
    assert pickle.loads(pickle.dumps(tfm)).to_config() == tfm.to_config()  # DataLoader workers


def test_bad_arguments_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"size=0.*positive int"):
        Resize(0)
    with pytest.raises(ValueError, match=r"size=\(224, 'a'\)"):
        Resize((224, "a"))
    with pytest.raises(ValueError, match=r"method='stretch'.*\['crop', 'squish', 'pad'\]"):
        Resize(4, method="stretch")
    with pytest.raises(ValueError, match=r"pad_mode='mirror'"):
        Resize(4, "pad", pad_mode="mirror")
    with pytest.raises(ValueError, match=r"min_scale=0.*0 < min_scale"):
        RandomResizedCrop(4, min_scale=0)
    with pytest.raises(ValueError, match=r"ratio=\(2, 1\)"):
        RandomResizedCrop(4, ratio=(2, 1))
    with pytest.raises(ValueError, match=r"got \(2, 3, 8, 8\).*batch_tfms"):
        Resize(4)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
