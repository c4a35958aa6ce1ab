import os
import resource
from pathlib import Path

import numpy as np
import pytest


def _mnist_dir() -> Path:
    """$SGDLAB_DATA/mnist when it holds the test set, else ../shared/data/mnist beside the repository."""
    if os.environ.get("SGDLAB_DATA"):
        env = Path(os.environ["SGDLAB_DATA"]) / "mnist"
        if (env / "t10k-images-idx3-ubyte.gz").exists():
            return env
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


MNIST_DIR = _mnist_dir()
MNIST_TEST = (MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz")

BACKENDS = ["numpy", "array_api_strict"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Core tests run under NumPy and under the strict array-API reference namespace."""
    if request.param != "numpy":
        pytest.importorskip(request.param)
    return request.param


@pytest.fixture(scope="session")
def mnist_test_set():
    """The real MNIST test set from $SGDLAB_DATA/mnist or ../shared/data/mnist (skipped where absent)."""
    if not all(p.exists() for p in MNIST_TEST):
        pytest.skip(f"MNIST test set not found in {MNIST_DIR}")
    from sgdlab.data import read_idx_pair

    return read_idx_pair(*MNIST_TEST)


@pytest.fixture
def toy():
    """A small classification problem: 40 examples, 5 features, 3 classes."""
    rng = np.random.default_rng(42)
    X = rng.standard_normal((40, 5))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0).astype(np.int64)
    return X, y


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="where tests/test_gpu.py runs the device code path: cpu (default, PyTorch's CPU build) or cuda",
    )


@pytest.fixture
def memory_limit():
    """An address-space limit 1 GiB above what the process maps now: an unbounded allocation fails the test."""
    with open("/proc/self/status") as f:
        used = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
