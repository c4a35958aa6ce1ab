import json

import numpy as np
import pytest

import sgdlab
from sgdlab.checkpoint import read


def test_save_load_round_trip(tmp_path, toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], activation="tanh", cost="cross_entropy", output_activation="softmax", seed=1)
    sgdlab.fit(net, X, y, lr=0.5, epochs=2, seed=0)
    path = sgdlab.save(tmp_path / "w.safetensors", net, extra={"note": "hi"})
    back = sgdlab.load(path)
    assert back.describe() == net.describe()
    assert all(
        np.array_equal(W, W2) and np.array_equal(b, b2)
        for (W, b), (W2, b2) in zip(net.params, back.params, strict=True)
    )
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    meta, _ = read(path)
    assert meta["note"] == "hi" and meta["version"] == sgdlab.__version__
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp files left


def test_save_is_atomic_and_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net = sgdlab.Network([2, 2], seed=0)
    path = sgdlab.save(tmp_path / "w.safetensors", net)
    before = path.read_bytes()
    import sgdlab.checkpoint as ck

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        sgdlab.save(path, sgdlab.Network([2, 2], seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[: len(b) // 2], "not a valid sgdlab checkpoint"),
    (lambda b: b"garbage" * 3, "not a valid sgdlab checkpoint"),
    (lambda b: b"", "not a valid sgdlab checkpoint"),
])
def test_damaged_files_are_refused(tmp_path, damage, match):
    path = sgdlab.save(tmp_path / "w.safetensors", sgdlab.Network([3, 2], seed=0))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        sgdlab.load(path)


def signed(path, tensors, meta):
    """Write a checkpoint as an attacker who knows the format would: any header, a valid checksum."""
    from safetensors.numpy import save_file

    from sgdlab.checkpoint import _signature

    header = json.dumps({"format": 2, "version": sgdlab.__version__, **meta})
    save_file(tensors, str(path), metadata={"sgdlab": header, "sgdlab_sha256": _signature(header, tensors)})
    return path


def test_foreign_or_inconsistent_files_are_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"W0": np.zeros((3, 2), np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not a valid sgdlab checkpoint"):
        sgdlab.load(tmp_path / "foreign.safetensors")
    meta = {"network": {"sizes": [3, 2], "activation": "sigmoid", "output_activation": "sigmoid",
                        "cost": "quadratic", "dtype": "float32"}}
    signed(tmp_path / "shape.safetensors", {"W0": np.zeros((4, 2), np.float32), "b0": np.zeros(2, np.float32)}, meta)
    with pytest.raises(ValueError, match=r"tensor W0 has shape \(4, 2\) but network.sizes \[3, 2\] needs \(3, 2\)"):
        sgdlab.load(tmp_path / "shape.safetensors")
    signed(tmp_path / "missing.safetensors", {"W0": np.zeros((3, 2), np.float32)}, meta)
    with pytest.raises(ValueError, match=r"missing tensors \['b0'\]"):
        sgdlab.load(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        sgdlab.load(tmp_path / "none.safetensors")


@pytest.mark.parametrize("kw", [
    {"batch_size": 7, "momentum": 0.9},
    {"batch_size": 5, "sampling": "shuffle_once"},
    {"batch_size": 6, "sampling": "replacement", "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3},
    {"method": "stochastic", "lr": 0.3},
    {"method": "batch"},
    {"batch_size": 8, "lr": sgdlab.schedules.inverse_time(2.0, 0.01)},
])
@pytest.mark.parametrize("stop_at", [1, 13, 17])
def test_interrupted_then_resumed_training_is_bit_identical(tmp_path, toy, kw, stop_at):
    from sgdlab.checkpoint import load_training, save_training
    from sgdlab.train import TrainState

    X, y = toy
    kw = {"lr": 1.0, "epochs": 5, "seed": 3, **kw}
    ref = sgdlab.Network([5, 6, 3], seed=2)
    h_ref = sgdlab.fit(ref, X, y, **kw)

    class StopAt(sgdlab.Callback):
        def on_update_end(self, r):
            if r["update"] == stop_at:
                raise sgdlab.StopTraining

    net, state = sgdlab.Network([5, 6, 3], seed=2), TrainState()
    sgdlab.fit(net, X, y, state=state, callbacks=[StopAt()], **kw)
    (save_training if stop_at == 1 else sgdlab.save)(tmp_path / "ck.safetensors", net, state=state)
    del net, state
    net, state, _ = (load_training if stop_at == 1 else sgdlab.load_training)(tmp_path / "ck.safetensors")
    h = sgdlab.fit(net, X, y, state=state, **kw)
    assert all(
        np.array_equal(W, W2) and np.array_equal(b, b2) for (W, b), (W2, b2) in zip(net.params, ref.params, strict=True)
    )
    assert [r["epoch"] for r in h.epochs] == [r["epoch"] for r in h_ref.epochs]
    assert h["train_cost"] == h_ref["train_cost"] and h["updates"] == h_ref["updates"]
    # every record but the clock, the interrupted epoch's mean_batch_cost included (its running sum is saved)
    assert _untimed(h.epochs) == _untimed(h_ref.epochs) and all("mean_batch_cost" in r for r in h.epochs[1:])


def _untimed(records):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def _as_before_0_3(path):
    """Rewrite a training checkpoint as sgdlab 0.2 wrote it: no running batch-cost sum among its counters."""
    from sgdlab import checkpoint

    meta, tensors = checkpoint._read(path)
    for k in ("batch_cost_sum", "batch_cost_examples"):
        del meta["counters"][k]
    checkpoint._write(path, tensors, {k: v for k, v in meta.items() if k not in ("format", "version")})


@pytest.mark.parametrize("stop_at", [4, 8])
def test_a_checkpoint_without_the_running_sum_resumes_with_no_mean_batch_cost_for_that_epoch(tmp_path, toy, stop_at):
    """Older files lack the epoch's running sum. Saved mid-epoch (update 4 of 8 in epoch 1), the epoch it
    completes gets no mean_batch_cost (a sum over half its updates would be wrong), the next epochs do;
    saved between epochs (update 8), nothing was lost. The parameters are the same either way."""
    from sgdlab.train import TrainState

    X, y = toy
    kw = {"batch_size": 5, "lr": 1.0, "epochs": 3, "seed": 3}
    h_ref = sgdlab.fit(sgdlab.Network([5, 6, 3], seed=2), X, y, **kw)

    class StopAt(sgdlab.Callback):
        def on_update_end(self, r):
            if r["update"] == stop_at:
                raise sgdlab.StopTraining

    net, state = sgdlab.Network([5, 6, 3], seed=2), TrainState()
    h = sgdlab.fit(net, X, y, state=state, callbacks=[StopAt()], **kw)
    if stop_at == 4:  # the interrupted epoch's record has the mean over the updates it made
        assert h.last["partial"] and h.last["mean_batch_cost"] == pytest.approx(
            np.mean(_batch_costs(X, y, kw, 4)), rel=1e-12)
    sgdlab.save(tmp_path / "ck.safetensors", net, state=state)
    _as_before_0_3(tmp_path / "ck.safetensors")
    net, state, _ = sgdlab.load_training(tmp_path / "ck.safetensors")
    assert state.batch_cost_sum == (None if stop_at == 4 else 0.0)
    h = sgdlab.fit(net, X, y, state=state, **kw)
    lost = [1] if stop_at == 4 else []
    assert [r["epoch"] for r in h.epochs if "mean_batch_cost" not in r] == [0, *lost]
    assert [r.get("mean_batch_cost") for r in h.epochs[2:]] == [r["mean_batch_cost"] for r in h_ref.epochs[2:]]
    assert h["train_cost"] == h_ref["train_cost"]


def _batch_costs(X, y, kw, k):
    """The first k batch costs of the run ``kw`` describes, as fit records them per update."""
    h = sgdlab.fit(sgdlab.Network([5, 6, 3], seed=2), X, y, record_updates=True, **{**kw, "epochs": 1})
    return [u["batch_cost"] for u in h.updates[:k]]


def test_tampered_tensors_fail_the_checksum(tmp_path):
    path = sgdlab.save(tmp_path / "w.safetensors", sgdlab.Network([3, 2], seed=0))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip bits of the last weight: still a valid safetensors file
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        sgdlab.load(path)


def test_weights_only_file_cannot_be_resumed(tmp_path):
    from sgdlab.checkpoint import load_training

    path = sgdlab.save(tmp_path / "w.safetensors", sgdlab.Network([3, 2], seed=0))
    with pytest.raises(ValueError, match="weights only"):
        load_training(path)
