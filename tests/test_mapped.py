import os
import sys

import numpy as np
import pytest

import sgdlab
from sgdlab.data import mapped, open_npy


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
    rng = np.random.default_rng(1)
    cases = [rng.integers(0, 1000, 200),  # random, with repeats
             np.arange(300, 400), np.arange(330, 340)[::-1],  # a run crossing a shard boundary (334), and reversed
             np.array([5, 6, 7, 7, 6, 999, 0, 333, 334, 335]),  # neighbours, repeats, both ends, shard edges
             np.array([-1, -1000, 2]), np.array([], np.int64), np.array([42])]
    for m in (open_npy(path), open_npy(shards)):
        assert m.shape == (1000, 12) and m.dtype == np.float32 and len(m) == 1000
        for idx in cases:
            got = m.take(idx)
            assert got.flags.c_contiguous and got.shape == (len(idx), 12)
            np.testing.assert_array_equal(got, X.take(idx, axis=0))
        np.testing.assert_array_equal(m[10:700], X[10:700])
        np.testing.assert_array_equal(m[990:2000, ...], X[990:])
        np.testing.assert_array_equal(np.concatenate(list(m.chunks(64))), X)
        with pytest.raises(IndexError, match="out of range for 1000 rows"):
            m.take([3, 1000])
        with pytest.raises(IndexError, match="1-D integer"):
            m.take([[1, 2]])
        m.close()


def test_long_runs_are_split_into_bounded_reads(on_disk, monkeypatch):
    X, _, path, _ = on_disk
    monkeypatch.setattr(mapped, "MAX_READ_BYTES", 5 * 48 + 7)  # 5 rows of 48 bytes per read at most
    monkeypatch.setattr(mapped, "IOV_MAX", 3)
    with open_npy(path) as m:
        np.testing.assert_array_equal(m[3:101], X[3:101])
        idx = np.arange(200, 260)[np.random.default_rng(0).permutation(60)]  # one run, scattered in the batch
        np.testing.assert_array_equal(m.take(idx), X[idx])


def test_prefetched_batches_are_the_planned_rows_and_other_reads_pass_by(on_disk):
    X, _, _, shards = on_disk
    batches = np.array_split(np.random.default_rng(2).permutation(1000), 37)
    with open_npy(shards) as m:
        m.prefetch(batches, depth=2)
        for k, b in enumerate(batches):
            if k % 5 == 0:  # an evaluation read between two batches leaves the plan alone
                np.testing.assert_array_equal(m[0:100], X[:100])
            got = m.take(b.copy() if k % 2 else b)  # planned batches match by identity or by value
            np.testing.assert_array_equal(got, X[b])
        assert m._prefetcher.next == len(batches)
        m.prefetch(batches[:3])
        np.testing.assert_array_equal(m.take(batches[1]), X[batches[1]])  # out of plan: read now
        assert m._prefetcher.next == 0
        np.testing.assert_array_equal(m.take(batches[0]), X[batches[0]])
        assert m._prefetcher.next == 1
        m.prefetch(None)
        assert m._prefetcher is None
    with open_npy(shards, prefetch_depth=0) as m:  # the background reader off: plans are ignored
        m.prefetch(batches)
        assert m._prefetcher is None
        np.testing.assert_array_equal(m.take(batches[0]), X[batches[0]])
    with pytest.raises(ValueError, match="prefetch_depth must be an integer >= 0"):
        open_npy(shards, prefetch_depth=-1)


@pytest.mark.timeout(60)  # a reader that stopped must not leave take() waiting for it
def test_a_bad_planned_batch_raises_where_it_is_taken(on_disk):
    _, _, path, _ = on_disk
    with open_npy(path) as m:
        m.prefetch([np.arange(3), np.array([0, 5000]), np.arange(4)])
        m.take(np.arange(3))
        with pytest.raises(IndexError, match="out of range"):
            m.take(np.array([0, 5000]))
        np.testing.assert_array_equal(m.take(np.arange(4)), np.load(path)[:4])  # the reader stopped: read now


@pytest.mark.parametrize("kw", [{"batch_size": 10}, {"method": "stochastic", "lr": 0.3},
                                {"batch_size": 64, "momentum": 0.9, "sampling": "replacement"},
                                {"batch_size": 32, "sampling": "chunk_shuffle"},
                                {"batch_size": 100, "sampling": "shuffle_once", "eval_train": False}])
def test_training_from_disk_equals_training_in_memory(on_disk, kw, monkeypatch):
    X, y, _, shards = on_disk
    planned = []
    monkeypatch.setattr(mapped.MappedRows, "prefetch",
                        lambda self, b, depth=4, _orig=mapped.MappedRows.prefetch: (planned.append(len(b)),
                                                                                    _orig(self, b, depth)))
    runs = []
    for data in (X, open_npy(shards)):
        net = sgdlab.Network([12, 8, 3], seed=0)
        h = sgdlab.fit(net, data, y, epochs=2, seed=0, validation=(X[:50], y[:50]), **{"lr": 1.0, **kw})
        runs.append((net.params, h["train_cost"], h["val_cost"]))
        stepper, kernel = h.config["stepper"], h.config["stepper_info"].get("kernel")
    assert runs[0][1:] == runs[1][1:]
    assert all(np.array_equal(a, b) for (Wa, ba), (Wb, bb) in zip(runs[0][0], runs[1][0], strict=True)
               for a, b in ((Wa, Wb), (ba, bb)))
    if (stepper, kernel) == ("compiled", "rows"):  # it gathers several batches' rows in one read: no per-batch plan
        assert planned == []
    else:
        assert len(planned) == 2 and planned[0] > 1  # fit planned each epoch's batches for the reader


def test_an_interrupted_epoch_resumes_from_disk_bit_for_bit(on_disk):
    X, y, path, _ = on_disk

    class StopAt(sgdlab.Callback):
        def on_update_end(self, record):
            if record["update"] == 17:
                raise sgdlab.StopTraining

    whole = sgdlab.Network([12, 8, 3], seed=0)
    sgdlab.fit(whole, X, y, batch_size=20, lr=1.0, epochs=2, seed=3)
    net, state = sgdlab.Network([12, 8, 3], seed=0), sgdlab.TrainState()
    with open_npy(path) as Xd:
        sgdlab.fit(net, Xd, y, batch_size=20, lr=1.0, epochs=2, seed=3, state=state, callbacks=[StopAt()])
        assert state.step == 17
        sgdlab.fit(net, Xd, y, batch_size=20, lr=1.0, epochs=2, seed=3, state=state)
    for (W1, b1), (W2, b2) in zip(whole.params, net.params, strict=True):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)


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


def test_non_finite_rows_are_caught_as_they_are_read_not_by_a_scan(tmp_path, on_disk, monkeypatch):
    X, y, path, _ = on_disk
    bad = X.copy()
    bad[900, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan.npy\) contains NaN or infinity in row 900"):
        sgdlab.fit(sgdlab.Network([12, 3]), open_npy(tmp_path / "nan.npy"), y, epochs=1)  # the epoch-0 evaluation
    with pytest.raises(ValueError, match="contains NaN or infinity in row 900"):
        sgdlab.fit(sgdlab.Network([12, 3]), open_npy(tmp_path / "nan.npy"), y, epochs=1, eval_train=False)
    bad[900, 3] = -np.inf
    shards = tmp_path / "bad-shards"
    shards.mkdir()
    for i, a in enumerate(np.array_split(bad, 2)):
        np.save(shards / f"{i}.npy", a)
    with pytest.raises(ValueError, match=r"in row 900 \(row 400 of 1.npy\)"):
        open_npy(shards).take([1, 900])
    # no whole-file scan: one epoch without evaluation reads each row exactly once
    read = []
    orig = mapped._Reader.read
    monkeypatch.setattr(mapped._Reader, "read", lambda self, idx, out: (read.append(len(idx)), orig(self, idx, out))[1])
    sgdlab.fit(sgdlab.Network([12, 3]), open_npy(path), y, epochs=1,
               batch_size=50, eval_train=False)
    assert sum(read) == 1000


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
    with pytest.raises(TypeError, match="NumPy networks only"):
        sgdlab.fit(sgdlab.Network([12, 3], backend="array_api_strict"), open_npy(path), y, epochs=1)


def test_a_file_cut_after_it_was_opened_gives_an_error_not_a_crash(tmp_path, on_disk):
    X, _, _, _ = on_disk
    np.save(tmp_path / "X.npy", X)
    m = open_npy(tmp_path / "X.npy")
    os.truncate(tmp_path / "X.npy", m._shards[0].offset + 500 * 48)  # header + 500 rows of 12 float32
    np.testing.assert_array_equal(m.take([3, 499]), X[[3, 499]])
    with pytest.raises(ValueError, match="truncated after it was opened: reading row 700 came back short"):
        m.take([3, 700])
    with pytest.raises(ValueError, match="reading row 701 came back short"):
        m.take([702, 3, 701])  # a run of neighbours, one preadv
    with pytest.raises(ValueError, match="reading row 400 came back short"):
        m[400:600]  # a slice, one read
    m.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_resident_memory_does_not_grow_with_the_rows_read(tmp_path):
    def file_backed_resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[2]) * os.sysconf("SC_PAGE_SIZE")

    rows = 20_000  # 31 MB of 392-float rows: a memory map of it would leave most of it resident
    X = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, 392))
    X[:] = 1.0
    X.flush()
    del X
    with open_npy(tmp_path / "big.npy") as m:
        before = file_backed_resident()
        order = np.random.default_rng(0).permutation(rows)
        for b in np.array_split(order, 200):
            m.take(b)
        grown = file_backed_resident() - before
    assert grown < 4 << 20, f"file-backed resident memory grew by {grown / 2**20:.1f} MB"


def test_empty_file_on_disk_is_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 12), np.float32))
    with pytest.raises(ValueError, match="X is empty: it has 0 examples"):
        sgdlab.fit(sgdlab.Network([12, 3]), open_npy(tmp_path / "empty.npy"), np.zeros(0, np.int64), epochs=1)
