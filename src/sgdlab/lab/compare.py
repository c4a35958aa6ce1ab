"""compare: batch GD, SGD and mini-batch SGD, each at its own tuned learning rate, to one target cost.

A fair comparison gives every method its best step size. For each method (batch size B = n, 1
and 10) eta is tuned on a geometric grid (extended until the best eta is inside it; see
``lab.tuning``) from the same initial weights per seed, at one equal budget of examples, for the
fewest updates to reach the target training cost C* = ``target_fraction`` x the initial cost.
At the tuned eta, the cost to reach C* is reported on all three axes (examples seen, updates,
training seconds with BLAS pinned to one thread and a warm-up run excluded), as the mean over
seeds with a 95% Student-t interval. The claims tested, each by ``verdict.fewest`` (smallest
mean and a one-sided Welch test on the log values against every other method):

* SGD (B = 1) needs the fewest examples;
* batch GD needs the fewest updates;
* mini-batch (B = 10) needs the fewest seconds.
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from .common import load, network_for
from .result import LabResult
from .tuning import lr_grid, pinned_threads, summarize, train_to_budget, tune_lr
from .verdict import fewest

AXES = (("examples_to_target", "examples seen", "examples_seen"), ("updates_to_target", "updates", "updates"),
        ("seconds_to_target", "training seconds", "train_seconds"))
CLAIMS = (("SGD (B=1)", "examples_to_target", "examples"), ("batch GD", "updates_to_target", "updates"),
          ("mini-batch (B=10)", "seconds_to_target", "seconds"))


def methods_for(n: int) -> dict:
    """Method name -> batch size (B = n is batch gradient descent)."""
    return {"batch GD": n, "SGD (B=1)": 1, "mini-batch (B=10)": 10}


def verdicts(numbers: dict) -> list:
    """The three claims, decided from ``numbers["methods"][name][axis]`` (values over seeds; None = not reached,
    then the run's end ``run_end``, a lower bound, stands in for it)."""
    out = []
    for who, axis, quantity in CLAIMS:
        key = dict((a, k) for a, _, k in AXES)[axis]
        samples = {name: [v if v is not None else end
                          for v, end in zip(m[axis], m["run_end"][key], strict=True)]
                   for name, m in numbers["methods"].items()}
        censored = {name: sum(v is None for v in m[axis]) for name, m in numbers["methods"].items()}
        out.append(fewest(samples, who, f"{quantity} to reach the target cost", censored=censored,
                          claim=f"{who} needs the fewest {quantity} to reach the target cost "
                                "(each method at its tuned η)"))
    return out


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, seeds: int | None = None,
        target_fraction: float = 0.1, budget_epochs: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    seeds = seeds or (2 if quick else 5)
    seed_list = list(range(seed, seed + seeds))
    budget = (budget_epochs or 300) * n

    def make(s):
        return network_for(ds, seed=s)

    initial = float(np.mean([make(s).cost(X, y) for s in seed_list]))
    target = target_fraction * initial
    base = 3.0 if ds.n_classes else 0.1
    with pinned_threads(1):  # warm-up: page in data and code paths before anything is timed
        train_to_budget(make, X, y, lr=base, batch_size=10, seed=seed, max_updates=50)
    methods = {}
    for name, b in methods_for(n).items():
        grid = lr_grid(base / 4, base * 2) if not quick else lr_grid(base / 2, base * 2)
        t = tune_lr(make, X, y, grid=grid, batch_size=b, seeds=seed_list, max_examples=budget, target=target)
        runs = t.best_runs
        methods[name] = {"batch_size": t.batch_size, "best_lr": t.best_lr, "lr_grid": t.grid, "at_edge": t.at_edge,
                         "tuning": t.to_dict(), "reached": sum(r["reached"] for r in runs),
                         **{axis: [r[axis] for r in runs] for axis, _, _ in AXES},
                         "curves": [r["curve"] for r in runs],
                         "run_end": {k: [r["curve"][k][-1] for r in runs] for _, _, k in AXES}}
    numbers = {"n": n, "seeds": seed_list, "initial_cost": initial, "target_fraction": target_fraction,
               "target_cost": target, "budget_examples": budget, "methods": methods,
               "criterion": "fewest updates to the target (restricted mean over seeds)", "threads": 1}
    rows = []
    for name, m in methods.items():
        row = {"method": name, "B": m["batch_size"], "tuned η": m["best_lr"],
               "η grid": f"{m['lr_grid'][0]:g}..{m['lr_grid'][-1]:g}" + (" (best at edge)" if m["at_edge"] else ""),
               "reached": f"{m['reached']}/{seeds}"}
        for axis, label, _ in AXES:
            s = summarize(m[axis])
            m[axis + "_summary"] = s
            row[label] = f"{s['mean']:.4g} ± {s['ci95']:.2g}" if s["censored"] < s["n"] else "not reached"
        rows.append(row)
    result = LabResult("compare", "Batch, stochastic and mini-batch descent at their tuned step sizes", "", numbers,
                       rows, verdicts=verdicts(numbers))
    result.reading = result.reading_from_verdicts(
        f"Each method at its own tuned η (batch GD {methods['batch GD']['best_lr']:g}, SGD "
        f"{methods['SGD (B=1)']['best_lr']:g}, B = 10 {methods['mini-batch (B=10)']['best_lr']:g}) to the target cost "
        f"{target:.3g} ({target_fraction:g} x the initial {initial:.3g}), {seeds} seeds.")
    if out is not None:
        fig, axes = new_figure(3, size=(4.2, 3.6))
        for i, (name, m) in enumerate(methods.items()):
            for ax, (axis, label, key) in zip(axes, AXES, strict=True):
                for j, c in enumerate(m["curves"]):
                    x, cost = np.asarray(c[key], float), np.asarray(c["cost"], float)
                    keep = x > 0
                    ax.plot(x[keep], cost[keep], color=f"C{i}", lw=1, alpha=0.8,
                            label=f"{name}, η = {m['best_lr']:g}" if j == 0 else None)
                hits = [v for v in m[axis] if v is not None]
                ax.plot(hits, [target] * len(hits), "|", color=f"C{i}", ms=12)
                ax.axhline(target, color="grey", lw=0.6, ls=":")
                ax.set(xscale="log", yscale="log", xlabel=label, ylabel="training cost")
        axes[0].legend(fontsize=8)
        result.save(out, fig, f"Training cost to the target {target:.3g} at each method's tuned η ({seeds} seeds; "
                              "| = where each run reached it)")
    return result
