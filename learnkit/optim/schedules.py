"""Schedules: pure functions of training progress p in [0, 1] (0 = first step, 1 = last step).

A fit's schedules are a dict hyper-parameter name → schedule, or → list of schedules (one per layer
group). `one_cycle` reproduces `torch.optim.lr_scheduler.OneCycleLR` (cosine) step for step.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["Const", "Lin", "Cos", "Exp", "Phases", "one_cycle", "flat_cos", "sgdr"]


class Const:
    """p → value."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, p: float) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"Const({self.value:.3g})"


class Lin:
    """Linear from start (p=0) to end (p=1)."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def __call__(self, p: float) -> float:
        return self.start + p * (self.end - self.start)

    def __repr__(self) -> str:
        return f"Lin({self.start:.3g}→{self.end:.3g})"


class Cos:
    """Half a cosine from start (p=0) to end (p=1); the same formula as torch's OneCycleLR."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def __call__(self, p: float) -> float:
        return self.end + (self.start - self.end) / 2.0 * (math.cos(math.pi * p) + 1)

    def __repr__(self) -> str:
        return f"Cos({self.start:.3g}→{self.end:.3g})"


class Exp:
    """Exponential (geometric) from start to end; both must be positive."""

    def __init__(self, start: float, end: float):
        if start <= 0 or end <= 0:
            raise ValueError(f"Exp({start}, {end}): both ends must be positive")
        self.start, self.end = start, end

    def __call__(self, p: float) -> float:
        return self.start * (self.end / self.start) ** p

    def __repr__(self) -> str:
        return f"Exp({self.start:.3g}→{self.end:.3g})"


class Phases:
    """Schedules run one after another. `ends[i]` is the progress at which phase i ends (inclusive);
    the last phase ends at 1. Each phase sees its own progress 0..1."""

    def __init__(self, ends: Sequence[float], scheds: Sequence):
        if len(ends) != len(scheds) - 1:
            raise ValueError(f"Phases: {len(scheds)} schedules need {len(scheds) - 1} phase ends, got {len(ends)}")
        self.ends, self.scheds = list(ends), list(scheds)

    def __call__(self, p: float) -> float:
        start = 0.0
        for end, sched in zip(self.ends + [1.0], self.scheds):
            if p <= end or sched is self.scheds[-1]:
                span = end - start
                return sched((p - start) / span if span > 0 else 1.0)
            start = end
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.scheds)


def _boundary(pct: float, total_steps: int) -> float:
    # OneCycleLR ends its warm-up at step pct*T - 1 and the run at step T - 1; progress is step / (T - 1).
    return (pct * total_steps - 1) / max(1, total_steps - 1)


def one_cycle(max_lr: float, total_steps: int, div_factor: float = 25.0, final_div_factor: float = 1e5,
              pct_start: float = 0.25, moms: Sequence[float] | None = (0.95, 0.85, 0.95)) -> dict:
    """lr: cosine warm-up from max_lr/div_factor to max_lr, then cosine down to that / final_div_factor;
    momentum (beta1) the opposite way through `moms`.

    Example:
        >>> sched = one_cycle(1e-3, total_steps=100)
        >>> round(sched["lr"](0.0), 6), sched["lr"](1.0) < 1e-8
        (4e-05, True)
    """
    b = _boundary(pct_start, total_steps)
    lo = max_lr / div_factor
    scheds = {"lr": Phases([b], [Cos(lo, max_lr), Cos(max_lr, lo / final_div_factor)])}
    if moms is not None:
        scheds["mom"] = Phases([b], [Cos(moms[0], moms[1]), Cos(moms[1], moms[2])])
    return scheds


def flat_cos(lr: float, total_steps: int, pct_start: float = 0.75, div_final: float = 1e5) -> dict:
    """lr flat for `pct_start` of the run, then cosine down to lr / div_final."""
    b = _boundary(pct_start, total_steps)
    return {"lr": Phases([b], [Const(lr), Cos(lr, lr / div_final)])}


def sgdr(max_lr: float, cycle_lengths: Sequence[int], min_lr: float = 0.0) -> dict:
    """Cosine from max_lr to min_lr in each cycle, restarting (cycle lengths in any unit, e.g. epochs)."""
    total = float(sum(cycle_lengths))
    ends, acc = [], 0.0
    for length in cycle_lengths[:-1]:
        acc += length
        ends.append(acc / total)
    # Phases treats a phase end as inclusive; nudge the restart just past it so the new cycle starts high.
    ends = [e - 1e-12 for e in ends]
    return {"lr": Phases(ends, [Cos(max_lr, min_lr) for _ in cycle_lengths])}
