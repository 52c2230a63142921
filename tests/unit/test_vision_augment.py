"""BatchAugment / BatchResize / aug_transforms: exactness of identity and flips, one grid_sample per batch,
reproducibility from the generator, geometry of rotation, lighting, configs and argument errors."""
import math
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

import learnkit
from learnkit.data.transforms import transform_from_config
from learnkit.vision.augment import AugmentParams, BatchAugment, BatchResize, aug_transforms

OFF = dict(p_flip=0.0, max_rotate=0.0, min_zoom=1.0, max_zoom=1.0, max_warp=0.0, max_lighting=0.0)
ALL_ON = dict(size=(20, 24), p_flip=1.0, p_flip_vert=1.0, max_rotate=20.0, max_zoom=1.2, max_warp=0.3,
              max_lighting=0.3, p_affine=1.0, p_lighting=1.0, min_scale=0.5)


def images(n=6, h=16, w=32, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


class CountCalls(TorchFunctionMode):
    """Counts torch functions by name (only top-level calls: the mode is off inside a handled call)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.counts[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def plain_params(aug, x):
    """Parameters drawn with everything off, to be edited by a test."""
    return aug.draw_params(x.shape[0], x.shape[-2:])


def test_eval_is_identity_and_keeps_the_input_object():
    x = images()
    for aug in (BatchAugment(seed=0), BatchAugment(size=(16, 32), seed=0)):
        aug.eval()
        out = aug(x)
        assert out is x and out.dtype == torch.uint8


def test_eval_with_size_resizes_like_batch_resize():
    x = images(h=40, w=48)
    aug = BatchAugment(size=(20, 24), seed=0).eval()
    out = aug(x)
    assert out.shape == (6, 3, 20, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out, BatchResize((20, 24))(x), rtol=0, atol=0)


def test_batch_resize_center_crops_to_the_target_aspect():
    x = torch.zeros(1, 1, 8, 16)
    x[..., 4:12] = 1.0  # the centre square is white, the sides black
    out = BatchResize(4)(x)
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out, torch.ones(1, 1, 4, 4))


def test_flip_is_exact_at_pixel_centres():
    x = images()
    out = BatchAugment(**{**OFF, "p_flip": 1.0}, seed=0).train()(x)
    torch.testing.assert_close(out, torch.flip(x / 255, dims=[-1]), rtol=0, atol=1e-6)
    out = BatchAugment(**{**OFF, "p_flip_vert": 1.0}, seed=0).train()(x)
    torch.testing.assert_close(out, torch.flip(x / 255, dims=[-2]), rtol=0, atol=1e-6)


def test_images_left_alone_in_a_sampled_batch_come_back_unchanged():
    # Half the images flip, so the batch goes through grid_sample; the others must be the identity.
    for h, w, atol in [(16, 32, 1e-6), (13, 21, 1e-5)]:  # sizes that are not powers of two round a little
        x = images(n=16, h=h, w=w)
        aug = BatchAugment(**{**OFF, "p_flip": 0.5}, seed=1)
        params = plain_params(aug, x)
        flipped = params.flip
        assert 0 < int(flipped.sum()) < 16
        out = aug.augment(x, params)
        torch.testing.assert_close(out[~flipped], x[~flipped] / 255, rtol=0, atol=atol)
        torch.testing.assert_close(out[flipped], torch.flip(x[flipped] / 255, dims=[-1]), rtol=0, atol=atol)


def test_identity_parameters_return_the_input_without_sampling():
    x = images()
    aug = BatchAugment(**OFF, p_affine=1.0, p_lighting=1.0, seed=0)
    with CountCalls() as calls:
        out = aug(x)
    torch.testing.assert_close(out, x / 255, rtol=0, atol=1e-6)
    assert calls.counts["grid_sample"] == 0


def test_exactly_one_grid_sample_per_batch_with_everything_on():
    aug = BatchAugment(**ALL_ON, seed=0)
    with CountCalls() as calls:
        for seed in range(3):
            out = aug(images(h=40, w=48, seed=seed))
            assert out.shape == (6, 3, 20, 24)
    assert calls.counts["grid_sample"] == 3
    assert calls.counts["interpolate"] == 0


def test_same_seed_same_output_and_different_seed_different():
    x = images(h=40, w=48)
    a, b, c = (BatchAugment(**ALL_ON, seed=s) for s in (7, 7, 8))
    out_a, out_b, out_c = a(x), b(x), c(x)
    assert torch.equal(out_a, out_b)
    assert not torch.allclose(out_a, out_c)
    assert not torch.allclose(a(x), out_a)  # the next batch gets fresh parameters


def test_seed_none_is_reproducible_with_set_seed():
    learnkit.set_seed(3)
    a = BatchAugment()
    learnkit.set_seed(3)
    b = BatchAugment()
    assert a.seed == b.seed
    x = images()
    assert torch.equal(a(x), b(x))


def test_saved_generator_state_replays_the_next_batch():
    x = images(h=40, w=48)
    aug = BatchAugment(**ALL_ON, seed=0)
    aug(x)
    state = aug.generator.get_state()
    expected = aug(x)
    aug(x)
    aug.generator.set_state(state)
    assert torch.equal(aug(x), expected)


@pytest.mark.parametrize("min_scale", [1.0, 0.5])
def test_output_size(min_scale):
    aug = BatchAugment(size=(20, 24), min_scale=min_scale, seed=0)
    out = aug(images(h=37, w=53))
    assert out.shape == (6, 3, 20, 24) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_random_resized_crop_windows_follow_min_scale():
    aug = BatchAugment(size=32, min_scale=0.5, seed=0)
    params = aug.draw_params(500, (40, 40))
    area = params.crop_w * params.crop_h
    assert area.max() <= 1 and area.min() >= 0.5 - 1e-9 and area.min() < 0.6
    assert ((params.crop_x.abs() + params.crop_w) <= 1 + 1e-9).all()  # the window stays inside the image


@pytest.mark.parametrize("h,w", [(33, 33), (33, 49)])
def test_rotation_moves_a_pixel_where_geometry_says(h, w):
    cy, cx = h // 2, w // 2
    x = torch.zeros(1, 1, h, w)
    x[0, 0, cy, cx + 10] = 1.0
    aug = BatchAugment(**OFF, pad_mode="zeros", seed=0)
    params = plain_params(aug, x)
    params.angle = torch.tensor([30.0], dtype=torch.float64)
    out = aug.augment(x, params)[0, 0]
    row, col = divmod(int(out.argmax()), w)
    # Positive angles turn the picture counterclockwise as displayed (y points down).
    exp_row, exp_col = cy - 10 * math.sin(math.radians(30)), cx + 10 * math.cos(math.radians(30))
    assert math.hypot(row - exp_row, col - exp_col) <= 1.0, (row, col, exp_row, exp_col)


def test_lighting_stays_in_range_and_moves_brightness_the_right_way():
    x = images(n=8, h=16, w=16)
    aug = BatchAugment(**OFF, seed=0)
    params = plain_params(aug, x)
    params.brightness = torch.full((8,), 0.9, dtype=torch.float64)
    brighter = aug.augment(x, params)
    params.brightness = torch.full((8,), 0.1, dtype=torch.float64)
    darker = aug.augment(x, params)
    base = x / 255
    assert brighter.mean() > base.mean() + 0.1 and darker.mean() < base.mean() - 0.1
    params.brightness = torch.full((8,), 0.5, dtype=torch.float64)
    params.contrast = torch.full((8,), 3.0, dtype=torch.float64)
    assert aug.augment(x, params).std() > base.std()
    random_light = BatchAugment(**{**OFF, "max_lighting": 0.9}, p_lighting=1.0, seed=0)(x)
    assert random_light.min() >= 0 and random_light.max() <= 1
    assert not torch.allclose(random_light, base)


def test_to_config_and_rebuild():
    assert BatchAugment(seed=0).to_config() is None
    cfg = BatchAugment(size=(20, 24), seed=0).to_config()
    assert cfg == {"type": "BatchResize", "size": [20, 24]}
    rebuilt = transform_from_config(cfg)
    assert isinstance(rebuilt, BatchResize) and rebuilt.size == (20, 24)
    x = images(h=40, w=48)
    assert torch.equal(rebuilt(x), BatchAugment(size=(20, 24), seed=0).eval()(x))


def test_float_input_is_not_rescaled():
    x = images(dtype=torch.float32)
    out = BatchAugment(**{**OFF, "p_flip": 1.0}, seed=0)(x)
    torch.testing.assert_close(out, torch.flip(x, dims=[-1]), rtol=0, atol=1e-6)
    torch.testing.assert_close(BatchAugment(**OFF, seed=0)(x), x, rtol=0, atol=0)


def test_output_stays_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BatchAugment(**ALL_ON, seed=0)(images(h=40, w=48))
    assert out.dtype == torch.float32


def test_affine_probability_is_per_image():
    x = images(n=400, h=8, w=8)
    aug = BatchAugment(**{**OFF, "max_rotate": 30.0}, p_affine=0.5, seed=0)
    out = aug(x)
    changed = ((out - x / 255).abs().flatten(1).max(1).values > 1e-4).float().mean().item()
    assert 0.4 < changed < 0.6  # binomial(400, 0.5): sd 0.025


def test_aug_transforms_defaults():
    tfms = aug_transforms(size=64, seed=0)
    assert len(tfms) == 1 and isinstance(tfms[0], BatchAugment)
    aug = tfms[0]
    assert (aug.p_flip, aug.p_flip_vert, aug.max_rotate, aug.max_zoom, aug.max_warp) == (0.5, 0.0, 10.0, 1.1, 0.2)
    assert (aug.max_lighting, aug.p_affine, aug.p_lighting, aug.size) == (0.2, 0.75, 0.75, (64, 64))
    assert aug_transforms(flip=False, flip_vert=True)[0].p_flip == 0.0
    assert "max_rotate=10.0" in repr(aug)


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_zoom=1.2, max_zoom=1.1), "max_zoom=1.1"),
    (dict(p_affine=1.5), r"p_affine=1.5 must be in \[0.0, 1.0\]"),
    (dict(p_lighting=-0.1), "p_lighting=-0.1"),
    (dict(min_scale=0.0), r"min_scale=0.0 must be in \(0, 1\]"),
    (dict(min_scale=1.5), "min_scale=1.5"),
    (dict(size=0), "size=0 must be a positive int"),
    (dict(size=(20, -1)), r"size=\(20, -1\)"),
    (dict(max_warp=0.6), r"max_warp=0.6 must be in \[0.0, 0.5\)"),
    (dict(max_lighting=1.0), "max_lighting=1.0"),
    (dict(ratio=(2.0, 1.0)), "ratio"),
    (dict(pad_mode="wrap"), "pad_mode='wrap'"),
])
def test_argument_errors_name_the_value_and_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchAugment(**kwargs)


def test_params_masks():
    aug = BatchAugment(**OFF, seed=0)
    params = aug.draw_params(3, (8, 8))
    assert isinstance(params, AugmentParams)
    assert not params.coord_mask().any() and not params.lighting_mask().any()
    params.zoom = torch.tensor([1.0, 1.1, 1.0], dtype=torch.float64)
    params.contrast = torch.tensor([1.0, 1.0, 0.8], dtype=torch.float64)
    assert params.coord_mask().tolist() == [False, True, False]
    assert params.lighting_mask().tolist() == [False, False, True]


@pytest.mark.gpu
def test_same_seed_same_augmentation_on_cpu_and_gpu():
    x = images(h=40, w=48)
    cpu = BatchAugment(**ALL_ON, seed=5)(x)
    gpu = BatchAugment(**ALL_ON, seed=5).cuda()(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


def test_homographies_compose_as_documented():
    # M = Crop @ Flip @ Rotate @ Zoom @ Warp maps output to input normalized coordinates.
    aug = BatchAugment(**OFF, seed=0)
    params = aug.draw_params(1, (8, 8))

    def to_input(points):
        m = params.homographies((8, 8))[0].double()
        v = torch.tensor([[px, py, 1.0] for px, py in points], dtype=torch.float64) @ m.T
        return (v[:, :2] / v[:, 2:]).tolist()

    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    params.warp_x, params.warp_y = torch.tensor([0.2], dtype=torch.float64), torch.tensor([-0.1], dtype=torch.float64)
    expected = [(sx - sx * sy * 0.2, sy + sx * sy * 0.1) for sx, sy in corners]
    torch.testing.assert_close(torch.tensor(to_input(corners)), torch.tensor(expected))
    params.warp_x, params.warp_y = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    params.zoom, params.zoom_x = torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    params.flip = torch.tensor([True])
    params.crop_w, params.crop_x = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.25], dtype=torch.float64)
    # (1, 0) -> zoom: (1, 0)/2 + (0.5, 0) = (1, 0) -> flip: (-1, 0) -> crop: 0.5 * -1 + 0.25 = -0.25
    torch.testing.assert_close(torch.tensor(to_input([(1, 0)])), torch.tensor([[-0.25, 0.0]]))
