import numpy as np
import pytest

import sgdlab
from sgdlab.data import open_npy


@pytest.fixture
def on_disk(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((1000, 12), dtype=np.float32)
    y = (X[:, 0] + X[:, 1] > 1).astype(np.int64) + (X[:, 2] > 0.7)
    np.save(tmp_path / "X.npy", X)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, a in enumerate(np.array_split(X, 3)):
        np.save(shards / f"part-{i:03d}.npy", a)
    return X, y, tmp_path / "X.npy", shards


def test_rows_read_from_file_and_shards_equal_memory(on_disk):
    X, _, path, shards = on_disk
    idx = np.random.default_rng(1).integers(0, 1000, 200)
    for m in (open_npy(path), open_npy(shards, release_bytes=4096)):
        assert m.shape == (1000, 12) and m.dtype == np.float32 and len(m) == 1000
        np.testing.assert_array_equal(m.take(idx), X[idx])
        np.testing.assert_array_equal(m[10:700], X[10:700])
        np.testing.assert_array_equal(np.concatenate(list(m.chunks(64))), X)
        m.release()


@pytest.mark.parametrize("kw", [{"batch_size": 10}, {"method": "stochastic", "lr": 0.3},
                                {"batch_size": 64, "momentum": 0.9, "sampling": "replacement"}])
def test_training_from_disk_equals_training_in_memory(on_disk, kw):
    X, y, _, shards = on_disk
    runs = []
    for data in (X, open_npy(shards, release_bytes=1 << 16)):
        net = sgdlab.Network([12, 8, 3], seed=0)
        h = sgdlab.fit(net, data, y, epochs=2, seed=0, **{"lr": 1.0, **kw})
        runs.append((net.params, h["train_cost"]))
    assert runs[0][1] == runs[1][1]
    assert all(
        np.array_equal(a, b)
        for (Wa, ba), (Wb, bb) in zip(runs[0][0], runs[1][0], strict=True)
        for a, b in ((Wa, Wb), (ba, bb))
    )


def test_batch_gd_from_disk_accumulates_the_full_gradient_in_chunks(on_disk, monkeypatch):
    import sgdlab.kernels as kernels

    monkeypatch.setattr(kernels, "EVAL_CHUNK", 128)  # 8 chunks for 1,000 rows
    X, y, path, _ = on_disk
    a, b = sgdlab.Network([12, 8, 3], seed=0, dtype="float64"), sgdlab.Network([12, 8, 3], seed=0, dtype="float64")
    sgdlab.fit(a, X, y, method="batch", lr=2.0, epochs=3)
    h = sgdlab.fit(b, open_npy(path), y, method="batch", lr=2.0, epochs=3, record_updates=True)
    for (W1, b1), (W2, b2) in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-6)  # float32 data, different summation order
        np.testing.assert_allclose(b1, b2, rtol=1e-6)
    assert h.updates[0]["batch_size"] == 1000


def test_bad_files_on_disk(tmp_path, on_disk):
    X, y, path, _ = on_disk
    raw = path.read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        open_npy(tmp_path / "cut.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    with pytest.raises(ValueError, match="Fortran order"):
        open_npy(tmp_path / "f.npy")
    np.save(tmp_path / "v.npy", X[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        open_npy(tmp_path / "v.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read .*junk.npy as .npy"):
        open_npy(tmp_path / "junk.npy")
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", X)
    np.save(tmp_path / "mixed" / "b.npy", X[:, :5])
    with pytest.raises(ValueError, match="shard .*b.npy holds float32 rows of 5 columns"):
        open_npy(tmp_path / "mixed")
    bad = X.copy()
    bad[900, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(in rows 0..999\)"):
        sgdlab.fit(sgdlab.Network([12, 3]), open_npy(tmp_path / "nan.npy"), y, epochs=1)
    with pytest.raises(TypeError, match="NumPy networks only"):
        sgdlab.fit(sgdlab.Network([12, 3], backend="array_api_strict"), open_npy(path), y, epochs=1)


def test_empty_file_on_disk_is_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 12), np.float32))
    with pytest.raises(ValueError, match="X is empty: it has 0 examples"):
        sgdlab.fit(sgdlab.Network([12, 3]), open_npy(tmp_path / "empty.npy"), np.zeros(0, np.int64), epochs=1)
