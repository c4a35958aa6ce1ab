"""Datasets: the embedded digits, MNIST and Fashion-MNIST (IDX files, downloaded and verified),
.npz/.npy/.csv files, synthetic problems, and .npy data larger than memory (``open_npy``).

Every loader returns a ``Dataset`` (X_train, y_train, X_test, y_test, name) with float32
inputs scaled to [0, 1] where the format defines a range, and int64 labels for classes
(``Dataset.classes`` keeps the original labels of a table, such as ``"setosa"``).

The submodules load on first use (``sgdlab.data.blobs`` imports scikit-learn only when touched),
so ``import sgdlab`` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .dataset import Dataset

NAMES = ("digits", "mnist", "fashion-mnist", "blobs", "spirals", "linear")

# public name -> the submodule defining it; imported on first access (PEP 562)
_LAZY = {"load_digits_split": "digits", "load_file": "files", "read_idx": "idx", "read_idx_pair": "idx",
         "MappedRows": "mapped", "open_npy": "mapped", "FASHION_MNIST_FILES": "mnist", "MNIST_FILES": "mnist",
         "load_fashion_mnist": "mnist", "load_mnist": "mnist", "pixels_to_unit": "scaling", "scale": "scaling",
         "blobs": "synthetic", "noisy_linear": "synthetic", "spirals": "synthetic"}
_SUBMODULES = ("dataset", "digits", "files", "idx", "mapped", "mnist", "scaling", "synthetic")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


def load(name: str, data_dir=None, *, download: bool = True, seed: int = 0, target=-1, task=None) -> Dataset:
    """A dataset by name (see NAMES) or by path to a .npz/.npy/.csv file.

    ``target``: the target column of a table (index or header name); ``task``: "classification",
    "regression" or None (guessed from the target, see ``sgdlab.data.files.type_of_target``).
    """
    from . import digits, mnist, synthetic

    named = {"digits": lambda: digits.load_digits_split(seed=seed),
             "mnist": lambda: mnist.load_mnist(data_dir, download=download),
             "fashion-mnist": lambda: mnist.load_fashion_mnist(data_dir, download=download),
             "blobs": lambda: synthetic.blobs(seed=seed), "spirals": lambda: synthetic.spirals(seed=seed),
             "linear": lambda: synthetic.noisy_linear(seed=seed)}
    if name in named:
        return named[name]()
    if Path(name).suffix.lower() in (".npz", ".npy", ".csv"):
        from .files import load_file

        return load_file(name, seed=seed, target=target, task=task)
    raise ValueError(f"unknown data {name!r}; valid: {', '.join(NAMES)}, or a path to a .npz, .npy or .csv file")


__all__ = ["MappedRows", "open_npy", "Dataset", "load", "load_digits_split", "load_mnist", "load_fashion_mnist",
           "load_file", "read_idx", "read_idx_pair", "MNIST_FILES", "FASHION_MNIST_FILES", "blobs", "spirals",
           "noisy_linear", "scale", "pixels_to_unit"]
