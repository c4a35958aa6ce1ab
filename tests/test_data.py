import gzip
import hashlib
import http.server
import struct
import threading
from functools import partial

import numpy as np
import pytest

from sgdlab import data
from sgdlab.data import mnist
from sgdlab.data.idx import read_idx, read_idx_pair

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of ``a``, written from the format's definition (independent of the reader)."""
    header = bytes([0, 0, CODES[a.dtype.type], a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_mnist_like(directory, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = idx_bytes(arr)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (directory / name).write_bytes(gzip.compress(raw) if gz else raw)
            files[name] = arr
    return files


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype is not np.uint8 else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(a)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(p)
    assert out.shape == a.shape and np.array_equal(out, a) and out.dtype.isnative


@pytest.mark.parametrize("mutate,match", [
    (lambda raw: b"\x01\x02" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:-5], "truncated: shape"),
    (lambda raw: raw + b"\x00", "trailing bytes"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: b"", "not an IDX file"),
    (lambda raw: gzip.compress(raw)[:-10], "corrupt or truncated gzip"),
])
def test_corrupt_idx_files_are_refused(tmp_path, mutate, match):
    p = tmp_path / "bad.idx"
    p.write_bytes(mutate(idx_bytes(np.zeros((3, 2, 2), np.uint8))))
    with pytest.raises(ValueError, match=match):
        read_idx(p)


def test_idx_pair_scales_pixels_and_checks_counts(tmp_path):
    files = write_mnist_like(tmp_path, gz=False)
    X, y = read_idx_pair(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte")
    assert X.shape == (30, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X * 255, files["train-images-idx3-ubyte"].reshape(30, -1), atol=1e-4)
    with pytest.raises(ValueError, match="30 images but .* 10 labels"):
        read_idx_pair(tmp_path / "train-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(OSError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing")


def test_real_mnist_test_set(mnist_test_set):
    X, y = mnist_test_set
    assert X.shape == (10_000, 784) and y.shape == (10_000,)
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist()[:3] == [980, 1135, 1032]  # the published class counts


def test_load_mnist_from_a_directory_gz_or_raw(tmp_path):
    for gz in (True, False):
        d = tmp_path / str(gz)
        d.mkdir()
        files = write_mnist_like(d, gz=gz)
        ds = data.load_mnist(d, download=False)
        assert ds.X_train.shape == (30, 784) and ds.X_test.shape == (10, 784)
        assert np.array_equal(ds.y_test, files["t10k-labels-idx1-ubyte" + (".gz" if gz else "")])


class _Server:
    """A local HTTP server on 127.0.0.1 serving one directory; counts requests."""

    def __init__(self, directory):
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "server"
    src.mkdir()
    write_mnist_like(src)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    with _Server(src) as server:
        yield server, sums


def test_download_verifies_checksum_and_writes_atomically(tmp_path, served):
    server, sums = served
    cache = tmp_path / "cache"
    paths = mnist.fetch(sums, cache, mirrors=(server.url + "missing/", server.url))  # first mirror 404s
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)
    assert all(hashlib.sha256(paths[n].read_bytes()).hexdigest() == s for n, s in sums.items())
    ds = data.load_mnist(cache, download=False)
    assert ds.X_train.shape == (30, 784)


def test_download_with_wrong_checksum_leaves_nothing_behind(tmp_path, served):
    server, sums = served
    name = "t10k-labels-idx1-ubyte.gz"
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="SHA-256 mismatch"):
        mnist.download(name, "0" * 64, cache, mirrors=(server.url,))
    assert list(cache.iterdir()) == []  # no partial file, no temp file


def test_download_failure_names_every_mirror(tmp_path):
    with pytest.raises(OSError, match=r"could not download x.gz: http://127.0.0.1:9/x.gz"):
        mnist.download("x.gz", "0" * 64, tmp_path, mirrors=("http://127.0.0.1:9/",), timeout=2)


def test_load_mnist_downloads_into_the_cache(tmp_path, served, monkeypatch):
    server, sums = served
    monkeypatch.setattr(mnist, "MNIST_FILES", sums)
    monkeypatch.setenv("SGDLAB_MNIST_MIRRORS", server.url)
    monkeypatch.delenv("SGDLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = mnist.load_mnist()
    assert ds.X_test.shape == (10, 784)
    assert sorted(p.name for p in (tmp_path / "xdg" / "sgdlab" / "mnist").iterdir()) == sorted(sums)
    monkeypatch.setenv("SGDLAB_DATA", str(tmp_path / "env"))
    assert mnist.default_dir() == tmp_path / "env"


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found"):
        data.load_mnist(tmp_path, download=False)


def test_digits_split_is_fixed_and_scaled():
    a, b = data.load_digits_split(seed=0), data.load("digits")
    assert a.X_train.shape == (1437, 64) and a.X_test.shape == (360, 64)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert a.X_train.min() == 0 and a.X_train.max() == 1 and a.n_classes == 10
    assert np.bincount(a.y_test).min() >= 35  # stratified: ~36 of each class


def test_npz_and_csv_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((50, 3)), rng.integers(0, 3, 50)
    np.savez(tmp_path / "split.npz", X_train=X[:40], y_train=y[:40], X_test=X[40:], y_test=y[40:])
    ds = data.load(str(tmp_path / "split.npz"))
    assert ds.X_train.shape == (40, 3) and np.array_equal(ds.y_test, y[40:]) and ds.n_classes == 3
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    assert data.load_file(tmp_path / "xy.npz").X_test.shape == (10, 3)
    (tmp_path / "d.csv").write_text("a,b,c,label\n" + "\n".join(",".join(map(str, [*r, t])) for r, t in zip(X, y)))
    ds = data.load_file(tmp_path / "d.csv")
    assert ds.X_train.shape == (40, 3) and ds.y_train.dtype == np.int64
    (tmp_path / "r.csv").write_text("\n".join(f"{a},{b},{a + 0.5 * b}" for a, b in rng.random((20, 2))))
    assert data.load_file(tmp_path / "r.csv").n_classes is None  # real-valued target: regression


@pytest.mark.parametrize("name,content,exc,match", [
    ("bad.npz", b"not a zip file", ValueError, "cannot read .* as .npz"),
    ("keys.npz", None, ValueError, "must hold arrays X_train"),
    ("ragged.csv", b"1,2,3\n4,5\n", ValueError, "row 2 has 2 columns"),
    ("words.csv", b"1,2,3\n4,x,6\n", ValueError, "row 2 is not all numbers"),
    ("empty.csv", b"a,b\n", ValueError, "no data rows"),
    ("one.csv", b"1\n2\n", ValueError, "at least two columns"),
    ("data.txt", b"1,2", ValueError, "use .npz or .csv"),
])
def test_bad_data_files(tmp_path, name, content, exc, match):
    p = tmp_path / name
    if content is None:
        np.savez(p, A=np.zeros(3))
    else:
        p.write_bytes(content)
    with pytest.raises(exc, match=match):
        data.load_file(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_file(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="valid: digits, mnist"):
        data.load("cifar")
