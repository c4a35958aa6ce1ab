"""redundancy: the training set repeated k times (k = 1, 4, 16).

Repeating the data changes nothing about the cost function (the mean over n examples is the
mean over k n copies), so full-batch GD takes exactly the same steps while each one costs k times
the work. SGD samples from the same distribution either way: its progress per example seen does
not depend on k. Shown: cost against examples seen and against seconds, for both methods.
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import CostProbe, geometric_grid, load, network_for
from .result import LabResult


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, ks=(1, 4, 16),
        gd_updates: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    U = gd_updates or (10 if quick else 30)
    lr = 3.0 if ds.n_classes else 0.1
    budget = U * n  # examples SGD may see: what GD sees in U updates at k = 1
    curves, rows = {}, []
    for k in ks:
        Xk, yk = np.tile(X, (k, 1)), np.tile(y, k)
        nk = len(Xk)
        net = network_for(ds, seed=seed)
        gd = CostProbe(net, X, y, nk * np.arange(1, U + 1))
        fit(net, Xk, yk, method="batch", lr=lr, epochs=U, eval_train=False, callbacks=[gd])
        net = network_for(ds, seed=seed)
        sgd = CostProbe(net, X, y, geometric_grid(10, budget, per_decade=6))
        fit(net, Xk, yk, batch_size=10, lr=lr, epochs=-(-budget // nk), seed=seed, eval_train=False, callbacks=[sgd])
        curves[k] = {"gd": {c: gd.column(c) for c in ("examples_seen", "updates", "train_seconds", "cost")},
                     "sgd": {c: sgd.column(c) for c in ("examples_seen", "updates", "train_seconds", "cost")}}
        g, s = curves[k]["gd"], curves[k]["sgd"]
        s_at = s["cost"][np.searchsorted(s["examples_seen"], budget)] if s["examples_seen"][-1] >= budget else s["cost"][-1]
        rows.append({"k": k, "n": nk, "GD s/update": float(g["train_seconds"][-1] / U), f"GD cost after {U} updates": float(g["cost"][-1]),
                     "GD examples": int(g["examples_seen"][-1]), f"SGD cost after {budget} examples": float(s_at),
                     "SGD seconds": float(s["train_seconds"][-1])})
    base = rows[0]["GD s/update"]
    for r in rows:
        r["GD work ratio"] = r["GD s/update"] / base
    gd_costs = [r[f"GD cost after {U} updates"] for r in rows]
    numbers = {"n": n, "ks": list(ks), "gd_updates": U, "sgd_examples_budget": budget, "lr": lr, "curves": curves,
               "gd_cost_spread_across_k": float(max(gd_costs) - min(gd_costs))}
    result = LabResult(
        "redundancy", "Redundant data: repeated k times",
        f"Full-batch GD takes the same steps whatever k (its cost after {U} updates differs by "
        f"{numbers['gd_cost_spread_across_k']:.1e} across k) while each update costs "
        f"{rows[-1]['GD work ratio']:.1f}x more time at k = {ks[-1]}. Mini-batch SGD's cost after the same number of "
        f"examples is about the same for every k: redundancy costs it nothing.", numbers, rows)
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.2))
        for i, k in enumerate(ks):
            for method, style in (("gd", "-"), ("sgd", "--")):
                c = curves[k][method]
                keep = c["examples_seen"] > 0
                label = f"{'batch GD' if method == 'gd' else 'SGD, B=10'}, k={k}"
                ax1.plot(c["examples_seen"][keep], c["cost"][keep], style, color=f"C{i}", label=label)
                ax2.plot(c["train_seconds"][keep], c["cost"][keep], style, color=f"C{i}", label=label)
        ax1.set(xscale="log", yscale="log", xlabel="examples seen", ylabel="training cost")
        ax2.set(xscale="log", yscale="log", xlabel="training seconds", ylabel="training cost")
        ax1.legend(fontsize=7)
        result.save(out, fig, "Data repeated k times")
    return result
