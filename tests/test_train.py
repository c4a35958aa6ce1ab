import csv
import json
import math
from itertools import pairwise

import numpy as np
import pytest

import sgdlab
from sgdlab.backend import to_numpy


@pytest.mark.parametrize("method,bs,sizes", [
    ("batch", None, [40]), ("stochastic", None, [1] * 40), ("minibatch", 10, [10] * 4), ("minibatch", 15, [15, 15, 10]),
])
def test_methods_use_the_examples_they_say(toy, method, bs, sizes, backend):
    X, y = toy
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0, backend=backend), X, y, method=method, batch_size=bs, lr=0.1,
                   epochs=3, seed=0, record_updates=True)
    per_epoch = [[u["batch_size"] for u in h.updates if u["epoch"] == e] for e in (1, 2, 3)]
    assert per_epoch == [sizes] * 3
    assert h["updates"] == [0, len(sizes), 2 * len(sizes), 3 * len(sizes)]
    assert h["examples_seen"] == [0, 40, 80, 120]
    assert h.config["batch_size"] == sizes[0]


def test_batch_gd_is_exact_full_gradient_descent(toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=1, dtype="float64")
    expected = [(W.copy(), b.copy()) for W, b in net.params]
    for _ in range(3):  # w <- w - eta grad C(w), computed independently through net.gradient
        g = net.gradient(X, y)
        net_params = [(W - 0.7 * gW, b - 0.7 * gb) for (W, b), (gW, gb) in zip(expected, g, strict=True)]
        expected = net_params
        net.params = [(W.copy(), b.copy()) for W, b in expected]
    net2 = sgdlab.Network([5, 4, 3], seed=1, dtype="float64")
    sgdlab.fit(net2, X, y, method="batch", lr=0.7, epochs=3)
    for (W1, b1), (W2, b2) in zip(net2.params, expected, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)


def test_minibatch_step_is_the_mean_over_the_batch(toy):
    """Replay the sampler's batches through net.gradient and compare with fit (sequential order)."""
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=2, dtype="float64")
    params = [(W.copy(), b.copy()) for W, b in net.params]
    ref = sgdlab.Network.from_params(net.describe(), params)
    for k in range(0, 40, 8):
        g = ref.gradient(X[k:k + 8], y[k:k + 8])
        ref.params = [(W - 0.3 * gW, b - 0.3 * gb) for (W, b), (gW, gb) in zip(ref.params, g, strict=True)]
    sgdlab.fit(net, X, y, batch_size=8, lr=0.3, epochs=1, sampling="sequential")
    for (W1, b1), (W2, b2) in zip(net.params, ref.params, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_same_seed_same_result_bit_for_bit(toy, momentum, backend):
    X, y = toy
    runs = []
    for _ in range(2):
        net = sgdlab.Network([5, 4, 3], seed=3, backend=backend)
        h = sgdlab.fit(net, X, y, batch_size=5, lr=0.5, epochs=4, seed=11, momentum=momentum)
        runs.append((net.numpy_params(), h["train_cost"]))
    assert runs[0][1] == runs[1][1]
    for (W1, b1), (W2, b2) in zip(runs[0][0], runs[1][0], strict=True):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)


def test_initialisation_and_sampling_use_separate_streams(toy):
    X, y = toy
    a, b = sgdlab.Network([5, 4, 3], seed=3), sgdlab.Network([5, 4, 3], seed=3)
    assert all(np.array_equal(p, q) for (p, _), (q, _) in zip(a.params, b.params, strict=True))
    sgdlab.fit(a, X, y, lr=0.5, epochs=1, seed=1)
    sgdlab.fit(b, X, y, lr=0.5, epochs=1, seed=2)
    assert not np.array_equal(a.params[0][0], b.params[0][0])  # different batches
    # the same integer seeds for both streams do not give the same numbers
    from sgdlab.rng import generator
    assert generator(5, "init").random() != generator(5, "sampling").random()


def hidden_unit_spread(net):
    """Largest difference between the units of a hidden layer: incoming weights, biases, outgoing weights."""
    spread = 0.0
    for l, (W, b) in enumerate(net.params[:-1]):
        W_out = net.params[l + 1][0]
        spread = max(
            spread, np.max(np.abs(W - W[:, :1])), np.max(np.abs(b - b[0])), np.max(np.abs(W_out - W_out[:1, :]))
        )
    return float(spread)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_init_keeps_hidden_units_identical_random_init_does_not(toy, dtype):
    """With zero weights every hidden unit of a layer gets the same gradient, so they stay equal.

    In exact arithmetic the spread stays 0. BLAS kernels may round the columns of one product
    differently (OpenBLAS handles tail columns with another code path), so the float result is
    equal to rounding: we allow 100 ulps of the largest weight, against O(0.1) with random init.
    """
    X, y = toy
    tol = 100 * np.finfo(dtype).eps
    for init in ("zeros", "glorot"):
        net = sgdlab.Network([5, 6, 30, 3], init=init, seed=0, dtype=dtype)
        h = sgdlab.fit(net, X, y, lr=0.5, epochs=20, seed=0)
        scale = max(float(np.max(np.abs(W))) for W, _ in net.params)
        if init == "zeros":
            assert hidden_unit_spread(net) <= tol * max(scale, 1.0)
            assert h.last["train_accuracy"] < 0.8  # a network of clones cannot fit this problem
        else:
            assert hidden_unit_spread(net) > 0.05


def linear_divergence_case():
    """A deep linear network with a step too large: the cost grows until it overflows."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal((30, 1))
    return X, Y, lambda: sgdlab.Network([3, 8, 1], activation="identity", output_activation="identity", seed=0)


def test_divergence_stops_with_message_and_keeps_last_good_parameters():
    X, Y, make = linear_divergence_case()
    net = make()
    with pytest.raises(sgdlab.DivergenceError, match=r"in epoch 2 \(updates 7-12\) with lr=0.8.*end of epoch 1,"):
        sgdlab.fit(net, X, Y, batch_size=5, lr=0.8, epochs=100, seed=0)
    ref = make()
    sgdlab.fit(ref, X, Y, batch_size=5, lr=0.8, epochs=1, seed=0)
    assert all(
        np.array_equal(W1, W2) and np.array_equal(b1, b2)
        for (W1, b1), (W2, b2) in zip(net.params, ref.params, strict=True)
    )


def test_divergence_names_the_update_when_updates_are_recorded():
    X, Y, make = linear_divergence_case()
    with pytest.raises(sgdlab.DivergenceError, match=r"at update \d+ \(epoch 2\) with lr=0.8"):
        sgdlab.fit(make(), X, Y, batch_size=5, lr=0.8, epochs=100, seed=0, record_updates=True)


def test_history_records_what_it_says(toy, tmp_path):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=0)
    h = sgdlab.fit(net, X, y, batch_size=8, lr=1.0, epochs=3, seed=0, validation=(X[:10], y[:10]), record_updates=True)
    assert h["epoch"] == [0, 1, 2, 3] and len(h) == 4
    assert h.last["train_cost"] == pytest.approx(net.cost(X, y), rel=1e-6)
    assert h.last["val_accuracy"] == net.accuracy(X[:10], y[:10])
    assert h.last["train_accuracy"] == net.accuracy(X, y)
    secs = h["train_seconds"]
    assert secs[0] == 0 and all(b >= a for a, b in pairwise(secs))
    assert [u["update"] for u in h.updates] == list(range(1, 16))
    assert all(u["lr"] == 1.0 and math.isfinite(u["batch_cost"]) for u in h.updates)
    h.to_csv(tmp_path / "h.csv")
    h.to_csv(tmp_path / "u.csv", which="updates")
    h.to_json(tmp_path / "h.json")
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["val_cost"]) == pytest.approx(h.last["val_cost"])
    assert len(list(csv.DictReader(open(tmp_path / "u.csv")))) == 15
    d = json.loads((tmp_path / "h.json").read_text())
    assert d["epochs"] == h.epochs and "train_cost" in d["fields"]["epochs"]
    assert sgdlab.History.from_dict(d).epochs == h.epochs


def test_learning_rate_schedule_and_callbacks(toy):
    X, y = toy
    seen = []
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=20, epochs=2, lr=lambda t: 1.0 / (1 + t),
                   callbacks=[seen.append], record_updates=True)
    assert [u["lr"] for u in h.updates] == [1.0, 0.5, 1 / 3, 0.25]
    assert [r["epoch"] for r in seen] == [0, 1, 2] and h["epoch"] == [0, 1, 2]
    h2 = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, callbacks=[seen.append, seen.append])
    assert h2["epoch"] == [0, 1] and len(seen) == 3 + 4
    with pytest.raises(ValueError, match="schedule gave lr=-1"):
        sgdlab.fit(sgdlab.Network([5, 4, 3]), X, y, lr=lambda t: -1.0, epochs=1)


def test_training_reduces_cost_for_every_method_and_option(toy):
    X, y = toy
    for kw in ({"method": "batch", "lr": 2.0}, {"method": "stochastic", "lr": 0.5}, {"lr": 1.0},
               {"lr": 0.5, "momentum": 0.9}, {"lr": 0.5, "momentum": 0.9, "nesterov": True},
               {"lr": 1.0, "weight_decay": 1e-3}, {"lr": 1.0, "sampling": "replacement"},
               {"lr": 1.0, "sampling": "shuffle_once"}):
        h = sgdlab.fit(sgdlab.Network([5, 8, 3], seed=0), X, y, epochs=30, seed=0, **kw)
        assert h.last["train_cost"] < 0.6 * h.epochs[0]["train_cost"], kw


def test_fit_under_array_api_backend_matches_numpy_reference_path(backend, toy):
    X, y = toy
    kw = dict(batch_size=8, lr=0.5, epochs=3, seed=1, momentum=0.5, validation=(X, y))
    ref = sgdlab.Network([5, 4, 3], seed=1, dtype="float64")
    h_ref = sgdlab.fit(ref, X, y, fused=False, **kw)
    net = sgdlab.Network([5, 4, 3], seed=1, dtype="float64", backend=backend)
    h = sgdlab.fit(net, X, y, **kw)
    for (W1, b1), (W2, b2) in zip(net.params, ref.params, strict=True):
        np.testing.assert_allclose(to_numpy(W1), W2, rtol=1e-12)
        np.testing.assert_allclose(to_numpy(b1), b2, rtol=1e-12)
    assert h["val_accuracy"] == h_ref["val_accuracy"]


BAD = [
    (lambda X, y: (X[:-1], y), {}, ValueError, "X has 39 examples but Y has 40"),
    (lambda X, y: (X[:, :4], y), {}, ValueError, "X has 4 features but the network's input layer has 5"),
    (lambda X, y: (np.where(np.arange(5) == 2, np.nan, X), y), {}, ValueError, "X contains NaN"),
    (lambda X, y: (X, np.eye(3)[y] + [np.inf, 0, 0]), {}, ValueError, "Y contains NaN or infinity"),
    (lambda X, y: (X, y + 1), {}, ValueError, r"labels in \[1, 3\].*labels 0..2"),
    (lambda X, y: (X, y - 1), {}, ValueError, r"labels in \[-1, 1\]"),
    (lambda X, y: (X, y.astype(float)), {}, ValueError,
     r"integer class labels of shape \(40,\) or targets of shape \(40, 3\)"),
    (lambda X, y: (X.astype(str), y), {}, TypeError, "X must be numeric"),
    (lambda X, y: (X[:0], y[:0]), {}, ValueError, "X is empty"),
    (lambda X, y: (X[0], y), {}, ValueError, "X must be 2-D"),
    (lambda X, y: (X, y), {"lr": 0.0}, ValueError, "learning rate lr must be a finite number > 0"),
    (lambda X, y: (X, y), {"lr": -1.0}, ValueError, "lr must be a finite number > 0"),
    (lambda X, y: (X, y), {"lr": float("nan")}, ValueError, "lr must be a finite number > 0"),
    (lambda X, y: (X, y), {"lr": "fast"}, TypeError, "lr must be a number"),
    (lambda X, y: (X, y), {"batch_size": 0}, ValueError, r"batch_size must be \[1, 40\]"),
    (lambda X, y: (X, y), {"batch_size": 41}, ValueError, r"batch_size must be \[1, 40\]; got 41"),
    (lambda X, y: (X, y), {"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    (lambda X, y: (X, y), {"method": "batch", "batch_size": 10}, ValueError, "batch_size must be 40 or None"),
    (lambda X, y: (X, y), {"method": "stochastic", "batch_size": 10}, ValueError, "batch_size must be 1 or None"),
    (lambda X, y: (X, y), {"epochs": 0}, ValueError, "epochs must be >= 1"),
    (lambda X, y: (X, y), {"method": "adam"}, ValueError, "valid: batch, stochastic, minibatch"),
    (lambda X, y: (X, y), {"sampling": "random"}, ValueError, "valid: reshuffle"),
    (lambda X, y: (X, y), {"momentum": 1.5}, ValueError, "momentum must be in"),
    (lambda X, y: (X, y), {"validation": (np.zeros((3, 2)), [0, 1, 2])}, ValueError, "X_val has 2 features"),
    (lambda X, y: (X, y), {"validation": [1, 2, 3]}, TypeError, "validation must be a pair"),
    (lambda X, y: (X, y), {"seed": -3}, TypeError, "seed must be a non-negative int"),
]


@pytest.mark.parametrize("make,kwargs,exc,match", BAD)
def test_bad_input_is_refused_and_nothing_is_modified(toy, make, kwargs, exc, match):
    X, y = toy
    X, y = make(X.copy(), y.copy())
    X_before, y_before = np.array(X, copy=True), np.array(y, copy=True)
    net = sgdlab.Network([5, 4, 3], seed=0)
    before = net.copy_params()
    with pytest.raises(exc, match=match):
        sgdlab.fit(net, X, y, **{"epochs": 1, **kwargs})
    assert all(
        np.array_equal(W, W0) and np.array_equal(b, b0) for (W, b), (W0, b0) in zip(net.params, before, strict=True)
    )
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_callers_data_is_never_shuffled_or_modified(toy):
    X, y = toy
    Xc, yc = X.copy(), y.copy()
    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0, dtype="float64"), X, y, lr=0.5, epochs=2)
    assert np.array_equal(X, Xc) and np.array_equal(y, yc)


def test_update_callbacks_see_every_update_and_can_stop_training(toy):
    X, y = toy

    class Probe(sgdlab.Callback):
        def __init__(self, net):
            self.net, self.seen, self.costs, self.epochs = net, [], [], []

        def on_update_end(self, r):
            self.seen.append(r["examples_seen"])
            self.costs.append(self.net.cost(X, y))
            if r["update"] == 7:
                raise sgdlab.StopTraining

        def on_epoch_end(self, r):
            self.epochs.append(r["epoch"])

    net = sgdlab.Network([5, 4, 3], seed=0)
    probe = Probe(net)
    h = sgdlab.fit(net, X, y, batch_size=3, lr=1.0, epochs=5, seed=0, callbacks=[probe])
    assert probe.seen == [3 * k for k in range(1, 8)]
    assert probe.epochs == [0]  # stopped inside epoch 1, before its end callbacks
    assert h.config["stopped_at_update"] == 7 and h.last["updates"] == 7 and h.last["epoch"] == 1
    assert h.last["train_cost"] == pytest.approx(probe.costs[-1])  # the network stopped where the probe saw it


# ----------------------------------------------------------------- mean_batch_cost; when the training set is evaluated
@pytest.mark.parametrize("stepper", ["reference", "fused", "compiled"])
@pytest.mark.parametrize("bs", [1, 7])
def test_mean_batch_cost_is_each_batchs_cost_before_its_update_weighted_by_its_size(toy, stepper, bs):
    """Recomputed independently: sequential batches (7 rows: the last of 40 has 5), the parameters before
    every update snapshotted by a per-update hook, each batch's cost from net.cost, weighted by its rows."""
    if stepper == "compiled":
        pytest.importorskip("numba")
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=0, dtype="float64")
    before = [net.copy_params()]

    class Snap(sgdlab.Callback):
        def on_update_end(self, r):
            before.append(net.copy_params())

    h = sgdlab.fit(net, X, y, batch_size=bs, lr=1.0, epochs=3, sampling="sequential", stepper=stepper,
                   callbacks=[Snap()], eval_train=False)
    starts = list(range(0, 40, bs))
    probe = sgdlab.Network([5, 4, 3], seed=0, dtype="float64")
    u = 0
    for epoch in (1, 2, 3):
        total = 0.0
        for a in starts:
            probe.params = before[u]
            rows = slice(a, min(a + bs, 40))
            total += float(probe.cost(X[rows], y[rows])) * len(X[rows])
            u += 1
        assert h.epochs[epoch]["mean_batch_cost"] == pytest.approx(total / 40, rel=1e-12), epoch
    assert "mean_batch_cost" not in h.epochs[0]  # no update yet
    # without the per-update hook an epoch is one block of updates: the same sums, bit for bit
    whole = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0, dtype="float64"), X, y, batch_size=bs, lr=1.0, epochs=3,
                       sampling="sequential", stepper=stepper, eval_train=False)
    assert whole["mean_batch_cost"] == h["mean_batch_cost"]


def test_update_records_carry_the_running_mean_that_ends_as_the_epochs(toy):
    X, y = toy
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=7, lr=1.0, epochs=2, seed=0,
                   record_updates=True)
    for epoch in (1, 2):
        ups = [u for u in h.updates if u["epoch"] == epoch]
        sizes = np.cumsum([u["batch_size"] for u in ups])
        running = np.cumsum([u["batch_cost"] * u["batch_size"] for u in ups]) / sizes
        np.testing.assert_allclose([u["mean_batch_cost"] for u in ups], running, rtol=1e-12)
        assert ups[-1]["mean_batch_cost"] == h.epochs[epoch]["mean_batch_cost"]
        assert [u["batch_size"] for u in ups] == [7] * 5 + [5]


def test_batch_gd_mean_batch_cost_is_the_exact_cost_before_the_epochs_update(toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=1, dtype="float64")
    h = sgdlab.fit(net, X, y, method="batch", lr=2.0, epochs=4, eval_train=True)
    for prev, r in pairwise(h.epochs):
        assert r["mean_batch_cost"] == pytest.approx(prev["train_cost"], rel=1e-12)


def test_the_training_set_is_evaluated_at_the_ends_by_default(toy, monkeypatch):
    """Counting the forward passes over the training set: 2 (epoch 0 and the last) by default, one per
    evaluating epoch with eval_train=True, none with False; the validation set every epoch in all three."""
    from sgdlab.train import _TrainingData

    X, y = toy
    passes = []
    original = _TrainingData.evaluate_sums

    def counting(self, net, which="train"):
        passes.append(which)
        return original(self, net, which)

    monkeypatch.setattr(_TrainingData, "evaluate_sums", counting)
    runs = {}
    for eval_train in (None, True, False):
        passes.clear()
        h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=8, epochs=5, seed=0,
                       validation=(X[:10], y[:10]), eval_train=eval_train)
        runs[eval_train] = h
        assert passes.count("val") == 6, eval_train
        assert passes.count("train") == {None: 2, True: 6, False: 0}[eval_train]
        assert [r["epoch"] for r in h.epochs if "train_cost" in r] == {None: [0, 5], True: list(range(6)),
                                                                      False: []}[eval_train]
        assert [r["epoch"] for r in h.epochs if "train_accuracy" in r] == [r["epoch"] for r in h.epochs
                                                                          if "train_cost" in r]
        assert [r["epoch"] for r in h.epochs if "mean_batch_cost" in r] == [1, 2, 3, 4, 5]
        assert h.config["eval_train"] == {None: "ends", True: "every", False: "never"}[eval_train]
    # evaluation changes nothing else: the same records but for the evaluated fields
    strip = lambda h: [{k: v for k, v in r.items() if k != "train_seconds" and not k.startswith("train_")}  # noqa: E731
                       for r in h.epochs]
    assert strip(runs[None]) == strip(runs[True]) == strip(runs[False])
    assert runs[None].last["train_cost"] == runs[True].last["train_cost"]
    with pytest.raises(TypeError, match="eval_train must be None"):
        sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, eval_train="ends")


def test_a_non_finite_mean_batch_cost_is_divergence_even_with_finite_parameters(toy, monkeypatch):
    """A stepper that reports a NaN batch cost in epoch 2 (its parameters stay finite): with no evaluation
    at all, fit stops there and keeps the parameters from the end of epoch 1."""
    from sgdlab.steppers.reference import ReferenceStepper

    X, y = toy
    run = ReferenceStepper.run

    def nan_in_epoch_2(self, state, batches, etas, want_costs):
        step = state.step
        costs = run(self, state, batches, etas, want_costs)
        return [float("nan") if step + i == 5 else c for i, c in enumerate(costs)]  # update 6: epoch 2 of 4 each

    monkeypatch.setattr(ReferenceStepper, "run", nan_in_epoch_2)
    net, seen = sgdlab.Network([5, 4, 3], seed=0), []
    with pytest.raises(sgdlab.DivergenceError,
                       match=r"in epoch 2 \(updates 5-8\).*the mean batch cost became nan.*end of epoch 1,"):
        sgdlab.fit(net, X, y, batch_size=10, lr=1.0, epochs=4, seed=0, stepper="reference", eval_train=False,
                   callbacks=[seen.append])
    assert [r["epoch"] for r in seen] == [0, 1]  # the diverged epoch's record is never handed out
    monkeypatch.setattr(ReferenceStepper, "run", run)
    ref = sgdlab.Network([5, 4, 3], seed=0)
    sgdlab.fit(ref, X, y, batch_size=10, lr=1.0, epochs=1, seed=0, stepper="reference", eval_train=False)
    assert all(np.array_equal(W, W2) and np.array_equal(b, b2)
               for (W, b), (W2, b2) in zip(net.params, ref.params, strict=True))


def test_one_hot_targets_are_made_in_the_networks_dtype_without_a_float64_copy():
    """A float32 network's one-hot rows are built as float32 (equal values: 0 and 1 are exact), so that
    preparing n labels never holds an (n, classes) float64 array: traced peak 93 bytes per row of ten
    classes here, 203 when the targets went through float64 first."""
    import tracemalloc

    from sgdlab.train import _TrainingData

    n = 100_000
    rng = np.random.default_rng(0)
    X, y = rng.random((n, 2), dtype=np.float32), rng.integers(0, 10, n)
    net = sgdlab.Network([2, 3, 10], dtype="float32")
    tracemalloc.start()
    try:
        data = _TrainingData.prepare(net, X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.T.dtype == np.float32
    np.testing.assert_array_equal(data.T, np.eye(10)[y])
    assert peak / n < 130, peak / n  # a float64 (n, 10) array alone is 80 bytes per row
