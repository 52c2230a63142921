"""Unit tests of the data layer's parts: blocks, splitters, Normalize, read_idx and config round trips."""
import gzip
import struct

import numpy as np
import pytest
import torch
from torch import nn

from learnkit.data import (CategoryBlock, ColumnSplitter, FolderSplitter, FuncSplitter, IndexSplitter,
                           MultiCategoryBlock, Normalize, RandomSplitter, RegressionBlock, TensorBlock,
                           block_from_config, read_idx, transform_from_config)


# --- CategoryBlock ---------------------------------------------------------------------------------

def test_category_vocab_is_sorted_training_labels_and_encode_decode_round_trip():
    block = CategoryBlock()
    block.setup(["dog", "cat", "bird", "cat"])
    assert block.classes == ["bird", "cat", "dog"]
    code = block.encode("dog")
    assert code.dtype == torch.long and code.shape == () and int(code) == 2
    assert [block.decode(block.encode(v)) for v in ["cat", "bird", "dog"]] == ["cat", "bird", "dog"]


def test_category_explicit_vocab_keeps_its_order():
    block = CategoryBlock(classes=["zebra", "ant"])
    block.setup(["ant", "zebra", "ant"])
    assert block.classes == ["zebra", "ant"]
    assert int(block.encode("zebra")) == 0 and int(block.encode("ant")) == 1


def test_category_explicit_vocab_missing_a_training_label_is_an_error():
    block = CategoryBlock(classes=["a", "b"])
    with pytest.raises(ValueError, match=r"training set has label\(s\) never seen in training: 'c' \(1 item\)"):
        block.setup(["a", "b", "c"])


def test_category_unseen_validation_labels_are_named_with_counts_and_fix():
    block = CategoryBlock()
    block.setup(["a", "b", "a"])
    with pytest.raises(ValueError) as err:
        block.check(["a", "x", "x", "y"], "validation")
    msg = str(err.value)
    assert "validation set" in msg
    assert "'x' (2 items)" in msg and "'y' (1 item)" in msg
    assert "['a', 'b']" in msg                           # the training labels
    assert "CategoryBlock(classes=[...])" in msg           # one of the fixes


def test_category_single_class_is_a_clear_error():
    with pytest.raises(ValueError) as err:
        CategoryBlock().setup(["only", "only"])
    msg = str(err.value)
    assert "1 class(es) (['only'])" in msg and "at least two" in msg and "get_y" in msg


def test_category_encode_of_unknown_label_names_it():
    block = CategoryBlock(classes=["a", "b"])
    with pytest.raises(KeyError, match=r"label 'q' is not one of the classes \['a', 'b'\]"):
        block.encode("q")


def test_category_tensor_and_numpy_labels_become_python_numbers():
    # Tensors hash by identity: without conversion every tensor(0) would be its own class.
    block = CategoryBlock()
    block.setup([torch.tensor(1), torch.tensor(0), np.int64(1), torch.tensor([0])])
    assert block.classes == [0, 1] and all(type(v) is int for v in block.classes)
    assert int(block.encode(torch.tensor(1))) == 1 and int(block.encode(np.int64(0))) == 0


def test_category_decode_prediction_activation_and_loss():
    block = CategoryBlock(classes=["a", "b", "c"])
    assert block.decode_prediction(torch.tensor([0.1, 0.7, 0.2])) == ("b", 1)
    probs = block.activation(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(probs, torch.softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1))
    assert isinstance(block.loss_fn(), nn.CrossEntropyLoss)
    assert block.title(torch.tensor(2)) == "c"


# --- MultiCategoryBlock ----------------------------------------------------------------------------

def test_multicategory_multi_hot_from_lists():
    block = MultiCategoryBlock()
    block.setup([["b", "a"], ["c"], []])
    assert block.classes == ["a", "b", "c"]
    assert block.encode(["c", "a"]).tolist() == [1.0, 0.0, 1.0]
    assert block.encode([]).tolist() == [0.0, 0.0, 0.0]
    assert block.encode(["b"]).dtype == torch.float32


def test_multicategory_multi_hot_from_delimited_strings():
    block = MultiCategoryBlock(delim=";")
    block.setup(["sun;rain", "snow", ""])
    assert block.classes == ["rain", "snow", "sun"]
    assert block.encode("snow;sun").tolist() == [0.0, 1.0, 1.0]
    assert block.encode("rain; snow").tolist() == [1.0, 1.0, 0.0]  # spaces around labels are ignored
    assert block.encode("").tolist() == [0.0, 0.0, 0.0]


def test_multicategory_decode_uses_threshold():
    block = MultiCategoryBlock(classes=["a", "b", "c"])
    probs = torch.tensor([0.9, 0.5, 0.4])
    assert block.decode(probs) == ["a", "b"]
    assert block.decode_prediction(probs) == (["a", "b"], [0, 1])
    strict = MultiCategoryBlock(classes=["a", "b", "c"], threshold=0.95)
    assert strict.decode(probs) == [] and strict.decode_prediction(probs) == ([], [])
    assert block.decode(block.encode(["c"])) == ["c"]
    assert isinstance(block.loss_fn(), nn.BCEWithLogitsLoss)
    torch.testing.assert_close(block.activation(torch.tensor([0.0])), torch.tensor([0.5]))


def test_multicategory_unseen_label_errors():
    block = MultiCategoryBlock()
    block.setup([["a"], ["b"]])
    with pytest.raises(ValueError, match=r"MultiCategoryBlock: the validation set has label\(s\) never seen in "
                                         r"training: 'z' \(2 items\)"):
        block.check([["a", "z"], ["z"]], "validation")
    with pytest.raises(KeyError, match=r"label 'z' \(in \['a', 'z'\]\) is not one of the classes \['a', 'b'\]"):
        block.encode(["a", "z"])
    with pytest.raises(ValueError, match="no labels at all"):
        MultiCategoryBlock().setup([[], []])


# --- RegressionBlock and TensorBlock ---------------------------------------------------------------

def test_regression_scalar_and_vector_targets():
    block = RegressionBlock()
    scalar = block.encode(2.5)
    assert scalar.shape == (1,) and scalar.dtype == torch.float32 and scalar.tolist() == [2.5]
    vector = block.encode(np.array([1, 2, 3]))
    assert vector.shape == (3,) and vector.dtype == torch.float32 and vector.tolist() == [1.0, 2.0, 3.0]
    assert block.decode(scalar) == 2.5
    assert block.decode(vector) == [1.0, 2.0, 3.0]
    assert block.decode_prediction(torch.tensor([0.25])) == (0.25, None)
    assert block.title(torch.tensor([0.123456])) == "0.123"
    assert isinstance(block.loss_fn(), nn.MSELoss)


def test_tensor_block_dtypes():
    raw = np.array([[0, 128, 255]], dtype=np.uint8)
    as_float = TensorBlock().encode(raw)
    assert as_float.dtype == torch.float32 and as_float.tolist() == [[0.0, 128.0, 255.0]]  # converted, not scaled
    kept = TensorBlock(dtype=None).encode(raw)
    assert kept.dtype == torch.uint8 and kept.tolist() == [[0, 128, 255]]
    assert TensorBlock(dtype=torch.int64).encode([1.0, 2.0]).dtype == torch.int64
    assert TensorBlock().loss_fn() is None


# --- block_from_config -----------------------------------------------------------------------------

@pytest.mark.parametrize("block", [
    TensorBlock(), TensorBlock(dtype=None), TensorBlock(dtype=torch.uint8),
    CategoryBlock(classes=["b", "a"]),
    MultiCategoryBlock(classes=["x", "y"], delim="|", threshold=0.3),
    RegressionBlock(),
], ids=repr)
def test_block_config_round_trip(block):
    config = block.to_config()
    rebuilt = block_from_config(config)
    assert type(rebuilt) is type(block)
    assert rebuilt.to_config() == config
    assert vars(rebuilt) == vars(block)


def test_block_config_round_trip_keeps_a_learned_vocab_fixed():
    block = CategoryBlock()
    block.setup(["b", "a"])
    rebuilt = block_from_config(block.to_config())
    rebuilt.setup(["a", "a", "b"])                  # a fixed vocab is not rebuilt from new data
    assert rebuilt.classes == ["a", "b"] and int(rebuilt.encode("b")) == 1


def test_block_from_config_unknown_type():
    with pytest.raises(ValueError, match=r"unknown block type 'ImageBlockX'.*known: \['CategoryBlock'"):
        block_from_config({"type": "ImageBlockX"})


# --- splitters -------------------------------------------------------------------------------------

def test_random_splitter_is_deterministic_sized_and_covers_everything():
    items = list(range(20))
    train, valid = RandomSplitter(valid_pct=0.25, seed=3)(items)
    assert (len(train), len(valid)) == (15, 5)
    assert sorted(train + valid) == items and not set(train) & set(valid)
    assert RandomSplitter(valid_pct=0.25, seed=3)(items) == (train, valid)
    assert RandomSplitter(valid_pct=0.25, seed=4)(items) != (train, valid)
    assert [len(s) for s in RandomSplitter(0.3, seed=0)(list(range(7)))] == [5, 2]   # round(2.1) = 2
    assert RandomSplitter(0.0)(items) == (RandomSplitter(0.0)(items)[0], [])


@pytest.mark.parametrize("pct", [1.0, -0.1])
def test_random_splitter_bad_pct(pct):
    with pytest.raises(ValueError, match=rf"RandomSplitter\(valid_pct={pct}\): valid_pct must be in \[0, 1\)"):
        RandomSplitter(valid_pct=pct)


def test_folder_splitter():
    items = ["data/train/cat/1.png", "data/valid/cat/2.png", "data/train/dog/3.png", "/abs/valid/4.png"]
    assert FolderSplitter()(items) == ([0, 2], [1, 3])
    assert FolderSplitter("tr", "va")(["x/tr/a.png", "x/va/b.png"]) == ([0], [1])


def test_folder_splitter_names_item_in_neither_folder():
    items = ["data/train/1.png", "data/test/2.png", "data/valid"]   # "valid" here is a file, not a folder
    with pytest.raises(ValueError) as err:
        FolderSplitter()(items)
    msg = str(err.value)
    assert "2 item(s) are in neither a 'train' nor a 'valid' folder" in msg
    assert "'data/test/2.png'" in msg and "'data/valid'" in msg
    assert "FolderSplitter(train_name=..., valid_name=...)" in msg


def test_column_splitter_on_dicts():
    rows = [{"x": 0, "is_valid": False}, {"x": 1, "is_valid": True}, {"x": 2, "is_valid": 0},
            {"x": 3, "is_valid": 1}]
    assert ColumnSplitter()(rows) == ([0, 2], [1, 3])
    assert ColumnSplitter("x")(rows) == ([0], [1, 2, 3])


def test_column_splitter_missing_column_names_item_and_column():
    rows = [{"x": 0, "split": True}, {"x": 1, "split": False}]
    with pytest.raises(KeyError) as err:
        ColumnSplitter()(rows)
    msg = str(err.value)
    assert "item 0" in msg and "no column 'is_valid'" in msg and "ColumnSplitter(col=...)" in msg


def test_func_splitter():
    assert FuncSplitter(lambda v: v % 3 == 0)(list(range(7))) == ([1, 2, 4, 5], [0, 3, 6])
    with pytest.raises(ValueError, match=r"FuncSplitter: func failed on item 1 \(b\): AttributeError"):
        FuncSplitter(lambda v: v.is_valid if v != "a" else False)(["a", "b"])


def test_index_splitter_and_its_errors():
    assert IndexSplitter([4, 1])(list("abcde")) == ([0, 2, 3], [4, 1])
    with pytest.raises(IndexError, match=r"IndexSplitter: indices \[12\] are outside 0\.\.9 \(10 items\)"):
        IndexSplitter([1, 12])(list(range(10)))


def test_empty_training_split_is_an_error():
    with pytest.raises(ValueError, match=r"IndexSplitter: the training split is empty \(3 items, 3 in valid\)"):
        IndexSplitter([0, 1, 2])(["a", "b", "c"])
    with pytest.raises(ValueError, match="FuncSplitter: the training split is empty"):
        FuncSplitter(lambda v: True)([1, 2])


# --- Normalize -------------------------------------------------------------------------------------

def test_normalize_uint8_is_scaled_then_normalized_per_channel():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)        # (1, 2 channels, 1, 2)
    out = Normalize(mean=[0.5, 0.1], std=[0.5, 0.2])(x)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 1, 2)
    torch.testing.assert_close(out, torch.tensor([[[[-1.0, 1.0]], [[0.5, 1.5]]]]))
    # float input is not scaled; one mean/std applies to every channel
    torch.testing.assert_close(Normalize(2.0, 4.0)(torch.tensor([[2.0, 6.0]])), torch.tensor([[0.0, 1.0]]))


def test_normalize_from_batches():
    b1 = torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[0.0]]]])              # (2, 2, 1, 1)
    b2 = torch.tensor([[[[5.0]], [[2.0]]], [[[7.0]], [[2.0]]]])
    norm = Normalize.from_batches([b1, b2])
    torch.testing.assert_close(norm.mean, torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(norm.std, torch.tensor([(20 / 3) ** 0.5, (4 / 3) ** 0.5]))
    norm8 = Normalize.from_batches([torch.full((2, 1, 2, 2), 51, dtype=torch.uint8)])
    torch.testing.assert_close(norm8.mean, torch.tensor([0.2]))


def test_normalize_config_round_trip():
    norm = Normalize(mean=[0.5, 0.25], std=[0.1, 0.2])
    config = norm.to_config()
    assert config == {"type": "Normalize", "mean": [0.5, 0.25], "std": [pytest.approx(0.1), pytest.approx(0.2)]}
    rebuilt = transform_from_config(config)
    assert isinstance(rebuilt, Normalize)
    assert torch.equal(rebuilt.mean, norm.mean) and torch.equal(rebuilt.std, norm.std)
    with pytest.raises(ValueError, match=r"unknown transform 'Flip' in exported recipe; known: \[.*'Normalize'"):
        transform_from_config({"type": "Flip"})


def test_normalize_bad_statistics():
    with pytest.raises(ValueError) as err:
        Normalize(mean=[0.1, 0.2, 0.3], std=[0.5, 0.5])
    msg = str(err.value)
    assert "mean has 3 values [" in msg and "std has 2 [0.5, 0.5]" in msg and "one mean and one std per channel" in msg
    with pytest.raises(ValueError, match=r"std must be positive, got \[0\.5, 0\.0\]"):
        Normalize(mean=[0.0, 0.0], std=[0.5, 0.0])


# --- read_idx --------------------------------------------------------------------------------------

def _idx_bytes(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


IMAGES = np.arange(12, dtype=np.uint8).reshape(3, 2, 2) * 20


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_uint8_plain_and_gzipped(tmp_path, name):
    data = _idx_bytes(0x08, (3, 2, 2), IMAGES.tobytes())
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    out = read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 2, 2)
    assert out.tolist() == IMAGES.tolist()


def test_read_idx_big_endian_types(tmp_path):
    ints = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "i").write_bytes(_idx_bytes(0x0C, (3,), ints.tobytes()))
    out = read_idx(tmp_path / "i")
    assert out.dtype == torch.int32 and out.tolist() == [1, -2, 70000]
    floats = np.array([[0.5, -1.25]], dtype=">f4")
    (tmp_path / "f").write_bytes(_idx_bytes(0x0D, (1, 2), floats.tobytes()))
    out = read_idx(str(tmp_path / "f"))
    assert out.dtype == torch.float32 and out.tolist() == [[0.5, -1.25]]


def test_read_idx_truncated_file_names_it(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(_idx_bytes(0x08, (3, 2, 2), IMAGES.tobytes()[:-1]))
    with pytest.raises(ValueError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated IDX file" in msg and "(12 bytes) but 11 bytes follow" in msg
    assert "re-download" in msg
    header_only = tmp_path / "header-idx3-ubyte"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match=r"header-idx3-ubyte: truncated IDX file: the header needs 16 bytes"):
        read_idx(header_only)
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(0x08, (3, 2, 2), IMAGES.tobytes()))[:-10])
    with pytest.raises(ValueError, match=r"cut\.gz: cannot read it as gzipped IDX"):
        read_idx(gz)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"labels\.csv: not an IDX file \(bad magic number 612c620a"):
        read_idx(path)
    fake_gz = tmp_path / "plain.gz"
    fake_gz.write_bytes(_idx_bytes(0x08, (1,), b"\x01"))
    with pytest.raises(ValueError, match=r"plain\.gz: cannot read it as gzipped IDX"):
        read_idx(fake_gz)
