"""compare: batch GD, SGD and mini-batch SGD from the same initial weights on the same data.

For each seed, the three methods start from one network's weights and train for the same number
of epochs; the full training cost is recorded at checkpoints spaced evenly on a log scale of
examples seen (so SGD's progress inside the first epoch is visible). Four panels: cost against
epochs, updates, examples seen and wall seconds (training time only), each the mean over seeds
with a 95% Student-t band.
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import CostProbe, geometric_grid, load, network_for
from .estimators import mean_ci
from .result import LabResult

METHODS = {"batch GD": ("batch", None, 3.0), "SGD (B=1)": ("stochastic", None, 0.3), "mini-batch (B=10)": ("minibatch", 10, 3.0)}


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, epochs: int | None = None,
        seeds: int | None = None, methods=METHODS) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    epochs = epochs or (5 if quick else 20)
    seeds = seeds or (3 if quick else 5)
    grid = np.unique(np.concatenate([geometric_grid(1, n * epochs, per_decade=6), n * np.arange(1, epochs + 1)]))
    curves = {}
    for name, (method, b, lr) in methods.items():
        runs = []
        for s in range(seed, seed + seeds):
            net = network_for(ds, seed=s)  # the same initial weights for every method
            probe = CostProbe(net, X, y, grid)
            fit(net, X, y, method=method, batch_size=b, lr=lr if ds.n_classes else lr / 30, epochs=epochs, seed=s,
                eval_train=False, callbacks=[probe])
            runs.append(probe)
        # align on the examples-seen checkpoints every method passes (batch GD only at whole epochs)
        seen = runs[0].column("examples_seen")
        cost = np.array([r.column("cost") for r in runs])
        secs = np.array([r.column("train_seconds") for r in runs])
        upd = runs[0].column("updates")
        m, half = mean_ci(cost)
        curves[name] = {"examples_seen": seen, "epochs": seen / n, "updates": upd, "seconds_mean": secs.mean(0),
                        "cost_mean": m, "cost_ci95": half, "cost_runs": cost, "lr": lr, "batch_size": b or (n if method == "batch" else 1)}
    rows = []
    for name, c in curves.items():
        at = lambda e: float(c["cost_mean"][np.searchsorted(c["examples_seen"], e)]) if e <= c["examples_seen"][-1] else None  # noqa: E731
        rows.append({"method": name, "lr": c["lr"], "cost at start": float(c["cost_mean"][0]),
                     "after n/10 examples": at(n // 10) if c["examples_seen"][1] <= n // 10 else float(c["cost_mean"][0]),
                     "after 1 epoch": at(n), f"after {epochs} epochs": float(c["cost_mean"][-1]),
                     "updates": int(c["updates"][-1]), "seconds": float(c["seconds_mean"][-1])})
    numbers = {"n": n, "epochs": epochs, "seeds": list(range(seed, seed + seeds)), "curves": curves}
    sgd, gd = rows[1], rows[0]
    result = LabResult(
        "compare", "Batch, stochastic and mini-batch gradient descent",
        f"SGD has cut the cost from {sgd['cost at start']:.3f} to {sgd['after n/10 examples']:.3f} after seeing a tenth of the "
        f"data, when batch GD has not made its first update; after {epochs} epochs batch GD is at {gd[f'after {epochs} epochs']:.3f} "
        f"against {sgd[f'after {epochs} epochs']:.3f} (SGD) and {rows[2][f'after {epochs} epochs']:.3f} (mini-batch). Per second, "
        f"mini-batches do best: they keep SGD's many updates while the matrix products use the hardware.",
        numbers, rows)
    if out is not None:
        fig, axes = new_figure(2, 2, size=(5.5, 4.0))
        for name, c in curves.items():
            for ax, key, label in zip(axes, ("epochs", "updates", "examples_seen", "seconds_mean"),
                                      ("epochs", "updates", "examples seen", "training seconds")):
                x = c[key]
                keep = x > 0
                ax.plot(x[keep], c["cost_mean"][keep], label=name)
                ax.fill_between(x[keep], (c["cost_mean"] - c["cost_ci95"])[keep], (c["cost_mean"] + c["cost_ci95"])[keep], alpha=0.25)
                ax.set(xscale="log", yscale="log", xlabel=label, ylabel="training cost")
        axes[0].legend(fontsize=8)
        result.save(out, fig, f"Same start, same data: mean of {seeds} seeds, 95% band")
    return result
