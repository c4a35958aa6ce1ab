"""Synthetic data sets with a seed: problems whose difficulty is known.

    blobs(n, centers, d)      Gaussian clusters, one class each (scikit-learn's make_blobs)
    spirals(n, noise)         two interleaved spirals: not linearly separable, needs hidden units
    noisy_linear(n, d, noise) y = X w + b + noise: regression with a known answer (w, b)
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from .dataset import Dataset, split


def blobs(n: int = 1000, centers: int = 3, d: int = 2, spread: float = 1.0, seed: int = 0) -> Dataset:
    X, y = make_blobs(n_samples=n, centers=centers, n_features=d, cluster_std=spread, random_state=seed)
    return split(X.astype(np.float32), y.astype(np.int64), "blobs", seed=seed)


def spirals(n: int = 1000, noise: float = 0.1, turns: float = 1.5, seed: int = 0) -> Dataset:
    """Two spirals of n/2 points each, r = t, angle = 2 pi turns t (+ pi for the second), t in (0, 1]."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t = np.sqrt(rng.uniform(0.02, 1.0, half))  # denser near the centre, as the arms are shorter there
    parts = []
    for k in (0, 1):
        angle = 2 * np.pi * turns * t + np.pi * k
        xy = np.column_stack([t * np.cos(angle), t * np.sin(angle)]) + noise * rng.standard_normal((half, 2))
        parts.append(xy)
    X = np.concatenate(parts).astype(np.float32)
    y = np.repeat([0, 1], half).astype(np.int64)
    return split(X, y, "spirals", seed=seed)


def noisy_linear(n: int = 1000, d: int = 5, noise: float = 0.1, seed: int = 0) -> Dataset:
    """y = X w + b + noise with X ~ N(0, I), w ~ N(0, I), b ~ N(0, 1); float targets (regression)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w, b = rng.standard_normal(d), rng.standard_normal()
    y = X @ w + b + noise * rng.standard_normal(n)
    return split(X.astype(np.float32), y.astype(np.float64), "noisy-linear", seed=seed)
