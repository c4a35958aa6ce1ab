"""Learning-rate schedules: plain functions of the update count t = 0, 1, 2, ...

Anything callable as ``schedule(t) -> float`` works where sgdlab takes a learning rate. The
schedules here are small named objects: ``str(s)`` (and ``s.name``) says what they are, e.g.
``cosine(lr=0.5, total=100, final=0)``; ``fit`` records that name in ``history.config["lr"]``.

>>> s = step(1.0, 0.5, every=2)
>>> [s(t) for t in range(5)], s.name
([1.0, 1.0, 0.5, 0.5, 0.25], 'step(lr=1, factor=0.5, every=2)')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

Schedule = Callable[[int], float]


def _positive(x, name: str, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{name} must be a number; got {x!r}")
    x = float(x)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {x!r}")
    return x


def _count(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, Integral):
        raise TypeError(f"{name} must be an integer; got {x!r}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1; got {x}")
    return int(x)


class NamedSchedule:
    """A schedule eta(t) with a name made of its parameters (picklable, unlike a lambda)."""

    kind = "schedule"

    def __init__(self, **params: float) -> None:
        self.params = params
        self.name = f"{self.kind}({', '.join(f'{k}={v:g}' for k, v in params.items())})"
        self.__name__ = self.name

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


class constant(NamedSchedule):
    """eta_t = lr."""

    kind = "constant"

    def __init__(self, lr: float) -> None:
        super().__init__(lr=_positive(lr, "lr"))

    def __call__(self, t: int) -> float:
        return self.params["lr"]


class inverse_time(NamedSchedule):
    """eta_t = lr / (1 + decay t): satisfies the Robbins-Monro conditions sum eta = inf, sum eta^2 < inf."""

    kind = "inverse_time"

    def __init__(self, lr: float, decay: float) -> None:
        super().__init__(lr=_positive(lr, "lr"), decay=_positive(decay, "decay", allow_zero=True))

    def __call__(self, t: int) -> float:
        return self.params["lr"] / (1.0 + self.params["decay"] * t)


class exponential(NamedSchedule):
    """eta_t = lr * rate^(t / every)."""

    kind = "exponential"

    def __init__(self, lr: float, rate: float, every: int) -> None:
        super().__init__(lr=_positive(lr, "lr"), rate=_positive(rate, "rate"), every=_count(every, "every"))

    def __call__(self, t: int) -> float:
        p = self.params
        return p["lr"] * p["rate"] ** (t / p["every"])


class step(NamedSchedule):
    """eta_t = lr * factor^floor(t / every): drop by ``factor`` every ``every`` updates."""

    kind = "step"

    def __init__(self, lr: float, factor: float, every: int) -> None:
        super().__init__(lr=_positive(lr, "lr"), factor=_positive(factor, "factor"), every=_count(every, "every"))

    def __call__(self, t: int) -> float:
        p = self.params
        return p["lr"] * p["factor"] ** (t // p["every"])


class cosine(NamedSchedule):
    """eta_t = final + (lr - final)(1 + cos(pi min(t, total)/total))/2.

    With ``final=0`` (the default) eta reaches 0 at t = total; fit refuses lr = 0, so make
    ``total`` at least the number of updates, or give ``final > 0``.
    """

    kind = "cosine"

    def __init__(self, lr: float, total: int, final: float = 0.0) -> None:
        super().__init__(lr=_positive(lr, "lr"), total=_count(total, "total"), final=_positive(final, "final", True))

    def __call__(self, t: int) -> float:
        p = self.params
        return p["final"] + 0.5 * (p["lr"] - p["final"]) * (1.0 + math.cos(math.pi * min(t, p["total"]) / p["total"]))


def as_schedule(lr: float | Schedule) -> Schedule:
    """A schedule from a number (constant) or a callable (as it is)."""
    return lr if callable(lr) else constant(lr)


def schedule_name(lr: float | Schedule) -> str | float:
    """What to record for a learning rate: the number itself, or the schedule's name."""
    if isinstance(lr, constant):
        return lr.params["lr"]
    if callable(lr):
        return getattr(lr, "name", None) or getattr(lr, "__name__", None) or type(lr).__name__
    return lr
