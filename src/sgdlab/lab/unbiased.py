"""unbiased: the average of k mini-batch gradients converges to the full gradient G.

At fixed parameters, a stream of mini-batch gradients g_B (B = 10) is averaged, weighting each
batch by its size; the relative error ||mean_k - G|| / ||G|| is recorded against k for each
sampling scheme and compared with the 1/sqrt(k) line an unbiased estimator with independent
draws must follow. With reshuffled epochs the batches of one epoch partition the data, so the
average is exactly G after every full epoch: better than 1/sqrt(k).
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from ..sampling import BatchSampler
from .common import geometric_grid, load, trained_network
from .estimators import bootstrap_ci, flatten, loglog_slope, trace_sigma
from .result import LabResult
from .tuning import pinned_threads
from .verdict import decide

SCHEMES = {"replacement": "with replacement", "without_replacement": "B distinct examples per batch",
           "reshuffle": "reshuffled epochs", "biased": "biased control: p ∝ ||g_i||, not reweighted"}


def _batches(scheme, n, b, k, rng, p=None):
    if scheme == "biased":
        return [rng.choice(n, b, replace=True, p=p) for _ in range(k)]
    if scheme == "replacement":
        return [rng.integers(0, n, b) for _ in range(k)]
    if scheme == "without_replacement":
        return [rng.choice(n, b, replace=False) for _ in range(k)]
    sampler, out = BatchSampler(n, b, "reshuffle", rng), []
    while len(out) < k:
        out.extend(sampler.epoch())
    return out[:k]


def verdicts(numbers: dict) -> list:
    """The claims, from the numbers: ratios to theory per stream, epoch-end errors, the control's plateau."""
    out = []
    for scheme in ("replacement", "without_replacement"):
        d = numbers[scheme]
        lo, hi = d["ms_ratio_ci95"]
        out.append(decide(f"Sampling {SCHEMES[scheme]} is unbiased: the error of the mean of k batch gradients "
                          f"follows √(c(B) tr Σ / k) / ‖G‖", holds=lo <= 1 <= hi,
                          rule="the 95% bootstrap interval (over streams) of mean(error² / theory²) over k contains 1",
                          evidence=f"ratio {d['ms_ratio']:.3g} [{lo:.3g}, {hi:.3g}]; slope in the first epoch "
                                   f"{d['loglog_slope_first_epoch']:.3f} (theory −0.5)"))
    e = numbers["reshuffle"]["max_error_at_epoch_ends"]
    out.append(decide("Reshuffled epochs average to G exactly after every full epoch", holds=e < 1e-10,
                      rule="largest relative error at epoch ends < 1e-10 (float64 rounding is ~1e-16)",
                      evidence=f"largest error at epoch ends {e:.2g}"))
    b = numbers["biased"]
    last, theory_last, plateau = b["median_relative_error"][-1], numbers["theory_replacement"][-1], b["plateau"]
    ok = last > 3 * theory_last and plateau / 2 <= last <= 2 * plateau
    out.append(decide("Negative control: a biased sampler's error plateaus instead of falling like 1/√k", holds=ok,
                      rule="error at the largest k > 3 × the unbiased theory and within a factor 2 of "
                           "‖Σ p_i g_i − G‖/‖G‖",
                      evidence=f"error at k = {numbers['k'][-1]}: {last:.3g}; unbiased theory {theory_last:.3g}; "
                               f"predicted plateau {plateau:.3g}"))
    return out


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, batch_size: int = 10,
        streams: int | None = None, net=None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    with pinned_threads(1):
        net = net or trained_network(ds, seed=seed)
        rng = np.random.default_rng(seed)
        G = flatten(net.gradient(X, y))
        g_norm = np.linalg.norm(G)
        norms = np.asarray(net.per_example_grad_norms(X, y), dtype=np.float64)
        tr = trace_sigma(norms, G)
        p = norms / norms.sum()
        biased_mean = sum(p[i] * flatten(net.gradient(X[i:i + 1], y[i:i + 1])) for i in np.flatnonzero(p > 0))
        per_epoch = -(-n // batch_size)
        k_max = 2 * per_epoch if quick else 4 * per_epoch
        S = streams or (6 if quick else 12)
        ks = np.union1d(geometric_grid(1, k_max, per_decade=8), per_epoch * np.arange(1, k_max // per_epoch + 1))
        theory = {"replacement": np.sqrt(tr / (batch_size * ks)) / g_norm,
                  "without_replacement": np.sqrt(tr * (n - batch_size) / ((n - 1) * batch_size * ks)) / g_norm}
        numbers = {"n": n, "batch_size": batch_size, "streams": S, "seed": seed, "k": ks, "grad_norm": g_norm,
                   "tr_sigma": tr, "batches_per_epoch": per_epoch, "theory_replacement": theory["replacement"],
                   "theory_without_replacement": theory["without_replacement"]}
        rows = []
        for scheme in SCHEMES:
            errors = np.empty((S, len(ks)))
            for s in range(S):
                total, count, j = np.zeros_like(G), 0, 0
                for i, idx in enumerate(_batches(scheme, n, batch_size, k_max, rng, p), 1):
                    total += len(idx) * flatten(net.gradient(X[idx], y[idx]))
                    count += len(idx)
                    if i == ks[j]:
                        errors[s, j] = np.linalg.norm(total / count - G) / g_norm
                        j += 1
            median = np.median(errors, axis=0)
            first = ks < per_epoch  # within the first epoch all schemes are comparable
            slope = loglog_slope(ks[first], median[first])
            d = {"median_relative_error": median, "all_streams": errors, "loglog_slope_first_epoch": slope}
            if scheme in theory:
                per_stream = np.mean(errors[:, first] ** 2 / theory[scheme][first] ** 2, axis=1)
                d["ms_ratio"] = float(per_stream.mean())
                d["ms_ratio_ci95"] = list(bootstrap_ci(per_stream, seed=seed))
            if scheme == "reshuffle":
                d["max_error_at_epoch_ends"] = float(errors[:, ks % per_epoch == 0].max())
            if scheme == "biased":
                d["plateau"] = float(np.linalg.norm(biased_mean - G) / g_norm)
            numbers[scheme] = d
            at_epoch = median[ks == per_epoch][0] if per_epoch in ks else None
            rows.append({"sampling": SCHEMES[scheme], "error k=1": float(median[0]),
                         f"error k={ks[-1]}": float(median[-1]), "slope (1st epoch)": slope,
                         "error after 1 epoch": None if at_epoch is None else float(at_epoch),
                         "mean error²/theory²": d.get("ms_ratio")})
    result = LabResult("unbiased", "Averages of mini-batch gradients and the full gradient", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    result.reading = result.reading_from_verdicts(f"B = {batch_size}, {S} streams per scheme, k up to {k_max}.")
    if out is not None:
        fig, (ax,) = new_figure(size=(7.5, 4.8))
        for i, (scheme, label) in enumerate(SCHEMES.items()):
            med = numbers[scheme]["median_relative_error"]
            ax.plot(ks, np.maximum(med, 1e-17), marker=".", color=f"C{i}", label=f"{label} (median of {S} streams)")
        ax.plot(ks, theory["replacement"], "k--", lw=1, label="theory √(tr Σ/(B k))/‖G‖ (not fitted)")
        ax.axhline(numbers["biased"]["plateau"], color="C3", ls=":", lw=1, label="predicted plateau of the control")
        for e in range(1, k_max // per_epoch + 1):
            ax.axvline(e * per_epoch, color="grey", lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="mini-batch gradients averaged, k", ylabel="‖mean − G‖ / ‖G‖")
        ax.legend(fontsize=7)
        result.save(out, fig, f"Relative error of the mean of k batch gradients (B = {batch_size}) against k")
    return result
