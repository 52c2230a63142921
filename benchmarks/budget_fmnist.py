"""Budgeted training on the GPU: `fit_one_cycle(budget=...)` on the Fashion-MNIST PNG folder (resident path,
resnet18, 28 px, batch 256): how close the fit's wall time comes to the budget, and the accuracy reached.

    python benchmarks/budget_fmnist.py --folder /tmp/fmnist-png --budgets 10 20 40
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/fmnist-png"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[10, 20, 40])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from learnkit import set_seed
    from learnkit.vision import ImageDataBunch, vision_learner
    data = ImageDataBunch.from_folder(args.folder, valid="test", mode="L", batch_size=256, seed=0)
    results = []
    for budget in args.budgets:
        set_seed(0)
        learn = vision_learner(data, "resnet18", pretrained=False, progress=False)
        start = time.perf_counter()
        learn.fit_one_cycle(budget=budget, max_lr=1e-3)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        total = time.perf_counter() - start
        plan = {k: v for k, v in learn.budget_plan.items() if k != "callback"}
        fit_s = sum(r["time"] for r in learn.history.epoch_records)
        results.append({"budget_s": budget, "fit_s": round(fit_s, 2), "fit_over_budget": round(fit_s / budget, 3),
                        "with_planning_s": round(total, 2), "accuracy": learn.history.epoch_records[-1]["accuracy"],
                        **plan})
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
