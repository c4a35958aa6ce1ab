"""Input checks, in one place: every public entry point calls these before touching anything.

Each failure is a ValueError or TypeError whose message names the argument and the problem.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import numpy as np

from .backend import is_numpy, namespace


def as_array(x, name: str):
    """``x`` as an array of its own namespace (lists and tuples become NumPy arrays)."""
    if x is None:
        raise TypeError(f"{name} is None; expected an array")
    if not hasattr(x, "__array_namespace__") and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{name} could not be read as a rectangular numeric array: {e}") from None
    xp = namespace(x)
    if not xp.isdtype(x.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{name} must be numeric; got dtype {x.dtype}")
    return x


def available_memory() -> int | None:
    """Bytes this process may still allocate: the system's available memory, and, under an address-space
    limit (``RLIMIT_AS``), that limit less what the process has mapped. None where neither is known."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                used = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
            avail = soft - used if avail is None else min(avail, soft - used)
    except (ImportError, OSError, StopIteration, ValueError, IndexError):
        pass
    return avail


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, ``nbytes`` that this process could not allocate (see ``available_memory``)."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{what} would need {_gib(nbytes)} of memory; only {_gib(max(avail, 0))} is available")


def check_network_fits(sizes, dtype: str) -> None:
    """Refuse, before allocating, a network whose parameters this process could not hold.

    P = sum_l (n_{l-1} + 1) n_l parameters; initialising and training one needs about 4 copies
    (the float64 draw, the parameters, a gradient, the copy kept for divergence recovery).
    """
    P = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    itemsize = 8 if dtype == "float64" else 4
    avail = available_memory()
    need = P * (8 + 3 * itemsize)
    if avail is not None and need > avail:
        raise ValueError(f"a network of sizes {list(sizes)} has {P:.3g} parameters ({_gib(P * itemsize)} as {dtype}); "
                         f"creating and training it needs about {_gib(need)} but only {_gib(max(avail, 0))} of memory "
                         "is available")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def count_classes(*label_arrays) -> int:
    """The number of classes k of integer labels, which must be 0..k-1 with k the number of distinct labels.

    Counting distinct labels (not max + 1) keeps one corrupt label (255 among digits 0..9) from silently
    making a 256-output network: it is refused instead. Memory is O(n), whatever the labels' values.
    """
    labels = np.concatenate([np.asarray(y).ravel() for y in label_arrays])
    if labels.size == 0:
        raise ValueError("there are no labels to count classes from")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"class labels must be integers; got {labels.dtype}")
    distinct = np.unique(labels)
    low, high = int(distinct[0]), int(distinct[-1])
    if low < 0 or high >= distinct.size:
        raise ValueError(
            f"class labels must be 0..k-1 with k the number of distinct labels; these {distinct.size} "
            f"distinct labels range over [{low}, {high}] (a corrupt label, or labels that need renumbering)"
        )
    return int(distinct.size)


def _all_finite(x, xp) -> bool:
    if xp.isdtype(x.dtype, ("bool", "integral")):
        return True
    return bool(xp.all(xp.isfinite(x)))


def check_X(X, n_features: int, name: str = "X"):
    """A 2-D finite numeric array with ``n_features`` columns and at least one row.

    Data on disk (``sgdlab.data.MappedRows``) is never loaded whole, nor scanned here: its rows are
    checked for NaN and infinity as they are read.
    """
    on_disk = is_out_of_core(X)
    if not on_disk:
        X = as_array(X, name)
        if X.ndim != 2:
            hint = " (use X.reshape(-1, 1) for a single feature)" if X.ndim == 1 else ""
            raise ValueError(f"{name} must be 2-D (n_examples, n_features); got shape {tuple(X.shape)}{hint}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 examples")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the network's input layer has {n_features}")
    if not on_disk and not _all_finite(X, namespace(X)):
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def check_Y(Y, n: int, n_out: int, name: str = "Y", float_dtype=None):
    """Targets for ``n`` examples and ``n_out`` outputs.

    Returns ``(T, labels)``: T is a float (n, n_out) target array; labels is the integer
    class vector when Y holds class labels (accuracy is then defined), else None.
    Integer labels 0..n_out-1 become one-hot rows; with one output unit, labels 0/1 are
    the binary target itself. ``float_dtype`` (NumPy labels only; default float64): the dtype those
    targets are made in, so that a float32 network's one-hot rows are never a float64 array first
    (0 and 1 are exact in either; 80 bytes per row of ten classes, measured on 1.37M rows).
    """
    Y = as_array(Y, name)
    xp = namespace(Y)
    if Y.shape[0] != n:
        raise ValueError(f"X has {n} examples but {name} has {Y.shape[0]}; they must match row for row")
    if xp.isdtype(Y.dtype, ("bool", "integral")):
        if Y.ndim != 1:
            raise ValueError(f"integer {name} must be a 1-D vector of class labels; got shape {tuple(Y.shape)}")
        n_classes = max(n_out, 2)
        low, high = int(xp.min(Y)), int(xp.max(Y))
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"{name} has labels in [{low}, {high}] but the network's {n_out} output unit(s) "
                f"allow labels 0..{n_classes - 1}"
            )
        labels = xp.astype(Y, xp.int64)
        fdt = float_dtype if float_dtype is not None and is_numpy(xp) else xp.float64
        if n_out == 1:
            return xp.reshape(xp.astype(Y, fdt), (n, 1)), labels
        return xp.astype(labels[:, None] == xp.arange(n_out, dtype=xp.int64)[None, :], fdt), labels
    if not _all_finite(Y, xp):
        raise ValueError(f"{name} contains NaN or infinity")
    if Y.ndim == 1 and n_out == 1:
        Y = xp.reshape(Y, (n, 1))
    if Y.ndim != 2 or Y.shape[1] != n_out:
        raise ValueError(
            f"{name} must be integer class labels of shape ({n},) or targets of shape ({n}, {n_out}); "
            f"got {Y.dtype} of shape {tuple(Y.shape)}"
        )
    return Y, None


def check_positive(value, name: str) -> float:
    """A finite real number > 0 (the learning rate, for example)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_fraction(value, name: str, *, high: float = 1.0, include_high: bool = False) -> float:
    """A finite real in [0, high) (or [0, high])."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number; got {value!r}")
    ok = 0 <= value <= high if include_high else 0 <= value < high
    if not math.isfinite(value) or not ok:
        bracket = "]" if include_high else ")"
        raise ValueError(f"{name} must be in [0, {high:g}{bracket}; got {value!r}")
    return float(value)


def check_int(value, name: str, low: int = 1, high: int | None = None) -> int:
    """An int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < low or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {rng}; got {value}")
    return int(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
    return value


def is_out_of_core(x) -> bool:
    """Data read from disk on demand (``sgdlab.data.MappedRows``), which must never be copied whole."""
    from .data.mapped import MappedRows

    return isinstance(x, MappedRows)


def to_backend(x, xp, dtype=None):
    """Move a validated array into the namespace ``xp`` (NumPy arrays convert to any backend)."""
    if is_out_of_core(x):
        if not is_numpy(xp):
            raise TypeError("data on disk (MappedRows) trains NumPy networks only")
        return x
    src = namespace(x)
    if dtype is not None and is_numpy(src) and x.dtype == np.float64 and np.dtype(_numpy_dtype(dtype)) == np.float32:
        big = float(np.max(np.abs(x), initial=0.0))
        if big > float(np.finfo(np.float32).max):
            raise ValueError(f"the data holds values up to {big:.3g} in magnitude, beyond the float32 range "
                             f"(+-{float(np.finfo(np.float32).max):.3g}); rescale it or use dtype='float64'")
    if src is not xp and not (is_numpy(src) and is_numpy(xp)):
        if not is_numpy(src):
            raise TypeError(f"data is a {src.__name__} array but the network lives on {xp.__name__}")
        x = xp.asarray(np.ascontiguousarray(x))
    return x if dtype is None or x.dtype == dtype else xp.astype(x, dtype)


def _numpy_dtype(dtype):
    """A NumPy dtype for a dtype of any namespace (torch.float32 -> float32); object where unknown."""
    try:
        return np.dtype(dtype)
    except TypeError:
        try:
            return np.dtype(str(getattr(dtype, "name", dtype)).split(".")[-1])
        except TypeError:
            return np.dtype(object)
