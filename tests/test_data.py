import gzip
import hashlib
import http.server
import struct
import threading
import time
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
    a = (
        (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        if dtype is not np.uint8
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    )
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

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def __init__(self, directory):
        handler = partial(self.Quiet, directory=str(directory))
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
    assert not cache.exists()  # no partial file, no temp file, and no directory made for nothing
    cache.mkdir()
    with pytest.raises(OSError, match="SHA-256 mismatch"):
        mnist.download(name, "0" * 64, cache, mirrors=(server.url,))
    assert cache.exists() and list(cache.iterdir()) == []  # a directory that was there stays


def test_download_is_capped_at_the_known_size_and_an_overall_deadline(tmp_path, served):
    server, sums = served
    name = "train-images-idx3-ubyte.gz"
    with pytest.raises(OSError, match="more than the 100 bytes expected"):
        mnist.download(name, sums[name], tmp_path / "a", mirrors=(server.url,), size=100)
    assert not (tmp_path / "a").exists()

    class Slow(http.server.BaseHTTPRequestHandler):  # promises 10 kB, sends 10 bytes every 0.1 s
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b"0123456789")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads, httpd.block_on_close = True, False  # do not wait for the slow handler at the end
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError, match="not complete after the 1 s deadline"):
            mnist.download("x.gz", "0" * 64, tmp_path / "b", mirrors=(f"http://127.0.0.1:{httpd.server_address[1]}/",),
                           timeout=5, deadline=1.0)
        assert time.monotonic() - t0 < 5  # the deadline, not the 100 s the server would take
    finally:
        httpd.shutdown()
        httpd.server_close()


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
    assert mnist.default_dir() == tmp_path / "env" / "mnist"


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
    (tmp_path / "d.csv").write_text(
        "a,b,c,label\n" + "\n".join(",".join(map(str, [*r, t])) for r, t in zip(X, y, strict=True))
    )
    ds = data.load_file(tmp_path / "d.csv")
    assert ds.X_train.shape == (40, 3) and ds.y_train.dtype == np.int64
    (tmp_path / "r.csv").write_text("\n".join(f"{a},{b},{a + 0.5 * b}" for a, b in rng.random((20, 2))))
    assert data.load_file(tmp_path / "r.csv").n_classes is None  # real-valued target: regression


@pytest.mark.parametrize("name,content,exc,match", [
    ("bad.npz", b"not a zip file", ValueError, "cannot read .* as .npz"),
    ("keys.npz", None, ValueError, "must hold arrays X_train"),
    ("ragged.csv", b"1,2,3\n4,5\n", ValueError, "data row 2, column 3 is empty"),
    ("long.csv", b"1,2,3\n4,5,6,7\n", ValueError, "line 2 has 4 fields where the first line has 3"),
    ("words.csv", b"1,2,3\n4,x,6\n", ValueError, "data row 2, column 2 holds 'x', not a number"),
    ("under.csv", b"a,b,y\n1,1_000,0\n2,3,1\n", ValueError, "data row 1, column 2 \\('b'\\) holds '1_000'"),
    ("complex.csv", b"1,2,0\n1+2j,3,1\n", ValueError, "data row 2, column 1 holds '1\\+2j'"),
    ("names.csv", b"a,b,c,d\n1,2,3\n4,5,6\n", ValueError, "header has 4 names but the data rows have 3 columns"),
    ("fewnames.csv", b"a,b\n1,2,3\n4,5,6\n", ValueError, "line 2 has 3 fields where the first line has 2"),
    ("float.csv", b"1,2,0.5\n1,3,1\n", None, None),
    ("empty.csv", b"a,b\n", ValueError, "no data rows"),
    ("one.csv", b"1\n2\n", ValueError, "at least two columns"),
    ("data.txt", b"1,2", ValueError, "use .npz, .npy or .csv"),
])
def test_bad_data_files(tmp_path, name, content, exc, match):
    p = tmp_path / name
    if content is None:
        np.savez(p, A=np.zeros(3), B=np.zeros(2))
    else:
        p.write_bytes(content)
    if exc is None:  # a good file among the bad: float targets are regression, not refused
        with pytest.raises(ValueError, match="class labels must be integers or words; the target has 0.5"):
            data.load_file(p, task="classification")
        return
    with pytest.raises(exc, match=match):
        data.load_file(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_file(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="valid: digits, mnist"):
        data.load("cifar")


def test_fashion_mnist_has_its_own_checksums_directory_and_mirrors(tmp_path, served, monkeypatch):
    server, sums = served
    assert set(mnist.FASHION_MNIST_FILES) == set(mnist.MNIST_FILES)  # same names: they must not share a directory
    assert not set(mnist.FASHION_MNIST_FILES.values()) & set(mnist.MNIST_FILES.values())
    monkeypatch.setattr(mnist, "FASHION_MNIST_FILES", sums)
    monkeypatch.setenv("SGDLAB_FASHION_MNIST_MIRRORS", server.url)
    monkeypatch.setenv("SGDLAB_DATA", str(tmp_path / "data"))
    ds = data.load("fashion-mnist")
    assert ds.name == "fashion-mnist" and ds.X_train.shape == (30, 784)
    assert sorted(p.name for p in (tmp_path / "data" / "fashion-mnist").iterdir()) == sorted(sums)
    monkeypatch.setattr(mnist, "FASHION_MNIST_FILES", {k: "0" * 64 for k in sums})
    with pytest.raises(OSError, match="SHA-256 mismatch"):
        data.load_fashion_mnist(tmp_path / "other")


def test_target_column_by_index_or_name(tmp_path):
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.integers(0, 3, 40), rng.random((40, 3))])  # the label comes first here
    np.save(tmp_path / "t.npy", table)
    ds = data.load(str(tmp_path / "t.npy"), target=0)
    assert ds.X_train.shape == (32, 3) and ds.n_classes == 3
    assert data.load_file(tmp_path / "t.npy", target="0").n_classes == 3
    np.savez(tmp_path / "t.npz", table=table)
    assert data.load_file(tmp_path / "t.npz", target=0).X_test.shape == (8, 3)
    (tmp_path / "t.csv").write_text("kind,a,b,c\n" + "\n".join(",".join(map(str, r)) for r in table))
    ds = data.load_file(tmp_path / "t.csv", target="kind")
    assert ds.n_classes == 3 and ds.X_train.shape[1] == 3
    with pytest.raises(ValueError, match="has no column 'label'; columns: kind, a, b, c"):
        data.load_file(tmp_path / "t.csv", target="label")
    with pytest.raises(ValueError, match="target column 7 is out of range"):
        data.load_file(tmp_path / "t.npy", target=7)
    with pytest.raises(ValueError, match="no header row"):
        data.load_file(tmp_path / "t.npy", target="kind")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY junk")
    with pytest.raises(ValueError, match="cannot read .*bad.npy as .npy"):
        data.load_file(tmp_path / "bad.npy")


def test_synthetic_generators_are_seeded_and_shaped():
    for make, classes in ((data.blobs, 3), (data.spirals, 2), (data.noisy_linear, None)):
        a, b, c = make(seed=1), make(seed=1), make(seed=2)
        assert np.array_equal(a.X_train, b.X_train) and not np.array_equal(a.X_train, c.X_train)
        assert a.n_classes == classes and len(a.X_train) == 800
    s = data.spirals(n=400, noise=0.0, seed=0)
    radius = np.linalg.norm(np.concatenate([s.X_train, s.X_test]), axis=1)
    assert radius.max() <= 1.0 + 1e-6
    lin = data.noisy_linear(n=5000, d=3, noise=0.0, seed=0)  # noise-free: least squares recovers it exactly
    A = np.column_stack([lin.X_train, np.ones(len(lin.X_train))])
    resid = A @ np.linalg.lstsq(A, lin.y_train, rcond=None)[0] - lin.y_train
    assert np.max(np.abs(resid)) < 1e-5


def test_scaling_is_fitted_on_training_data_only():
    ds = data.noisy_linear(seed=0)
    ds = ds._replace(X_train=ds.X_train * 5 + 3)
    st = data.scale(ds, "standard")
    np.testing.assert_allclose(st.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(st.X_train.std(0), 1, atol=1e-4)
    assert abs(st.X_test.mean()) > 0.3  # the test set was not used to fit: it is off-centre, as it should be
    mm = data.scale(ds, "minmax")
    assert mm.X_train.min() == 0 and mm.X_train.max() == pytest.approx(1)
    assert data.scale(ds, "none") is ds
    with pytest.raises(ValueError, match="valid: none, standard, minmax"):
        data.scale(ds, "robust")
    np.testing.assert_allclose(data.pixels_to_unit(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])
