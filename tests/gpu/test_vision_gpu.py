"""Vision on the GPU: the resident path, augmentation on the device, bf16 + channels_last training, both loader
paths agreeing, lr_find leaving the augmentation's RNG untouched. Marked `gpu` (skipped without CUDA)."""
import numpy as np
import pytest
import torch
from PIL import Image

from learnkit import set_seed
from learnkit.vision import ImageDataBunch, aug_transforms, tta, vision_learner


def _folder(root, n=48, size=16):
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("valid", n // 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                a = rng.integers(0, 60, (size, size), dtype=np.uint8)
                (a[: size // 2] if c == "a" else a[size // 2:])[...] += 150
                Image.fromarray(a).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.gpu
def test_resident_path_keeps_uint8_on_the_gpu_and_trains_in_bf16(tmp_path):
    set_seed(0)
    data = ImageDataBunch.from_folder(_folder(tmp_path), batch_size=16, seed=0, verbose=False,
                                      batch_tfms=aug_transforms(size=24))
    assert data.loader_kind == "resident" and "GPU-resident" in data.loader_report
    x_all = data.train_dl.tensors[0]
    assert x_all.is_cuda and x_all.dtype == torch.uint8
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False)
    assert learn.amp_dtype == torch.bfloat16
    assert learn.model.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    xb, _ = learn.data.one_batch()  # the learner's view of the data: channels-last added there, not in `data`
    assert xb.is_cuda and xb.shape[-2:] == (24, 24) and xb.is_contiguous(memory_format=torch.channels_last)
    assert not any(type(t).__name__ == "ChannelsLast" for t in data.batch_tfms)
    learn.fit_one_cycle(5, 3e-3)
    assert learn.validate()["accuracy"] >= 0.9
    result = tta(learn, n=2)
    assert result["tta_accuracy"] >= 0.85


@pytest.mark.gpu
def test_worker_path_on_cuda_gives_the_resident_path_batches(tmp_path):
    _folder(tmp_path)
    fast = ImageDataBunch.from_folder(tmp_path, batch_size=10, verbose=False)
    slow = ImageDataBunch.from_folder(tmp_path, batch_size=10, resident=False, num_workers=2, verbose=False)
    assert slow.train_dl.num_workers == 2
    for (xf, yf), batch in zip(fast.valid_dl, slow.valid_dl):
        xs, ys = fast.transfer(batch, training=False)[0], batch[1].cuda()
        assert torch.equal(fast.transfer((xf, yf), training=False)[0], xs) and torch.equal(yf, ys)


@pytest.mark.gpu
def test_lr_find_restores_the_augmentation_generator(tmp_path):
    set_seed(0)
    data = ImageDataBunch.from_folder(_folder(tmp_path), batch_size=16, seed=0, verbose=False,
                                      batch_tfms=aug_transforms())
    learn = vision_learner(data, "resnet18", pretrained=False, progress=False)
    aug = data.batch_tfms[0]
    before_aug, before_order = aug.generator.get_state(), data.train_dl.generator.get_state()
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.lr_find(num_it=10, show_plot=False)
    assert torch.equal(aug.generator.get_state(), before_aug)
    assert torch.equal(data.train_dl.generator.get_state(), before_order)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in weights.items())
