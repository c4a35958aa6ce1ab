"""What machine a measurement ran on, and how busy it was: recorded beside every timing.

>>> info = describe()
>>> sorted(k for k in info if k in ("cpu", "logical_cpus", "python", "numpy"))
['cpu', 'logical_cpus', 'numpy', 'python']
"""

from __future__ import annotations

import contextlib
import os
import platform


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_family(path: str = "/proc/cpuinfo") -> tuple[str, int] | None:
    """(vendor, family) of the CPU, e.g. ("AuthenticAMD", 25); None where /proc/cpuinfo does not say."""
    f = _cpuinfo(path)
    try:
        return f["vendor_id"], int(f["cpu family"])
    except (KeyError, ValueError):
        return None


def cpu_id(path: str = "/proc/cpuinfo") -> str | None:
    """Vendor, family, model and stepping, e.g. "AuthenticAMD family 25 model 17 stepping 1" (AMD's Zen 4):
    a virtual machine may name two CPU generations alike ("AMD EPYC"), and timings differ between them. None
    where /proc/cpuinfo does not say."""
    f = _cpuinfo(path)
    if "cpu family" not in f:
        return None
    return f"{f.get('vendor_id', '?')} family {f['cpu family']} model {f.get('model', '?')} " \
           f"stepping {f.get('stepping', '?')}"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def blas_info() -> list[dict]:
    """The BLAS libraries loaded in this process, with their thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "filepath", "architecture")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def blas_env() -> dict:
    """The environment variables that steer the BLAS and thread pools (OpenBLAS's core type and cache size
    among them: OPENBLAS_CORETYPE=Haswell holds OpenBLAS to 256-bit kernels on a CPU with 512-bit ones)."""
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith(("OPENBLAS_", "GOTO_", "MKL_", "OMP_", "XLA_", "NUMBA_"))}


def describe() -> dict:
    """CPU model and its family (``cpu_id``), logical CPUs (and those this process may use), OS, Python, NumPy,
    BLAS, its settings, load."""
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": _cpu_model(), "cpu_id": cpu_id(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "blas": blas_info(), "blas_env": blas_env(), "load_average": load_average()}


@contextlib.contextmanager
def recording_load(into: dict):
    """Record ``load_before`` and ``load_after`` (1/5/15-minute load averages) into ``into``."""
    into["load_before"] = load_average()
    try:
        yield into
    finally:
        into["load_after"] = load_average()
