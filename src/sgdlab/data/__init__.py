"""Datasets: the embedded digits, MNIST (IDX files, downloaded and verified), and .npz/.csv files.

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
from .mnist import MNIST_FILES, load_mnist

NAMES = ("digits", "mnist")


def load(name: str, data_dir=None, *, download: bool = True, seed: int = 0) -> Dataset:
    """A dataset by name ("digits", "mnist") or by path to a .npz/.csv file."""
    if name == "digits":
        return load_digits_split(seed=seed)
    if name == "mnist":
        return load_mnist(data_dir, download=download)
    if Path(name).suffix.lower() in (".npz", ".csv"):
        return load_file(name, seed=seed)
    raise ValueError(f"unknown data {name!r}; valid: {', '.join(NAMES)}, or a path to a .npz or .csv file")


__all__ = ["MappedRows", "open_npy", "Dataset", "load", "load_digits_split", "load_mnist", "load_file", "read_idx", "read_idx_pair", "MNIST_FILES"]
