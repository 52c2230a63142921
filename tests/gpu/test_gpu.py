"""What only a CUDA device can show: mixed precision, the fused optimizer, pinned memory, and bit-exact
restores, saves and exports of state that lives on the GPU.

Every test is marked `gpu`; tests/conftest.py skips them without CUDA. On the lent GPU: `pytest tests/gpu -q`.
"""
import copy

import pytest
import torch

from learnkit import Learner, LearnerCheckError, accuracy, load_learner, set_seed
from learnkit.testing import classification_items, synthetic_classification, tiny_bn_mlp, tiny_mlp

DEVICE = "cuda"


def _data(n: int = 1024, num_workers: int | None = 0, **kwargs):
    """Synthetic 3-class data whose batches go to the GPU (768 train / 256 valid items: a tiny MLP reaches
    ~0.95 accuracy in 6 one-cycle epochs, in fp32, bf16 and fp16 alike). num_workers=None keeps learnkit's
    CUDA default (worker processes); 0 keeps the tests quick where the loader is not the point."""
    return synthetic_classification(n=n, n_features=8, n_classes=3, seed=0, batch_size=32, device=DEVICE,
                                    num_workers=num_workers, **kwargs)


def _assert_state_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def _assert_opt_state_equal(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for pid, state in a["state"].items():
        for key, value in state.items():
            other = b["state"][pid][key]
            if isinstance(value, torch.Tensor):
                assert value.device == other.device, f"optimizer state {pid}.{key} moved device"
                assert torch.equal(value, other), f"optimizer state {pid}.{key} differs"
            else:
                assert value == other, f"optimizer state {pid}.{key} differs"


@pytest.mark.gpu
def test_one_cycle_trains_with_bf16_autocast():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16; 'auto' picks fp16 (covered by the fp16 test)")
    set_seed(0)
    data = _data(num_workers=None)  # learnkit's own CUDA loader settings, end to end
    learn = Learner(data, tiny_mlp(8, 3, hidden=32), metrics=[accuracy], progress=False)
    assert learn.amp_dtype == torch.bfloat16
    assert not learn.scaler.is_enabled()  # bf16 needs no loss scaling
    learn.fit_one_cycle(6, max_lr=1e-2)
    assert learn.history.epoch_records[-1]["accuracy"] > 0.8
    assert all(p.dtype == torch.float32 and p.is_cuda for p in learn.model.parameters())  # autocast: fp32 weights


@pytest.mark.gpu
def test_fp16_uses_grad_scaler_and_trains():
    set_seed(0)
    learn = Learner(_data(), tiny_mlp(8, 3, hidden=32), metrics=[accuracy], mixed_precision="fp16", progress=False)
    assert learn.amp_dtype == torch.float16
    assert learn.scaler.is_enabled()
    learn.fit_one_cycle(6, max_lr=1e-2)
    scale = learn.scaler.get_scale()
    assert 0 < scale < float("inf")
    assert torch.isfinite(learn.history.losses).all()
    assert learn.history.epoch_records[-1]["accuracy"] > 0.8


@pytest.mark.gpu
def test_optimizer_is_fused_adamw_on_cuda():
    learn = Learner(_data(), tiny_mlp(8, 3), progress=False)
    opt = learn.create_opt()
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is True
    learn.fit(1, 1e-3)
    assert learn.opt is opt
    assert all(s["exp_avg"].is_cuda for s in opt.state.values())


@pytest.mark.gpu
def test_loader_pins_memory_on_cuda():
    data = _data(num_workers=None)
    assert data.train_dl.pin_memory and data.valid_dl.pin_memory
    x, y = next(iter(data.train_dl))
    assert x.is_pinned() and y.is_pinned()  # so that transfer's non_blocking copy really overlaps
    xb, yb = data.one_batch()
    assert xb.is_cuda and yb.is_cuda


@pytest.mark.gpu
def test_lr_find_restores_model_optimizer_and_rng_bit_exactly():
    set_seed(0)
    data = _data()
    # BatchNorm buffers and dropout (which draws from the CUDA generator) give lr_find more to put back.
    learn = Learner(data, tiny_bn_mlp(8, 3), progress=False)
    learn.fit(1, 1e-3)  # so that the optimizer has state (fused: its step counts live on the GPU)
    model_before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_before = copy.deepcopy(learn.opt.state_dict())
    cuda_rng, cpu_rng = torch.cuda.get_rng_state(), torch.get_rng_state()
    loader_rng = data.train_dl.generator.get_state()
    n_losses = len(learn.history.losses)

    learn.lr_find(num_it=20, show_plot=False)

    assert len(learn.lr_find_results["lrs"]) >= 10  # it did train
    _assert_state_equal(model_before, learn.model.state_dict(), "model")
    _assert_opt_state_equal(opt_before, learn.opt.state_dict())
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    assert torch.equal(torch.get_rng_state(), cpu_rng)
    assert torch.equal(data.train_dl.generator.get_state(), loader_rng)
    assert len(learn.history.losses) == n_losses


@pytest.mark.gpu
def test_preflight_check_names_both_devices_when_model_left_on_cpu():
    learn = Learner(_data(), tiny_mlp(8, 3), progress=False)
    learn.model.to("cpu")
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(LearnerCheckError) as info:
        learn.fit(1, 1e-3)
    message = str(info.value)
    assert "cpu" in message and "cuda" in message, message
    _assert_state_equal(before, learn.model.state_dict(), "model")  # raised before any step


@pytest.mark.gpu
@pytest.mark.parametrize("mixed_precision, atol", [(None, 1e-4), ("auto", 2e-2)])
def test_export_on_cuda_loads_on_cpu_with_same_predictions(tmp_path, mixed_precision, atol):
    set_seed(0)
    learn = Learner(_data(), tiny_mlp(8, 3), path=tmp_path, mixed_precision=mixed_precision, progress=False)
    learn.fit_one_cycle(2, max_lr=1e-2)
    predictor = load_learner(learn.export("export"), device="cpu")
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())
    for x, _ in classification_items(n=16, seed=1):
        label, index, probs = learn.predict(x)  # on the GPU (under autocast when mixed_precision='auto')
        label_cpu, index_cpu, probs_cpu = predictor.predict(x)
        assert probs.device.type == probs_cpu.device.type == "cpu"
        assert torch.allclose(probs_cpu, probs, atol=atol), (probs_cpu, probs)
        top2 = probs.topk(2).values
        if top2[0] - top2[1] > 2 * atol:  # a near tie may flip within the tolerance
            assert (label_cpu, index_cpu) == (label, index)


@pytest.mark.gpu
def test_save_load_round_trip_is_bit_exact_on_cuda(tmp_path):
    set_seed(0)
    learn = Learner(_data(), tiny_bn_mlp(8, 3), path=tmp_path, progress=False)
    learn.fit(1, 1e-3)
    learn.save("stage1")
    model_saved = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_saved = copy.deepcopy(learn.opt.state_dict())

    learn.fit(1, 1e-3)  # move away from the saved point
    assert not all(torch.equal(v, learn.model.state_dict()[k]) for k, v in model_saved.items())
    learn.load("stage1")
    _assert_state_equal(model_saved, learn.model.state_dict(), "model")
    _assert_opt_state_equal(opt_saved, learn.opt.state_dict())

    # And into a fresh Learner, whose optimizer is created by load.
    fresh = Learner(_data(), tiny_bn_mlp(8, 3), path=tmp_path, progress=False).load("stage1")
    _assert_state_equal(model_saved, fresh.model.state_dict(), "model (fresh learner)")
    _assert_opt_state_equal(opt_saved, fresh.opt.state_dict())
    assert fresh.opt.defaults["fused"] is True


@pytest.mark.gpu
def test_history_losses_after_lr_find_then_fit_on_cuda():
    # lr_find (and a Checkpoint resume) put the recorded losses back as CPU tensors; the next fit appends
    # CUDA ones, which History must bring together before torch.stack (it failed on mixed devices).
    set_seed(0)
    data = _data()
    learn = Learner(data, tiny_mlp(8, 3), progress=False)
    learn.fit(1, 1e-3)
    learn.lr_find(num_it=10, show_plot=False)
    learn.fit(1, 1e-3)
    assert len(learn.history.losses) == 2 * len(data.train_dl)
