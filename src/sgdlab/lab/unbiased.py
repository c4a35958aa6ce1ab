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
from .estimators import flatten, loglog_slope
from .result import LabResult

SCHEMES = {"replacement": "with replacement", "without_replacement": "B distinct examples per batch",
           "reshuffle": "reshuffled epochs"}


def _batches(scheme, n, b, k, rng):
    if scheme == "replacement":
        return [rng.integers(0, n, b) for _ in range(k)]
    if scheme == "without_replacement":
        return [rng.choice(n, b, replace=False) for _ in range(k)]
    sampler, out = BatchSampler(n, b, "reshuffle", rng), []
    while len(out) < k:
        out.extend(sampler.epoch())
    return out[:k]


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, batch_size: int = 10,
        streams: int | None = None, net=None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    net = net or trained_network(ds, seed=seed)
    rng = np.random.default_rng(seed)
    G = flatten(net.gradient(X, y))
    g_norm = np.linalg.norm(G)
    per_epoch = -(-n // batch_size)
    k_max = 2 * per_epoch if quick else 4 * per_epoch
    S = streams or (4 if quick else 10)
    ks = np.union1d(geometric_grid(1, k_max, per_decade=8), per_epoch * np.arange(1, k_max // per_epoch + 1))
    numbers = {"n": n, "batch_size": batch_size, "streams": S, "k": ks, "grad_norm": g_norm, "batches_per_epoch": per_epoch}
    rows = []
    for scheme in SCHEMES:
        errors = np.empty((S, len(ks)))
        for s in range(S):
            total, count, j = np.zeros_like(G), 0, 0
            for i, idx in enumerate(_batches(scheme, n, batch_size, k_max, rng), 1):
                total += len(idx) * flatten(net.gradient(X[idx], y[idx]))
                count += len(idx)
                if i == ks[j]:
                    errors[s, j] = np.linalg.norm(total / count - G) / g_norm
                    j += 1
        median = np.median(errors, axis=0)
        fit = ks < per_epoch  # within the first epoch all schemes are comparable
        slope = loglog_slope(ks[fit], median[fit])
        numbers[scheme] = {"median_relative_error": median, "all_streams": errors, "loglog_slope_first_epoch": slope}
        at_epoch = median[ks == per_epoch][0] if per_epoch in ks else None
        rows.append({"sampling": SCHEMES[scheme], "error k=1": float(median[0]), f"error k={ks[-1]}": float(median[-1]),
                     "slope": slope, "error after 1 epoch": None if at_epoch is None else float(at_epoch)})
    result = LabResult(
        "unbiased", "Averages of mini-batch gradients converge to the full gradient",
        f"Averaging k independent mini-batch gradients shrinks the relative error like 1/sqrt(k) (fitted slopes "
        f"{numbers['replacement']['loglog_slope_first_epoch']:.2f} and {numbers['without_replacement']['loglog_slope_first_epoch']:.2f}; theory -0.5), "
        f"as an unbiased estimate must. Reshuffled epochs do better still: after each full epoch the average is "
        f"the full gradient exactly.", numbers, rows)
    if out is not None:
        fig, (ax,) = new_figure(size=(6.5, 4.5))
        for scheme, label in SCHEMES.items():
            med = numbers[scheme]["median_relative_error"]
            ax.plot(ks, np.maximum(med, 1e-17), marker=".", label=label)
        ref = numbers["replacement"]["median_relative_error"][0] / np.sqrt(ks)
        ax.plot(ks, ref, "k--", lw=1, label="1/√k")
        for e in range(1, k_max // per_epoch + 1):
            ax.axvline(e * per_epoch, color="grey", lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="mini-batch gradients averaged, k", ylabel="||mean − G|| / ||G||")
        ax.legend(fontsize=8)
        result.save(out, fig, f"Unbiased: mean of k batch gradients (B={batch_size}) → G")
    return result
