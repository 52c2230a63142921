"""One training script for tests/integration/test_distributed.py, run with plain python (one process) and under
torchrun (several): learnkit picks the mode from the environment; the script does not change.

Usage: python ddp_script.py OUT_DIR BATCH_SIZE [--cuda] [--bn]
  --cuda: data (and so training) on learnkit's default device (cuda:LOCAL_RANK under torchrun: NCCL)
  --bn:   an MLP with BatchNorm, with Learner(sync_bn=True) when distributed, in fp32 (so that 2 x 16 items with
          batch statistics over all 32 equal one process with 32)
Writes OUT_DIR/rank{r}.json (results) and, from rank 0, OUT_DIR/models/final.pth and OUT_DIR/export/.
"""
import json
import os
import sys
from pathlib import Path

import torch

from learnkit import Learner, accuracy, create_model, set_seed
from learnkit.core.device import default_device
from learnkit.learner.metrics import F1Score
from learnkit.learner.set_metrics import RocAuc
from learnkit.testing import synthetic_classification

out, batch_size = Path(sys.argv[1]), int(sys.argv[2])
set_seed(0)
cuda, bn = "--cuda" in sys.argv, "--bn" in sys.argv
data = synthetic_classification(n=1280, n_features=8, n_classes=3, seed=0, batch_size=batch_size,
                                device=default_device() if cuda else "cpu")
model = create_model("mlp", n_in=8, n_out=3, hidden=[32], batch_norm=bn)
distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
learn = Learner(data, model, metrics=[accuracy, F1Score(), RocAuc()], path=out, splitter=lambda m: [m[:-1], m[-1:]],
                sync_bn=bn and distributed, mixed_precision=None if bn else "auto")
learn.freeze()  # DDP must be rebuilt when unfreezing adds trainable parameters
learn.fit_one_cycle(1, 1e-2)
learn.unfreeze()
learn.fit_one_cycle(3, 1e-2)
suggestions = learn.lr_find(num_it=30, show_plot=False)
preds, targets = learn.get_preds()
learn.save("final", with_opt=False)
learn.export("export")
rank = learn.dist.rank if learn.dist is not None else 0
result = {
    "world_size": learn.dist.world_size if learn.dist is not None else 1,
    "train_batches": len(learn.data.train_dl),
    "val_results": learn.val_results,
    "history": [r.get("accuracy") for r in learn.history.epoch_records],
    "lr_find": list(suggestions),
    "preds": preds.tolist(), "targets": targets.tolist(),
    "weights": {k: v.tolist() for k, v in learn.model.state_dict().items()},
    "progress_bars": sum(type(cb).__name__ == "ProgressBar" for cb in learn.callbacks),
    "device": str(learn.device),
    "backend": torch.distributed.get_backend() if learn.dist is not None else None,
    "sync_bn": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in learn.model.modules()),
}
(out / f"rank{rank}.json").write_text(json.dumps(result))
if learn.dist is not None:
    torch.distributed.barrier()  # no rank tears the group down while another still talks to it
    torch.distributed.destroy_process_group()
