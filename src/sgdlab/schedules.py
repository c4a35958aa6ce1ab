"""Learning-rate schedules: plain functions of the update count t = 0, 1, 2, ...

Anything callable as ``schedule(t) -> float`` works where sgdlab takes a learning rate.
"""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    """eta_t = lr."""
    return lambda t: lr


def inverse_time(lr: float, decay: float) -> Schedule:
    """eta_t = lr / (1 + decay t): satisfies the Robbins-Monro conditions sum eta = inf, sum eta^2 < inf."""
    return lambda t: lr / (1.0 + decay * t)


def exponential(lr: float, rate: float, every: int) -> Schedule:
    """eta_t = lr * rate^(t / every)."""
    return lambda t: lr * rate ** (t / every)


def step(lr: float, factor: float, every: int) -> Schedule:
    """eta_t = lr * factor^floor(t / every): drop by ``factor`` every ``every`` updates."""
    return lambda t: lr * factor ** (t // every)


def cosine(lr: float, total: int, final: float = 0.0) -> Schedule:
    """eta_t = final + (lr - final)(1 + cos(pi min(t, total)/total))/2."""
    return lambda t: final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * min(t, total) / total))


def as_schedule(lr: float | Schedule) -> Schedule:
    """A schedule from a number (constant) or a callable (as it is)."""
    return lr if callable(lr) else constant(float(lr))
