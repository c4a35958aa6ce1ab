"""lr-batch: the best learning rate against the batch size, beside linear scaling, 2/lambda_max and eps_max.

Goyal et al. (2017), "Accurate, Large Minibatch SGD": when the batch grows k-fold, multiply eta by k
(linear scaling), which keeps the expected step per example the same; it fails beyond some batch
size, where the step becomes unstable. Measured here at an equal budget of examples (E epochs):

* best eta(B): ``tuning.tune_lr``, the lowest mean final training cost over seeds on a doubling grid
  (extended while the best sits at an edge), with a bootstrap interval over seeds (resample seeds,
  recompute the mean final cost of every eta, take the argmin);
* linear scaling: eta_lin(B) = best eta(B_0) B / B_0 from the smallest batch B_0. It holds at B while
  best eta(B) is within a factor 2 (one grid step) of eta_lin(B); it *breaks* at the first B where
  best eta(B) < eta_lin(B) / 2;
* eps_max(B): the largest eta on the doubling grid, from the best upwards, whose run is stable: the
  final cost is below C_const = (1/2) mean_x ||y(x) - mean y||^2, the quadratic cost of the best
  constant prediction (what a network that ignores x achieves; the sigmoid networks here do not blow
  up at large eta, they saturate and end above it);
* 2/lambda_max: the step above which gradient descent on the local quadratic model diverges along
  the top eigenvector, with lambda_max at the initial weights and at the end of the best run.
"""

from __future__ import annotations

import math

import numpy as np

from ..machine import describe, recording_load
from ..network import Network
from ..plots import new_figure
from .common import load, network_for
from .hessian import top_eigenvalue
from .result import LabResult
from .tuning import pinned_threads, train_to_budget, tune_lr
from .verdict import decide

FACTOR = 2.0  # the tolerance of "linear scaling holds": one step of the doubling grid


def constant_cost(net, y) -> float:
    """C_const = (1/2) mean_x ||y(x) - mean y||^2: the quadratic cost of the best constant prediction."""
    _, T, _ = net._inputs(np.zeros((len(y), net.sizes[0])), y)
    T = np.asarray(T, dtype=np.float64)
    return float(0.5 * np.mean(np.sum((T - T.mean(axis=0)) ** 2, axis=1)))


def scaling_break(sizes, best_lrs, factor: float = FACTOR):
    """Ratios r(B) = best eta(B) / (best eta(B_0) B/B_0) and the first B with r < 1/factor (None if none).

    >>> scaling_break([1, 4, 16], [1.0, 4.0, 8.0])
    ([1.0, 1.0, 0.5], None)
    >>> scaling_break([1, 4, 16], [1.0, 4.0, 4.0])[1]
    16
    """
    b0, e0 = sizes[0], best_lrs[0]
    ratios = [float(e / (e0 * b / b0)) for b, e in zip(sizes, best_lrs, strict=True)]
    broken = [b for b, r in zip(sizes, ratios, strict=True) if r < 1 / factor]
    return ratios, (broken[0] if broken else None)


def decide_claims(s: dict) -> list:
    """Verdicts from the summary numbers only: ``sizes``, ``best_lr``, ``eps_max`` (None where no eta was
    stable), ``two_over_lambda_end`` (per B), ``factor`` and ``learned`` (per B: the best run ended below
    C_const; B where nothing learned are left out of the eps_max claim)."""
    sizes, best = s["sizes"], s["best_lr"]
    ratios, brk = scaling_break(sizes, best, s["factor"])
    first_ok = 1 / s["factor"] <= ratios[1] <= s["factor"]
    ok_upto = max([b for b, r in zip(sizes, ratios, strict=True) if b < (brk or math.inf)])
    v1 = decide("Linear scaling: the best eta grows in proportion to B (Goyal et al. 2017)",
                holds=first_ok,
                rule=f"best eta(B) / (best eta(B_0) B/B_0) within a factor {s['factor']:g} (one grid step) at the "
                     f"first step up from B_0 = {sizes[0]}; it breaks at the first B where the ratio "
                     f"< 1/{s['factor']:g}",
                evidence="ratios " + ", ".join(f"B={b}: {r:.2g}" for b, r in zip(sizes, ratios, strict=True)),
                caveat=None if brk is None else f"only up to B = {ok_upto}; it breaks at B = {brk}")
    learned = s.get("learned", [True] * len(sizes))
    past = [(b, e, m) for b, e, m, ok in zip(sizes, best, s["eps_max"], learned, strict=True)
            if brk is not None and b >= brk and ok]
    skipped = [b for b, ok in zip(sizes, learned, strict=True) if brk is not None and b >= brk and not ok]
    rule2 = (f"a break inside the sweep, and best eta >= eps_max / {s['factor']:g} (within one grid step of it) at "
             "every B from the break on where some eta learned anything (final cost below C_const)")
    if brk is None or not past:
        v2 = decide("Linear scaling breaks where eta reaches the largest stable step eps_max", holds=False, rule=rule2,
                    evidence="no break within the measured batch sizes" if brk is None else
                    "no batch size past the break learned anything within the budget")
    else:
        capped = all(m is not None and e >= m / s["factor"] for b, e, m in past)
        v2 = decide("Linear scaling breaks where eta reaches the largest stable step eps_max", holds=capped,
                    rule=rule2,
                    evidence=", ".join(f"B={b}: eta {e:.3g}, eps_max {m if m is None else f'{m:.3g}'}"
                                       for b, e, m in past)
                    + (f"; B = {', '.join(map(str, skipped))} learned nothing within the budget" if skipped else ""))
    margins = [e / t for e, t in zip(best, s["two_over_lambda_end"], strict=True)]
    v3 = decide("The tuned eta stays below the curvature limit 2/lambda_max of the solution it finds",
                holds=all(m <= 1 for m in margins),
                rule="best eta(B) <= 2/lambda_max at the end of that B's best run, at every B",
                evidence="eta lambda_max / 2 = " + ", ".join(f"{m:.2f}" for m in margins),
                caveat="within a factor 2 of the limit (eta lambda_max / 2 > 0.5) at B = "
                + ", ".join(str(b) for b, m in zip(sizes, margins, strict=True) if m > 0.5)
                if any(m > 0.5 for m in margins) else None)
    return [v1, v2, v3]


def _bootstrap_best(tuning, rng, reps: int = 400):
    """2.5% and 97.5% quantiles of the argmin-eta of the mean final cost over resampled seeds."""
    lrs = [r["lr"] for r in tuning.results]
    costs = np.array([[run["final_cost"] for run in r["runs"]] for r in tuning.results])  # (eta, seed)
    k = costs.shape[1]
    picks = [lrs[int(np.argmin(costs[:, rng.integers(0, k, k)].mean(axis=1)))] for _ in range(reps)]
    return [float(np.quantile(picks, 0.025)), float(np.quantile(picks, 0.975))]


def verdicts(numbers: dict) -> list:
    """The verdicts from a result's ``numbers`` (as saved in its JSON): ``decide_claims(numbers["summary"])``."""
    return decide_claims(numbers["summary"])


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, sizes=None,
        seeds: int | None = None, epochs: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    seeds = list(range(seed, seed + (seeds or (2 if quick else 3))))
    epochs = epochs or (2 if quick else 6)
    sizes = sorted({min(int(b), n) for b in (sizes or ((1, 8, 64, n) if quick else (1, 4, 16, 64, 256, n)))})
    lr = 0.5 if ds.n_classes else 0.02
    rng = np.random.default_rng(seed)

    def make(s):
        return network_for(ds, seed=s)

    c_const = constant_cost(make(seed), y)
    numbers = {"n": n, "seeds": seeds, "epochs_budget": epochs, "batch_sizes": sizes, "constant_cost": c_const,
               "machine": describe()}
    rows = []
    with recording_load(numbers), pinned_threads(1):
        net0 = make(seed)
        lam0 = top_eigenvalue(Network.from_params({**net0.describe(), "dtype": "float64"}, net0.numpy_params()),
                              X, y, iters=300, tol=1e-4, seed=seed)
        numbers["lambda_max_init"] = lam0
        for b in sizes:
            tuning = tune_lr(make, X, y, grid=[lr / 2, lr, 2 * lr, 4 * lr], batch_size=b, seeds=seeds,
                             max_examples=epochs * n, max_extensions=8)
            mean_final = {r["lr"]: r["mean_final_cost"] for r in tuning.results}
            worst_final = {r["lr"]: max(run_["final_cost"] for run_ in r["runs"]) for r in tuning.results}
            # eps_max: double from the best eta until a run (any seed) is not stable
            eta, eps_max = tuning.best_lr, None
            for _ in range(8):
                if eta not in worst_final:
                    finals = [train_to_budget(make, X, y, lr=eta, batch_size=b, seed=s, max_examples=epochs * n,
                                              per_decade=4)["final_cost"] for s in seeds]
                    mean_final[eta], worst_final[eta] = float(np.mean(finals)), max(finals)
                if not worst_final[eta] < c_const:
                    break
                eps_max, eta = eta, eta * 2
            made = []

            def make_keep(s, made=made):
                made.append(make(s))
                return made[-1]

            best_run = train_to_budget(make_keep, X, y, lr=tuning.best_lr, batch_size=b, seed=seeds[0],
                                       max_examples=epochs * n, per_decade=4)
            end = made[-1]
            lam_end = top_eigenvalue(Network.from_params({**end.describe(), "dtype": "float64"}, end.numpy_params()),
                                     X, y, iters=300, tol=1e-4, seed=seed)
            rows.append({"B": b, "best_lr": tuning.best_lr, "best_lr_ci95": _bootstrap_best(tuning, rng),
                         "at_grid_edge": tuning.at_edge, "best_final_cost": best_run["final_cost"],
                         "eps_max": eps_max, "lambda_max_end": lam_end["lambda_max"],
                         "two_over_lambda_end": 2 / lam_end["lambda_max"], "updates": best_run["updates"],
                         "lr_tried": {str(k): v for k, v in sorted(mean_final.items())}, "tuning": tuning.to_dict()})
    best = [r["best_lr"] for r in rows]
    ratios, brk = scaling_break(sizes, best)
    summary = {"sizes": sizes, "best_lr": best, "eps_max": [r["eps_max"] for r in rows],
               "two_over_lambda_end": [r["two_over_lambda_end"] for r in rows], "factor": FACTOR,
               "linear_ratio": ratios, "break_at": brk, "two_over_lambda_init": 2 / lam0["lambda_max"],
               "learned": [r["best_final_cost"] < c_const for r in rows], "constant_cost": c_const}
    numbers.update(rows=rows, summary=summary)
    verdicts = decide_claims(summary)
    table = [{"B": r["B"], "best η": r["best_lr"], "95% (bootstrap)": "{:.3g}–{:.3g}".format(*r["best_lr_ci95"]),
              "linear rule": best[0] * r["B"] / sizes[0], "ratio": q, "ε_max": r["eps_max"],
              "2/λ_max (end)": r["two_over_lambda_end"], "final cost": r["best_final_cost"], "updates": r["updates"]}
             for r, q in zip(rows, ratios, strict=True)]
    reading = (f"At an equal budget of {epochs} epochs the best η goes from {best[0]:.3g} at B = {sizes[0]} to "
               f"{best[-1]:.3g} at B = {sizes[-1]}, where linear scaling would give "
               f"{best[0] * sizes[-1] / sizes[0]:.3g}; "
               + (f"the rule breaks at B = {brk}. " if brk else "the rule does not break within the sweep. ")
               + f"2/λ_max is {summary['two_over_lambda_init']:.3g} at the initial weights. "
               + " ".join(v.sentence() for v in verdicts))
    result = LabResult("lr-batch", "Best learning rate against batch size", reading, numbers, table, verdicts=verdicts)
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.3))
        B = np.array(sizes, dtype=float)
        ci = np.array([r["best_lr_ci95"] for r in rows])
        ax1.fill_between(B, ci[:, 0], ci[:, 1], color="C0", alpha=0.2, label="95% bootstrap over seeds")
        ax1.plot(B, best, "o-", color="C0", label="best η (lowest final cost)")
        ax1.plot(B, best[0] * B / B[0], "k:", label=f"linear scaling from B = {sizes[0]}")
        ax1.plot(B, [r["eps_max"] if r["eps_max"] else np.nan for r in rows], "v--", color="C3",
                 label="ε_max: largest stable η")
        ax1.plot(B, summary["two_over_lambda_end"], "s--", color="C2", ms=4, label="2/λ_max at the end of the best run")
        ax1.axhline(summary["two_over_lambda_init"], color="C2", lw=0.8, ls="-.",
                    label="2/λ_max at the initial weights")
        if brk:
            ax1.axvline(brk, color="gray", lw=0.8)
            ax1.text(brk, 0.03, " linear scaling breaks", fontsize=8, color="gray", transform=ax1.get_xaxis_transform())
        ax1.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="learning rate η",
                title=f"equal budget: {epochs} epochs, {len(seeds)} seeds")
        ax1.legend(fontsize=7)
        for i, r in enumerate(rows):
            pts = sorted((float(k), v) for k, v in r["lr_tried"].items())
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=f"C{i}", label=f"B = {r['B']}")
        ax2.axhline(c_const, color="gray", ls=":", lw=1)
        ax2.text(ax2.get_xlim()[0], c_const * 1.05, " C_const: best constant prediction", fontsize=8, color="gray")
        ax2.set(xscale="log", yscale="log", xlabel="learning rate η", ylabel="final training cost (mean over seeds)",
                title="the tuning curves")
        ax2.legend(fontsize=7)
        result.save(out, fig, "Best learning rate against batch size, at an equal budget of examples")
    return result
