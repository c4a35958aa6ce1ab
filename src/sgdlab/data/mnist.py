"""MNIST and Fashion-MNIST: four IDX files each, found locally or downloaded, verified and cached.

Where it looks, in order: ``data_dir`` if given, else ``$SGDLAB_DATA/NAME``, else the cache
``$XDG_CACHE_HOME/sgdlab/NAME`` (``~/.cache/sgdlab/NAME``), NAME being "mnist" or "fashion-mnist".
Each file may be gzipped (``name.gz``) or raw (``name``). Missing files are downloaded into that
directory by ``pooch`` from the first mirror that answers: written to a temporary file, checked
against the known SHA-256, moved into place only then, so an interrupted or corrupt download never
leaves a file under the final name. The download itself (``_Capped``) stops at the file's known
size (more bytes are refused before they are written) and at an overall deadline, and shows a
progress bar on a terminal. A directory created for a download that failed is removed again.
``$SGDLAB_MNIST_MIRRORS`` / ``$SGDLAB_FASHION_MNIST_MIRRORS`` (comma-separated base URLs)
replace the built-in mirror lists.
"""

from __future__ import annotations

import os
import sys
import time
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
SIZES = {  # bytes of the known files: a download never writes more
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609": 9912422,
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c": 28881,
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6": 1648877,
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6": 4542,
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84": 26421880,
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845": 29515,
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073": 4422102,
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5": 5148,
}
MAX_UNKNOWN_SIZE = 64 << 20  # cap for a file whose size is not known
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


class _Capped:
    """A pooch downloader: urllib, at most ``size`` bytes, an overall ``deadline`` in seconds."""

    def __init__(self, size: int, deadline: float, timeout: float, progress: bool):
        self.size, self.deadline, self.timeout, self.progress = size, deadline, timeout, progress

    def __call__(self, url, output_file, pooch=None):
        end = time.monotonic() + self.deadline
        bar = None
        try:
            with urllib.request.urlopen(url, timeout=min(self.timeout, self.deadline)) as response, \
                    open(output_file, "wb") as out:
                claimed = response.headers.get("Content-Length")
                if claimed is not None and claimed.isdigit() and int(claimed) > self.size:
                    raise OSError(f"the server offers {int(claimed)} bytes, more than the {self.size} bytes expected")
                if self.progress:
                    from tqdm import tqdm

                    bar = tqdm(total=int(claimed) if claimed and claimed.isdigit() else None, unit="B",
                               unit_scale=True, desc=url.rsplit("/", 1)[-1], file=sys.stderr, leave=False)
                got = 0
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"not complete after the {self.deadline:.3g} s deadline")
                    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
                    if sock is not None:  # no single read may outlast the deadline
                        sock.settimeout(min(self.timeout, left))
                    try:
                        block = response.read1(min(1 << 16, self.size + 1 - got))  # one recv, not a full block
                    except TimeoutError:
                        if time.monotonic() >= end - 0.05:
                            raise TimeoutError(f"not complete after the {self.deadline:.3g} s deadline") from None
                        raise TimeoutError(f"no data for {self.timeout:g} s") from None
                    if not block:
                        break
                    got += len(block)
                    if got > self.size:
                        raise OSError(f"more than the {self.size} bytes expected; download stopped")
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()


def _new_dirs(directory: Path) -> list[Path]:
    """The directories that creating ``directory`` would make (outermost first)."""
    made = []
    for d in [directory, *directory.parents]:
        if d.exists():
            break
        made.append(d)
    return made[::-1]


def download(name: str, sha256: str, directory, mirrors=MNIST_MIRRORS, timeout: float = 30.0,
             deadline: float = 600.0, size: int | None = None, progress: bool | None = None) -> Path:
    """Download ``name`` with pooch from the first mirror whose copy has the right SHA-256.

    ``timeout``: seconds a connection may stay silent; ``deadline``: seconds for the whole file;
    ``size``: bytes to accept at most (default: the known size, else ``MAX_UNKNOWN_SIZE``).
    Raises OSError naming every mirror tried when none gives a verified copy; a directory made
    for it is removed again.
    """
    import pooch

    directory = Path(directory)
    new_dirs = _new_dirs(directory)
    directory.mkdir(parents=True, exist_ok=True)
    size = size or SIZES.get(sha256, MAX_UNKNOWN_SIZE)
    progress = sys.stderr.isatty() if progress is None else progress
    errors, start = [], time.monotonic()
    for mirror in mirrors:
        url = mirror + name
        left = deadline - (time.monotonic() - start)
        if left <= 0:
            errors.append(f"{url}: not tried, the {deadline:g} s deadline has passed")
            continue
        try:
            path = pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=name, path=directory,
                                  downloader=_Capped(size, left, timeout, progress), progressbar=False)
            return Path(path)
        except ValueError as e:
            if "hash" in str(e).lower():
                errors.append(f"{url}: SHA-256 mismatch (expected {sha256[:12]}...)")
            else:
                errors.append(f"{url}: {e}")
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
    for d in reversed(new_dirs):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break
    raise OSError(f"could not download {name}: " + "; ".join(errors))


def fetch(files: dict, directory, *, download_missing: bool = True, mirrors=MNIST_MIRRORS) -> dict:
    """Paths of ``files`` (name -> SHA-256) in ``directory``, downloading the missing ones."""
    directory, paths = Path(directory), {}
    new_dirs = _new_dirs(directory)
    try:
        for name, sha in files.items():
            path = _local(directory, name)
            if path is None:
                if not download_missing:
                    raise FileNotFoundError(f"{name} not found in {directory} (and downloading is off)")
                path = download(name, sha, directory, mirrors)
            paths[name] = path
    except OSError:
        for d in reversed(new_dirs):  # a directory made for files that never came is removed again
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
        raise
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
