"""Datasets from files: ``.npz`` and ``.csv``. Nothing is ever unpickled.

.npz  arrays ``X_train, y_train, X_test, y_test``, or ``X, y`` (then split 80/20 with a fixed seed)
.csv  numbers only, an optional header row, the target in the last column. Integer-valued
      targets are class labels; any other target is a real-valued regression target.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .dataset import Dataset, split


def _targets(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)) and y.min() >= 0:
        return y.astype(np.int64)
    return y


def _load_npz(path: Path, seed: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"cannot read {path} as .npz: {e}") from None
    name = path.stem
    if {"X_train", "y_train", "X_test", "y_test"} <= arrays.keys():
        a = arrays
        return Dataset(a["X_train"].astype(np.float32), _targets(a["y_train"]), a["X_test"].astype(np.float32),
                       _targets(a["y_test"]), name)
    if {"X", "y"} <= arrays.keys():
        return split(arrays["X"].astype(np.float32), _targets(arrays["y"]), name, seed=seed)
    raise ValueError(f"{path} must hold arrays X_train, y_train, X_test, y_test or X, y; it has {sorted(arrays)}")


def _load_csv(path: Path, seed: int) -> Dataset:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]  # header
    if not lines:
        raise ValueError(f"{path} has no data rows")
    rows = []
    for i, ln in enumerate(lines, 1):
        cells = ln.split(",")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            raise ValueError(f"{path}: data row {i} is not all numbers: {ln[:60]!r}") from None
        if len(rows[-1]) != len(rows[0]):
            raise ValueError(f"{path}: data row {i} has {len(rows[-1])} columns, the first has {len(rows[0])}")
    data = np.asarray(rows)
    if data.shape[1] < 2:
        raise ValueError(f"{path} needs at least two columns (features, then the target)")
    return split(data[:, :-1].astype(np.float32), _targets(data[:, -1]), path.stem, seed=seed)


def _is_numeric_row(line: str) -> bool:
    try:
        [float(c) for c in line.split(",")]
        return True
    except ValueError:
        return False


def load_file(path, seed: int = 0) -> Dataset:
    """A Dataset from a .npz or .csv file (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix.lower() == ".npz":
        return _load_npz(path, seed)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, seed)
    raise ValueError(f"unsupported data file {path}: use .npz or .csv")
