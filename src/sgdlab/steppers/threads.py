"""BLAS threads chosen per product size, so that small products never pay the multi-thread cliff.

OpenBLAS's thread pool wins only on large products; on small ones its threads hand work to each
other and spin, and when another process holds a core a 2-thread product can be an order of
magnitude slower than a 1-thread one. A stepper runs its block under ``blas_threads(ctx)``: one
thread for every BLAS library when the largest product of an update, batch rows x fan_in x fan_out
multiply-adds, is below ``MULTI_THREAD_MIN_MACS``; the libraries' own settings otherwise (SciPy's
private OpenBLAS still pinned to one thread, as its pool spin-waits against NumPy's).

The threshold is measured by ``python -m sgdlab.steppers.threads`` (README, "Speed").
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

MULTI_THREAD_MIN_MACS = 1024 * 784 * 100
"""Below this many multiply-adds per product, one BLAS thread (2 threads first won at batch ~1024 for 784x100)."""


@functools.cache
def _controller():
    """threadpoolctl's view of the BLAS libraries, taken once: SciPy's private OpenBLAS is loaded first
    (by importing scipy.linalg, which the fused stepper and the sigmoid need anyway), or a library
    loaded after the scan would run uncontrolled on its default threads."""
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.cache
def _blas_libs():
    return [lc for lc in _controller().lib_controllers if lc.user_api == "blas"]


@functools.cache
def _scipy_private_blas():
    """threadpoolctl's controllers of BLAS libraries that SciPy ships for itself beside NumPy's.

    Wheels from PyPI bundle one OpenBLAS in numpy.libs and another in scipy.libs; where both
    libraries are one (conda, system BLAS) there is nothing to separate and this is empty.
    """
    import scipy

    scipy_dir = Path(scipy.__file__).parent
    return [lc for lc in _controller().lib_controllers
            if lc.user_api == "blas" and (Path(lc.filepath).parent.name == "scipy.libs"
                                          or Path(lc.filepath).is_relative_to(scipy_dir))]


@functools.cache
def _numpy_blas():
    """threadpoolctl's controller of the BLAS library NumPy itself calls (the one in numpy.libs for wheels
    from PyPI), or None."""
    import numpy

    numpy_dir = Path(numpy.__file__).parent
    for lc in _blas_libs():
        path = Path(lc.filepath)
        if path.parent.name == "numpy.libs" or path.is_relative_to(numpy_dir):
            return lc
    return None


def numpy_blas_path() -> str | None:
    """The file of the BLAS library NumPy itself calls, or None."""
    lc = _numpy_blas()
    return None if lc is None else str(Path(lc.filepath))


class _Threads:
    """Set every BLAS library to ``n`` threads for the duration; only the libraries that differ are
    touched (a few microseconds, so that a block of one update can afford it)."""

    def __init__(self, n: int, libs):
        self.n, self.libs = n, libs
        self.changed: list = []

    def __enter__(self):
        self.changed = []
        for lc in self.libs:
            before = lc.get_num_threads()
            if before != self.n:
                lc.set_num_threads(self.n)
                self.changed.append((lc, before))
        return self

    def __exit__(self, *exc):
        for lc, before in self.changed:
            lc.set_num_threads(before)
        return False


def largest_product(sizes, rows: int) -> int:
    """Multiply-adds of an update's largest matrix product: rows x fan_in x fan_out."""
    return rows * max(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def blas_threads(sizes, rows: int):
    """A context manager: one BLAS thread for small products, the libraries' defaults for large ones."""
    if largest_product(sizes, rows) < MULTI_THREAD_MIN_MACS:
        return _Threads(1, _blas_libs())
    return _Threads(1, _scipy_private_blas())


def products_threads(sizes, rows: int) -> int | None:
    """The threads NumPy's BLAS runs an update's products on under ``blas_threads``: one below
    ``MULTI_THREAD_MIN_MACS``, else its current setting; None where threadpoolctl does not see it."""
    if largest_product(sizes, rows) < MULTI_THREAD_MIN_MACS:
        return 1
    lc = _numpy_blas()
    return None if lc is None else lc.get_num_threads()


def single_thread():
    """One thread for every BLAS library (for timings that must not depend on the thread count)."""
    return _Threads(1, _blas_libs())


def _measure(sizes=(784, 100, 10), batches=(1, 10, 32, 128, 256, 512, 1024, 2048), repeats=5):
    """Seconds per set of products (forward and weight gradient) at 1 thread and at the default, per batch size."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    W = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    rows = []
    for m in batches:
        X = rng.standard_normal((m, sizes[0])).astype(np.float32)
        times = {}
        for label, ctx in (("1 thread", single_thread), ("default", contextlib.nullcontext)):
            best = float("inf")
            with ctx():
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for _ in range(max(1, 2000 // m)):
                        a = X
                        for w in W:  # forward, then the weight gradient's product a^T z of each layer
                            z = a @ w
                            np.dot(a.T, z)
                            a = z
                    best = min(best, (time.perf_counter() - t0) / max(1, 2000 // m))
            times[label] = best
        rows.append((m, times["1 thread"], times["default"]))
    return rows


if __name__ == "__main__":  # pragma: no cover - a measurement, run by hand
    from ..machine import describe

    print(describe())
    for m, one, default in _measure():
        print(f"batch {m:5d}  1 thread {one * 1e6:9.1f} us  default {default * 1e6:9.1f} us  "
              f"ratio {default / one:5.2f}")
