"""Feature scaling, fitted on the training set only (the test set never leaks into it).

Scikit-learn's scalers do the work; these apply one to a Dataset the way it must be applied.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from .dataset import Dataset

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def scale(ds: Dataset, how: str = "standard") -> Dataset:
    """``ds`` with features standardised (mean 0, sd 1) or min-max scaled to [0, 1], fitted on X_train."""
    if how == "none":
        return ds
    if how not in SCALERS:
        raise ValueError(f"unknown scaling {how!r}; valid: none, {', '.join(SCALERS)}")
    scaler = SCALERS[how]().fit(ds.X_train)
    f = lambda X: scaler.transform(X).astype(np.float32)  # noqa: E731
    return ds._replace(X_train=f(ds.X_train), X_test=f(ds.X_test))


def pixels_to_unit(X, max_value: float = 255.0) -> np.ndarray:
    """Pixel intensities 0..max_value as float32 in [0, 1]."""
    return (np.asarray(X, dtype=np.float32) / np.float32(max_value))
