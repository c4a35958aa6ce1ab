"""noise-scale: the simple gradient noise scale B_simple = tr Sigma / ||G||^2, and what it advises.

McCandlish, Kaplan, Amodei et al. (2018), "An Empirical Model of Large-Batch Training":
B_simple predicts the critical batch size B_crit, the batch size of the best trade-off between
the number of updates S and the number of examples E needed to reach a given cost,

    S = S_min (1 + B_crit / B),        E = E_min (1 + B / B_crit),        E_min = S_min B_crit.

Measured here:
1. B_simple exactly, from per-example gradient norms (tr Sigma = mean ||g_i||^2 - ||G||^2);
2. B_simple from the unbiased two-batch-size estimators (small and big batches drawn with
   replacement), with its standard error;
3. B_simple tracked during training from one small/big pair every few updates, with exponential
   moving averages of numerator and denominator (never of the ratio), next to the exact value;
4. a batch-size sweep at equal example budgets (the update budget scales like 1/B, capped at
   ``max_updates`` for the smallest batches on large data sets): for each B the
   learning rate is tuned (``lab.tuning``) for the fewest updates S to reach the target cost, over
   several seeds; runs that never reach it are reported as censored. S(B) = S_min (1 + B_crit/B) is
   fitted in log space, with percentile-bootstrap intervals (seeds resampled within each B), for
   several targets: B_crit is expected to grow as the target cost falls;
5. the curvature-weighted noise scale B_noise = tr(H Sigma) / G^T H G (their eq. 2.8) from
   Hessian-vector products (``lab.hessian``) at a few points of training, and lambda_max (power
   iteration): B_simple = B_noise only when H is a multiple of the identity, and B_crit ~ B_noise only
   when the tuned eta keeps growing with B (below the stability limit 2 / lambda_max).
"""

from __future__ import annotations

import math

import numpy as np

from ..plots import new_figure
from ..train import Callback, fit
from .common import load, network_for, trained_network
from .estimators import RatioEMA, flatten, ratio_with_error, trace_sigma, two_batch_estimates
from .hessian import float64_copy, noise_scales, top_eigenvalue
from .result import LabResult
from .tuning import lr_grid, pinned_threads, tune_lr
from .verdict import decide


def exact(net, X, y) -> dict:
    """tr Sigma, ||G||^2 and B_simple over all of (X, y), from per-example norms."""
    G = flatten(net.gradient(X, y))
    g2 = float(G @ G)
    tr = trace_sigma(net.per_example_grad_norms(X, y), G)
    return {"tr_sigma": tr, "grad_norm_sq": g2, "b_simple": tr / g2}


def _sq_norm(net, X, y, idx) -> float:
    g = flatten(net.gradient(X[idx], y[idx]))
    return float(g @ g)


def estimate(net, X, y, b_small: int, b_big: int, pairs: int, rng) -> dict:
    """B_simple from ``pairs`` independent small/big batch pairs (with replacement), with standard errors."""
    n = len(X)
    small = [_sq_norm(net, X, y, rng.integers(0, n, b_small)) for _ in range(pairs)]
    big = [_sq_norm(net, X, y, rng.integers(0, n, b_big)) for _ in range(pairs)]
    g2, s = two_batch_estimates(small, big, b_small, b_big)
    ratio, se = ratio_with_error(s, g2)
    return {"tr_sigma": float(s.mean()), "tr_sigma_se": float(s.std(ddof=1) / math.sqrt(pairs)),
            "grad_norm_sq": float(g2.mean()), "grad_norm_sq_se": float(g2.std(ddof=1) / math.sqrt(pairs)),
            "b_simple": ratio, "b_simple_se": se, "b_small": b_small, "b_big": b_big, "pairs": pairs}


class NoiseScaleTracker(Callback):
    """Every ``every`` updates: one small/big pair into a RatioEMA, and the exact value for reference."""

    def __init__(self, net, X, y, b_small, b_big, every, rng, decay=0.9):
        self.net, self.X, self.y, self.b_small, self.b_big, self.every, self.rng = net, X, y, b_small, b_big, every, rng
        self.ema, self.exact_ema, self.rows = RatioEMA(decay), RatioEMA(decay), []

    def on_update_end(self, r):
        if r["update"] % self.every:
            return
        n = len(self.X)
        gs = _sq_norm(self.net, self.X, self.y, self.rng.integers(0, n, self.b_small))
        gb = _sq_norm(self.net, self.X, self.y, self.rng.integers(0, n, self.b_big))
        g2, s = two_batch_estimates(gs, gb, self.b_small, self.b_big)
        ex = exact(self.net, self.X, self.y)
        self.rows.append({"update": r["update"], "ema_b_simple": self.ema.update(float(s), float(g2)),
                          "exact_b_simple": ex["b_simple"],
                          "exact_ema_b_simple": self.exact_ema.update(ex["tr_sigma"], ex["grad_norm_sq"]),
                          "train_cost": self.net.cost(self.X, self.y)})


def fit_s_of_b(B, S) -> tuple[float, float]:
    """(S_min, B_crit) of S = S_min (1 + B_crit / B), least squares on log S (every point weighs the same).

    >>> B = np.array([1, 4, 16, 64]); S = 100 * (1 + 8 / B)
    >>> [round(v, 6) for v in fit_s_of_b(B, S)]
    [100.0, 8.0]
    """
    from scipy.optimize import least_squares

    B, logS = np.asarray(B, dtype=float), np.log(np.asarray(S, dtype=float))

    def resid(p):
        return p[0] + np.log1p(np.exp(p[1]) / B) - logS

    start = np.array([logS.min(), np.log(np.median(B))])
    sol = least_squares(resid, start, method="lm" if len(B) > 2 else "trf")
    return float(np.exp(sol.x[0])), float(np.exp(sol.x[1]))


def bootstrap_fit(by_b: dict, reps: int = 300, seed: int = 0) -> dict:
    """Fit S(B) to every (B, S) point, and a percentile-bootstrap 95% interval resampling the seeds within each B."""
    sizes = [b for b, v in by_b.items() if len(v)]
    if len(sizes) < 2:
        return {"S_min": math.nan, "B_crit": math.nan, "B_crit_ci95": [math.nan, math.nan],
                "S_min_ci95": [math.nan, math.nan], "points": 0}
    B = np.concatenate([[b] * len(by_b[b]) for b in sizes])
    S = np.concatenate([by_b[b] for b in sizes])
    s_min, b_crit = fit_s_of_b(B, S)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(reps):
        Sb = np.concatenate([rng.choice(by_b[b], len(by_b[b])) for b in sizes])
        boots.append(fit_s_of_b(B, Sb))
    boots = np.array(boots)
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=0)
    return {"S_min": s_min, "B_crit": b_crit, "S_min_ci95": [float(lo[0]), float(hi[0])],
            "B_crit_ci95": [float(lo[1]), float(hi[1])], "points": int(len(B)), "bootstrap_reps": reps}


def _factor_of(ci, value, factor=2.0) -> bool:
    """Does the interval ``ci`` meet [value / factor, value * factor]?"""
    return bool(ci[1] >= value / factor and ci[0] <= value * factor)


def verdicts(numbers: dict) -> list:
    """The claims, decided from the numbers alone (see the module docstring)."""
    ex, est = numbers["exact"], numbers["two_batch_estimate"]
    out = [decide("The two-batch estimators recover B_simple", holds=abs(est["b_simple"] - ex["b_simple"])
                  <= 2 * est["b_simple_se"], rule="|estimate − exact| ≤ 2 standard errors",
                  evidence=f"exact {ex['b_simple']:.3g}, estimate {est['b_simple']:.3g} ± {est['b_simple_se']:.2g}")]
    fits = numbers["sweep"]["fits"]
    main = fits[-1]
    ci = main["B_crit_ci95"]
    bn = numbers["b_noise_trained"]
    for name, value in (("B_simple", ex["b_simple"]), ("B_noise", bn)):
        ok = math.isfinite(main["B_crit"]) and _factor_of(ci, value)
        out.append(decide(f"The critical batch size is predicted by {name} (within a factor of 2)", holds=ok,
                          rule=f"the 95% bootstrap interval of B_crit meets [{name}/2, 2·{name}]",
                          evidence=f"B_crit = {main['B_crit']:.3g} [{ci[0]:.3g}, {ci[1]:.3g}] at cost "
                                   f"{main['target_cost']:.3g}; {name} = {value:.3g}"))
    first, last = fits[0], fits[-1]
    grows = math.isfinite(first["B_crit"]) and math.isfinite(last["B_crit"]) and last["B_crit"] > first["B_crit"]
    separate = grows and last["B_crit_ci95"][0] > first["B_crit_ci95"][1]
    out.append(decide("B_crit grows as the target cost falls", holds=grows,
                      rule="B_crit at the lowest target above B_crit at the highest; "
                           "intervals apart for a plain 'holds'",
                      evidence=", ".join(f"cost {f['target_cost']:.3g}: {f['B_crit']:.3g} "
                                         f"[{f['B_crit_ci95'][0]:.3g}, {f['B_crit_ci95'][1]:.3g}]" for f in fits),
                      caveat=None if separate else "the bootstrap intervals overlap"))
    return out


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, seeds: int | None = None,
        target_fractions=(0.3, 0.2, 0.1), budget_epochs: int = 300, max_updates: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    rng = np.random.default_rng(seed)
    seeds = seeds or (2 if quick else 4)
    seed_list = list(range(seed, seed + seeds))
    with pinned_threads(1):
        net = trained_network(ds, seed=seed)
        b_small, b_big = 8, min(256, n)
        ex = exact(net, X, y)
        est = estimate(net, X, y, b_small, b_big, 100 if quick else 400, rng)

        # tracking during training from the initial weights; B_noise and lambda_max at a few points
        track_net = network_for(ds, seed=seed, dtype="float64")
        epochs = 2 if quick else 6
        points = {0: None, epochs // 2: None, epochs: None}
        m = 30 if quick else 100

        def curvature(r, net=track_net):
            if r["epoch"] in points:
                ns = noise_scales(net, X, y, m=m, seed=seed + r["epoch"])
                lam = top_eigenvalue(float64_copy(net), X, y, iters=30 if quick else 60, seed=seed)
                points[r["epoch"]] = {"epoch": r["epoch"], "train_cost": net.cost(X, y), **ns, **lam}

        tracker = NoiseScaleTracker(track_net, X, y, b_small, b_big, every=20, rng=rng)
        lr0 = 3.0 if ds.n_classes else 0.1
        fit(track_net, X, y, batch_size=10, lr=lr0, epochs=epochs, seed=seed, eval_train=False,
            callbacks=[tracker, curvature])
        curv = [points[k] for k in sorted(points) if points[k] is not None]

        # the batch-size sweep: eta tuned per B at an equal example budget, several seeds and targets
        def make(s):
            return network_for(ds, seed=s)

        initial = float(np.mean([make(s).cost(X, y) for s in seed_list]))
        targets = sorted((f * initial for f in target_fractions), reverse=True)
        sizes = [b for b in ((1, 4, 16, 64, 256) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)) if b <= n]
        budget = budget_epochs * n
        cap = max_updates or (20_000 if quick else 60_000)  # bounds the smallest batches on large data sets
        sweep = []
        for b in sizes:
            t = tune_lr(make, X, y, grid=lr_grid(lr0 / 2, lr0 * 2), batch_size=b, seeds=seed_list, max_examples=budget,
                        max_updates=cap, target=targets[-1], max_extensions=3)
            per_target = []
            for c in targets:  # the best eta for each target, from the same runs (each curve ends at the lowest one)
                scores = {}
                for res in t.results:
                    steps = [_first_crossing(r, c) for r in res["runs"]]
                    scores[res["lr"]] = (float(np.mean([s if s is not None else r["budget_updates"]
                                                        for s, r in zip(steps, res["runs"], strict=True)])), steps)
                best = min(scores, key=lambda v: scores[v][0])
                steps = scores[best][1]
                per_target.append({"target_cost": c, "best_lr": best, "updates": steps,
                                   "censored": sum(s is None for s in steps)})
            sweep.append({"B": b, "lr_grid": t.grid, "best_lr_at_edge": t.at_edge,
                          "update_budget": min(cap, -(-budget // b)),
                          "targets": per_target, "tuning": t.to_dict()})
    fits = []
    for j, c in enumerate(targets):
        by_b = {r["B"]: np.array([s for s in r["targets"][j]["updates"] if s is not None]) for r in sweep}
        fits.append({"target_cost": c, **bootstrap_fit(by_b, reps=100 if quick else 300, seed=seed),
                     "censored": {r["B"]: r["targets"][j]["censored"] for r in sweep}})
    b_noise_trained = curv[-1]["b_noise"] if curv else math.nan
    lam_end = curv[-1]["lambda_max"] if curv else math.nan
    best_lrs = [r["targets"][-1]["best_lr"] for r in sweep]
    b_sat = sweep[int(np.argmax(best_lrs))]["B"]
    numbers = {"n": n, "seeds": seed_list, "exact": ex, "two_batch_estimate": est, "tracking": tracker.rows,
               "curvature_points": curv, "b_noise_trained": b_noise_trained,
               "sweep": {"initial_cost": initial, "target_fractions": list(target_fractions), "targets": targets,
                         "budget_examples": budget, "max_updates": cap, "rows": sweep, "fits": fits,
                         "best_lr_stops_growing_at_B": b_sat, "largest_best_lr": max(best_lrs)}}
    main = fits[-1]
    rows = [{"quantity": "B_simple, exact (per-example norms)", "value": ex["b_simple"], "± (se or 95% CI)": None},
            {"quantity": f"B_simple, two-batch estimate (b={b_small}, B={b_big})", "value": est["b_simple"],
             "± (se or 95% CI)": f"± {est['b_simple_se']:.2g}"}]
    for p in curv:
        rows.append({"quantity": f"B_simple / B_noise / λ_max after {p['epoch']} epochs (B = 10)",
                     "value": f"{p['b_simple']:.3g} / {p['b_noise']:.3g} / {p['lambda_max']:.3g}",
                     "± (se or 95% CI)": f"B_noise ± {p['b_noise_se']:.2g}"})
    for f in fits:
        rows.append({"quantity": f"B_crit at cost {f['target_cost']:.3g} (S_min {f['S_min']:.3g})",
                     "value": f["B_crit"],
                     "± (se or 95% CI)": f"[{f['B_crit_ci95'][0]:.3g}, {f['B_crit_ci95'][1]:.3g}]"})
    for r in sweep:
        tmain = r["targets"][-1]
        ok = [s for s in tmain["updates"] if s is not None]
        rows.append({"quantity": f"B = {r['B']}: tuned η {tmain['best_lr']:g}"
                                 + (" (grid edge)" if r["best_lr_at_edge"] else "")
                                 + f", censored {tmain['censored']}/{seeds}",
                     "value": float(np.mean(ok)) if ok else None, "± (se or 95% CI)": "updates to the lowest target"})
    result = LabResult("noise-scale", "Gradient noise scale and the critical batch size", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    gap = (f"The tuned η grows with B only up to B = {b_sat} (η = {max(best_lrs):g}); the stability limit 2/λ_max "
           f"after {curv[-1]['epoch'] if curv else '?'} epochs is {2 / lam_end:.3g}. B_crit = {main['B_crit']:.3g} "
           f"is {ex['b_simple'] / main['B_crit']:.2g}x below B_simple = {ex['b_simple']:.3g} and "
           f"{b_noise_trained / main['B_crit']:.2g}x below B_noise = {b_noise_trained:.3g}.") if curv else ""
    if not math.isfinite(main["B_crit"]):
        gap = (f"Too few batch sizes reached the lowest target cost {main['target_cost']:.3g} within the budget "
               f"(censored: {main['censored']}): B_crit could not be fitted.")
    numbers["gap"] = gap
    result.reading = result.reading_from_verdicts(gap)
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(4.6, 3.8))
        if tracker.rows:
            u = [r["update"] for r in tracker.rows]
            ax1.plot(u, [r["exact_b_simple"] for r in tracker.rows], label="B_simple, exact")
            ax1.plot(u, [r["ema_b_simple"] for r in tracker.rows], label="EMA of two-batch estimates")
            per_epoch = -(-n // 10)
            ax1.errorbar([p["epoch"] * per_epoch for p in curv], [p["b_noise"] for p in curv],
                         yerr=[2 * p["b_noise_se"] for p in curv], fmt="ks", ms=4, label="B_noise (HVPs), ±2 se")
        ax1.set(xlabel="update (B = 10)", ylabel="noise scale", yscale="log", title="noise scales during training")
        ax1.legend(fontsize=7)
        for j, f in enumerate(fits):
            Bs, Ss, cens = [], [], []
            for r in sweep:
                for s in r["targets"][j]["updates"]:
                    (Bs if s is not None else cens).append(r["B"])
                    if s is not None:
                        Ss.append(s)
            ax2.plot(Bs, Ss, "o", color=f"C{j}", ms=3, alpha=0.7)
            if cens:
                ax2.plot(cens, [r["update_budget"] for r in sweep for s in r["targets"][j]["updates"] if s is None],
                         "^", color=f"C{j}", mfc="none", label="censored (at budget)" if j == 0 else None)
            if math.isfinite(f["B_crit"]) and Bs:
                bs = np.geomspace(min(Bs), max(Bs), 100)
                ax2.plot(bs, f["S_min"] * (1 + f["B_crit"] / bs), "-", color=f"C{j}",
                         label=f"cost {f['target_cost']:.2g}: B_crit {f['B_crit']:.2g} "
                               f"[{f['B_crit_ci95'][0]:.2g}, {f['B_crit_ci95'][1]:.2g}]")
        ax2.axvline(ex["b_simple"], color="grey", ls="--", lw=0.8, label=f"B_simple = {ex['b_simple']:.3g}")
        ax2.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="updates S to the target",
                title="steps to target at tuned η (fit: S_min(1+B_crit/B))")
        ax2.legend(fontsize=7)
        ax3.plot([r["B"] for r in sweep], best_lrs, "o-", label="tuned η (lowest target)")
        ax3.axhline(2 / lam_end, color="grey", ls="--", lw=0.8, label="2/λ_max (B=10 run, end)")
        ax3.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="learning rate η", title="tuned η against B")
        ax3.legend(fontsize=7)
        result.save(out, fig, "Noise scales, and updates to a target cost against batch size at tuned η")
    return result


def _first_crossing(run: dict, target: float):
    """Updates at which a run's recorded cost first reaches ``target`` (interpolated), or None."""
    from .tuning import _crossing

    c = run["curve"]
    rows = [{"updates": u, "cost": v} for u, v in zip(c["updates"], c["cost"], strict=True)]
    return None if run["diverged"] else _crossing(rows, target, "updates")
