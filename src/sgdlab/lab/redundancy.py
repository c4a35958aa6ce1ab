"""redundancy: data that say the same thing many times cost batch GD work and SGD nothing.

1. Exact copies. The training set repeated k times (k = 1, 4, 16) has the same cost function (the
   mean over n examples is the mean over k n copies), so full-batch GD takes exactly the same steps
   while each update costs k times the work (seconds per update, BLAS pinned to one thread,
   warm-up excluded).
2. Near-duplicates. Each of the k copies gets small Gaussian noise (``noise`` x each feature's
   standard deviation): SGD (B = 10, the same eta) samples from nearly the same distribution
   whatever k, so its held-out cost against examples seen should not depend on k.
3. Natural redundancy. SGD on 10%, 30% and 100% of the real training set (random subsets): while
   the examples seen are fewer than the subset holds, a redundant set teaches as much per example.
   Cost is the held-out (test) cost against examples seen, mean over seeds with 95% t intervals.

Claims (``verdicts``): GD's steps identical across k (test-cost spread below 1e-4 relative);
GD's seconds per update grow like k (log-log slope in [0.7, 1.3]); SGD's test cost after the
budget within 10% of the k = 1 value for every k (near-duplicates), and for the 30% and 10%
subsets at one epoch of the full set (an equivalence margin of 10%; 20% gives a caveat).
"""

from __future__ import annotations

import time

import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import CostProbe, geometric_grid, load, network_for
from .estimators import loglog_slope, mean_ci
from .result import LabResult
from .tuning import pinned_threads
from .verdict import decide

MARGIN, LOOSE = 0.10, 0.20


def _equivalent(claim, values: dict, ref_key, rule_what) -> object:
    ref = values[ref_key]
    rel = {k: abs(v - ref) / ref for k, v in values.items() if k != ref_key}
    worst = max(rel.values()) if rel else 0.0
    return decide(claim, holds=worst <= LOOSE,
                  rule=f"{rule_what} within {MARGIN:.0%} of the reference (within {LOOSE:.0%}: a caveat)",
                  evidence=", ".join(f"{k}: {v:.4g}" for k, v in values.items()) + f"; largest difference {worst:.1%}",
                  caveat=None if worst <= MARGIN else f"differences up to {worst:.1%}")


def verdicts(numbers: dict) -> list:
    """The claims, from the numbers alone (see the module docstring)."""
    gd = numbers["gd"]
    costs = [r["test_cost"] for r in gd]
    spread = (max(costs) - min(costs)) / abs(min(costs))
    ks = [r["k"] for r in gd]
    slope = loglog_slope(ks, [r["seconds_per_update"] for r in gd]) if len(ks) > 1 else float("nan")
    out = [decide("Batch GD on k exact copies takes the same steps", holds=spread < 1e-4,
                  rule="test cost after the same updates differs by < 1e-4 (relative) across k",
                  evidence=f"relative spread {spread:.2g} over k = {ks}"),
           decide("Each batch GD update on k copies costs k times the time", holds=0.7 <= slope <= 1.3,
                  rule="log-log slope of seconds per update against k in [0.7, 1.3]",
                  evidence=", ".join(f"k = {r['k']}: {r['seconds_per_update'] * 1e3:.3g} ms" for r in gd)
                           + f"; slope {slope:.2f}")]
    nd = numbers["near_duplicates"]
    out.append(_equivalent("SGD's progress per example seen does not depend on near-duplicate copies",
                           {f"k = {r['k']}": r["test_cost_mean"] for r in nd}, f"k = {nd[0]['k']}",
                           f"mean test cost after {numbers['sgd_examples']} examples"))
    sub = numbers["subsets"]
    full = next(r for r in sub if r["fraction"] == 1.0)
    for r in sub:
        if r["fraction"] < 1.0:
            out.append(_equivalent(f"SGD on {r['fraction']:.0%} of the data learns as much per example as on all of it",
                                   {"100%": full["test_cost_at_one_epoch"],
                                    f"{r['fraction']:.0%}": r["test_cost_at_one_epoch"]}, "100%",
                                   "mean test cost after one epoch of the full set"))
    return out


def _sgd_curves(ds, X, y, *, lr, budget, seeds, checkpoints):
    runs = []
    for s in seeds:
        net = network_for(ds, seed=s)
        probe = CostProbe(net, ds.X_test, ds.y_test, checkpoints)
        fit(net, X, y, batch_size=10, lr=lr, epochs=-(-budget // len(X)), seed=s, eval_train=False, callbacks=[probe])
        seen, cost = probe.column("examples_seen"), probe.column("cost")
        runs.append(np.interp(checkpoints, seen, cost))
    return np.array(runs)


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, ks=(1, 4, 16),
        gd_updates: int | None = None, fractions=(0.1, 0.3, 1.0), noise: float = 0.05,
        seeds: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    U = gd_updates or (10 if quick else 30)
    lr = 3.0 if ds.n_classes else 0.1
    seeds = list(range(seed, seed + (seeds or (2 if quick else 4))))
    budget = 2 * n  # examples SGD sees
    checkpoints = np.unique(np.concatenate([geometric_grid(10, budget, per_decade=8), [n, budget]]))
    rng = np.random.default_rng(seed)
    gd_rows, gd_curves, nd_rows, nd_curves, sub_rows, sub_curves = [], {}, [], {}, [], {}
    with pinned_threads(1):
        fit(network_for(ds, seed=seed), X, y, method="batch", lr=lr, epochs=2, eval_train=False)  # warm-up
        for k in ks:
            Xk, yk = np.tile(X, (k, 1)), np.tile(y, k)
            net = network_for(ds, seed=seed)
            probe = CostProbe(net, ds.X_test, ds.y_test, len(Xk) * np.arange(1, U + 1))
            t0 = time.perf_counter()
            h = fit(net, Xk, yk, method="batch", lr=lr, epochs=U, eval_train=False, callbacks=[probe])
            wall = time.perf_counter() - t0
            gd_curves[k] = {"updates": probe.column("updates"), "test_cost": probe.column("cost")}
            gd_rows.append({"k": k, "n": len(Xk), "test_cost": float(probe.column("cost")[-1]),
                            "seconds_per_update": h.last["train_seconds"] / U, "wall_seconds": wall})
            # near-duplicates: k noisy copies
            scale = noise * X.std(axis=0, keepdims=True)
            Xn = (Xk + rng.standard_normal(Xk.shape) * scale).astype(X.dtype) if k > 1 else X
            c = _sgd_curves(ds, Xn, yk, lr=lr, budget=budget, seeds=seeds, checkpoints=checkpoints)
            m, half = mean_ci(c)
            nd_curves[k] = {"mean": m, "ci95": half}
            nd_rows.append({"k": k, "test_cost_mean": float(m[-1]), "test_cost_ci95": float(half[-1])})
        for f in fractions:
            idx = np.sort(rng.choice(n, max(10, int(round(f * n))), replace=False)) if f < 1 else np.arange(n)
            c = _sgd_curves(ds, X[idx], y[idx], lr=lr, budget=budget, seeds=seeds, checkpoints=checkpoints)
            m, half = mean_ci(c)
            at = int(np.searchsorted(checkpoints, n))
            sub_curves[f] = {"mean": m, "ci95": half}
            sub_rows.append({"fraction": f, "examples": len(idx), "test_cost_at_one_epoch": float(m[at]),
                             "ci95": float(half[at]), "test_cost_at_budget": float(m[-1])})
    numbers = {"n": n, "ks": list(ks), "gd_updates": U, "lr": lr, "seeds": seeds, "noise": noise,
               "sgd_examples": budget, "checkpoints": checkpoints, "gd": gd_rows, "gd_curves": gd_curves,
               "near_duplicates": nd_rows, "near_duplicate_curves": nd_curves, "subsets": sub_rows,
               "subset_curves": sub_curves, "threads": 1}
    rows = ([{"setting": f"batch GD, {r['k']} exact copies", "test cost": r["test_cost"],
              "ms per update": r["seconds_per_update"] * 1e3} for r in gd_rows]
            + [{"setting": f"SGD, {r['k']} noisy copies, {budget} examples", "test cost": r["test_cost_mean"],
                "± 95%": r["test_cost_ci95"]} for r in nd_rows]
            + [{"setting": f"SGD on {r['fraction']:.0%} ({r['examples']} ex.), {n} examples seen",
                "test cost": r["test_cost_at_one_epoch"], "± 95%": r["ci95"]} for r in sub_rows])
    result = LabResult("redundancy", "Redundant data: exact copies, near-duplicates, subsets", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    result.reading = result.reading_from_verdicts(
        f"SGD: B = 10, η = {lr:g}, {len(seeds)} seeds, held-out cost; near-duplicates with noise {noise:g} × each "
        f"feature's standard deviation.")
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(4.4, 3.8))
        for i, k in enumerate(ks):
            r = gd_rows[i]
            ax1.plot(gd_curves[k]["updates"][1:], gd_curves[k]["test_cost"][1:], "-o", ms=3, color=f"C{i}",
                     label=f"k = {k}: {r['seconds_per_update'] * 1e3:.2g} ms/update")
            c = nd_curves[k]
            ax2.plot(checkpoints, c["mean"], color=f"C{i}", label=f"k = {k} noisy copies")
            ax2.fill_between(checkpoints, c["mean"] - c["ci95"], c["mean"] + c["ci95"], color=f"C{i}", alpha=0.2)
        for i, f in enumerate(fractions):
            c = sub_curves[f]
            ax3.plot(checkpoints, c["mean"], color=f"C{i}", label=f"{f:.0%} of the data")
            ax3.fill_between(checkpoints, c["mean"] - c["ci95"], c["mean"] + c["ci95"], color=f"C{i}", alpha=0.2)
        ax3.axvline(n, color="grey", lw=0.6, ls=":")
        ax1.set(yscale="log", xlabel="batch GD updates", ylabel="test cost", title="batch GD on k exact copies")
        ax2.set(xscale="log", yscale="log", xlabel="examples seen", ylabel="test cost", title="SGD, near-duplicates")
        ax3.set(xscale="log", yscale="log", xlabel="examples seen", ylabel="test cost", title="SGD, subsets")
        for ax in (ax1, ax2, ax3):
            ax.legend(fontsize=7)
        result.save(out, fig, "Test cost of batch GD and SGD on redundant data (mean of seeds, 95% bands)")
    return result
