"""core: tensor files, atomic writes, RNG snapshots, the model registry."""
import json
import random
import struct

import numpy as np
import pytest
import torch

from learnkit.core import (atomic_write, create_model, get_rng_state, list_models, load_tensors, model_spec,
                           register_model, save_tensors, set_rng_state)
from learnkit.core.random import rng_state_from_tensors, rng_state_to_tensors


def test_tensor_file_round_trip_all_dtypes(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
               "u8": torch.randint(0, 255, (7,), dtype=torch.uint8), "bool": torch.tensor([True, False]),
               "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5, dtype=torch.float64),
               "strided": torch.randn(4, 4).t()}
    save_tensors(tensors, tmp_path / "t.safetensors", metadata={"k": "v"})
    back = load_tensors(tmp_path / "t.safetensors")
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k
    raw = (tmp_path / "t.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8:8 + n])["__metadata__"] == {"k": "v"}


def test_corrupt_tensor_files_are_clear_errors(tmp_path):
    save_tensors({"w": torch.randn(10)}, tmp_path / "ok.safetensors")
    raw = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[:-4])
    with pytest.raises(ValueError, match="short.safetensors.*byte range"):
        load_tensors(tmp_path / "short.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(ValueError, match="junk.safetensors.*not JSON"):
        load_tensors(tmp_path / "junk.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"ab")
    with pytest.raises(ValueError, match="tiny.safetensors"):
        load_tensors(tmp_path / "tiny.safetensors")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_rng_state_round_trip_through_tensors():
    g = torch.Generator().manual_seed(5)
    state = rng_state_to_tensors(get_rng_state([g]))
    a = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
    set_rng_state(rng_state_from_tensors(state), [g])
    b = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])


def test_registry():
    assert {"mlp", "simple_cnn"} <= set(list_models())
    m = create_model("mlp", n_in=4, n_out=2, hidden=[8])
    assert model_spec(m) == {"name": "mlp", "kwargs": {"n_in": 4, "n_out": 2, "hidden": [8]}}
    assert model_spec(torch.nn.Linear(2, 2)) is None
    with pytest.raises(KeyError, match="no model named 'nope'"):
        create_model("nope")
    with pytest.raises(TypeError, match="JSON"):
        create_model("mlp", n_in=4, n_out=2, hidden=torch.tensor([3]))

    @register_model("test_registry_linear")
    def lin(n: int = 2):
        return torch.nn.Linear(n, n)

    with pytest.raises(ValueError, match="already registered"):
        register_model("test_registry_linear")(lambda: None)
    assert create_model("test_registry_linear", n=3).in_features == 3
    x = create_model("simple_cnn", n_in=1, n_out=10)(torch.zeros(2, 1, 28, 28))
    assert x.shape == (2, 10)


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
