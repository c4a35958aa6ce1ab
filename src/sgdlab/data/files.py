"""Datasets from files: ``.npz``, ``.npy`` and ``.csv``. Nothing is ever unpickled.

.npz  arrays ``X_train, y_train, X_test, y_test``, or ``X, y`` (then split 80/20 with a fixed seed)
.csv  numbers only, an optional header row, the target in the last column. Integer-valued
      targets are class labels; any other target is a real-valued regression target.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..validation import check_fits_in_memory
from .dataset import Dataset, split

MAX_DEFLATE_RATIO = 1032  # deflate cannot expand one compressed byte into more than ~1032 bytes


def _targets(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)) and y.min() >= 0:
        return y.astype(np.int64)
    return y


def _column(target, header: list[str] | None, n_cols: int, path: Path) -> int:
    """The index of the target column: an int (negative counts from the end) or a header name."""
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if header is None:
            raise ValueError(f"{path} has no header row, so the target column {target!r} must be given by index")
        if target not in header:
            raise ValueError(f"{path} has no column {target!r}; columns: {', '.join(header)}")
        return header.index(target)
    k = int(target)
    if not -n_cols <= k < n_cols:
        raise ValueError(f"target column {k} is out of range for {path}, which has {n_cols} columns")
    return k % n_cols


def _table(data: np.ndarray, target, header, path: Path, seed: int) -> Dataset:
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"{path} needs a 2-D table of at least two columns (features and a target); got shape {data.shape}")
    k = _column(target, header, data.shape[1], path)
    X = np.delete(data, k, axis=1).astype(np.float32)
    return split(X, _targets(data[:, k]), path.stem, seed=seed)


def _npy_header(f, where: str) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, data bytes) from the header of a .npy stream, checked before any data is read."""
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version} is not supported for numeric data")
        shape, _, dtype = readers[version](f, max_header_size=10000)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise ValueError(f"cannot read {where} as .npy: {e}") from None
    _check_numeric(dtype, where)
    return dtype, shape, math.prod(shape) * dtype.itemsize


def _check_numeric(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise ValueError(f"{where} must hold numbers; it holds {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{where} holds complex numbers ({dtype}); only real data is supported")


def _read_npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    where = f"{path}[{info.filename}]"
    if not info.filename.endswith(".npy"):
        raise ValueError(f"{path}: member {info.filename!r} is not a .npy array; an .npz holds only .npy members")
    if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise ValueError(f"{where} claims {info.file_size} bytes from {info.compress_size} compressed: more than "
                         "deflate can produce; the file is corrupt or hostile")
    with z.open(info) as f:
        dtype, shape, nbytes = _npy_header(f, where)
        if f.tell() + nbytes != info.file_size:
            raise ValueError(f"{where}: its header claims shape {shape} of {dtype} ({nbytes} bytes) but the member "
                             f"holds {info.file_size - f.tell()} bytes of data")
        check_fits_in_memory(2 * nbytes, f"{where} (shape {shape}, {dtype})")
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)


def _load_npz(path: Path, seed: int, target=-1) -> Dataset:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            check_fits_in_memory(2 * sum(i.file_size for i in infos), f"{path} (its arrays together)")
            arrays = {i.filename.removesuffix(".npy"): _read_npy_member(z, i, path) for i in infos}
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
        raise ValueError(f"cannot read {path} as .npz: {e}") from None
    name = path.stem
    if {"X_train", "y_train", "X_test", "y_test"} <= arrays.keys():
        a = arrays
        return Dataset(a["X_train"].astype(np.float32), _targets(a["y_train"]), a["X_test"].astype(np.float32),
                       _targets(a["y_test"]), name)
    if {"X", "y"} <= arrays.keys():
        return split(arrays["X"].astype(np.float32), _targets(arrays["y"]), name, seed=seed)
    if len(arrays) == 1:
        return _table(next(iter(arrays.values())), target, None, path, seed)
    raise ValueError(f"{path} must hold arrays X_train, y_train, X_test, y_test, or X, y, or one table; it has {sorted(arrays)}")


def read_npy(path: Path) -> np.ndarray:
    """A numeric array from a .npy file (never unpickled).

    The header is checked first: the size it claims must be exactly what the file holds and
    fit in memory, so a small file claiming 10^12 items is refused without allocating.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            dtype, shape, nbytes = _npy_header(f, str(path))
            if f.tell() + nbytes != size:
                raise ValueError(f"{path}: its header claims shape {shape} of {dtype} ({nbytes} bytes of data) but the "
                                 f"file holds {size - f.tell()}")
            check_fits_in_memory(2 * nbytes, f"{path} (shape {shape}, {dtype})")
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read {path} as .npy: {e}") from None
    return data


def read_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """(header or None, rows as a float array) from a CSV of numbers with an optional header row."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = None
    if lines and not _is_numeric_row(lines[0]):
        header, lines = [c.strip() for c in lines[0].split(",")], lines[1:]
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
    return header, np.asarray(rows)


def read_rows(path) -> np.ndarray:
    """Rows of features from a .npy or .csv file (inputs to predict on; no target column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() == ".npy":
        return read_npy(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)[1]
    raise ValueError(f"unsupported input {path}: use .npy or .csv")


def _load_npy(path: Path, seed: int, target=-1) -> Dataset:
    return _table(read_npy(path), target, None, path, seed)


def _load_csv(path: Path, seed: int, target=-1) -> Dataset:
    header, data = read_csv(path)
    return _table(data, target, header, path, seed)


def _is_numeric_row(line: str) -> bool:
    try:
        [float(c) for c in line.split(",")]
        return True
    except ValueError:
        return False


LOADERS = {".npz": _load_npz, ".npy": _load_npy, ".csv": _load_csv}


def load_file(path, seed: int = 0, target=-1) -> Dataset:
    """A Dataset from a .npz, .npy or .csv file (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"unsupported data file {path}: use .npz, .npy or .csv")
    return loader(path, seed, target)
