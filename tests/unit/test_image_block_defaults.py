"""A DataBlock with an ImageBlock hands the model float32 in [0, 1] (IntToFloat), a user Normalize after it gives
the same values as on uint8 (no double scaling), ImageDataBunch keeps its own single Normalize, and the default
survives export."""
import numpy as np
import pytest
import torch
from PIL import Image

from learnkit import (CategoryBlock, DataBlock, Learner, Normalize, RandomSplitter, create_model, load_learner)
from learnkit.learner.events import Callback
from learnkit.vision import ImageBlock, ImageDataBunch, get_image_files, parent_label
from learnkit.vision.image import IntToFloat


@pytest.fixture
def png_folder(tmp_path):
    """24 gray 12x12 PNGs in two class folders: 'dark' (values 10..59) and 'light' (150..199)."""
    rng = np.random.default_rng(0)
    for label, low in (("dark", 10), ("light", 150)):
        (tmp_path / label).mkdir()
        for i in range(12):
            pixels = rng.integers(low, low + 50, size=(12, 12), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / label / f"{i}.png")
    return tmp_path


class RecordInput(Callback):
    def before_fit(self, learn):
        self.dtypes, self.lows, self.highs = set(), [], []

    def before_batch(self, learn):
        x = learn.xb[0]
        self.dtypes.add(x.dtype)
        self.lows.append(float(x.min()))
        self.highs.append(float(x.max()))


def _dblock(**kwargs):
    return DataBlock((ImageBlock(mode="L"), CategoryBlock), get_items=get_image_files, get_x=lambda path: path,
                     get_y=parent_label,
                     splitter=RandomSplitter(0.25, seed=0), **kwargs)


def test_datablock_with_imageblock_fits_and_the_model_sees_floats(png_folder, tmp_path):
    data = _dblock().databunch(png_folder, batch_size=8, device="cpu", seed=0)
    record = RecordInput()
    learn = Learner(data, create_model("simple_cnn", n_in=1, n_out=2), metrics=[], callbacks=[record],
                    progress=False, path=tmp_path)
    learn.fit(1, lr=1e-2)  # used to fail: "expected scalar type Byte but found Float"
    assert record.dtypes == {torch.float32}
    assert min(record.lows) >= 10 / 255 - 1e-6 and max(record.highs) <= 199 / 255 + 1e-6
    # the exported bundle rebuilds the conversion: the same probabilities as in training
    file = get_image_files(png_folder / "light")[0]
    loaded = load_learner(learn.export(tmp_path / "bundle"))
    assert torch.allclose(loaded.predict(file)[2], learn.predict(file)[2], atol=1e-6)


def test_a_user_normalize_after_the_default_is_not_scaled_twice(png_folder):
    norm = Normalize(0.4, 0.25)
    data = _dblock(batch_tfms=[norm]).databunch(png_folder, batch_size=8, device="cpu", seed=0)
    assert [type(t).__name__ for t in data.batch_tfms] == ["IntToFloat", "Normalize"]
    raw = next(iter(data.valid_dl))[0]
    assert raw.dtype == torch.uint8
    x = data.transfer((raw,), training=False)[0]
    assert torch.equal(x, norm(raw))  # Normalize on uint8 scales once; after IntToFloat it must not scale again
    assert torch.allclose(x, (raw.float() / 255 - 0.4) / 0.25)


def test_int_to_float():
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert torch.equal(IntToFloat()(x), torch.tensor([[0.0, 0.2, 1.0]]))
    f = torch.tensor([0.5, 2.0])
    assert IntToFloat()(f) is f


def test_image_databunch_keeps_its_single_normalize(png_folder):
    data = ImageDataBunch.from_folder(png_folder, valid_pct=0.25, seed=0, mode="L", batch_size=8, device="cpu",
                                      normalize=((0.4,), (0.25,)), verbose=False)
    assert [type(t).__name__ for t in data.batch_tfms] == ["Normalize"]
    raw = next(iter(data.valid_dl))[0]
    x = data.transfer((raw,), training=False)[0]
    assert torch.allclose(x, (raw.float() / 255 - 0.4) / 0.25)
