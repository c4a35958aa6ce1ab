"""The one container every loader returns, and the fixed-seed splits."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    classes: tuple | None = None  # the original class labels, in code order (label code k is classes[k])

    @property
    def n_classes(self) -> int | None:
        """Number of classes k: len(classes) where the labels were mapped, else k distinct labels that must
        be 0..k-1; None for real-valued targets."""
        from ..validation import count_classes

        if not np.issubdtype(self.y_train.dtype, np.integer):
            return None
        if self.classes is not None:
            return len(self.classes)
        return count_classes(self.y_train, self.y_test)


def _stratify(y):
    """Stratify by y when it holds class labels that each occur at least twice."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        return None
    return y if np.unique(y, return_counts=True)[1].min() >= 2 else None


def split(X, y, name: str, *, seed: int = 0, test_size: float = 0.2, classes=None) -> Dataset:
    """A fixed-seed train/test split, stratified by class when y holds class labels."""
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=_stratify(y))
    return Dataset(X_tr, y_tr, X_te, y_te, name, classes)


def split_validation(X, Y, fraction: float, seed=None):
    """(X_train, Y_train, (X_val, Y_val)): ``fraction`` of the rows set aside for validation.

    ceil(fraction * n) rows go to validation (as scikit-learn's train_test_split). For class
    labels (1-D integer Y) the split is stratified: each class gives round-half-largest-remainder
    shares of its count, so the validation class frequencies match the training data's. Rows are
    drawn by a generator derived from ``seed`` (its own stream, so the sampling order does not change).

    >>> import numpy as np
    >>> X = np.arange(20.0).reshape(10, 2); y = np.array([0] * 6 + [1] * 4)
    >>> Xt, yt, (Xv, yv) = split_validation(X, y, 0.5, seed=0)
    >>> len(yt), np.bincount(yv).tolist()
    (5, [3, 2])
    """
    from ..validation import is_out_of_core

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction < 1:
        raise ValueError(f"validation_split must be in (0, 1); got {fraction!r}")
    if is_out_of_core(X):
        raise ValueError("validation_split needs data in memory; for data on disk pass validation=(X_val, Y_val)")
    X, Y = np.asarray(X), np.asarray(Y)
    n = len(X)
    if len(Y) != n:
        raise ValueError(f"X has {n} rows but Y has {len(Y)}")
    n_val = math.ceil(fraction * n)
    if not 1 <= n_val < n:
        raise ValueError(f"validation_split={fraction} of n_samples={n} leaves {n - n_val} for training and {n_val} "
                         "for validation; both need at least one")
    if isinstance(seed, np.random.Generator):
        rng = seed.spawn(1)[0]
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))  # streams 0, 1: init, sampling
    if Y.ndim == 1 and np.issubdtype(Y.dtype, np.integer):
        _, codes, counts = np.unique(Y, return_inverse=True, return_counts=True)
        share = counts * n_val / n
        take = np.floor(share).astype(int)
        extra = n_val - take.sum()
        take[np.argsort(-(share - take), kind="stable")[:extra]] += 1
        val = np.concatenate([rng.permutation(np.flatnonzero(codes == k))[:t] for k, t in enumerate(take)])
    else:
        val = rng.permutation(n)[:n_val]
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return X[~mask], Y[~mask], (X[mask], Y[mask])
