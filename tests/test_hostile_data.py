"""Small hostile data files are refused in bounded memory, with a message naming the problem."""

import gzip
import io
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sgdlab
from sgdlab import data
from sgdlab.data import read_idx, read_idx_pair


def idx(code, shape, payload=b""):
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + payload


def bomb(head: bytes, n: int) -> bytes:
    """A gzip stream of ``head`` then n zero bytes (n a multiple of 1 MiB), about 1000 times smaller than n.

    Made cheaply: after a full flush deflate starts afresh, so each zero MiB compresses to the same
    bytes, which are repeated. Its CRC is wrong; a reader that decompresses before checking finds out
    only after expanding all of it.
    """
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    prefix = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    piece = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH) == piece
    return prefix + piece * (n >> 20) + c.flush()


def test_gzip_bomb_is_refused_before_decompressing(tmp_path, memory_limit):
    n = 5 * 2**29  # 2.5 GiB of zeros behind a header that claims them, in a few MB of gzip
    blob = bomb(idx(0x08, (n,)), n)
    assert len(blob) < n / 500
    (tmp_path / "bomb.gz").write_bytes(blob)
    with pytest.raises(ValueError, match="gzip file can hold|memory"):
        read_idx(tmp_path / "bomb.gz")
    (tmp_path / "liar.gz").write_bytes(bomb(idx(0x08, (4,)), n))  # a small claim, a huge stream
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(tmp_path / "liar.gz")


def test_raw_idx_is_checked_against_the_file_size_before_reading(tmp_path, memory_limit):
    (tmp_path / "r").write_bytes(idx(0x0D, (60000, 28, 28), bytes(16)))
    with pytest.raises(ValueError, match=r"truncated: shape \(60000, 28, 28\) needs 188160016 bytes, file has 32"):
        read_idx(tmp_path / "r")
    (tmp_path / "t").write_bytes(idx(0x08, (2,), bytes(3)))
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(tmp_path / "t")
    with open(tmp_path / "sparse", "wb") as f:  # 4 GiB (sparse) behind a header claiming 2 bytes: never read whole
        f.write(idx(0x08, (2,), bytes(2)))
        f.truncate(2**32)
    with pytest.raises(ValueError, match="has trailing bytes: shape \\(2,\\) needs 10 bytes, file has 4294967296"):
        read_idx(tmp_path / "sparse")


def test_idx_float_labels_and_a_corrupt_label_are_refused(tmp_path):
    imgs = idx(0x08, (3, 2, 2), bytes(12))
    (tmp_path / "i").write_bytes(imgs)
    (tmp_path / "f").write_bytes(idx(0x0D, (3,), np.array([0, 1.7, 1], ">f4").tobytes()))
    with pytest.raises(ValueError, match="labels must be integers; the file holds float32"):
        read_idx_pair(tmp_path / "i", tmp_path / "f")
    (tmp_path / "l").write_bytes(idx(0x08, (3,), bytes([0, 255, 1])))
    X, y = read_idx_pair(tmp_path / "i", tmp_path / "l")
    ds = data.Dataset(X, y, X, y, "corrupt")
    with pytest.raises(ValueError, match=r"3 distinct labels range over \[0, 255\]"):
        _ = ds.n_classes


idx_files = st.builds(lambda code, dims, payload, gz: (gzip.compress if gz else bytes)(
    idx(code, dims, payload)), st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), min_size=0, max_size=4),
    st.binary(max_size=64), st.booleans())


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(blob=idx_files | st.binary(max_size=80))
@example(blob=gzip.compress(idx(0x08, (2**31,))))
@example(blob=idx(0x0E, (2**32 - 1, 2**32 - 1)))
@example(blob=bomb(idx(0x08, (4,)), 3 * 2**29))  # 1.5 GiB of zeros after a 4-byte claim
def test_fuzzed_idx_files_read_or_are_refused_in_bounded_memory(tmp_path_factory, memory_limit, blob):
    path = tmp_path_factory.mktemp("idx") / "f"
    path.write_bytes(blob)
    try:
        a = read_idx(path)
    except ValueError:
        return
    assert a.nbytes <= len(blob) * 1032 + 1024


def test_npy_header_claiming_a_trillion_items_is_refused(tmp_path, memory_limit):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
    (tmp_path / "h.npy").write_bytes(buf.getvalue() + bytes(64))
    with pytest.raises(ValueError, match=r"claims shape \(1000000000000, 2\) of float64 .* but the file holds 64"):
        data.load_file(tmp_path / "h.npy")


def test_npz_member_claiming_gigabytes_is_refused_before_allocating(tmp_path, memory_limit):
    n = 3 * 2**28  # a header claiming 6 GiB of float64 in front of 1 MiB of data
    with zipfile.ZipFile(tmp_path / "b.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("X.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (n, 1)})
            f.write(bytes(1 << 20))
    with pytest.raises(ValueError, match=r"claims shape \(805306368, 1\) of float64 .* holds 1048576 bytes"):
        data.load_file(tmp_path / "b.npz")


def test_npz_member_that_is_not_npy_and_complex_data_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as z:
        z.writestr("X.txt", "1,2,3")
    with pytest.raises(ValueError, match="member 'X.txt' is not a .npy array"):
        data.load_file(tmp_path / "a.npz")
    np.savez(tmp_path / "c.npz", X=np.ones((4, 2)) * (1 + 2j), y=np.arange(4))
    with pytest.raises(ValueError, match="complex numbers"):
        data.load_file(tmp_path / "c.npz")
    np.save(tmp_path / "c.npy", np.ones((4, 3), np.complex64))
    with pytest.raises(ValueError, match="complex numbers"):
        data.load_file(tmp_path / "c.npy")


def test_integer_target_of_a_trillion_does_not_bincount_terabytes(tmp_path, memory_limit):
    X = np.random.default_rng(0).standard_normal((20, 2))
    np.savez(tmp_path / "t.npz", X=X, y=np.array([0, 10**12] * 10))
    ds = data.load_file(tmp_path / "t.npz")
    with pytest.raises(ValueError, match=r"2 distinct labels range over \[0, 1000000000000\]"):
        _ = ds.n_classes


def test_float64_beyond_float32_range_is_refused_naming_range_and_dtype():
    X = np.array([[1e39, 0.0], [0.0, 1.0]])
    net = sgdlab.Network([2, 2], seed=0)
    with pytest.raises(ValueError, match="beyond the float32 range .* dtype='float64'"):
        sgdlab.fit(net, X, [0, 1], epochs=1)
    assert np.isfinite(sgdlab.Network([2, 2], seed=0, dtype="float64").predict(X)).all()


def test_a_network_too_large_for_memory_is_refused_with_its_size():
    with pytest.raises(ValueError, match=r"1e\+12 parameters \(3.73e\+03 GiB as float32\)"):
        sgdlab.Network([10**12, 1])


def test_cli_never_shows_a_memory_traceback():
    out = subprocess.run([sys.executable, "-m", "sgdlab", "train", "--hidden", "100000000", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("sgdlab: error: a network of sizes [64, 100000000, 10] has 7.5e+09 parameters")


def test_errors_name_the_argument():
    net = sgdlab.Network([2, 2], seed=0)
    with pytest.raises(TypeError, match="Y is None; expected an array"):
        net.gradient(np.ones((3, 2)), None)
    with pytest.raises(TypeError, match="Y is None"):
        net.cost(np.ones((3, 2)), None)
