"""The estimators behind the lab's measurements.

Notation: per-example gradients g_i (i = 1..n), the full gradient G = (1/n) sum_i g_i, their
covariance Sigma = (1/n) sum_i (g_i - G)(g_i - G)^T over the data set, and a mini-batch
estimate g_B = (1/B) sum_{j in batch} g_j.

    tr Sigma = (1/n) sum_i ||g_i||^2 - ||G||^2                       (exact, from per-example norms)
    E ||g_B - G||^2 = tr Sigma / B                                   (B draws with replacement)
    E ||g_B - G||^2 = tr Sigma / B * (n - B) / (n - 1)               (B distinct examples)
    B_simple = tr Sigma / ||G||^2                                    (McCandlish et al. 2018)

Two batch sizes b < B give unbiased estimates of ||G||^2 and tr Sigma (their appendix A.1),
because E ||g_b||^2 = ||G||^2 + c(b) tr Sigma with c(b) = 1/b (with replacement) or
(n - b) / ((n - 1) b) (without):

    |G|^2_est = (c(b) ||g_B||^2 - c(B) ||g_b||^2) / (c(b) - c(B))
    S_est     = (||g_b||^2 - ||g_B||^2) / (c(b) - c(B))
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..backend import to_numpy


def flatten(grads) -> np.ndarray:
    """A gradient (list of (dW, db)) as one float64 vector."""
    return np.concatenate([np.asarray(to_numpy(p), dtype=np.float64).ravel() for pair in grads for p in pair])


def variance_factor(b, n: int | None = None):
    """c(b): E||g_b - G||^2 = c(b) tr Sigma; 1/b with replacement (n None), else (n-b)/((n-1) b)."""
    b = np.asarray(b, dtype=np.float64)
    return 1.0 / b if n is None else (n - b) / ((n - 1) * b)


def trace_sigma(norms, G) -> float:
    """tr Sigma = mean ||g_i||^2 - ||G||^2, from per-example gradient norms and the full gradient."""
    norms = np.asarray(norms, dtype=np.float64)
    return float(np.mean(norms * norms) - np.dot(G, G))


def minibatch_variance(tr_sigma: float, b, n: int | None = None):
    """Theory: E||g_b - G||^2 = c(b) tr Sigma."""
    return tr_sigma * variance_factor(b, n)


def two_batch_estimates(g_small_sq, g_big_sq, b_small: int, b_big: int, n: int | None = None):
    """Unbiased (|G|^2, tr Sigma) estimates from squared norms of gradients at two batch sizes."""
    cs, cb = variance_factor(b_small, n), variance_factor(b_big, n)
    g_small_sq, g_big_sq = np.asarray(g_small_sq, dtype=np.float64), np.asarray(g_big_sq, dtype=np.float64)
    return (cs * g_big_sq - cb * g_small_sq) / (cs - cb), (g_small_sq - g_big_sq) / (cs - cb)


def ratio_with_error(num, den) -> tuple[float, float]:
    """mean(num)/mean(den) and its standard error by the delta method, from paired samples."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    k = len(num)
    mn, md = num.mean(), den.mean()
    cov = np.cov(num, den) / k if k > 1 else np.zeros((2, 2))
    r = mn / md
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (md * md)
    return float(r), float(math.sqrt(max(var, 0.0)))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)[0])


def mean_ci(samples, level: float = 0.95, axis: int = 0):
    """(mean, half-width) of a Student-t confidence interval for the mean along ``axis``."""
    a = np.asarray(samples, dtype=np.float64)
    k = a.shape[axis]
    mean = a.mean(axis=axis)
    if k < 2:
        return mean, np.zeros_like(mean)
    half = stats.t.ppf(0.5 + level / 2, k - 1) * a.std(axis=axis, ddof=1) / math.sqrt(k)
    return mean, half


class RatioEMA:
    """Exponential moving averages of a numerator and a denominator; the ratio is taken last.

    Averaging the ratio itself would be biased (E[S/G] != E[S]/E[G]). Bias-corrected as in Adam,
    so the first estimates are not pulled towards zero.
    """

    def __init__(self, decay: float = 0.9):
        self.decay, self.num, self.den, self.count = decay, 0.0, 0.0, 0

    def update(self, num: float, den: float) -> float:
        self.num = self.decay * self.num + (1 - self.decay) * num
        self.den = self.decay * self.den + (1 - self.decay) * den
        self.count += 1
        return self.value

    @property
    def value(self) -> float:
        if self.count == 0:
            return math.nan
        correction = 1 - self.decay ** self.count
        return (self.num / correction) / (self.den / correction)


def bootstrap_ci(samples, stat=np.mean, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the rows of ``samples`` (resampled with replacement).

    >>> lo, hi = bootstrap_ci(np.arange(10.0))
    >>> bool(lo < 4.5 < hi)
    True
    """
    a = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    vals = np.array([stat(a[i]) for i in idx])
    return float(np.quantile(vals, (1 - level) / 2)), float(np.quantile(vals, (1 + level) / 2))


def mcnemar(a, b) -> dict:
    """Exact McNemar test for paired successes (bool arrays ``a``, ``b`` over the same cases).

    Only discordant pairs carry information: n01 (a fails, b succeeds) and n10 (a succeeds, b fails).
    Under H0 (equal success rates) n10 ~ Binomial(n01 + n10, 1/2); the two-sided p-value is
    min(1, 2 P(X <= min(n01, n10))).

    >>> mcnemar([1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0])["p_value"]
    0.0078125
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar needs paired outcomes of one shape, got {a.shape} and {b.shape}")
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m = n10 + n01
    p = 1.0 if m == 0 else float(min(1.0, 2 * stats.binom.cdf(min(n10, n01), m, 0.5)))
    return {"a_only": n10, "b_only": n01, "p_value": p, "rate_a": float(a.mean()), "rate_b": float(b.mean())}


def proportion_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    >>> [round(v, 3) for v in proportion_ci(82, 100)]
    [0.733, 0.883]
    """
    if n <= 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, float(centre - half))  # exact ends: rounding must not move them
    hi = 1.0 if successes == n else min(1.0, float(centre + half))
    return lo, hi


def welch_less(a, b) -> float:
    """One-sided Welch t-test p-value for mean(a) < mean(b) (samples over seeds).

    >>> welch_less([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) < 0.01
    True
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if a.mean() < b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
