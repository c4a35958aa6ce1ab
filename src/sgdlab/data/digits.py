"""The handwritten digits shipped inside scikit-learn: 1,797 images of 8x8 pixels, classes 0-9."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from .dataset import Dataset, split


def load_digits_split(seed: int = 0, test_size: float = 0.2) -> Dataset:
    """Digits with pixels scaled from 0..16 to [0, 1], split stratified with a fixed seed (80/20)."""
    X, y = load_digits(return_X_y=True)
    return split((X / 16.0).astype(np.float32), y.astype(np.int64), "digits", seed=seed, test_size=test_size)
