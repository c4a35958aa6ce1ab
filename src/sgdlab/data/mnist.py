"""MNIST and Fashion-MNIST: four IDX files each, found locally or downloaded, verified and cached.

Where it looks, in order: ``data_dir`` if given, else ``$SGDLAB_DATA/NAME``, else the cache
``$XDG_CACHE_HOME/sgdlab/NAME`` (``~/.cache/sgdlab/NAME``), NAME being "mnist" or "fashion-mnist".
Each file may be gzipped (``name.gz``) or raw (``name``). Missing files are downloaded into that
directory from the first mirror that answers, checked against their SHA-256, and moved into
place atomically, so an interrupted download never leaves a partial file under the final name.
``$SGDLAB_MNIST_MIRRORS`` / ``$SGDLAB_FASHION_MNIST_MIRRORS`` (comma-separated base URLs)
replace the built-in mirror lists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .dataset import Dataset
from .idx import read_idx_pair

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_MIRRORS = (
    "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def default_dir(name: str = "mnist") -> Path:
    if os.environ.get("SGDLAB_DATA"):
        return Path(os.environ["SGDLAB_DATA"]) / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sgdlab" / name


def _local(directory: Path, gz_name: str) -> Path | None:
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name: str, sha256: str, directory, mirrors=MNIST_MIRRORS, timeout: float = 30.0) -> Path:
    """Download ``name`` from the first mirror whose copy has the right SHA-256; atomic write.

    Raises OSError naming every mirror tried when none gives a verified copy.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target, errors = directory / name, []
    for mirror in mirrors:
        url = mirror + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
                out.flush()
                os.fsync(out.fileno())
            digest = _sha256(Path(tmp))
            if digest != sha256:
                errors.append(f"{url}: SHA-256 mismatch (got {digest[:12]}..., expected {sha256[:12]}...)")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError(f"could not download {name}: " + "; ".join(errors))


def fetch(files: dict, directory, *, download_missing: bool = True, mirrors=MNIST_MIRRORS) -> dict:
    """Paths of ``files`` (name -> SHA-256) in ``directory``, downloading the missing ones."""
    directory, paths = Path(directory), {}
    for name, sha in files.items():
        path = _local(directory, name)
        if path is None:
            if not download_missing:
                raise FileNotFoundError(f"{name} not found in {directory} (and downloading is off)")
            path = download(name, sha, directory, mirrors)
        paths[name] = path
    return paths


def configured_mirrors(name: str = "mnist", default=MNIST_MIRRORS) -> tuple[str, ...]:
    """Base URLs to download from: ``$SGDLAB_<NAME>_MIRRORS`` if set, else ``default``."""
    env = os.environ.get(f"SGDLAB_{name.upper().replace('-', '_')}_MIRRORS", "").strip()
    return tuple(u.rstrip("/") + "/" for u in env.split(",") if u.strip()) if env else tuple(default)


def load_idx_dataset(name: str, files: dict, mirrors, data_dir=None, *, download: bool = True) -> Dataset:
    """A train/test pair of IDX image/label files: X float32 (n, rows*cols) in [0, 1], y int64."""
    directory = Path(data_dir) if data_dir is not None else default_dir(name)
    p = fetch(files, directory, download_missing=download, mirrors=mirrors)
    X_tr, y_tr = read_idx_pair(p["train-images-idx3-ubyte.gz"], p["train-labels-idx1-ubyte.gz"])
    X_te, y_te = read_idx_pair(p["t10k-images-idx3-ubyte.gz"], p["t10k-labels-idx1-ubyte.gz"])
    return Dataset(X_tr, y_tr, X_te, y_te, name)


def load_mnist(data_dir=None, *, download: bool = True, mirrors=None) -> Dataset:
    """MNIST's 60,000 training and 10,000 test digits: X float32 (n, 784) in [0, 1], y int64."""
    return load_idx_dataset("mnist", MNIST_FILES, mirrors or configured_mirrors("mnist", MNIST_MIRRORS), data_dir,
                            download=download)


def load_fashion_mnist(data_dir=None, *, download: bool = True, mirrors=None) -> Dataset:
    """Fashion-MNIST's 60,000 training and 10,000 test clothing images (10 classes), as ``load_mnist``."""
    return load_idx_dataset("fashion-mnist", FASHION_MNIST_FILES,
                            mirrors or configured_mirrors("fashion-mnist", FASHION_MNIST_MIRRORS), data_dir,
                            download=download)
