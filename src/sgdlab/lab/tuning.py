"""Fair comparisons: train at a fixed budget, and tune the learning rate on a grid at equal budget.

A method (here: a batch size B; B = n is batch gradient descent) is only compared with another at
its own best learning rate eta. ``tune_lr`` tries every eta of a geometric grid from the same
initial weights (one network per seed, the same for every eta), at the same budget, and picks the
best eta by a stated criterion:

* with a ``target`` cost: the fewest updates to reach it, as the *restricted mean* over seeds
  (a run that never reaches the target counts as the whole budget, a lower bound: the standard
  summary of censored times); ties (e.g. no run reached it) are broken by the mean final cost;
* without: the lowest mean final training cost at the budget.

A diverged run (a non-finite cost) scores +inf. When the best eta sits at an end of the grid the
grid is extended by one step in that direction (up to ``max_extensions`` times), so the reported
best is inside the grid; ``Tuning.at_edge`` says when it still is not.

``train_to_budget`` is the single run behind it: mini-batch SGD until ``max_updates`` updates (or
``max_examples`` examples), the full training cost recorded at checkpoints spaced evenly in
log(updates), and the updates, examples and training seconds at which the cost first reaches the
target (log-log interpolation between the two checkpoints around the crossing).

>>> import numpy as np
>>> from sgdlab import Network
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(64, 2)); y = (X[:, 0] > 0).astype(int)
>>> t = tune_lr(lambda s: Network([2, 4, 2], seed=s), X, y, grid=[0.5, 2.0, 8.0], batch_size=8,
...             seeds=[0], max_updates=40)
>>> t.best_lr in t.grid, len(t.results) == len(t.grid)
(True, True)
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..train import Callback, DivergenceError, StopTraining, fit
from .estimators import mean_ci


@contextlib.contextmanager
def pinned_threads(threads: int | None = 1):
    """Limit BLAS (and OpenMP) thread pools to ``threads`` inside the block (None: leave them)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def lr_grid(low: float, high: float, factor: float = 2.0) -> list[float]:
    """A geometric grid low, low*factor, ... up to high (inclusive within rounding).

    >>> lr_grid(0.25, 4.0)
    [0.25, 0.5, 1.0, 2.0, 4.0]
    """
    if not (0 < low <= high) or factor <= 1:
        raise ValueError(f"lr_grid needs 0 < low <= high and factor > 1, got {low}, {high}, {factor}")
    k = math.floor(math.log(high / low) / math.log(factor) + 1e-9) + 1
    return [float(low * factor ** i) for i in range(k)]


class _Probe(Callback):
    """Full training cost at checkpoints spaced by ``ratio`` in updates; stops at the budget, at the
    target (if asked) and on a non-finite cost."""

    def __init__(self, net, X, y, max_updates, ratio, target, stop_at_target):
        self.net, self.X, self.y = net, X, y
        self.max_updates, self.ratio, self.target, self.stop_at_target = max_updates, ratio, target, stop_at_target
        self.rows = [{"updates": 0, "examples_seen": 0, "train_seconds": 0.0, "cost": float(net.cost(X, y))}]
        self.next, self.diverged = 1, False

    def on_update_end(self, r):
        u = r["update"]
        last = u >= self.max_updates
        if u < self.next and not last:
            return
        self.next = max(u + 1, math.ceil(u * self.ratio))
        c = float(self.net.cost(self.X, self.y))
        self.rows.append({"updates": u, "examples_seen": r["examples_seen"], "train_seconds": r["train_seconds"],
                          "cost": c})
        if not math.isfinite(c):
            self.diverged = True
            raise StopTraining
        if last or (self.stop_at_target and self.target is not None and c <= self.target):
            raise StopTraining


def _crossing(rows, target, key):
    """Where the cost first reaches ``target``, interpolated log-log between checkpoints (None if never)."""
    for prev, row in itertools.pairwise(rows):
        if row["cost"] <= target:
            x0, x1 = prev[key], row[key]
            c0, c1 = prev["cost"], row["cost"]
            if x0 <= 0 or c0 <= target or c1 <= 0 or c0 == c1:
                return float(x1)
            f = (math.log(c0) - math.log(target)) / (math.log(c0) - math.log(c1))
            return float(math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0))))
    if rows and rows[0]["cost"] <= target:
        return 0.0
    return None


def budget_updates(max_updates, max_examples, batch_size: int, n: int) -> int:
    """The update budget: ``max_updates``, or ``max_examples`` / B rounded up, whichever is smaller."""
    b = min(int(batch_size), n)
    budgets = [v for v in (max_updates, None if max_examples is None else -(-int(max_examples) // b)) if v]
    if not budgets:
        raise ValueError("a budget is needed: max_updates or max_examples")
    return int(min(budgets))


def train_to_budget(make_net, X, y, *, lr: float, batch_size: int, seed: int, max_updates: int | None = None,
                    max_examples: int | None = None, target: float | None = None, stop_at_target: bool = False,
                    per_decade: int = 32) -> dict:
    """One run of mini-batch SGD (B = ``batch_size``; B >= n is batch GD) from ``make_net(seed)``.

    The budget is ``max_updates`` updates or ``max_examples`` examples (the smaller if both);
    the sampling order is seeded by ``seed``. Returns the run as a dict: ``final_cost``,
    ``diverged``, ``reached`` (the target), ``updates_to_target``, ``examples_to_target``,
    ``seconds_to_target`` (None when not reached) and the recorded ``curve``.
    """
    n = len(X)
    b = min(int(batch_size), n)
    updates = budget_updates(max_updates, max_examples, b, n)
    net = make_net(seed)
    probe = _Probe(net, X, y, updates, 10 ** (1 / per_decade), target, stop_at_target)
    epochs = max(1, -(-updates * b // n))
    method = "batch" if b == n else "minibatch"
    try:
        fit(net, X, y, method=method, batch_size=None if b == n else b, lr=lr, epochs=epochs, seed=seed,
            eval_train=False, callbacks=[probe])
    except (DivergenceError, FloatingPointError):
        probe.diverged = True
    rows = probe.rows
    final = rows[-1]["cost"] if not probe.diverged else math.inf
    out = {"lr": float(lr), "batch_size": b, "seed": int(seed), "budget_updates": updates, "final_cost": final,
           "diverged": probe.diverged, "updates": rows[-1]["updates"], "examples_seen": rows[-1]["examples_seen"],
           "train_seconds": rows[-1]["train_seconds"], "target": target,
           "curve": {k: [r[k] for r in rows] for k in ("updates", "examples_seen", "train_seconds", "cost")}}
    for key, name in (("updates", "updates_to_target"), ("examples_seen", "examples_to_target"),
                      ("train_seconds", "seconds_to_target")):
        out[name] = None if target is None or probe.diverged else _crossing(rows, target, key)
    out["reached"] = out["updates_to_target"] is not None
    return out


@dataclass
class Tuning:
    """The outcome of ``tune_lr``: the best eta, every eta's runs, and whether the best is at the grid's edge."""

    best_lr: float
    grid: list
    results: list  # one dict per eta: lr, score, mean_final_cost, reached (count), runs
    at_edge: bool
    criterion: str
    batch_size: int
    extensions: int = 0
    best_runs: list = field(default_factory=list)

    def to_dict(self, curves: bool = False) -> dict:
        """JSON-ready summary; per-run curves only with ``curves=True`` (they can be long)."""
        def strip(run):
            return run if curves else {k: v for k, v in run.items() if k != "curve"}

        return {"best_lr": self.best_lr, "grid": self.grid, "at_edge": self.at_edge, "criterion": self.criterion,
                "batch_size": self.batch_size, "extensions": self.extensions,
                "results": [{**{k: v for k, v in r.items() if k != "runs"}, "runs": [strip(x) for x in r["runs"]]}
                            for r in self.results]}


def _score(runs, target) -> tuple:
    finals = [r["final_cost"] for r in runs]
    mean_final = float(np.mean(finals)) if all(math.isfinite(f) for f in finals) else math.inf
    if target is None:
        return (mean_final,)
    if not math.isfinite(mean_final) and any(r["diverged"] for r in runs):
        return (math.inf, math.inf)
    restricted = float(np.mean([r["updates_to_target"] if r["reached"] else r["budget_updates"] for r in runs]))
    return (restricted, mean_final)


def tune_lr(make_net, X, y, *, grid, batch_size: int, seeds=(0,), max_updates: int | None = None,
            max_examples: int | None = None, target: float | None = None, max_extensions: int = 4,
            per_decade: int = 32, threads: int | None = 1, prune: bool = True) -> Tuning:
    """The best learning rate for batch size ``batch_size`` on a geometric ``grid``, at equal budget.

    Every eta is run once per seed, from ``make_net(seed)`` (the same initial weights for every
    eta), for ``max_updates`` updates / ``max_examples`` examples. With ``target`` a run stops on
    reaching it and eta is ranked by the restricted mean updates to the target (censored runs
    count as the budget), ties broken by mean final cost; without it, by mean final cost. A best
    eta at an end of the grid extends the grid by one geometric step that way (at most
    ``max_extensions`` times). BLAS threads are pinned to ``threads`` while training.

    ``prune`` (with a target): a run is stopped once its updates pass (number of seeds) x the best
    score so far, since an eta with one run censored there scores at least that much and cannot be the
    best; such runs are marked ``pruned`` (their final cost is not at the full budget).
    """
    grid = sorted(float(g) for g in grid)
    if not grid or grid[0] <= 0:
        raise ValueError(f"grid must hold positive learning rates, got {grid}")
    factor = grid[1] / grid[0] if len(grid) > 1 else 2.0
    seeds = [int(s) for s in seeds]
    by_lr: dict[float, dict] = {}

    def evaluate(lr):
        cap = max_updates
        if prune and target is not None and by_lr:  # a run past S x the best score cannot make its eta the best
            best_score = min(r["score"][0] for r in by_lr.values())
            if math.isfinite(best_score):
                cap = int(math.ceil(len(seeds) * best_score)) + 1
                cap = cap if max_updates is None else min(cap, max_updates)
                if max_examples is not None:
                    cap = min(cap, -(-int(max_examples) // min(int(batch_size), len(X))))
        runs = [train_to_budget(make_net, X, y, lr=lr, batch_size=batch_size, seed=s, max_updates=cap,
                                max_examples=max_examples, target=target, stop_at_target=target is not None,
                                per_decade=per_decade) for s in seeds]
        full = budget_updates(max_updates, max_examples, batch_size, len(X))
        pruned = any(not r["reached"] and not r["diverged"] and r["budget_updates"] < full for r in runs)
        for r in runs:
            r["pruned"] = not r["reached"] and not r["diverged"] and r["budget_updates"] < full
        finals = [r["final_cost"] for r in runs]
        by_lr[lr] = {"lr": lr, "score": list(_score(runs, target)),
                     "mean_final_cost": float(np.mean(finals)) if all(map(math.isfinite, finals)) else math.inf,
                     "reached": sum(r["reached"] for r in runs), "diverged": sum(r["diverged"] for r in runs),
                     "pruned": pruned, "runs": runs}

    extensions = 0
    order = sorted(grid, key=lambda v: abs(grid.index(v) - (len(grid) - 1) / 2))  # the middle first
    with pinned_threads(threads):
        for lr in order:
            evaluate(lr)
        while True:
            lrs = sorted(by_lr)
            best = min(lrs, key=lambda v: tuple(by_lr[v]["score"]))
            i = lrs.index(best)
            if 0 < i < len(lrs) - 1 or extensions >= max_extensions:
                break
            evaluate(best / factor if i == 0 else best * factor)
            extensions += 1
    lrs = sorted(by_lr)
    i = lrs.index(best)
    at_edge = i == 0 or i == len(lrs) - 1
    criterion = ("fewest updates to reach the target cost (restricted mean over seeds; censored = budget), "
                 "ties by mean final cost" if target is not None else "lowest mean final training cost at the budget")
    return Tuning(best_lr=best, grid=lrs, results=[by_lr[v] for v in lrs], at_edge=at_edge, criterion=criterion,
                  batch_size=min(int(batch_size), len(X)), extensions=extensions, best_runs=by_lr[best]["runs"])


def summarize(values, level: float = 0.95) -> dict:
    """Mean of the finite values with a Student-t interval, and how many were missing (None/inf: censored).

    >>> summarize([1.0, 2.0, 3.0, None])["censored"]
    1
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    out = {"n": len(values), "censored": len(values) - len(vals), "mean": math.nan, "ci95": math.nan}
    if vals:
        m, half = mean_ci(np.array(vals), level)
        out["mean"], out["ci95"] = float(m), float(half) if len(vals) > 1 else math.nan
    return out
