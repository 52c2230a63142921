"""Data-parallel training on 2 GPUs with NCCL (skipped with fewer): the script of the CPU test, on the GPUs, with
BatchNorm made synchronous (Learner(sync_bn=True)) so that 2 ranks x 16 items train what 1 GPU x 32 items does.
Run on the lent 2-GPU machine: `pytest -m gpu tests/gpu/test_distributed_gpu.py`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "integration" / "ddp_script.py"

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")]


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_gpus_with_sync_batchnorm_train_what_one_gpu_trains(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir(), multi.mkdir()
    _run([sys.executable, str(SCRIPT), str(single), "32", "--cuda", "--bn"], single)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
          str(multi), "16", "--cuda", "--bn"], multi)
    one = json.loads((single / "rank0.json").read_text())
    r0, r1 = (json.loads((multi / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["device"], r1["device"], r0["backend"]) == ("cuda:0", "cuda:1", "nccl")
    assert r0["sync_bn"] == 1 and one["sync_bn"] == 0
    assert r0["weights"] == r1["weights"] and r0["val_results"] == r1["val_results"]
    for k, w in one["weights"].items():  # BatchNorm running stats included
        torch.testing.assert_close(torch.tensor(r0["weights"][k]), torch.tensor(w), atol=1e-3, rtol=1e-3)  # SyncBN sums differently
    assert one["val_results"]["accuracy"] > 0.9
    assert r0["val_results"]["accuracy"] == pytest.approx(one["val_results"]["accuracy"], abs=0.01)
