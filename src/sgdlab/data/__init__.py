"""Datasets: the embedded digits, MNIST and Fashion-MNIST (IDX files, downloaded and verified),
.npz/.npy/.csv files, synthetic problems, and .npy data larger than memory (``open_npy``).

Every loader returns a ``Dataset`` (X_train, y_train, X_test, y_test, name) with float32
inputs scaled to [0, 1] where the format defines a range, and int64 labels for classes.
"""

from __future__ import annotations

from pathlib import Path

from .dataset import Dataset
from .digits import load_digits_split
from .files import load_file
from .idx import read_idx, read_idx_pair
from .mapped import MappedRows, open_npy
from .mnist import FASHION_MNIST_FILES, MNIST_FILES, load_fashion_mnist, load_mnist
from .scaling import pixels_to_unit, scale
from .synthetic import blobs, noisy_linear, spirals

NAMES = ("digits", "mnist", "fashion-mnist", "blobs", "spirals", "linear")


def load(name: str, data_dir=None, *, download: bool = True, seed: int = 0, target=-1) -> Dataset:
    """A dataset by name (see NAMES) or by path to a .npz/.npy/.csv file (``target``: its target column)."""
    named = {"digits": lambda: load_digits_split(seed=seed), "mnist": lambda: load_mnist(data_dir, download=download),
             "fashion-mnist": lambda: load_fashion_mnist(data_dir, download=download),
             "blobs": lambda: blobs(seed=seed), "spirals": lambda: spirals(seed=seed),
             "linear": lambda: noisy_linear(seed=seed)}
    if name in named:
        return named[name]()
    if Path(name).suffix.lower() in (".npz", ".npy", ".csv"):
        return load_file(name, seed=seed, target=target)
    raise ValueError(f"unknown data {name!r}; valid: {', '.join(NAMES)}, or a path to a .npz, .npy or .csv file")


__all__ = ["MappedRows", "open_npy", "Dataset", "load", "load_digits_split", "load_mnist", "load_fashion_mnist",
           "load_file", "read_idx", "read_idx_pair", "MNIST_FILES", "FASHION_MNIST_FILES", "blobs", "spirals",
           "noisy_linear", "scale", "pixels_to_unit"]
