"""Optimization: optimizers with good defaults, layer-group parameter groups, schedules."""
from learnkit.optim.optimizer import SGD, AdamW, get_hyper, param_groups, set_hyper
from learnkit.optim.schedules import Const, Cos, Exp, Lin, Phases, flat_cos, one_cycle, sgdr

__all__ = ["AdamW", "Const", "Cos", "Exp", "Lin", "Phases", "SGD", "flat_cos", "get_hyper", "one_cycle",
           "param_groups", "set_hyper", "sgdr"]
