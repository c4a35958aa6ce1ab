"""The array namespace: the one place where numerical code gets its array module.

NumPy is the default. Any library that follows the Python array API standard
(array-api-strict, CuPy, PyTorch through ``array-api-compat``) can hold a
network's parameters instead; the kernels in this package call ``xp.*`` only.

A ``Backend`` is that namespace together with the device its arrays live on and the one
synchronisation point, ``sync()``: GPU work is queued asynchronously, so a clock may be read
only after ``sync()`` has waited for it. ``resolve_backend(name, device)`` builds one and
refuses, naming what to install, a library or device that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "array_api_strict", "cupy", "torch")

# type aliases for annotations: arrays of any array-API namespace (NumPy, CuPy, torch, ...) are not one static type
Array = Any
Params = list[tuple[Array, Array]]  # [(W_1, b_1), ..., (W_L, b_L)]
DEVICES = ("cpu", "cuda", "auto")
GPU_INSTALL = ('pip install ".[gpu]" with a CUDA build of PyTorch (https://pytorch.org/get-started/locally/), '
               "or CuPy (pip install cupy-cuda12x)")


class BackendUnavailable(ImportError, ValueError):
    """The array library or the device asked for is not available in this process.

    An ImportError (the library is missing) and a ValueError (a bad choice of backend/device),
    so that ``sgdlab``'s CLI reports it in one line.
    """


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


# ----------------------------------------------------------------- backend = namespace + device
@dataclass(frozen=True, eq=False)
class Backend:
    """An array namespace, the device its arrays live on, and how to wait for that device.

    ``name`` is one of ``BACKENDS``; ``device`` is ``"cpu"`` or a CUDA device such as ``"cuda"``
    or ``"cuda:1"``; ``xp`` is the namespace the kernels call.

    >>> b = resolve_backend("numpy")
    >>> b.name, b.device, b.is_gpu
    ('numpy', 'cpu', False)
    >>> b.asarray([1, 2], "float32").dtype
    dtype('float32')
    >>> b.sync()  # nothing is pending on the CPU
    """

    name: str
    device: str
    xp: ModuleType

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def asarray(self, x, dtype=None):
        """``x`` (host NumPy, a list, or an array of this backend) as an array on this device.

        Host data is converted to ``dtype`` on the host and copied to the device once; an array
        already on the device is only cast where its dtype differs.
        """
        dtype = _dtype_name(dtype)
        if self.name == "torch":
            import torch

            if isinstance(x, torch.Tensor):
                t = x.to(device=self.device)
                return t if dtype is None else t.to(getattr(torch, dtype))
            host = np.ascontiguousarray(np.asarray(x, dtype=dtype))
            return torch.from_numpy(host).to(device=self.device, non_blocking=False)
        if self.name == "cupy":
            import cupy

            with cupy.cuda.Device(_cuda_index(self.device)):
                return cupy.asarray(x if isinstance(x, cupy.ndarray) else np.asarray(x), dtype=dtype)
        if self.name == "numpy":
            return np.asarray(x, dtype=dtype)
        a = self.xp.asarray(np.asarray(x) if not _is_xp_array(x, self.xp) else x)
        return a if dtype is None else self.xp.astype(a, getattr(self.xp, dtype))

    def sync(self) -> None:
        """Wait until all work queued on this device has finished (a no-op on the CPU)."""
        if not self.is_gpu:
            return
        if self.name == "torch":
            import torch

            torch.cuda.synchronize(self.device)
        elif self.name == "cupy":
            import cupy

            with cupy.cuda.Device(_cuda_index(self.device)):
                cupy.cuda.get_current_stream().synchronize()

    def describe(self) -> dict:
        """The backend as plain data, e.g. ``{"backend": "torch", "device": "cuda:0"}`` (plus the GPU's name)."""
        d = {"backend": self.name, "device": self.device}
        if self.is_gpu and self.name == "torch":
            import torch

            d["gpu"] = torch.cuda.get_device_name(self.device)
        elif self.is_gpu and self.name == "cupy":
            import cupy

            d["gpu"] = cupy.cuda.runtime.getDeviceProperties(_cuda_index(self.device))["name"].decode()
        return d

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"

    def __reduce__(self):
        return resolve_backend, (self.name, self.device)


def resolve_backend(backend: str | ModuleType | Backend = "numpy", device: str | None = None) -> Backend:
    """The ``Backend`` for a library name and a device: "cpu", "cuda" (or "cuda:K") or "auto".

    ``device=None`` is the library's natural device: the CPU, or the GPU for CuPy. ``"auto"``
    picks a GPU when the library sees one and the CPU otherwise. NumPy and array-api-strict live
    on the CPU only; CuPy on a GPU only. A library or device that is not there raises
    ``BackendUnavailable`` naming what to install.

    >>> resolve_backend("numpy", "auto")
    Backend('numpy', device='cpu')
    """
    if isinstance(backend, Backend):
        if device is None or device == backend.device or (device == "auto"):
            return backend
        backend = backend.name
    if isinstance(backend, ModuleType):
        xp = get_namespace(backend)
        if is_numpy(xp):
            backend = "numpy"
        elif array_api_compat.is_torch_namespace(xp):
            backend = "torch"
        elif array_api_compat.is_cupy_namespace(xp):
            backend = "cupy"
        elif getattr(xp, "__name__", "") == "array_api_strict":
            backend = "array_api_strict"
        else:
            raise ValueError(f"unknown array namespace {xp.__name__!r}; valid backends: {', '.join(BACKENDS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if device is not None and (not isinstance(device, str) or not (device in DEVICES or _is_cuda_name(device))):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:K (a GPU index) or auto")
    if backend in ("numpy", "array_api_strict"):
        if device not in (None, "cpu", "auto"):
            raise BackendUnavailable(f"backend={backend!r} runs on the CPU only; for device={device!r} use "
                                     f"backend='torch' or backend='cupy' ({GPU_INSTALL})")
        return Backend(backend, "cpu", get_namespace(backend))
    if backend == "torch":
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(f"backend='torch' needs PyTorch: {GPU_INSTALL}") from None
        if device in (None, "cpu"):
            return Backend("torch", "cpu", get_namespace("torch"))
        if not torch.cuda.is_available():
            if device == "auto":
                return Backend("torch", "cpu", get_namespace("torch"))
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise BackendUnavailable(f"device={device!r}: PyTorch {torch.__version__} ({build}) sees no CUDA GPU; "
                                     "install a CUDA build of PyTorch on a machine with an NVIDIA GPU, "
                                     "or use device='cpu'")
        index = _cuda_index(device) if device != "auto" else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise BackendUnavailable(f"device={device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        return Backend("torch", f"cuda:{index}", get_namespace("torch"))
    # cupy
    if device == "cpu":
        raise BackendUnavailable("backend='cupy' runs on a GPU only; use backend='numpy' or 'torch' for device='cpu'")
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError:
        raise BackendUnavailable("backend='cupy' needs CuPy (pip install cupy-cuda12x)") from None
    except Exception as e:  # CuPy installed, but no driver or no device
        raise BackendUnavailable(f"backend='cupy' sees no CUDA GPU ({e}); use backend='numpy' on the CPU") from None
    index = 0 if device in (None, "auto") else _cuda_index(device)
    if index >= count:
        raise BackendUnavailable(f"device={device!r}: only {count} CUDA GPU(s) visible to CuPy")
    return Backend("cupy", f"cuda:{index}", get_namespace("cupy"))


def gpu_backend(device: str = "cuda") -> Backend:
    """The first GPU backend available: PyTorch with CUDA, else CuPy (``BackendUnavailable`` if neither).

    What ``sgdlab train --device cuda`` uses; ``device="auto"`` falls back to NumPy on the CPU.
    """
    errors = []
    for name in ("torch", "cupy"):
        try:
            b = resolve_backend(name, "cuda" if device == "auto" else device)
            if b.is_gpu:
                return b
        except BackendUnavailable as e:
            errors.append(str(e))
    if device == "auto":
        return resolve_backend("numpy")
    raise BackendUnavailable(f"no GPU backend for device={device!r} ({GPU_INSTALL}): " + "; ".join(errors))


def visible_gpu_backends() -> list[str]:
    """Names of the GPU libraries that see a CUDA GPU here ("torch", "cupy"); empty on a CPU-only machine."""
    found = []
    for name in ("torch", "cupy"):
        try:
            if resolve_backend(name, "auto").is_gpu:
                found.append(name)
        except BackendUnavailable:
            pass
    return found


def backend_of(x) -> Backend:
    """The Backend an array lives on (NumPy arrays: NumPy on the CPU)."""
    if isinstance(x, np.ndarray):
        return resolve_backend("numpy")
    xp = array_api_compat.array_namespace(x)
    name = resolve_backend(xp).name
    dev = array_api_compat.device(x)
    return resolve_backend(name, "cpu" if str(dev) == "cpu" or name == "array_api_strict" else _device_str(dev))


def _device_str(dev) -> str:
    s = str(dev)
    if s.startswith("<CUDA Device"):  # CuPy
        return f"cuda:{int(s.split()[-1].rstrip('>'))}"
    return s if ":" in s or s == "cpu" else f"{s}:0"


def _is_cuda_name(device: str) -> bool:
    return device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())


def _cuda_index(device: str) -> int:
    return int(device[5:]) if device.startswith("cuda:") else 0


def _dtype_name(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        return dtype
    name = str(dtype).split(".")[-1].rstrip("'>")
    return np.dtype(name).name


def _is_xp_array(x, xp) -> bool:
    try:
        return array_api_compat.array_namespace(x) is xp or array_api_compat.array_namespace(x).__name__ == xp.__name__
    except TypeError:
        return False
