"""The array namespace: the one place where numerical code gets its array module.

NumPy is the default. Any library that follows the Python array API standard
(array-api-strict, CuPy, PyTorch through ``array-api-compat``) can hold a
network's parameters instead; the kernels in this package call ``xp.*`` only.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from types import ModuleType

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "array_api_strict", "cupy", "torch")


def get_namespace(name: str | ModuleType = "numpy") -> ModuleType:
    """Return the array namespace called ``name`` (or pass a namespace through).

    >>> get_namespace("numpy").__name__
    'numpy'
    """
    if isinstance(name, ModuleType):
        return np if is_numpy(name) else name
    if name == "numpy":
        return np
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict
    if name == "cupy":
        import cupy

        return array_api_compat.array_namespace(cupy.empty(0))
    if name == "torch":
        import torch

        return array_api_compat.array_namespace(torch.empty(0))
    raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")


def namespace(*arrays) -> ModuleType:
    """The namespace of ``arrays``: plain NumPy for NumPy arrays (fastest), else array-api-compat's."""
    xp = array_api_compat.array_namespace(*arrays)
    return np if is_numpy(xp) else xp


def is_numpy(xp: ModuleType) -> bool:
    return xp is np or array_api_compat.is_numpy_namespace(xp)


def to_numpy(x) -> np.ndarray:
    """Copy an array of any backend to host NumPy memory (for files, plots and tables)."""
    if isinstance(x, np.ndarray):
        return x
    xp = array_api_compat.array_namespace(x)
    if array_api_compat.is_torch_namespace(xp):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_namespace(xp):
        return x.get()
    return np.from_dlpack(x)


def dot(xp: ModuleType, a, b):
    """Matrix product ``a @ b``; on NumPy, ``np.dot``, whose per-call cost is lowest for small shapes."""
    return np.dot(a, b) if xp is np else xp.matmul(a, b)


@functools.cache
def _scipy_private_blas():
    """threadpoolctl's controllers of BLAS libraries that SciPy ships for itself beside NumPy's.

    Wheels from PyPI bundle one OpenBLAS in numpy.libs and another in scipy.libs; where both
    libraries are one (conda, system BLAS) there is nothing to separate and this is empty.
    """
    import scipy
    from threadpoolctl import ThreadpoolController

    scipy_dir = Path(scipy.__file__).parent
    return [lc for lc in ThreadpoolController().lib_controllers
            if lc.user_api == "blas" and (Path(lc.filepath).parent.name == "scipy.libs"
                                          or Path(lc.filepath).is_relative_to(scipy_dir))]


@contextlib.contextmanager
def scipy_blas_single_threaded():
    """Run SciPy's private BLAS on one thread for the duration (NumPy's keeps its threads).

    Two OpenBLAS thread pools in one process spin-wait against each other on the same cores:
    alternating NumPy products with SciPy gemm calls made mini-batch steps 100x slower here.
    """
    libs = _scipy_private_blas()
    before = [lc.num_threads for lc in libs]
    for lc in libs:
        lc.set_num_threads(1)
    try:
        yield
    finally:
        for lc, n in zip(libs, before):
            lc.set_num_threads(n)
