"""Unit tests of DataBlock (recipe → DataBunch, summary) and DataBunch (batches, test_dl, transfer)."""
import io
import traceback

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from learnkit.data import (CategoryBlock, DataBlock, DataBunch, IndexSplitter, MultiCategoryBlock, Normalize,
                           PipelineError, RegressionBlock, TensorBlock)


def pairs(n=10):
    """(x, label) pairs: x = [i, -i], label 'even'/'odd'."""
    return [(torch.tensor([float(i), float(-i)]), "even" if i % 2 == 0 else "odd") for i in range(n)]


def rows(n=10):
    return [{"x": [i, 10 * i], "y": "odd" if i % 2 else "even", "t": float(i) / 2} for i in range(n)]


def explode_on_seven(x):
    """An item transform that fails on one item (module-level so worker processes can use it)."""
    if int(x[0]) == 7:
        raise ValueError("seven is not allowed")
    return x


def times_ten(x):
    return x * 10


def first_values(dl):
    return [int(v) for xb, *_ in dl for v in xb[:, 0]]


def loader_error(dl):
    """The message of the PipelineError that iterating `dl` raises.

    A worker error re-raised by torch sits in reference cycles with the loader's iterator; freed by the
    cyclic GC, the iterator's queues may be finalized before it and torch then waits 5 s per worker to
    join them. Clearing the traceback's frames (and keeping no ExceptionInfo) lets refcounting free it.
    """
    try:
        for _ in dl:
            pass
    except PipelineError as e:
        traceback.clear_frames(e.__traceback__)
        return str(e)
    pytest.fail("iterating the loader raised no PipelineError")


class AddConst(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + self.c


class RecordMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


# --- DataBlock.databunch ---------------------------------------------------------------------------

def test_default_recipe_takes_x_y_pairs():
    data = DataBlock().databunch(pairs(10), batch_size=4, device="cpu", seed=0)
    assert isinstance(data, DataBunch) and isinstance(data.train_dl, DataLoader)
    assert (len(data.train_dl.dataset), len(data.valid_dl.dataset)) == (8, 2)   # RandomSplitter(0.2)
    assert data.classes == ["even", "odd"] and data.n_inp == 1
    batch = next(iter(data.train_dl))
    assert type(batch) is tuple and len(batch) == 2
    xb, yb = batch
    assert type(xb) is torch.Tensor and type(yb) is torch.Tensor
    assert xb.shape == (4, 2) and xb.dtype == torch.float32
    assert yb.shape == (4,) and yb.dtype == torch.long
    assert yb.tolist() == [int(x) % 2 for x in xb[:, 0].tolist()]      # labels belong to their inputs
    assert torch.equal(xb[:, 1], -xb[:, 0])


def test_valid_batches_are_in_order_with_exact_content():
    data = DataBlock(splitter=IndexSplitter([1, 2, 5])).databunch(pairs(8), batch_size=2, device="cpu")
    batches = list(data.valid_dl)
    assert [len(b[0]) for b in batches] == [2, 1]                      # validation never drops
    assert torch.equal(batches[0][0], torch.tensor([[1.0, -1.0], [2.0, -2.0]]))
    assert batches[0][1].tolist() == [1, 0] and batches[1][1].tolist() == [1]


def test_get_x_get_y_and_getters():
    dblock = DataBlock(blocks=(TensorBlock, CategoryBlock), get_x=lambda r: r["x"], get_y=lambda r: r["y"],
                       splitter=IndexSplitter([0, 1]))
    data = dblock.databunch(rows(6), batch_size=8, device="cpu")
    xb, yb = next(iter(data.valid_dl))
    assert xb.tolist() == [[0.0, 0.0], [1.0, 10.0]] and yb.tolist() == [0, 1]

    dblock = DataBlock(blocks=(TensorBlock, TensorBlock(dtype=None), RegressionBlock), n_inp=2,
                       getters=[lambda r: r["x"], lambda r: [len(r["y"])], lambda r: r["t"]],
                       splitter=IndexSplitter([3]))
    data = dblock.databunch(rows(6), batch_size=8, device="cpu")
    x1, x2, y = next(iter(data.valid_dl))
    assert x1.tolist() == [[3.0, 30.0]] and x2.tolist() == [[3]] and x2.dtype == torch.int64
    assert y.tolist() == [[1.5]] and y.dtype == torch.float32
    assert isinstance(data.y_block, RegressionBlock) and isinstance(data.loss_fn(), nn.MSELoss)


def test_bad_recipes_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="either getters=\\[...\\] or get_x/get_y, not both"):
        DataBlock(getters=[str, str], get_x=str)
    with pytest.raises(ValueError, match="1 getters for 2 blocks; give one per block"):
        DataBlock(getters=[str])
    with pytest.raises(ValueError, match=r"n_inp=3\): must be between 1 and the number of blocks \(2\)"):
        DataBlock(n_inp=3)
    with pytest.raises(TypeError, match="every block must be a TransformBlock"):
        DataBlock(blocks=(TensorBlock, str))
    with pytest.raises(ValueError, match=r"batch_size=0\): batch_size must be a positive int"):
        DataBlock().databunch(pairs(), batch_size=0, device="cpu")
    with pytest.raises(ValueError, match=r"no items found in list \[\]; check the source and get_items"):
        DataBlock().databunch([], device="cpu")


def test_items_that_are_not_pairs_get_a_fix_hint():
    with pytest.raises(PipelineError) as err:
        DataBlock().databunch([1.0, 2.0, 3.0], device="cpu")
    msg = str(err.value)
    assert "data step 'item[0]' failed on item 0 (float 1.0)" in msg and "pass get_x/get_y" in msg


def test_unseen_validation_label_through_databunch():
    items = pairs(6) + [(torch.zeros(2), "ghost")]
    with pytest.raises(ValueError, match=r"validation set has label\(s\) never seen in training: 'ghost' \(1 item\)"):
        DataBlock(splitter=IndexSplitter([0, 6])).databunch(items, device="cpu")


def test_same_seed_same_shuffle_other_seed_other_shuffle():
    def epoch_order(seed):
        data = DataBlock().databunch(pairs(40), batch_size=4, device="cpu", seed=seed)
        return first_values(data.train_dl), first_values(data.train_dl)

    first, second = epoch_order(seed=1)
    assert (first, second) == epoch_order(seed=1)
    assert first != second                                            # each epoch reshuffles
    assert epoch_order(seed=2)[0] != first
    assert sorted(first) == sorted(second)


def test_drop_last_default_drops_only_when_there_is_more_than_one_batch():
    def batch_sizes(n_train, batch_size, **kwargs):
        items = pairs(n_train + 2)
        data = DataBlock(splitter=IndexSplitter([0, 1])).databunch(items, batch_size=batch_size, device="cpu",
                                                                   seed=0, **kwargs)
        return [len(b[0]) for b in data.train_dl]

    assert batch_sizes(10, 4) == [4, 4]                               # the partial batch of 2 is dropped
    assert batch_sizes(4, 4) == [4]
    assert batch_sizes(3, 4) == [3]                                   # a single small batch is kept
    assert batch_sizes(10, 4, drop_last=False) == [4, 4, 2]


def test_two_workers_give_the_same_batches_as_none():
    items = pairs(24)
    kwargs = dict(batch_size=4, device="cpu", seed=5, drop_last=False)
    data0 = DataBlock().databunch(items, num_workers=0, **kwargs)
    data2 = DataBlock().databunch(items, num_workers=2, **kwargs)
    assert data2.train_dl.num_workers == 2 and data2.train_dl.persistent_workers
    assert data0.train_dl.num_workers == 0 and not data0.train_dl.persistent_workers

    def contents(dl):
        return sorted((tuple(x.tolist()), int(y)) for xb, yb in dl for x, y in zip(xb, yb))

    for _ in range(2):                                                # persistent workers serve two epochs
        assert contents(data2.train_dl) == contents(data0.train_dl)
    assert contents(data2.valid_dl) == contents(data0.valid_dl)
    assert len(contents(data2.train_dl)) + len(contents(data2.valid_dl)) == 24


def test_failing_get_y_names_step_item_and_value():
    items = pairs(10)
    items[5] = (items[5][0], None)
    dblock = DataBlock(get_y=lambda item: item[1].upper())
    with pytest.raises(PipelineError) as err:
        dblock.databunch(items, device="cpu", seed=0)
    msg = str(err.value)
    assert "data step 'get_y' failed on item 5" in msg
    assert "tensor([ 5., -5.]), None" in msg
    assert "AttributeError: 'NoneType' object has no attribute 'upper'" in msg


@pytest.mark.parametrize("num_workers", [0, 2])
def test_item_transform_error_names_step_and_source_item(num_workers):
    data = DataBlock(item_tfms=[explode_on_seven], splitter=IndexSplitter([0, 1, 2])).databunch(
        pairs(10), batch_size=2, device="cpu", num_workers=num_workers, seed=0, drop_last=False)
    msg = loader_error(data.train_dl)
    # train item 4 is source item 7: the message names the item the user knows
    assert "data step 'explode_on_seven' failed on item 7" in msg
    assert "its input was Tensor(shape=(2,), dtype=torch.float32)" in msg
    assert "ValueError: seven is not allowed" in msg


def test_items_of_different_shapes_give_a_collate_error_naming_block_and_shapes():
    items = [(torch.zeros(2 + i % 2), "even" if i % 2 == 0 else "odd") for i in range(6)]
    data = DataBlock(splitter=IndexSplitter([])).databunch(items, batch_size=6, device="cpu")
    with pytest.raises(PipelineError) as err:
        next(iter(data.train_dl))
    msg = str(err.value)
    assert "cannot batch block 0 (TensorBlock(dtype=torch.float32))" in msg
    assert "different shapes [(2,), (3,)]" in msg and "item transform" in msg


def test_item_transforms_apply_to_inputs_only():
    data = DataBlock(blocks=(TensorBlock, RegressionBlock), item_tfms=[times_ten],
                     splitter=IndexSplitter([3])).databunch([([i], i) for i in range(5)], device="cpu")
    xb, yb = next(iter(data.valid_dl))
    assert xb.tolist() == [[30.0]] and yb.tolist() == [[3.0]]


def test_uint8_inputs_stay_uint8_until_normalize_on_transfer():
    items = [(torch.full((1, 2, 2), 51 * (i % 3), dtype=torch.uint8), i % 2) for i in range(6)]
    dblock = DataBlock(blocks=(TensorBlock(dtype=None), CategoryBlock), batch_tfms=[Normalize(0.2, 0.5)],
                       splitter=IndexSplitter([0, 1]))
    data = dblock.databunch(items, batch_size=2, device="cpu")
    raw = next(iter(data.valid_dl))
    assert raw[0].dtype == torch.uint8 and raw[0].shape == (2, 1, 2, 2)
    xb, yb = data.transfer(raw, training=False)
    assert xb.dtype == torch.float32
    torch.testing.assert_close(xb[:, 0, 0, 0], torch.tensor([-0.4, 0.0]))   # (0-0.2)/0.5, (0.2-0.2)/0.5
    assert data.classes == [0, 1] and yb.tolist() == [0, 1]


# --- DataBlock.summary -----------------------------------------------------------------------------

def test_summary_prints_every_step_with_shapes():
    out = io.StringIO()
    dblock = DataBlock(splitter=IndexSplitter([0, 1]), batch_tfms=[Normalize(0.0, 2.0)])
    assert dblock.summary(pairs(10), file=out) is None
    text = out.getvalue()
    for line in ["get_items: 10 items; first: tuple (tensor([0., 0.]), 'even')",
                 "splitter: 8 train, 2 valid",
                 "setup CategoryBlock(n_classes=2)",
                 "Item 2: tuple (tensor([ 2., -2.]), 'even')",
                 "item[0] -> Tensor(shape=(2,), dtype=torch.float32)",
                 "TensorBlock.encode -> Tensor(shape=(2,), dtype=torch.float32)",
                 "item[1] -> str 'even'",
                 "CategoryBlock.encode -> Tensor(shape=(), dtype=torch.int64)",
                 "collate block 0 -> Tensor(shape=(2, 2), dtype=torch.float32)",
                 "collate block 1 -> Tensor(shape=(2,), dtype=torch.int64)",
                 "batch transform Normalize -> Tensor(shape=(2, 2), dtype=torch.float32)"]:
        assert line in text, f"missing {line!r} in:\n{text}"
    assert "FAILED" not in text


def test_summary_on_broken_get_x_prints_failed_and_raises():
    out = io.StringIO()
    dblock = DataBlock(get_x=lambda item: item["x"], splitter=IndexSplitter([0, 1]))
    with pytest.raises(PipelineError) as err:
        dblock.summary(pairs(10), file=out)
    msg = str(err.value)
    assert "data step 'get_x' failed on item 2" in msg and "TypeError" in msg
    text = out.getvalue()
    assert "FAILED" in text and "data step 'get_x' failed on item 2" in text


def test_summary_on_broken_item_transform_prints_the_failing_step():
    out = io.StringIO()
    dblock = DataBlock(item_tfms=[explode_on_seven], splitter=IndexSplitter([0, 1, 2, 3, 4, 5, 6]))
    with pytest.raises(PipelineError, match="data step 'explode_on_seven' failed on item 7"):
        dblock.summary(pairs(10), file=out)
    text = out.getvalue()
    assert "TensorBlock.encode -> Tensor(shape=(2,), dtype=torch.float32)" in text
    assert "explode_on_seven: FAILED" in text


def test_summary_on_broken_batch_transform():
    out = io.StringIO()
    dblock = DataBlock(splitter=IndexSplitter([0]), batch_tfms=[Normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])])
    with pytest.raises(PipelineError, match=r"batch transform Normalize failed on input Tensor\(shape=\(2, 2\)"):
        dblock.summary(pairs(4), file=out)
    assert "batch transform Normalize: FAILED" in out.getvalue()


# --- DataBunch -------------------------------------------------------------------------------------

def test_one_batch_and_target_description_per_block():
    data = DataBlock(splitter=IndexSplitter([0, 1, 2])).databunch(pairs(9), batch_size=3, device="cpu", seed=0)
    xb, yb = data.one_batch()
    assert xb.shape == (3, 2) and yb.shape == (3,)
    vx, vy = data.one_batch("valid")
    assert vx[:, 0].tolist() == [0.0, 1.0, 2.0] and vy.tolist() == [0, 1, 0]
    assert data.classes == data.classes == ["even", "odd"] and data.n_classes == 2
    assert isinstance(data.loss_fn(), nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match=r"one_batch\(split='test'\): split must be 'train' or 'valid'"):
        data.one_batch("test")

    multi = DataBlock(blocks=(TensorBlock, MultiCategoryBlock(delim=",")), get_x=lambda r: r["x"],
                      get_y=lambda r: "a,b" if r["t"] > 1 else "b").databunch(rows(8), device="cpu")
    assert multi.vocab == ["a", "b"] and multi.c == 2 and isinstance(multi.loss_fn(), nn.BCEWithLogitsLoss)

    reg = DataBlock(blocks=(TensorBlock, RegressionBlock)).databunch([([i], i) for i in range(5)], device="cpu")
    assert reg.vocab is None and reg.c is None and isinstance(reg.loss_fn(), nn.MSELoss)

    inputs_only = DataBlock(blocks=(TensorBlock,)).databunch([[i, i] for i in range(5)], device="cpu")
    assert inputs_only.y_block is None and inputs_only.loss_fn() is None
    assert len(next(iter(inputs_only.valid_dl))) == 1


def test_test_dl_inputs_only_and_with_labels():
    dblock = DataBlock(get_x=lambda r: r["x"], get_y=lambda r: r["y"], item_tfms=[times_ten])
    data = dblock.databunch(rows(10), batch_size=4, device="cpu", seed=0)
    dl = data.test_dl([[1, 2], [3, 4], [5, 6]])                        # values as get_x returns them
    assert isinstance(dl, DataLoader)
    batches = list(dl)
    assert len(batches) == 1 and len(batches[0]) == 1
    assert batches[0][0].tolist() == [[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]
    labelled = list(data.test_dl(rows(3), with_labels=True, batch_size=2))   # whole items, through getters
    assert [len(b) for b in labelled] == [2, 2]
    assert labelled[0][0].tolist() == [[0.0, 0.0], [10.0, 100.0]] and labelled[0][1].tolist() == [0, 1]
    assert labelled[1][1].tolist() == [0]
    handmade = DataBunch(data.train_dl, data.valid_dl, data.blocks, device="cpu")
    with pytest.raises(ValueError, match="test_dl needs a DataBunch made by DataBlock.databunch"):
        handmade.test_dl([[1, 2]])


def test_to_moves_future_batches_and_returns_self():
    data = DataBlock(batch_tfms=[Normalize(0.0, 1.0)]).databunch(pairs(10), device="cpu")
    assert data.to("cpu") is data
    assert data.device == torch.device("cpu") and data.batch_tfms[0].mean.device.type == "cpu"
    assert all(t.device.type == "cpu" for t in data.one_batch())


def test_show_batch_titles_axes_with_labels():
    from matplotlib.figure import Figure

    data = DataBlock(splitter=IndexSplitter([0, 1, 2, 3, 4])).databunch(pairs(10), device="cpu")
    fig = data.show_batch(n=4, split="valid")
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["even", "odd", "even", "odd"]
    fig = data.show_batch(n=3, split="valid")
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes] == ["even", "odd", "even", ""]
    assert not fig.axes[3].axison


def test_batch_transforms_apply_in_transfer_to_inputs_only_and_follow_training_flag():
    recorder = RecordMode()
    data = DataBlock(blocks=(TensorBlock, RegressionBlock), batch_tfms=[AddConst(100.0), recorder],
                     splitter=IndexSplitter([0, 1])).databunch([([i], i) for i in range(6)], device="cpu")
    raw = next(iter(data.valid_dl))
    assert raw[0].tolist() == [[0.0], [1.0]]                          # loaders yield untransformed batches
    xb, yb = data.transfer(raw, training=True)
    assert xb.tolist() == [[100.0], [101.0]] and yb.tolist() == [[0.0], [1.0]]
    data.transfer(raw, training=False)
    data.transfer(raw, training=True)
    data.one_batch("valid")
    data.one_batch("train")
    assert recorder.modes == [True, False, True, False, True]
