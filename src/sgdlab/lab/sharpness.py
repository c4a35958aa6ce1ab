"""sharpness: the top Hessian eigenvalue and the test accuracy of the solutions found at each batch size.

Keskar et al. (2017), "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
Minima": large batches converge to sharp minima (large eigenvalues of the Hessian H of the training
cost) and generalise worse; small batches find flat ones. Measured here at a fair comparison:

* every batch size B trains from the same initial weights (per seed) at its own tuned learning rate
  (``tuning.tune_lr``: the fewest updates to the target) until the *same training cost* C_target,
  so a sharper or flatter solution is not just a less or more trained one;
* lambda_max(H) of the training cost at the solution, by power iteration on exact Hessian-vector
  products (``lab.hessian``), and the accuracy and cost on the held-out test set;
* C_target is the training cost the lab's reference run (B = 10, eta = 3) reaches after a few epochs;
  the budget scales with 1/B: at most max(2 S_ref, 2 E_ref / B) updates, S_ref and E_ref the updates
  and examples of that reference run. A run that misses the target is reported (censored) and
  measured where it stopped.

Claims are decided on the smallest B against the largest (batch GD by default; B = 2048 on data sets
larger than that, as Keskar et al.'s large batches were a fraction of the data), paired by seed:
the ratio of lambda_max as a geometric mean with a 95% t interval on log ratios, and the test
accuracy difference with a 95% paired t interval.
"""

from __future__ import annotations

import math

import numpy as np

from ..machine import describe, recording_load
from ..network import Network
from ..plots import new_figure
from ..train import fit
from .common import load, network_for
from .estimators import mean_ci
from .hessian import top_eigenvalue
from .result import LabResult
from .tuning import lr_grid, pinned_threads, train_to_budget, tune_lr
from .verdict import decide

LARGEST = 2048  # the largest batch of the default sweep: the whole training set up to this size


def decide_claims(s: dict) -> list:
    """Verdicts from the summary numbers only: ``log_ratio`` / ``log_ratio_ci`` (mean log of
    lambda_max(large B) / lambda_max(small B) over seeds, 95% half-width), ``acc_gain`` / ``acc_gain_ci``
    (test accuracy of small B minus large B, paired), ``b_small``, ``b_large``."""
    r, lo, hi = (math.exp(s["log_ratio"] + d * s["log_ratio_ci"]) for d in (0, -1, 1))
    v1 = decide(f"Small batches find flatter minima: lambda_max at B = {s['b_small']} below B = {s['b_large']} "
                "at the same training cost",
                holds=lo > 1,
                rule="95% t interval over seeds of log(lambda_max(large B) / lambda_max(small B)) above 0",
                evidence=f"lambda_max ratio large/small = {r:.2f} (95% interval {lo:.2f} to {hi:.2f})")
    g, h = s["acc_gain"], s["acc_gain_ci"]
    v2 = decide(f"The flatter minima generalise better: higher test accuracy at B = {s['b_small']} than at "
                f"B = {s['b_large']}",
                holds=g - h > 0,
                rule="95% paired t interval over seeds of test accuracy (small B) - (large B) above 0",
                evidence=f"difference {100 * g:+.1f} ± {100 * h:.1f} percentage points")
    return [v1, v2]


def verdicts(numbers: dict) -> list:
    """The verdicts from a result's ``numbers`` (as saved in its JSON): ``decide_claims(numbers["summary"])``."""
    return decide_claims(numbers["summary"])


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, sizes=None,
        seeds: int | None = None, ref_epochs: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    classes = ds.n_classes is not None
    seeds = list(range(seed, seed + (seeds or (3 if quick else 5))))
    big = min(n, LARGEST)  # batch GD; on larger data sets a batch of LARGEST, to keep the run short
    sizes = sorted({min(int(b), n) for b in (sizes or ((1, 32, big) if quick else (1, 4, 16, 64, 256, big)))})
    ref_epochs = ref_epochs or (2 if quick else 5)
    lr0 = 3.0 if classes else 0.1
    numbers = {"n": n, "seeds": seeds, "batch_sizes": sizes, "machine": describe()}
    with recording_load(numbers), pinned_threads(1):
        ref = network_for(ds, seed=seed)
        target = float(fit(ref, X, y, batch_size=10, lr=lr0, epochs=ref_epochs, seed=seed).last["train_cost"])
        numbers.update(target_cost=target, target_rule=f"training cost of B = 10, eta = {lr0:g} after {ref_epochs} "
                                                        f"epochs (seed {seed})")
        e_ref, s_ref = ref_epochs * n, math.ceil(ref_epochs * n / 10)  # the reference run's examples and updates
        numbers["budget_rule"] = "at most max(2 S_ref, 2 E_ref / B) updates, S_ref and E_ref those of the reference run"
        rows = []
        for b in sizes:
            budget = {"max_updates": int(max(2 * s_ref, 2 * e_ref / b))}
            tuning = tune_lr(lambda s: network_for(ds, seed=s), X, y, grid=lr_grid(lr0 / 2, lr0 * 2), batch_size=b,
                             seeds=[seed], target=target, **budget, max_extensions=4, per_decade=40)
            per_seed = []
            for s in seeds:
                made = []

                def make(s_, made=made):
                    made.append(network_for(ds, seed=s_))
                    return made[-1]

                run_ = train_to_budget(make, X, y, lr=tuning.best_lr, batch_size=b, seed=s, target=target,
                                       stop_at_target=True, per_decade=40, **budget)
                net = made[-1]
                net64 = Network.from_params({**net.describe(), "dtype": "float64"}, net.numpy_params())
                eig = top_eigenvalue(net64, X, y, iters=300, tol=1e-4, seed=s)
                per_seed.append({"seed": s, "reached": run_["reached"], "updates": run_["updates"],
                                 "examples": run_["examples_seen"], "train_cost": net64.cost(X, y),
                                 "lambda_max": eig["lambda_max"], "power_iterations": eig["iterations"],
                                 "power_converged": eig["converged"],
                                 "test_accuracy": net64.accuracy(ds.X_test, ds.y_test) if classes else None,
                                 "test_cost": net64.cost(ds.X_test, ds.y_test),
                                 "train_accuracy": net64.accuracy(X, y) if classes else None})
            rows.append({"B": b, "budget_updates": budget["max_updates"], "best_lr": tuning.best_lr,
                         "lr_at_grid_edge": tuning.at_edge, "tuning": tuning.to_dict(), "runs": per_seed})
    numbers["rows"] = rows
    table = []
    for r in rows:
        lam = np.array([p["lambda_max"] for p in r["runs"]])
        lm, lh = mean_ci(np.log(lam))
        acc = [p["test_accuracy"] for p in r["runs"]]
        am, ah = mean_ci(np.array(acc, dtype=float)) if classes else (math.nan, math.nan)
        tc, tch = mean_ci(np.array([p["test_cost"] for p in r["runs"]]))
        r.update(lambda_max_geomean=float(math.exp(lm)),
                 lambda_max_ci95=[float(math.exp(lm - lh)), float(math.exp(lm + lh))],
                 test_accuracy_mean=float(am), test_accuracy_ci95=float(ah), test_cost_mean=float(tc),
                 test_cost_ci95=float(tch), censored=sum(not p["reached"] for p in r["runs"]),
                 two_over_lr=2 / r["best_lr"])
        table.append({"B": r["B"], "best η": r["best_lr"], "updates": float(np.mean([p["updates"] for p in r["runs"]])),
                      "censored": r["censored"], "λ_max": r["lambda_max_geomean"], "2/η": r["two_over_lr"],
                      "test acc": r["test_accuracy_mean"], "± 95%": r["test_accuracy_ci95"],
                      "test cost": r["test_cost_mean"]})
    small, large = rows[0], rows[-1]
    logr = [math.log(p2["lambda_max"] / p1["lambda_max"]) for p1, p2 in zip(small["runs"], large["runs"], strict=True)]
    rm, rh = mean_ci(np.array(logr))
    if classes:
        gain = [p1["test_accuracy"] - p2["test_accuracy"] for p1, p2 in zip(small["runs"], large["runs"], strict=True)]
        gm, gh = mean_ci(np.array(gain))
    else:  # regression: lower test cost is the gain
        gain = [p2["test_cost"] - p1["test_cost"] for p1, p2 in zip(small["runs"], large["runs"], strict=True)]
        gm, gh = mean_ci(np.array(gain))
    summary = {"b_small": small["B"], "b_large": large["B"], "log_ratio": float(rm), "log_ratio_ci": float(rh),
               "lambda_ratio": float(math.exp(rm)), "acc_gain": float(gm), "acc_gain_ci": float(gh),
               "censored_runs": sum(r["censored"] for r in rows)}
    numbers["summary"] = summary
    verdicts = decide_claims(summary)
    cens = summary["censored_runs"]
    reading = (f"Trained to the same training cost {target:.4f} at its own tuned η, B = {small['B']} ends at "
               f"λ_max = {small['lambda_max_geomean']:.3g} and B = {large['B']} at {large['lambda_max_geomean']:.3g} "
               f"({summary['lambda_ratio']:.1f}× sharper), with test accuracy {small['test_accuracy_mean']:.1%} "
               f"against {large['test_accuracy_mean']:.1%}"
               + (f"; {cens} run(s) did not reach the target within the budget and are measured where they stopped"
                  if cens else "") + ". " + " ".join(v.sentence() for v in verdicts))
    result = LabResult("sharpness", "Sharpness of the solutions and test accuracy against batch size", reading,
                       numbers, table, verdicts=verdicts)
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(4.6, 4.0))
        B = np.array([r["B"] for r in rows], dtype=float)
        for r in rows:
            ax1.plot([r["B"]] * len(r["runs"]), [p["lambda_max"] for p in r["runs"]], ".", color="C0", alpha=0.5)
        lo = np.array([r["lambda_max_ci95"][0] for r in rows])
        hi = np.array([r["lambda_max_ci95"][1] for r in rows])
        g = np.array([r["lambda_max_geomean"] for r in rows])
        ax1.errorbar(B, g, yerr=[g - lo, hi - g], fmt="o-", color="C0", capsize=3, label="λ_max (geometric mean, 95%)")
        ax1.plot(B, [r["two_over_lr"] for r in rows], "s--", color="C3", ms=4, label="2/η (stability limit of GD)")
        ax1.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="top Hessian eigenvalue",
                title="sharpness at the same training cost")
        ax1.legend(fontsize=8)
        key = "test_accuracy" if classes else "test_cost"
        for r in rows:
            ax2.plot([r["B"]] * len(r["runs"]), [p[key] for p in r["runs"]], ".", color="C1", alpha=0.5)
        ax2.errorbar(B, [r[key + "_mean"] for r in rows], yerr=[r[key + "_ci95"] for r in rows], fmt="o-", color="C1",
                     capsize=3, label=f"mean of {len(seeds)} seeds, 95% t")
        ax2.set(xscale="log", xlabel="batch size B", ylabel=key.replace("_", " "), title="held-out test set")
        ax2.legend(fontsize=8)
        for i, r in enumerate(rows):
            ax3.plot([p["lambda_max"] for p in r["runs"]], [p[key] for p in r["runs"]], "o", color=f"C{i}",
                     label=f"B = {r['B']}")
        ax3.set(xscale="log", xlabel="λ_max", ylabel=key.replace("_", " "), title="each run")
        ax3.legend(fontsize=7)
        from matplotlib import ticker

        for axis in (ax1.yaxis, ax3.xaxis):  # minor log labels collide at this width
            axis.set_minor_formatter(ticker.NullFormatter())
        result.save(out, fig, f"Sharpness and test accuracy at training cost {target:.3g}")
    return result
