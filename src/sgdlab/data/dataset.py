"""The one container every loader returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split


class Dataset(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def n_classes(self) -> int | None:
        """Number of classes k (labels must be 0..k-1, k distinct labels), or None for real-valued targets."""
        from ..validation import count_classes

        if not np.issubdtype(self.y_train.dtype, np.integer):
            return None
        return count_classes(self.y_train, self.y_test)


def split(X, y, name: str, *, seed: int = 0, test_size: float = 0.2) -> Dataset:
    """A fixed-seed train/test split, stratified by class when y holds class labels."""
    stratify = y if np.issubdtype(y.dtype, np.integer) and np.unique(y, return_counts=True)[1].min() >= 2 else None
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)
    return Dataset(X_tr, y_tr, X_te, y_te, name)
