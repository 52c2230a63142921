"""MaskBlock and SegmentationDataBunch: encoding and its errors, the one data path (resident and DataLoader give the
same batches), masks that follow Resize and batch augmentation pixel for pixel, bad items named or skipped,
show_batch overlays."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from learnkit.data import DataBlock
from learnkit.data.pipeline import PipelineError
from learnkit.vision import (BatchAugment, ImageBlock, MaskBlock, RandomResizedCrop, Resize, SegmentationDataBunch,
                             aug_transforms, read_codes)

CODES = ["background", "a", "b", "c"]
LEVEL = 60  # image pixel value of class k: k * LEVEL, so the mask is computable from the pixels


def tiles(n=8, h=32, w=32, tile=8, seed=0):
    """(images uint8 (n,1,h,w), masks uint8 (n,h,w)): random classes per tile, image = class * LEVEL."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, len(CODES), (n, h // tile, w // tile), generator=g, dtype=torch.uint8)
    masks = coarse.repeat_interleave(tile, 1).repeat_interleave(tile, 2)
    return (masks * LEVEL)[:, None], masks


def write_folder(root, n=12, size=(24, 32), seed=0):
    """root/images/NNN.png (L) and root/masks/NNN.png (L) whose mask = image // LEVEL."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    imgs, masks = tiles(n, *size, tile=8, seed=seed)
    for i in range(n):
        Image.fromarray(imgs[i, 0].numpy()).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(masks[i].numpy()).save(root / "masks" / f"{i:03d}.png")
    return imgs, masks


def from_folder(root, **kw):
    kw = {"codes": CODES, "mode": "L", "seed": 0, "batch_size": 4, "verbose": False, **kw}
    return SegmentationDataBunch.from_folder(root, **kw)


# ---------------------------------------------------------------------------------------------- the block
def test_mask_block_contract(tmp_path):
    block = MaskBlock(CODES, ignore_index=255)
    assert block.codes == CODES and block.classes == CODES and block.n_classes == 4 and block.ignore_index == 255
    loss = block.loss_fn()
    assert isinstance(loss, nn.CrossEntropyLoss) and loss.ignore_index == 255
    assert block.default_metrics() == ["pixel_accuracy", "mean_iou"]
    m = np.array([[0, 1], [3, 255]], dtype=np.uint8)
    Image.fromarray(m, mode="L").save(tmp_path / "l.png")
    p = Image.fromarray(m, mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (252 * 3))
    p.save(tmp_path / "p.png")
    for value in (tmp_path / "l.png", tmp_path / "p.png", m, torch.from_numpy(m.astype(np.int64))):
        out = block.encode(value)
        assert out.dtype == torch.uint8 and out.tolist() == m.tolist()
    assert MaskBlock.from_config(block.to_config()).to_config() == block.to_config()
    assert block.finish_batch(torch.zeros(2, 3, 3, dtype=torch.uint8)).dtype == torch.int64


def test_mask_block_errors_name_the_file(tmp_path):
    block = MaskBlock(CODES)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png is a RGB image.*mode 'L' or 'P'"):
        block.encode(tmp_path / "rgb.png")
    Image.fromarray(np.array([[0, 7], [9, 255]], np.uint8)).save(tmp_path / "high.png")
    with pytest.raises(ValueError, match=r"high\.png holds values \[7, 9\] outside the 4 codes"):
        block.encode(tmp_path / "high.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.png: file not found"):
        block.encode(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="2-D"):
        block.encode(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="ignore_index"):
        MaskBlock(CODES, ignore_index=2)
    with pytest.raises(TypeError, match="read_codes"):
        MaskBlock("codes.txt")


def test_read_codes(tmp_path):
    (tmp_path / "codes.txt").write_text("background\nroad\n\ncar\n")
    assert read_codes(tmp_path / "codes.txt") == ["background", "road", "car"]
    assert read_codes(("x", "y")) == ["x", "y"]
    with pytest.raises(FileNotFoundError, match="one name per line"):
        read_codes(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------------- the data path
@pytest.mark.parametrize("resident", [True, False])
def test_from_folder_batches(tmp_path, resident):
    imgs, masks = write_folder(tmp_path)
    data = from_folder(tmp_path, resident=resident, normalize=None)
    assert data.loader_kind == ("resident" if resident else "dataloader")
    assert data.classes == CODES and data.n_classes == 4 and data.y_block.ignore_index == 255
    raw = next(iter(data.valid_dl))
    assert raw[1].dtype == torch.uint8 and raw[1].shape == (2, 24, 32)  # 12 items, 20% for validation
    x, y = data.one_batch("train")
    assert y.dtype == torch.int64 and y.shape == (4, 24, 32) and x.shape == (4, 1, 24, 32)
    # each mask is still the one of its image: class = pixel // LEVEL
    assert torch.equal((x[:, 0] * 255).round().long() // LEVEL, y)


def test_resident_and_dataloader_paths_agree(tmp_path):
    write_folder(tmp_path)
    a = from_folder(tmp_path, resident=True, item_tfms=Resize(16))
    b = from_folder(tmp_path, resident=False, item_tfms=Resize(16))
    for (xa, ya), (xb, yb) in zip(a.valid_dl, b.valid_dl):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert ya.shape[-2:] == (16, 16)


def test_masks_read_in_worker_processes_equal_the_threads_and_name_bad_files(tmp_path, monkeypatch):
    # Many masks are read in forked processes (threads were GIL-bound: 20,000 masks took 19 s on 8 threads); the
    # masks, their order and the bad-file messages must not depend on which.
    import learnkit.data.parallel as parallel
    write_folder(tmp_path, n=24)
    Image.fromarray(np.full((24, 32), 9, np.uint8)).save(tmp_path / "masks" / "005.png")  # outside the codes
    threads = from_folder(tmp_path, on_bad="skip")
    monkeypatch.setattr(parallel, "PROCESS_MIN_VALUES", 4)
    processes = from_folder(tmp_path, on_bad="skip")
    for dl in ("train_dl", "valid_dl"):
        a, b = getattr(threads, dl).tensors, getattr(processes, dl).tensors
        assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a[1]) > 0
    assert [str(p) for p, _ in processes.skipped] == [str(p) for p, _ in threads.skipped] != []
    assert "outside the 4 codes" in processes.skipped[0][1]


def test_from_label_func(tmp_path):
    write_folder(tmp_path)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    data = SegmentationDataBunch.from_label_func(tmp_path / "images", names, lambda f: tmp_path / "masks" / f.name,
                                                 CODES, mode="L", seed=0, batch_size=4, verbose=False)
    assert data.n_classes == 4 and len(data.train_dl.tensors[0]) + len(data.valid_dl.tensors[0]) == 12


@pytest.mark.parametrize("resident", [True, False])
def test_bad_items_are_named_or_skipped(tmp_path, resident):
    write_folder(tmp_path)
    (tmp_path / "masks" / "001.png").unlink()                                            # missing mask
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "masks" / "002.png")  # RGB mask
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(tmp_path / "masks" / "003.png")     # wrong size
    Image.fromarray(np.full((24, 32), 9, np.uint8)).save(tmp_path / "masks" / "004.png")   # outside the codes
    with pytest.raises(ValueError, match=r"001\.png: no mask for it"):
        from_folder(tmp_path)
    (tmp_path / "images" / "001.png").unlink()
    with pytest.raises(ValueError) as err:
        from_folder(tmp_path, resident=resident)
    text = str(err.value)
    assert "3 items whose target cannot be read" in text
    assert "002.png is a RGB image" in text and "outside the 4 codes" in text
    assert "003.png is 32x20 (WxH) but its image" in text and "on_bad='skip'" in text
    with pytest.warns(UserWarning, match="skipped 3"):
        data = from_folder(tmp_path, on_bad="skip", resident=resident)
    assert sorted(str(p).rsplit("/", 1)[-1] for p, _ in data.skipped) == ["002.png", "003.png", "004.png"]
    assert len(data.train_dl.dataset if not resident else data.train_dl.tensors[0]) + \
        len(data.valid_dl.dataset if not resident else data.valid_dl.tensors[0]) == 8
    for _, y in data.train_dl:  # every batch reads: the bad masks are out
        assert y.shape[1:] == (24, 32)


def test_missing_mask_skip_and_codes_file(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "codes.txt").write_text("\n".join(CODES))
    (tmp_path / "masks" / "005.png").unlink()
    with pytest.warns(UserWarning, match="images without a mask"):
        data = from_folder(tmp_path, codes=None, on_bad="skip")
    assert data.classes == CODES and [p.name for p, _ in data.skipped] == ["005.png"]


def test_random_item_transform_is_refused_with_the_fix(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(ValueError, match=r"random per item.*aug_transforms"):
        from_folder(tmp_path, item_tfms=RandomResizedCrop(16))
    with pytest.raises(ValueError, match=r"random per item"):
        from_folder(tmp_path, item_tfms=Resize(16, random=True))


# ---------------------------------------------------------------------------------------------- moving together
@pytest.mark.parametrize("method,pad_mode", [("crop", "reflection"), ("squish", "reflection"), ("pad", "zeros"),
                                             ("pad", "reflection")])
def test_resize_moves_the_mask_with_nearest(method, pad_mode):
    imgs, masks = tiles(1, 24, 32, tile=8)
    block = MaskBlock(CODES)
    tfm = Resize(16, method=method, pad_mode=pad_mode)
    steps = block.target_steps([tfm])
    value = (masks[0], imgs[0])
    for _, fn in steps:
        value = fn(value)
    img = tfm(imgs[0])[0]
    assert value.shape == img.shape == (16, 16)
    assert set(torch.unique(value).tolist()) <= set(range(4)) | {255}  # labels are never blended
    if pad_mode == "zeros":
        pad = value == 255
        assert pad.any() and (img[pad] == 0).all()
    labelled = value != 255
    # the image is resized bilinearly: away from tile edges its pixels give the mask exactly
    from_pixels = (img.float() / LEVEL).round().long()
    agree = (from_pixels[labelled] == value[labelled].long()).float().mean()
    assert agree > 0.8, agree


def augment_batch(aug, imgs, masks):
    data_blocks = [ImageBlock(mode="L"), MaskBlock(CODES)]
    aug.train()
    return aug.transform_batch((imgs, masks), data_blocks, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmentation_keeps_mask_and_image_aligned_pixel_for_pixel(seed):
    imgs, masks = tiles(16, 32, 32, tile=8, seed=seed)
    aug = BatchAugment(p_flip=0.5, p_flip_vert=0.5, max_rotate=40, min_zoom=0.8, max_zoom=1.3, max_warp=0.3,
                       p_affine=1.0, max_lighting=0.0, mode="nearest", pad_mode="zeros", seed=seed)
    x, y = augment_batch(aug, imgs, masks)
    assert y.dtype == torch.uint8 and y.shape == masks.shape
    labelled = y != 255
    assert 0.3 < labelled.float().mean() < 1  # rotations and zoom-outs bring in outside pixels, marked void
    from_pixels = (x[:, 0] * 255 / LEVEL).round().long()
    assert torch.equal(from_pixels[labelled], y[labelled].long())  # nearest image sampling: exact
    assert (x[:, 0][~labelled] == 0).all()  # void exactly where the image sampled outside (zeros padding)
    assert not torch.equal(y, masks)        # it did move


def test_augmentation_with_bilinear_images_and_a_size():
    imgs, masks = tiles(16, 32, 48, tile=8, seed=3)
    aug = BatchAugment(size=24, max_rotate=20, p_affine=1.0, max_lighting=0.0, seed=3)
    x, y = augment_batch(aug, imgs, masks)
    assert x.shape == (16, 1, 24, 24) and y.shape == (16, 24, 24)
    labelled = y != 255
    from_pixels = (x[:, 0] * 255 / LEVEL).round().long()
    assert (from_pixels[labelled] == y[labelled].long()).float().mean() > 0.85  # edges blend in the image only
    aug.eval()  # validation: the centre crop + resize, the same window for both
    x, y = aug.transform_batch((imgs, masks), [ImageBlock(mode="L"), MaskBlock(CODES)], 1)
    assert y.shape == (16, 24, 24) and (y != 255).all()
    # 32x48 → the centre 32x32 (columns 8..40) → 24x24, nearest from pixel centres
    expected = torch.nn.functional.interpolate(masks[:, None, :, 8:40].float(), size=(24, 24), mode="nearest-exact")
    assert torch.equal(y, expected[:, 0].to(torch.uint8))


def test_whole_batch_path_through_databunch(tmp_path):
    write_folder(tmp_path, size=(32, 32))
    data = from_folder(tmp_path, batch_tfms=aug_transforms(max_rotate=30, p_affine=1.0, seed=0), normalize=None)
    x, y = data.one_batch("train")
    assert y.dtype == torch.int64 and y.shape == (4, 32, 32) and (y == 255).any()
    x, y = data.one_batch("valid")
    assert (y != 255).all()  # no augmentation in validation


def test_show_batch_overlays_masks(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    write_folder(tmp_path)
    data = from_folder(tmp_path)
    fig = data.show_batch(4)
    assert all(len(ax.get_images()) == 2 for ax in fig.axes[:4])  # the image, then the mask over it
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels and labels <= set(CODES[1:])


def test_datablock_with_arrays_and_summary(capsys):
    imgs, masks = tiles(8, 16, 16, tile=4)
    items = [(imgs[i, 0].numpy(), masks[i].numpy()) for i in range(8)]
    dblock = DataBlock((ImageBlock(mode="L"), MaskBlock(CODES)), item_tfms=Resize(8))
    data = dblock.databunch(items, batch_size=4, seed=0)
    x, y = data.one_batch("valid")
    assert y.shape == (len(y), 8, 8) and y.dtype == torch.int64
    dblock.summary(items)
    assert "MaskBlock.encode (mask, image)" in capsys.readouterr().out
    bad = [(imgs[0, 0].numpy(), masks[0, :8].numpy())] + items[1:]
    with pytest.raises(ValueError, match=r"is 16x8 \(WxH\) but its image"):
        dblock.databunch(bad, batch_size=4, seed=0)


def test_without_verify_a_bad_mask_fails_in_the_loader_naming_step_and_file(tmp_path):
    write_folder(tmp_path)
    Image.fromarray(np.full((24, 32), 9, np.uint8)).save(tmp_path / "masks" / "004.png")
    data = from_folder(tmp_path, resident=False, verify=False, valid_pct=0.5)
    with pytest.raises(PipelineError, match=r"MaskBlock.encode \(mask, image\).*004\.png holds values \[9\]"):
        for _ in data.train_dl:
            pass
        for _ in data.valid_dl:
            pass


def test_the_memory_budget_counts_the_masks(tmp_path):
    write_folder(tmp_path)  # 12 images of 24x32 uint8 = 9,216 bytes, and as many mask bytes
    assert from_folder(tmp_path, memory_budget=12_000).loader_kind == "dataloader"
    assert from_folder(tmp_path, memory_budget=20_000).loader_kind == "resident"
