"""Data-parallel training on the CPU (gloo): the same script under `torchrun --nproc_per_node=2` with batch 16
per rank trains the same weights as one process with batch 32 (each step's two rank batches are exactly the
single-process batch), the metrics are those of the whole validation set, ranks agree bit for bit, and what rank
0 wrote loads in a single process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learnkit import Learner, accuracy, create_model, load_learner
from learnkit.testing import synthetic_classification

SCRIPT = Path(__file__).with_name("ddp_script.py")


def _run(args, out, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update({"CUDA_VISIBLE_DEVICES": "", **(env_extra or {})})
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _run_ddp(out):
    """torchrun with 2 ranks. One retry, only when both ranks wrote their results and a rank then aborted while
    gloo tore down ("terminate called without an active exception"): seen once in ~30 runs on the CPU, after
    the script's work was done (gloo's teardown at exit, see pytorch/pytorch#179291); anything else fails."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
            str(out), "16"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    for attempt in range(2):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=out)
        written = all((out / f"rank{r}.json").exists() for r in (0, 1))
        if proc.returncode == 0 or attempt == 1 or not written or "terminate called" not in proc.stderr:
            break
        for r in (0, 1):
            (out / f"rank{r}.json").unlink()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single, multi = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    _run([sys.executable, str(SCRIPT), str(single), "32"], single)
    proc = _run_ddp(multi)
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    return (single, load(single / "rank0.json")), (multi, load(multi / "rank0.json"), load(multi / "rank1.json")), proc


def _weights(result):
    return {k: torch.tensor(v) for k, v in result["weights"].items()}


def test_two_ranks_train_what_one_process_trains(runs):
    (_, one), (_, r0, r1), _ = runs
    assert r0["world_size"] == 2 and one["world_size"] == 1
    assert r0["train_batches"] == one["train_batches"] == 30  # 60 batches of 16 shared by 2 ranks
    for k, w in _weights(one).items():
        torch.testing.assert_close(_weights(r0)[k], w, atol=1e-5, rtol=0)
    assert one["val_results"]["accuracy"] > 0.9
    for k, v in one["val_results"].items():
        assert r0["val_results"][k] == pytest.approx(v, abs=1e-5), k
    assert r0["history"] == pytest.approx(one["history"], abs=1e-6)


def test_ranks_agree_bit_for_bit(runs):
    _, (_, r0, r1), _ = runs
    assert r0["weights"] == r1["weights"]
    assert r0["val_results"] == r1["val_results"]
    assert r0["lr_find"] == r1["lr_find"]  # swept on rank 0, broadcast
    assert r0["preds"] == r1["preds"]


def test_only_rank0_shows_progress(runs):
    _, (_, r0, r1), proc = runs
    assert (r0["progress_bars"], r1["progress_bars"]) == (1, 0)
    assert proc.stdout.count("valid_loss") >= 1


def test_predictions_gathered_in_single_process_order(runs):
    (_, one), (_, r0, _), _ = runs
    assert r0["targets"] == one["targets"] and len(r0["preds"]) == 320
    torch.testing.assert_close(torch.tensor(r0["preds"]), torch.tensor(one["preds"]), atol=1e-5, rtol=0)


def test_rank0_files_load_in_one_process(runs):
    _, (multi, r0, _), _ = runs
    data = synthetic_classification(n=1280, n_features=8, n_classes=3, seed=0, batch_size=32)
    learn = Learner(data, create_model("mlp", n_in=8, n_out=3, hidden=[32]), metrics=[accuracy], path=multi,
                    progress=False)
    learn.load("final", with_opt=False)
    for k, w in _weights(r0).items():
        assert torch.equal(learn.model.state_dict()[k], w), k
    assert learn.validate()["accuracy"] == pytest.approx(r0["val_results"]["accuracy"], abs=1e-6)
    predictor = load_learner(multi / "export")
    x = data.valid_dl.dataset[0][0]
    assert predictor.predict(x)[0] == learn.predict(x)[0]
