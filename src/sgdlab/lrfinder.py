"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017),
as PyTorch Lightning's ``Tuner.lr_find`` and fastai's ``lr_find`` run it.

From the network's initial weights, ``steps`` updates are made with a step size growing
geometrically, eta_t = lr_min (lr_max / lr_min)^(t / (steps - 1)), and the batch cost is recorded.
The cost after update t (the batch cost before update t + 1) is paired with eta_t. The curve is
smoothed by a bias-corrected exponential moving average, a_t = beta a_{t-1} + (1 - beta) c_t,
s_t = a_t / (1 - beta^(t+1)). Both libraries use beta = 0.98 over 100 steps: a lag of about
1/(1 - beta) = 50 steps, half the sweep, which shifts the curve by decades of eta. Here the defaults
are beta = 0.95 (a 20-step lag) over 300 steps, so the lag is about 0.4 of a decade. The sweep stops early
when the smoothed cost exceeds ``diverge`` (4) times its minimum or becomes NaN/inf (Lightning's early-stop rule).
The network's parameters are put back afterwards: the sweep leaves no trace.

Two numbers come out:
- ``suggestion``: the eta where the smoothed cost falls fastest, argmin_t d s_t / d log eta_t,
  ignoring the first 10 points and the last one (Lightning's ``suggestion()``, steepest descent;
  not fastai's newer "valley" rule);
- ``largest_stable``: the largest eta reached before the smoothed cost first rises more than 10%
  above its running minimum (where the curve turns up; larger steps make training worse).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .train import Callback, DivergenceError, StopTraining, fit, resolve_batch_size

BETA = 0.95  # smoothing of the cost curve (fastai and Lightning: 0.98 over 100 steps; see above)
SKIP_BEGIN, SKIP_END = 10, 1  # points left out of the steepest-descent search (Lightning)
RISE = 0.10  # "turns up": smoothed cost more than 10% above its running minimum


@dataclass
class LRFinderResult:
    """The sweep: ``lrs[i]`` and the cost after an update with it (``costs`` raw, ``smoothed``)."""

    lrs: list
    costs: list
    smoothed: list
    suggestion: float | None
    largest_stable: float | None
    method: str
    batch_size: int
    stopped_early: bool = False
    rule: dict = field(default_factory=lambda: {
        "suggestion": "steepest descent of the smoothed cost against log eta (PyTorch Lightning), first 10 and last "
                      "1 points ignored",
        "largest_stable": f"largest eta before the smoothed cost rises more than {RISE:.0%} above its running minimum",
        "smoothing": f"bias-corrected exponential moving average, beta={BETA}"})

    def summary(self) -> str:
        if self.suggestion is None:
            return (f"the sweep gave too few points ({len(self.lrs)}) for a suggestion; "
                    "widen --lr-min/--lr-max or add --steps")
        end = " (the sweep stopped early: the cost blew up)" if self.stopped_early else ""
        return (f"suggested lr {self.suggestion:.3g} (steepest descent of the smoothed cost); largest stable lr "
                f"{self.largest_stable:.3g} (before the cost turns up); {len(self.lrs)} updates from "
                f"{self.lrs[0]:.3g} to {self.lrs[-1]:.3g}, {self.method} m={self.batch_size}{end}")

    def to_json(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    def plot(self, path, title: str | None = None) -> Path:
        """Cost (raw and smoothed) against eta on a log axis, with the two marked values."""
        from .plots import new_figure, save_figure

        fig, (ax,) = new_figure(1, size=(6.5, 4.2))
        ax.plot(self.lrs, self.costs, color="0.75", lw=0.8, label="batch cost")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label=f"smoothed (EMA, beta={BETA})")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C2", ls="--", label=f"suggestion {self.suggestion:.3g} (steepest)")
            ax.axvline(self.largest_stable, color="C3", ls=":", label=f"largest stable {self.largest_stable:.3g}")
        finite = [c for c in self.smoothed if math.isfinite(c)]
        if finite:
            lo = min(min(finite), min(c for c in self.costs if math.isfinite(c)))
            hi = max(finite[: max(1, len(finite) // 5)] + [min(finite)])
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-12), hi + 0.4 * (hi - lo + 1e-12))
        ax.set(xscale="log", xlabel="learning rate eta (log scale)", ylabel="cost C after the update",
               title="learning-rate range test")
        ax.legend(fontsize=8)
        return save_figure(fig, path, title, dpi=100)


class _Sweep(Callback):
    """Reads each update record's batch cost (fit puts it into every update record)."""

    def __init__(self, steps: int, diverge: float):
        self.steps, self.diverge = steps, diverge
        self.costs, self.smoothed, self._avg, self.stopped_early = [], [], 0.0, False

    def on_update_end(self, r):
        c = r["batch_cost"]
        if r["update"] > 1:  # the cost before update t+1 is the cost after update t
            if not math.isfinite(c):
                self.stopped_early = True
                raise StopTraining
            i = len(self.costs)
            self._avg = BETA * self._avg + (1 - BETA) * c
            s = self._avg / (1 - BETA ** (i + 1))
            self.costs.append(c)
            self.smoothed.append(s)
            if s > self.diverge * min(self.smoothed):
                self.stopped_early = True
                raise StopTraining
        if r["update"] > self.steps:
            raise StopTraining


def lr_find(net, X, Y, *, method: str = "minibatch", batch_size: int | None = None, lr_min: float = 1e-4,
            lr_max: float = 100.0, steps: int = 300, momentum: float = 0.0, seed=0,
            diverge: float = 4.0) -> LRFinderResult:
    """Run the learning-rate range test on ``net`` (left unchanged) and return its result.

    >>> import sgdlab
    >>> ds = sgdlab.data.load_digits_split(seed=0)
    >>> r = lr_find(sgdlab.Network([64, 30, 10], seed=0), ds.X_train, ds.y_train, seed=0)
    >>> print(f"{r.suggestion:.3g} {r.largest_stable:.3g}")
    0.0561 31.5
    """
    if not (0 < lr_min < lr_max and math.isfinite(lr_max)):
        raise ValueError(f"lr_find needs 0 < lr_min < lr_max; got lr_min={lr_min}, lr_max={lr_max}")
    if not isinstance(steps, int) or steps < SKIP_BEGIN + SKIP_END + 2:
        raise ValueError(f"steps must be an int >= {SKIP_BEGIN + SKIP_END + 2}; got {steps!r}")
    n = len(X)
    m = resolve_batch_size(method, batch_size, n)
    per_epoch = -(-n // m)
    ratio = lr_max / lr_min

    def schedule(t: int) -> float:
        return lr_min * ratio ** (min(t, steps - 1) / (steps - 1))

    start = net.copy_params()
    sweep = _Sweep(steps, diverge)
    try:
        fit(net, X, Y, method=method, batch_size=batch_size, lr=schedule, epochs=steps // per_epoch + 2,
            momentum=momentum, seed=seed, eval_train=False, callbacks=[sweep])
    except DivergenceError:
        sweep.stopped_early = True
    finally:
        net.params = start
    k = len(sweep.costs)
    lrs = [schedule(t) for t in range(k)]
    costs, smoothed = [float(c) for c in sweep.costs], [float(s) for s in sweep.smoothed]
    suggestion = largest = None
    if k >= SKIP_BEGIN + SKIP_END + 2:
        s = np.asarray(smoothed)
        slope = np.gradient(s, np.log(lrs))
        i = SKIP_BEGIN + int(np.argmin(slope[SKIP_BEGIN:k - SKIP_END]))
        suggestion = lrs[i]
        running_min = np.minimum.accumulate(s)
        up = np.flatnonzero(s > running_min * (1 + RISE))
        largest = lrs[(int(up[0]) - 1) if len(up) else k - 1]
        largest = max(largest, suggestion)
    return LRFinderResult(lrs, costs, smoothed, suggestion, largest, method, m, sweep.stopped_early)
