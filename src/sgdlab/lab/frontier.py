"""frontier: steps against examples to reach a target cost, per batch size, and the critical batch size.

McCandlish, Kaplan, Amodei et al. (2018), "An Empirical Model of Large-Batch Training": with each
batch size B at its own tuned learning rate, the updates S and examples E = S B needed to reach a
given training cost lie on the hyperbola

    (S / S_min - 1) (E / E_min - 1) = 1,     i.e.  S = S_min (1 + B_crit / B),  E = E_min (1 + B / B_crit),

with B_crit = E_min / S_min the critical batch size: below it extra updates are wasted, above it
extra examples. B_crit depends on the target and grows as the target cost falls (the gradient
shrinks faster than its noise).

Measured here: for each B, every eta of a doubling grid (``tuning.tune_lr``, grid extended while the
best eta sits at an edge) is run from the same initial weights per seed until the lowest target;
the updates to each target are read off the same runs (log-log interpolation between checkpoints).
For each target and B the best eta is the one with the fewest updates (restricted mean over seeds:
a run that never reaches the target counts as its budget). The budget scales with 1/B: at most
max(4 S_ref, 4 E_ref / B) updates, with S_ref, E_ref those of the reference run (B = 10, eta = 3) to the
lowest target. A (B, target) with a censored seed at its best eta is reported and left out of the
fit. The fit is least squares in log S over (log S_min, log B_crit); intervals are bootstrap over
seeds (resample seeds, re-pick the best eta, refit).
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
from scipy.optimize import least_squares

from ..machine import describe, recording_load
from ..plots import new_figure
from .common import load, network_for
from .result import LabResult
from .tuning import _crossing, pinned_threads, train_to_budget, tune_lr
from .verdict import decide

RMS_TOLERANCE = 0.2  # the hyperbola "fits" when the RMS residual of log S is at most 0.2 (about 20%)


def fit_frontier(B, S) -> dict:
    """Least-squares fit of log S = log S_min + log(1 + B_crit / B) over batch sizes B; returns S_min,
    B_crit, E_min = S_min B_crit and the RMS log residual.

    >>> f = fit_frontier([1, 4, 16, 64], [100 * (1 + 8 / b) for b in (1, 4, 16, 64)])
    >>> round(f["B_crit"], 3), round(f["S_min"], 3)
    (8.0, 100.0)
    """
    B, S = np.asarray(B, dtype=float), np.asarray(S, dtype=float)
    if len(B) < 2:
        return {"S_min": math.nan, "B_crit": math.nan, "E_min": math.nan, "rms_log_residual": math.nan,
                "points": len(B)}
    logS = np.log(S)

    def resid(p):
        return p[0] + np.log1p(np.exp(p[1]) / B) - logS

    start = [logS.min(), math.log(max(B.min(), 1.0))]
    sol = least_squares(resid, start, bounds=([-np.inf, math.log(1e-4)], [np.inf, math.log(1e7)]))
    s_min, b_crit = float(np.exp(sol.x[0])), float(np.exp(sol.x[1]))
    return {"S_min": s_min, "B_crit": b_crit, "E_min": s_min * b_crit,
            "rms_log_residual": float(np.sqrt(np.mean(sol.fun ** 2))), "points": len(B)}


def best_per_target(runs_by_lr: dict, target_keys, budget: int) -> dict:
    """For each target: the eta with the fewest updates (restricted mean over seeds), and its seeds' updates.

    ``runs_by_lr`` maps eta to a list (one per seed) of {target: updates or None}.
    """
    out = {}
    for t in target_keys:
        def score(lr, t=t):
            return float(np.mean([r[t] if r[t] is not None else budget for r in runs_by_lr[lr]]))

        lrs = sorted(runs_by_lr)
        best = min(lrs, key=score)
        i = lrs.index(best)
        per_seed = [r[t] for r in runs_by_lr[best]]
        out[t] = {"best_lr": best, "at_grid_edge": i in (0, len(lrs) - 1), "updates_per_seed": per_seed,
                  "censored": sum(v is None for v in per_seed),
                  "updates": float(np.mean(per_seed)) if None not in per_seed else None, "restricted_mean": score(best)}
    return out


def _crossings(run_: dict, targets, keys) -> dict:
    """Updates at which one run first reached each target (None: never, or diverged)."""
    rows = [dict(zip(run_["curve"], v, strict=True)) for v in zip(*run_["curve"].values(), strict=True)]
    return {k: None if run_["diverged"] else _crossing(rows, t, "updates") for k, t in zip(keys, targets, strict=True)}


def decide_claims(s: dict) -> list:
    """Verdicts from the summary numbers only: ``targets`` (descending costs), ``b_crit`` (per target),
    ``rms`` (per target), ``p_grows`` (bootstrap share of resamples where B_crit at the lowest target
    exceeds B_crit at the highest), ``b_crit_ci`` (per target, 95%)."""
    ok = [r for r in s["rms"] if r is not None and math.isfinite(r)]
    v1 = decide("Steps and examples to a target lie on (S/S_min - 1)(E/E_min - 1) = 1 (McCandlish et al. 2018)",
                holds=bool(ok) and len(ok) == len(s["rms"]) and max(ok) <= RMS_TOLERANCE,
                rule=f"RMS residual of log S about the fitted hyperbola <= {RMS_TOLERANCE} at every target",
                evidence="RMS log residual " + ", ".join(f"{r:.3f}" if r is not None else "no fit" for r in s["rms"]))
    lo, hi = s["b_crit"][0], s["b_crit"][-1]
    v2 = decide("The critical batch size grows as the target cost falls",
                holds=s["p_grows"] >= 0.95,
                rule="B_crit at the lowest target above B_crit at the highest in at least 95% of bootstrap "
                     "resamples of the seeds",
                evidence=f"B_crit {lo:.3g} at cost {s['targets'][0]:.3g} → {hi:.3g} at cost {s['targets'][-1]:.3g}; "
                         f"grows in {s['p_grows']:.0%} of resamples",
                caveat=None if s["p_grows"] >= 0.95 and all(
                    c is not None and c[1] < c2[0] for c, c2 in pairwise(s["b_crit_ci"])) else
                "the 95% intervals of neighbouring targets overlap")
    return [v1, v2]


def verdicts(numbers: dict) -> list:
    """The verdicts from a result's ``numbers`` (as saved in its JSON): ``decide_claims(numbers["summary"])``."""
    return decide_claims(numbers["summary"])


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, sizes=None,
        seeds: int | None = None, ref_epochs=None, bootstrap: int = 200) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    seeds = list(range(seed, seed + (seeds or (2 if quick else 3))))
    default = (1, 4, 16, 64, 256) if quick else (1, 2, 4, 8, 16, 32, 64, 256, 1024)
    sizes = sorted({min(int(b), n) for b in (sizes or default)})
    ref_epochs = list(ref_epochs or ((0.5, 1, 2) if quick else (1, 2, 4)))
    lr0 = 3.0 if ds.n_classes else 0.1

    def make(s):
        return network_for(ds, seed=s)

    numbers = {"n": n, "seeds": seeds, "batch_sizes": sizes, "machine": describe()}
    rows = []
    with recording_load(numbers), pinned_threads(1):
        ref = train_to_budget(make, X, y, lr=lr0, batch_size=10, seed=seed, max_examples=int(max(ref_epochs) * n),
                              per_decade=40)
        curve = ref["curve"]
        targets = [float(np.interp(e * n, curve["examples_seen"], curve["cost"])) for e in ref_epochs]
        t_key = [f"{t:.6g}" for t in targets]
        s_ref = _crossings(ref, targets[-1:], ["last"])["last"] or ref["updates"]
        e_ref = s_ref * 10
        numbers.update(targets=targets, target_rule=f"training cost of the reference run (B = 10, eta = {lr0:g}, "
                                                    f"seed {seed}) after {ref_epochs} epochs")
        grid0 = [lr0 / 3, 2 * lr0 / 3, 4 * lr0 / 3]
        for b in sizes:
            budget = int(max(4 * s_ref, 4 * e_ref / b))
            tuning = tune_lr(make, X, y, grid=grid0, batch_size=b, seeds=seeds, max_updates=budget,
                             target=targets[-1], max_extensions=6, per_decade=40)
            runs_by_lr = {r["lr"]: [_crossings(run_, targets, t_key) for run_ in r["runs"]] for r in tuning.results}
            per_target = best_per_target(runs_by_lr, t_key, budget)
            # the grid was widened for the lowest target; widen it for the others too
            for _ in range(4):
                edge = [k for k in t_key if per_target[k]["at_grid_edge"]]
                if not edge:
                    break
                lrs = sorted(runs_by_lr)
                for lr in {lrs[0] / 2 if per_target[k]["best_lr"] == lrs[0] else lrs[-1] * 2 for k in edge}:
                    runs_by_lr[lr] = [_crossings(train_to_budget(make, X, y, lr=lr, batch_size=b, seed=s,
                                                                 max_updates=budget, target=targets[-1],
                                                                 stop_at_target=True, per_decade=40),
                                                 targets, t_key) for s in seeds]
                per_target = best_per_target(runs_by_lr, t_key, budget)
            rows.append({"B": b, "budget_updates": budget, "grid": sorted(runs_by_lr), "per_target": per_target,
                         "updates_by_lr": {str(k): v for k, v in runs_by_lr.items()}})
            better = [lr for lr in tuning.grid if lr >= tuning.best_lr / 2]
            grid0 = better[:3] if len(better) >= 2 else [tuning.best_lr / 2, tuning.best_lr, 2 * tuning.best_lr]
    numbers["rows"] = rows

    def fits_from(picks):  # picks: per B, per target, updates (None if censored)
        res = []
        for k in t_key:
            pts = [(r["B"], p[k]) for r, p in zip(rows, picks, strict=True) if p[k] is not None]
            res.append(fit_frontier([b for b, _ in pts], [s for _, s in pts]))
        return res

    point = [{k: r["per_target"][k]["updates"] for k in t_key} for r in rows]
    fits = fits_from(point)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(seeds), len(seeds))
        picks = []
        for r in rows:
            sub = {float(lr): [v[i] for i in idx] for lr, v in r["updates_by_lr"].items()}
            best = best_per_target(sub, t_key, r["budget_updates"])
            picks.append({k: best[k]["updates"] for k in t_key})
        boot.append([f["B_crit"] for f in fits_from(picks)])
    boot = np.array(boot)
    ci = [[float(np.nanquantile(boot[:, j], 0.025)), float(np.nanquantile(boot[:, j], 0.975))]
          if np.isfinite(boot[:, j]).any() else None for j in range(len(t_key))]
    p_grows = float(np.mean(boot[:, -1] > boot[:, 0]))
    for f, c in zip(fits, ci, strict=True):
        f["B_crit_ci95"] = c
    summary = {"targets": targets, "b_crit": [f["B_crit"] for f in fits], "b_crit_ci": ci,
               "rms": [f["rms_log_residual"] for f in fits], "p_grows": p_grows,
               "censored_points": sum(r["per_target"][k]["censored"] > 0 for r in rows for k in t_key),
               "lr_at_grid_edge": sum(r["per_target"][k]["at_grid_edge"] for r in rows for k in t_key)}
    numbers.update(fits=fits, summary=summary, bootstrap=bootstrap)
    verdicts = decide_claims(summary)
    table = []
    for r in rows:
        row = {"B": r["B"], "budget": r["budget_updates"]}
        for j, k in enumerate(t_key):
            p = r["per_target"][k]
            censored = f"≥{p['restricted_mean']:.0f}*"
            row[f"S (C≤{targets[j]:.3g})"] = p["updates"] if p["updates"] is not None else censored
            row[f"η{j + 1}"] = p["best_lr"]
        table.append(row)
    for j, (t, f) in enumerate(zip(targets, fits, strict=True)):
        table.append({"B": f"fit {j + 1}", "budget": None,
                      f"S (C≤{targets[0]:.3g})": f"B_crit {f['B_crit']:.3g} [{ci[j][0]:.3g}, {ci[j][1]:.3g}]"
                      if ci[j] else "no fit", "η1": f"S_min {f['S_min']:.3g}, target {t:.3g}"})
    cens = summary["censored_points"]
    reading = ("At its own tuned η, each batch size needs S updates and E = S·B examples to reach the training cost; "
               "the fitted critical batch size is " + ", ".join(
                   f"B_crit = {f['B_crit']:.3g} (95% {c[0]:.3g}–{c[1]:.3g}) at cost {t:.3g}" if c
                   else f"no fit at {t:.3g}"
                   for f, c, t in zip(fits, ci, targets, strict=True))
               + (f"; {cens} (B, target) point(s) had a run that never reached the target within its budget and are "
                  "left out of the fit (marked * in the table)" if cens else "; every run reached every target")
               + (f"; at {summary['lr_at_grid_edge']} (B, target) point(s) the best η is still at an edge of the "
                  "widened grid" if summary["lr_at_grid_edge"] else "")
               + ". " + " ".join(v.sentence() for v in verdicts))
    result = LabResult("frontier", "Steps against examples to a target cost (critical batch size)", reading, numbers,
                       table, verdicts=verdicts)
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(4.6, 4.2))
        Bs = np.array(sizes, dtype=float)
        bb = np.geomspace(Bs.min() / 2, Bs.max() * 2, 200)
        for j, (k, t, f) in enumerate(zip(t_key, targets, fits, strict=True)):
            S = np.array([r["per_target"][k]["updates"] if r["per_target"][k]["updates"] is not None else np.nan
                          for r in rows], dtype=float)
            c = f"C{j}"
            ax1.plot(S * Bs, S, "o", color=c, label=f"C ≤ {t:.3g}")
            ax2.plot(Bs, S, "o", color=c, label=f"C ≤ {t:.3g}")
            cens_B = [r["B"] for r in rows if r["per_target"][k]["updates"] is None]
            if cens_B:
                lower = [r["per_target"][k]["restricted_mean"] for r in rows if r["per_target"][k]["updates"] is None]
                ax2.plot(cens_B, lower, "^", mfc="none", color=c, label="censored (≥)")
            if math.isfinite(f["B_crit"]):
                Sf = f["S_min"] * (1 + f["B_crit"] / bb)
                ax1.plot(Sf * bb, Sf, "-", color=c, lw=1)
                ax2.plot(bb, Sf, "-", color=c, lw=1, label=f"fit: B_crit {f['B_crit']:.3g}")
                ax1.plot(f["E_min"], f["S_min"], "+", color=c, ms=10)
        ax1.set(xscale="log", yscale="log", xlabel="examples E to the target", ylabel="updates S to the target",
                title="the frontier (+: E_min, S_min)")
        ax1.legend(fontsize=7)
        ax2.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="updates S", title="S = S_min (1 + B_crit/B)")
        ax2.legend(fontsize=6)
        ok = [j for j in range(len(targets)) if ci[j]]
        ax3.errorbar([targets[j] for j in ok], [fits[j]["B_crit"] for j in ok],
                     yerr=[[fits[j]["B_crit"] - ci[j][0] for j in ok], [ci[j][1] - fits[j]["B_crit"] for j in ok]],
                     fmt="o-", capsize=3)
        ax3.set(xscale="log", yscale="log", xlabel="target training cost", ylabel="B_crit",
                title=f"95% bootstrap over {len(seeds)} seeds")
        ax3.invert_xaxis()
        from matplotlib import ticker

        ax3.set_xticks(targets, [f"{t:.3g}" for t in targets])
        ax3.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax3.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax3.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.3g"))
        result.save(out, fig, "Updates against examples to a target cost, each B at its tuned η")
    return result
