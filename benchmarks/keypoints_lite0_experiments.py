"""Controlled experiments behind benchmarks/results/keypoints_notes.md: one change at a time between learnkit's
`unfreeze(); fit_one_cycle(E)` / `fine_tune(E)` and the hand loop of keypoints_lite0.py, on the same canvases.

    python benchmarks/keypoints_lite0_experiments.py --only lk hand lk_avgpool --epochs 6 --out /tmp/exp.jsonl

Each variant prints one line (validation MAE in pixels) and appends it to --out as a JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

from keypoints_lite0 import build_data, fmnist_dir, hand_run, learnkit_run, mae_px


def _lk(recipe: str, learner_kwargs: dict | None = None, recipe_kwargs: dict | None = None, edit=None):
    def run(d, task, epochs, lite0, device, seed):
        r = recipe.replace("E", str(epochs))
        if edit is None:
            return learnkit_run(d, task, r, lite0, device, seed, learner_kwargs, recipe_kwargs)[0]
        return _edited(d, task, r, lite0, device, seed, learner_kwargs or {}, recipe_kwargs or {}, edit)
    return run


def _edited(d, task, recipe, lite0, device, seed, learner_kwargs, recipe_kwargs, edit):
    """learnkit_run with `edit(learn)` applied to the learner before training (module swaps, callbacks removed)."""
    from learnkit import set_seed
    from learnkit.vision.learner import vision_learner
    from keypoints_lite0 import SIZE, learnkit_data
    set_seed(seed)
    learn = vision_learner(learnkit_data(d, task, device, seed=seed), "efficientnet_lite0", weights=lite0,
                           progress=False, **learner_kwargs)
    edit(learn)
    name, epochs = recipe.split(":")
    if name == "fine_tune":
        learn.fine_tune(int(epochs), **recipe_kwargs)
    elif name == "fit":
        learn.unfreeze()
        learn.fit(int(epochs), **recipe_kwargs)
    else:
        learn.unfreeze()
        learn.fit_one_cycle(int(epochs), **recipe_kwargs)
    preds, _ = learn.get_preds()
    return preds if task == "centre" else (preds + 1) * SIZE / 2


def _no_precise_bn(learn):
    from learnkit.callbacks import PreciseBatchNorm
    for cb in [c for c in learn.callbacks if isinstance(c, PreciseBatchNorm)]:
        learn.remove_callback(cb)


def _no_head_bn(learn):
    learn.model.head = nn.Sequential(*[nn.Identity() if isinstance(m, nn.BatchNorm1d) else m for m in learn.model.head])
    learn.opt = None


def _zero_last(learn):
    nn.init.zeros_(learn.model.head[-1].weight)


def _small_last(learn):  # PyTorch's default Linear init (kaiming-uniform, a=sqrt(5)): weights ~ U(+-1/sqrt(fan_in))
    learn.model.head[-1].reset_parameters()
    nn.init.zeros_(learn.model.head[-1].bias)


def _hand(**kwargs):
    def run(d, task, epochs, lite0, device, seed):
        return hand_run(d, task, epochs, lite0, device, seed, **kwargs)
    return run


def _lk_head_model(concat_pool=True):
    """The hand loop with learnkit's regression head (pool → BatchNorm1d → Linear with bias) on the same body."""
    def build(n_out, lite0):
        from learnkit.vision.models import create_vision_model
        return create_vision_model("efficientnet_lite0", n_out=n_out, n_in=1, weights=lite0, concat_pool=concat_pool,
                                   head_hidden=None, dropout=0.0, out_shape=[n_out], y_range=None)
    return build


def _hand_with(model_builder, **kwargs):
    def run(d, task, epochs, lite0, device, seed):
        return hand_run(d, task, epochs, lite0, device, seed, model_fn=lambda k: model_builder(k, lite0), **kwargs)
    return run


def _torch_adamw_betas(b2):
    return lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.9, b2), eps=1e-5)


def _lk_adamw(**kw):
    from learnkit.optim.optimizer import AdamW
    return partial(AdamW, **kw)


VARIANTS = {
    "hand": _hand(),
    "hand_const": _hand(schedule="const"),
    "hand_lkbetas": _hand(opt_fn=_torch_adamw_betas(0.99)),
    "hand_lkhead": _hand_with(_lk_head_model(True)),
    "hand_lkhead_avg": _hand_with(_lk_head_model(False)),
    "lk": _lk("one_cycle:E"),
    "lk_avgpool": _lk("one_cycle:E", {"concat_pool": False}),
    "lk_nohbn": _lk("one_cycle:E", edit=_no_head_bn),
    "lk_torchbetas": _lk("one_cycle:E", {"opt_fn": _lk_adamw(betas=(0.9, 0.999), eps=1e-8)}),
    "lk_nomoms": _lk("one_cycle:E", recipe_kwargs={"moms": None}),
    "lk_wd0": _lk("one_cycle:E", {"weight_decay": 0.0}),
    "lk_zeroinit": _lk("one_cycle:E", edit=_zero_last),
    "lk_smallinit": _lk("one_cycle:E", edit=_small_last),
    "ft_zeroinit": _lk("fine_tune:E", edit=_zero_last),
    "ft_smallinit": _lk("fine_tune:E", edit=_small_last),
    "ft_smallinit_mult10": _lk("fine_tune:E", recipe_kwargs={"lr_mult": 10}, edit=_small_last),
    "ft_smallinit_mult1": _lk("fine_tune:E", recipe_kwargs={"lr_mult": 1}, edit=_small_last),
    "lk_noprecise": _lk("one_cycle:E", edit=_no_precise_bn),
    "lk_const": _lk("fit:E", edit=lambda learn: None, recipe_kwargs={"lr": 1e-3}),
    "lk_lr3e-3": _lk("one_cycle:E", recipe_kwargs={"max_lr": 3e-3}),
    "lk_lr3e-4": _lk("one_cycle:E", recipe_kwargs={"max_lr": 3e-4}),
    "ft": _lk("fine_tune:E"),
    "ft_mult1": _lk("fine_tune:E", recipe_kwargs={"lr_mult": 1}),
    "ft_mult10": _lk("fine_tune:E", recipe_kwargs={"lr_mult": 10}),
    "ft_mult1_freeze1": _lk("fine_tune:E", recipe_kwargs={"lr_mult": 1, "freeze_epochs": 1}),
    "ft_freeze1": _lk("fine_tune:E", recipe_kwargs={"freeze_epochs": 1}),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", required=True, choices=sorted(VARIANTS))
    p.add_argument("--fmnist", type=Path, default=None)
    p.add_argument("--lite0", type=Path, default=None)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-valid", type=int, default=500)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--task", default="centre", choices=["centre", "corners"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = build_data(fmnist_dir(args.fmnist), args.n_train, args.n_valid)
    y = d[args.task][args.n_train:]
    for name in args.only:
        for seed in args.seeds:
            start = time.perf_counter()
            error = mae_px(VARIANTS[name](d, args.task, args.epochs, args.lite0, device, seed), y)
            row = {"variant": name, "task": args.task, "epochs": args.epochs, "seed": seed, "n_train": args.n_train,
                   "mae_px": round(error, 3), "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
