"""variance: E||g_B - G||^2 against the batch size B, measured and predicted.

At fixed parameters, draw R mini-batches of each size B (log-spaced from 1 to n), with and
without replacement, and average ||g_B - G||^2. Theory: tr Sigma / B with replacement and
tr Sigma / B * (n - B)/(n - 1) without: "a batch of size B has the variance of one example
divided by B". Reported: the measured/theory ratio per B with its standard error (from the R
repeats) and the fitted log-log slope (theory: -1).
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from .common import geometric_grid, load, trained_network
from .estimators import flatten, loglog_slope, minibatch_variance, trace_sigma
from .result import LabResult
from .tuning import pinned_threads
from .verdict import decide


def verdicts(numbers: dict) -> list:
    """Claims: measured = theory at every B (Bonferroni z band), and a log-log slope of -1 with replacement.

    The slope's 95% interval is a parametric bootstrap: each measured mean redrawn from a normal with
    its standard error, the slope refitted (``slope_ci95`` in the numbers).
    """
    from scipy import stats

    z = []
    for scheme in ("with_replacement", "without_replacement"):
        d = numbers[scheme]
        r, se = np.asarray(d["ratio"], float), np.asarray(d["ratio_stderr"], float)
        ok = np.isfinite(r) & np.isfinite(se) & (se > 0)
        z.extend(np.abs(r[ok] - 1) / se[ok])
    m = len(z)
    z_star = float(stats.norm.ppf(1 - 0.025 / max(m, 1)))
    w = numbers["with_replacement"]
    lo, hi = w["slope_ci95"]
    inside = lo <= -1 <= hi
    return [decide("E‖g_B − G‖² = tr Σ/B (with replacement) and tr Σ/B·(n−B)/(n−1) (without), at every B",
                   holds=bool(m) and max(z) <= z_star,
                   rule=f"every |measured/theory − 1| within z* = {z_star:.2f} standard errors (5% family-wise, "
                        f"Bonferroni over {m} points)",
                   evidence=f"largest deviation {max(z) if z else float('nan'):.2f} standard errors"),
            decide("The variance falls like 1/B", holds=inside or abs(w["loglog_slope"] + 1) <= 0.05,
                   rule="the 95% interval of the log-log slope (with replacement) contains −1; within 0.05 of −1 "
                        "but excluding it: a caveat",
                   evidence=f"slope {w['loglog_slope']:.4f} [{lo:.4f}, {hi:.4f}]",
                   caveat=None if inside else "the slope differs from −1 by more than its sampling error")]


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, repeats: int | None = None,
        net=None) -> LabResult:
    with pinned_threads(1):
        return _run(data, data_dir, seed=seed, out=out, quick=quick, repeats=repeats, net=net)


def _run(data, data_dir, *, seed, out, quick, repeats, net) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    net = net or trained_network(ds, seed=seed)
    R = repeats or (40 if quick else 200)
    rng = np.random.default_rng(seed)
    G = flatten(net.gradient(X, y))
    tr = trace_sigma(net.per_example_grad_norms(X, y), G)
    sizes = geometric_grid(1, n, per_decade=3 if quick else 5)
    rows = []
    numbers = {"n": n, "repeats": R, "seed": seed, "tr_sigma": tr, "grad_norm_sq": float(G @ G), "batch_sizes": sizes}
    for scheme, replace in (("with_replacement", True), ("without_replacement", False)):
        measured, stderr, theory = [], [], []
        for b in sizes:
            sq = np.empty(R)
            for r in range(R):
                idx = rng.integers(0, n, b) if replace else rng.choice(n, b, replace=False)
                d = flatten(net.gradient(X[idx], y[idx])) - G
                sq[r] = d @ d
            measured.append(sq.mean())
            stderr.append(sq.std(ddof=1) / np.sqrt(R))
            theory.append(float(minibatch_variance(tr, b, None if replace else n)))
        measured, stderr, theory = map(np.array, (measured, stderr, theory))
        fit_mask = sizes <= (n if replace else n // 10)
        slope = loglog_slope(sizes[fit_mask], measured[fit_mask])
        draws = rng.normal(measured[fit_mask], stderr[fit_mask], (500, int(fit_mask.sum())))
        boot = [loglog_slope(sizes[fit_mask], np.maximum(d, 1e-300)) for d in draws]
        slope_ci = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(theory > 0, measured / theory, np.nan)
            ratio_se = np.where(theory > 0, stderr / theory, np.nan)
        numbers[scheme] = {"measured": measured, "stderr": stderr, "theory": theory, "ratio": ratio,
                           "ratio_stderr": ratio_se, "loglog_slope": slope, "slope_ci95": slope_ci,
                           "slope_fitted_over_B_up_to": int(sizes[fit_mask][-1])}
        for b, m, t, q in zip(sizes, measured, theory, ratio, strict=True):
            if b in (1, 10, 100, 1000) or b == sizes[-1]:
                rows.append({"sampling": scheme.replace("_", " "), "B": int(b), "measured": float(m),
                             "theory": float(t), "ratio": float(q)})
    w = numbers["with_replacement"]
    z = np.concatenate([np.abs(d["ratio"] - 1) / d["ratio_stderr"] for d in (w, numbers["without_replacement"])])
    z = z[np.isfinite(z)]
    numbers["max_deviation_in_standard_errors"] = float(z.max())
    result = LabResult("variance", "Mini-batch gradient variance against batch size", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    result.reading = result.reading_from_verdicts(
        f"{R} repeats per B; without replacement the factor (n−B)/(n−1) takes the variance to 0 at B = n.")
    if out is not None:
        fig, (ax,) = new_figure(size=(6.5, 4.5))
        floor = min(d["theory"][d["theory"] > 0].min()
                    for d in (numbers["with_replacement"], numbers["without_replacement"])) / 10
        for scheme, style in (("with_replacement", "o"), ("without_replacement", "s")):
            d = numbers[scheme]
            keep = d["measured"] > floor  # B = n without replacement is G itself: rounding noise, noted below
            ax.errorbar(sizes[keep], d["measured"][keep], yerr=2 * d["stderr"][keep], fmt=style, ms=4,
                        label=f"measured, {scheme.replace('_', ' ')} (slope {d['loglog_slope']:.2f})")
            ax.plot(sizes[d["theory"] > 0], d["theory"][d["theory"] > 0], "-", lw=1,
                    label="theory: tr Σ / B" + (" · (n−B)/(n−1)" if scheme.startswith("without") else ""))
        ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="E ||g_B − G||²")
        last = numbers["without_replacement"]["measured"][-1]
        ax.text(0.98, 0.02, f"B = n without replacement: {last:.1e} (the full gradient; rounding)", ha="right",
                transform=ax.transAxes, fontsize=8)
        ax.legend(fontsize=8)
        result.save(out, fig, "Variance of the mini-batch gradient against B, measured and theory")
    return result
