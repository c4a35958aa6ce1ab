"""Datasets from files: ``.npz``, ``.npy`` and ``.csv``. Nothing is ever unpickled.

.npz  arrays ``X_train, y_train, X_test, y_test``, or ``X, y`` (then split 80/20 with a fixed seed)
.csv  read by pandas' parser (quoted fields, a UTF-8 byte-order mark, blank lines): an optional
      header row, the target in the last column (``target``: another index or a header name).
      Feature cells must be plain decimal numbers (``1.5``, ``-2e3``; not ``1_000``, ``1+2j``,
      ``nan`` or ``inf``); a bad cell is refused naming its data row and column. The target may
      be numbers or words (``setosa``).

The task (``type_of_target``): a target of words, or of integers with at most
``MAX_GUESSED_CLASSES`` distinct values, is a class label; the classes are the sorted distinct
values, coded 0..k-1 (labels 1, 2, 3 give 3 classes), and kept in ``Dataset.classes`` so that
predictions can be given back as the original labels. A target with non-integer values, or
integers with more distinct values (ages, prices), is a real-valued regression target.
``task="classification"`` or ``"regression"`` overrides the guess.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np

from ..validation import check_fits_in_memory
from .dataset import Dataset, split

MAX_DEFLATE_RATIO = 1032  # deflate cannot expand one compressed byte into more than ~1032 bytes
MAX_GUESSED_CLASSES = 20
TASKS = ("classification", "regression")
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


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


def type_of_target(y) -> str:
    """"classification" or "regression", guessed from the target values (the rule in the module docstring).

    >>> type_of_target(["setosa", "virginica"]), type_of_target([1, 2, 3]), type_of_target([0.5, 1.0])
    ('classification', 'classification', 'regression')
    >>> type_of_target(range(18, 90))  # ages: integers with many distinct values
    'regression'
    """
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number):
        return "classification"
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        return "regression"
    return "classification" if len(np.unique(y)) <= MAX_GUESSED_CLASSES else "regression"


def encode_target(y, task: str | None, where: str):
    """(y for training, classes or None): class codes 0..k-1 with the sorted distinct labels, or float targets."""
    y = np.asarray(y)
    task = task or type_of_target(y)
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} or None; got {task!r}")
    numeric = np.issubdtype(y.dtype, np.number)
    if task == "regression":
        if not numeric:
            raise ValueError(f"{where}: a regression target must be numbers; it holds words such as {y[0]!r}")
        return y.astype(np.float64), None
    if numeric and not np.all(y == np.round(y)):
        bad = float(y[y != np.round(y)][0])
        raise ValueError(f"{where}: class labels must be integers or words; the target has {bad!r} "
                         "(use task='regression')")
    classes, codes = np.unique(y.astype(np.int64) if numeric else y, return_inverse=True)
    return codes.astype(np.int64), tuple(c.item() if hasattr(c, "item") else str(c) for c in classes)


def _table(data: np.ndarray, target, header, path: Path, seed: int, task=None) -> Dataset:
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(
            f"{path} needs a 2-D table of at least two columns (features and a target); got shape {data.shape}"
        )
    k = _column(target, header, data.shape[1], path)
    X, y = np.delete(data, k, axis=1), data[:, k]
    if data.dtype.kind == "U":  # cells of a CSV file
        X = _numbers(X, path, header, skip=k)
        y = np.array(y, dtype=np.float64) if _is_number(y).all() else y
    y, classes = encode_target(y, task, f"{path}, target column {header[k] if header else k + 1}")
    return split(X.astype(np.float32), y, path.stem, seed=seed, classes=classes)


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


def _load_npz(path: Path, seed: int, target=-1, task=None) -> Dataset:
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
        return _table(next(iter(arrays.values())), target, None, path, seed, task)
    raise ValueError(
        f"{path} must hold arrays X_train, y_train, X_test, y_test, or X, y, or one table; it has {sorted(arrays)}"
    )


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


def _cells(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """(header or None, the data cells as a 2-D array of str), parsed by pandas.

    The first row is a header when one of its cells is not a number in a column whose other cells
    all are (or when no column holds numbers): a data row of numbers and words is not a header.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig", skipinitialspace=True, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} has no data rows") from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        why = (f"line {m.group(2)} has {m.group(3)} fields where the first line has {m.group(1)} (a header with fewer "
               "names than columns, or a ragged row)") if m else str(e)
        raise ValueError(f"cannot read {path} as CSV: {why}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    cells = frame.to_numpy(dtype=object).astype(str)
    cells = np.char.strip(cells)
    numeric = _is_number(cells)
    header = None
    if len(cells) and not numeric[0].all():
        rest = numeric[1:]
        if len(rest) == 0 or not rest.any() or (rest.all(axis=0) & ~numeric[0]).any():
            header, cells = [str(c) for c in cells[0]], cells[1:]
    if len(cells) == 0:
        raise ValueError(f"{path} has no data rows")
    if header is not None:
        empty = cells[:, -1] == ""
        if empty.all() and header[-1] != "":
            raise ValueError(f"{path}: the header has {len(header)} names but the data rows have {len(header) - 1} "
                             "columns")
    if (cells == "").any():
        i, j = (int(v) for v in np.argwhere(cells == "")[0])
        name = f" ({header[j]!r})" if header else ""
        raise ValueError(f"{path}: data row {i + 1}, column {j + 1}{name} is empty (a short row or a missing value)")
    return header, cells


def _is_number(cells: np.ndarray) -> np.ndarray:
    """Elementwise: is the cell a plain decimal number (no 1_000, no complex, no nan/inf)?"""
    import pandas as pd

    flat = pd.Series(cells.ravel(), dtype=str)
    return flat.str.fullmatch(_NUMBER).to_numpy(dtype=bool).reshape(cells.shape)


def _numbers(cells: np.ndarray, path: Path, header, skip: int | None = None) -> np.ndarray:
    """The cells as float64; the first bad cell is refused with its data row and column."""
    ok = _is_number(cells)
    if not ok.all():
        i, j = (int(v) for v in np.argwhere(~ok)[0])
        col = j + (skip is not None and j >= skip)
        name = f" ({header[col]!r})" if header else ""
        what = f"holds {cells[i, j][:40]!r}, not a number"
        raise ValueError(f"{path}: data row {i + 1}, column {col + 1}{name} {what}")
    return cells.astype(np.float64)


def read_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """(header or None, rows as a float array) from a CSV of numbers with an optional header row."""
    header, cells = _cells(Path(path))
    return header, _numbers(cells, path, header)


def read_rows(path) -> np.ndarray:
    """Rows of features from a .npy or .csv file (inputs to predict on; no target column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() == ".npy":
        X = read_npy(path)
    elif path.suffix.lower() == ".csv":
        X = read_csv(path)[1]
    else:
        raise ValueError(f"unsupported input {path}: use .npy or .csv")
    return X.reshape(1, -1) if X.ndim == 1 else X  # a single row is one example


def _load_npy(path: Path, seed: int, target=-1, task=None) -> Dataset:
    return _table(read_npy(path), target, None, path, seed, task)


def _load_csv(path: Path, seed: int, target=-1, task=None) -> Dataset:
    header, cells = _cells(path)
    return _table(cells, target, header, path, seed, task)


LOADERS = {".npz": _load_npz, ".npy": _load_npy, ".csv": _load_csv}


def load_file(path, seed: int = 0, target=-1, task: str | None = None) -> Dataset:
    """A Dataset from a .npz, .npy or .csv file (see the module docstring for the layouts and ``task``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"unsupported data file {path}: use .npz, .npy or .csv")
    return loader(path, seed, target, task)
