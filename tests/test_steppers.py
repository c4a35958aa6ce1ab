"""The engine seam: steppers chosen once, one step counter, hooks that cost nothing unless used."""

import importlib.util
import math

import numpy as np
import pytest

import sgdlab
from sgdlab import kernels, optim, schedules
from sgdlab.steppers import StepContext, available, select_stepper
from sgdlab.steppers.reference import ReferenceStepper


def compiled_blas() -> bool:
    """Whether the compiled stepper's BLAS kernel can run here (numba, and NumPy's BLAS with CBLAS gemm)."""
    from sgdlab.steppers import compiled

    return compiled.numba_available() and all(compiled.gemm_address(t) is not None for t in ("float32", "float64"))


@pytest.fixture(params=["rows", "rows-loops", "blas", "blas-blocked", "blas-tiles", "blas-grad-tiles"])
def kernel(request, monkeypatch):
    """Run the compiled stepper with one kernel at every batch size (selection normally picks by size);
    "rows-loops": the rows kernel without gemm for the layers above the first (NumPy's BLAS without CBLAS);
    "blas-blocked": the blas kernel making every batch of more than 2 rows in blocks of 2 (on MNIST-sized
    inputs the blocks are 167 rows: ``compiled.row_block``), its gradient summed over the blocks;
    "blas-tiles": blocks of 2 as well, every layer's forward product by register tiles at every batch size
    and in both precisions (selection takes them for float32 layers at least a vector wide on CPUs with
    512-bit vectors only; the code is the same, in narrower registers, elsewhere), and every gradient product
    too, summed block after block; "blas-grad-tiles": every gradient product by register tiles, a batch in one
    block (its update then from the sums, not inside gemm). "blas" and "blas-blocked" make every product by
    gemm."""
    pytest.importorskip("numba")
    from sgdlab.steppers import compiled

    if request.param != "rows-loops" and not compiled_blas():
        pytest.skip("NumPy's BLAS exports no CBLAS gemm with 64-bit integers here")
    if request.param == "rows-loops":
        monkeypatch.setattr(compiled, "gemm_address", lambda dtype: None)
    if request.param in ("blas-blocked", "blas-tiles"):
        monkeypatch.setattr(compiled, "row_block", lambda ctx: min(2, ctx.batch_size))
    monkeypatch.setattr(compiled, "tiled_products", lambda ctx: request.param == "blas-tiles")
    monkeypatch.setattr(compiled, "gradient_tiles", lambda ctx: request.param in ("blas-tiles", "blas-grad-tiles"))
    monkeypatch.setattr(compiled, "TILES_MIN_VECTORS", 0)  # the toy layers are narrower than a vector
    monkeypatch.setattr(compiled, "rows_kernel_preferred", lambda ctx: not request.param.startswith("blas"))
    return request.param


def params_equal(a, b):
    return all(np.array_equal(W1, W2) and np.array_equal(b1, b2) for (W1, b1), (W2, b2) in zip(a, b, strict=True))


class Trace(sgdlab.Callback):
    """Copies the parameters after every update."""

    def __init__(self, net):
        self.net, self.params, self.lrs = net, [], []

    def on_update_end(self, r):
        # copies: fast steppers change the arrays in place
        self.params.append([(np.array(W), np.array(b)) for W, b in self.net.numpy_params()])
        self.lrs.append(r["lr"])


def assert_same_updates(t1, t2, rtol):
    assert len(t1.params) == len(t2.params) and t1.lrs == t2.lrs
    for p1, p2 in zip(t1.params, t2.params, strict=True):
        for (W1, b1), (W2, b2) in zip(p1, p2, strict=True):
            np.testing.assert_allclose(W1, W2, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(b1, b2, rtol=rtol, atol=rtol)


def switching_run(toy, plan, **kw):
    """Train epoch by epoch, each fit call on the stepper the plan names; a Trace sees every update."""
    X, y = toy
    net = sgdlab.Network([5, 6, 3], seed=4, dtype="float64")
    trace, state = Trace(net), sgdlab.TrainState()
    for epoch, name in enumerate(plan, start=1):
        sgdlab.fit(net, X, y, epochs=epoch, stepper=name, state=state, callbacks=[trace], seed=3, **kw)
        assert state.step == optim.sgd_step(state.opt_state) == epoch * math.ceil(40 / kw["batch_size"])
    return net, trace, state


def test_switching_steppers_mid_run_gives_the_same_updates(toy):
    """Epoch 1 fused, 2 reference, 3 fused: every update's parameters and lr match a reference-only run.

    The schedule drops the rate 100x after 5 updates: a stepper that counted its own steps (or
    none) would apply the wrong rate after a switch. float64; the fused gemm sums in another order
    than the reference's products, so the two agree to rounding (1e-12 relative over 24 updates).
    """
    kw = dict(batch_size=5, lr=schedules.step(1.0, 0.01, every=5), weight_decay=0.01)
    _, ref, _ = switching_run(toy, ["reference"] * 3, **kw)
    _, mixed, _ = switching_run(toy, ["fused", "reference", "fused"], **kw)
    assert ref.lrs[:5] == [1.0] * 5 and ref.lrs[5] == pytest.approx(0.01)
    assert_same_updates(ref, mixed, rtol=1e-12)


def test_schedule_count_survives_a_fused_epoch(toy):
    """The reported bug: after a fused epoch the reference path applied lr(0) again."""
    X, y = toy
    sched = schedules.step(1.0, 0.01, every=8)
    a, b = (sgdlab.Network([5, 6, 3], seed=0, dtype="float64") for _ in range(2))
    sa = sgdlab.TrainState()
    sgdlab.fit(a, X, y, batch_size=5, lr=sched, epochs=1, stepper="fused", state=sa, seed=1)
    h = sgdlab.fit(a, X, y, batch_size=5, lr=sched, epochs=2, stepper="reference", state=sa, seed=1,
                   record_updates=True)
    assert [u["lr"] for u in h.updates] == [sched(t) for t in range(8, 16)]
    sgdlab.fit(b, X, y, batch_size=5, lr=sched, epochs=2, stepper="reference", seed=1)
    for (W1, b1), (W2, b2) in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)


def test_estimator_t_is_the_optimizer_step():
    from sklearn.datasets import load_iris

    from sgdlab.estimators import GDClassifier

    X, y = load_iris(return_X_y=True)
    clf = GDClassifier(epochs=1, batch_size=10, random_state=0)
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        assert clf.t_ == clf.state_.step == optim.sgd_step(clf.state_.opt_state)
    assert clf.t_ == 3 * 15


def test_select_stepper_rules_and_refusals(toy):
    X, y = toy
    from sgdlab.train import _TrainingData

    net = sgdlab.Network([5, 4, 3], seed=0)
    data = _TrainingData.prepare(net, X, y)
    assert {"reference", "fused", "chunked"} <= set(available())
    ctx = StepContext(net, data, optim.sgd(0.1, momentum=0.9), 40)
    assert select_stepper(ctx).name == "buffered"  # momentum, batch GD: made in place by the buffered stepper
    # momentum, batches of 20: the compiled stepper's BLAS kernel, or without it the buffered stepper
    half = StepContext(net, data, optim.sgd(0.1, momentum=0.9), 20)
    assert select_stepper(half).name == ("compiled" if compiled_blas() else "buffered")
    custom = optim.chain(optim.trace(0.9), optim.scale_by_lr(0.1))  # no hyper: only the reference chain runs it
    assert select_stepper(StepContext(net, data, custom, 40)).name == "reference"
    with pytest.raises(ValueError, match="stepper 'fused' cannot run this fit: .*momentum=0"):
        select_stepper(ctx, "fused")
    with pytest.raises(ValueError, match="stepper 'chunked' cannot run.*full-batch"):
        select_stepper(StepContext(net, data, optim.sgd(0.1), 5), "chunked")
    with pytest.raises(ValueError, match="unknown stepper 'gpu'; valid: "):
        sgdlab.fit(net, X, y, epochs=1, stepper="gpu")
    with pytest.raises(ValueError, match="give stepper= or fused=, not both"):
        sgdlab.fit(net, X, y, epochs=1, stepper="reference", fused=False)
    assert sgdlab.fit(net, X, y, epochs=1, batch_size=5).config["stepper"] in available()


def test_kernels_return_sums_and_chunks_add_up(toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=0, dtype="float64")
    T = np.eye(3)[y]
    sums, c = kernels.grad_sums(net.arch, net.params, X, T, np)
    chunked, c2 = kernels.chunked_grad_sums(net.arch, net.params, X, T, np, size=7)
    g = net.gradient(X, y)
    for (sW, sb), (cW, cb), (gW, gb) in zip(sums, chunked, g, strict=True):
        np.testing.assert_allclose(sW / 40, gW, rtol=1e-13)
        np.testing.assert_allclose(sb / 40, gb, rtol=1e-13)
        np.testing.assert_allclose(cW, sW, rtol=1e-12)
        np.testing.assert_allclose(cb, sb, rtol=1e-12)
    assert float(c) / 40 == pytest.approx(net.cost(X, y), rel=1e-13) and c2 == pytest.approx(float(c), rel=1e-12)


# ----------------------------------------------------------------- callbacks
def count_blocks(monkeypatch):
    calls = []
    run = ReferenceStepper.run

    def counting(self, state, batches, etas, want_costs):
        calls.append(len(batches))
        return run(self, state, batches, etas, want_costs)

    monkeypatch.setattr(ReferenceStepper, "run", counting)
    return calls


def test_per_update_hooks_only_when_overridden(toy, monkeypatch):
    X, y = toy
    calls = count_blocks(monkeypatch)

    class EpochsOnly(sgdlab.Callback):
        def on_epoch_end(self, r):
            pass

    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=4, epochs=2, stepper="reference",
               callbacks=[EpochsOnly(), lambda r: None])
    assert calls == [10, 10]  # one block per epoch: no per-update work at all
    calls.clear()

    class Every3(sgdlab.Callback):
        update_interval = 3

        def __init__(self):
            self.seen = []

        def on_update_end(self, r):
            self.seen.append(r["update"])

    cb = Every3()
    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=4, epochs=2, stepper="reference", callbacks=[cb])
    assert cb.seen == [3, 6, 9, 12, 15, 18]
    assert calls == [3, 3, 3, 1, 2, 3, 3, 2]  # blocks end at multiples of 3 and at epoch ends


def test_train_begin_and_end_frame_the_run(toy):
    X, y = toy
    events = []

    class Frame(sgdlab.Callback):
        def on_train_begin(self, config):
            events.append(("begin", config["stepper"]))

        def on_epoch_end(self, r):
            events.append(("epoch", r["epoch"]))

        def on_train_end(self, history):
            events.append(("end", len(history)))

    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=2, stepper="reference", callbacks=[Frame()])
    assert events == [("begin", "reference"), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("end", 3)]


def test_bad_callbacks_and_flags_are_refused(toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=0)
    with pytest.raises(TypeError, match="callbacks must be Callback objects or callables.*got 3"):
        sgdlab.fit(net, X, y, epochs=1, callbacks=[3])
    with pytest.raises(TypeError, match="nesterov must be True or False; got 'no'"):
        sgdlab.fit(net, X, y, epochs=1, momentum=0.9, nesterov="no")

    class Bad(sgdlab.Callback):
        update_interval = 0

        def on_update_end(self, r):
            pass

    with pytest.raises(ValueError, match="Bad.update_interval must be >= 1"):
        sgdlab.fit(net, X, y, epochs=1, callbacks=[Bad()])


# ----------------------------------------------------------------- optimizer and schedules
def test_optimizer_argument_and_shortcuts_agree(toy):
    X, y = toy
    runs = []
    for kw in (dict(lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3),
               dict(optimizer=optim.sgd(0.5, momentum=0.9, nesterov=True, weight_decay=1e-3))):
        net = sgdlab.Network([5, 4, 3], seed=0)
        runs.append((net, sgdlab.fit(net, X, y, epochs=2, seed=1, **kw)))
    assert params_equal(runs[0][0].params, runs[1][0].params)
    assert runs[0][1].config["momentum"] == runs[1][1].config["momentum"] == 0.9
    # a transformation of one's own runs on the reference stepper; fit cannot know its lr
    custom = optim.chain(optim.trace(0.5), optim.scale_by_lr(0.2))
    net = sgdlab.Network([5, 4, 3], seed=0)
    h = sgdlab.fit(net, X, y, epochs=2, optimizer=custom, record_updates=True)
    assert h.config["stepper"] == "reference" and h.config["lr"] == "optimizer" and h.updates[0]["lr"] is None
    with pytest.raises(ValueError, match="give either optimizer= or lr"):
        sgdlab.fit(net, X, y, epochs=1, optimizer=custom, lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a GradientTransformation"):
        sgdlab.fit(net, X, y, epochs=1, optimizer="sgd")


def test_schedules_carry_names_and_refuse_bad_arguments(toy):
    X, y = toy
    sched = schedules.cosine(0.5, total=100, final=0.01)
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, lr=sched)
    assert h.config["lr"] == "cosine(lr=0.5, total=100, final=0.01)" == str(sched)
    assert sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, lr=0.25).config["lr"] == 0.25
    for make, exc, match in [(lambda: schedules.cosine(1.0, total=0), ValueError, "total must be >= 1"),
                             (lambda: schedules.step(1.0, 0.5, every=0), ValueError, "every must be >= 1"),
                             (lambda: schedules.exponential(1.0, 0.5, every=0), ValueError, "every must be >= 1"),
                             (lambda: schedules.step(1.0, 0.5, every=2.5), TypeError, "every must be an integer"),
                             (lambda: schedules.inverse_time(1.0, -1), ValueError,
                              "decay must be a finite number >= 0"),
                             (lambda: schedules.constant(float("nan")), ValueError, "lr must be a finite number > 0"),
                             (lambda: schedules.step(0.0, 0.5, 2), ValueError, "lr must be a finite number > 0")]:
        with pytest.raises(exc, match=match):
            make()


# ----------------------------------------------------------------- divergence, schedules, defaults
def test_divergence_is_caught_without_any_evaluation():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal((30, 1))

    def make():
        return sgdlab.Network([3, 8, 1], activation="identity", output_activation="identity", seed=0)

    net = make()
    # the epoch's mean batch cost (from the updates' own forward passes) is the first to go
    with pytest.raises(sgdlab.DivergenceError, match=r"the mean batch cost became nan.*end of epoch (\d+)") as e:
        sgdlab.fit(net, X, Y, batch_size=5, lr=0.8, epochs=200, seed=0, eval_train=False)
    good_epoch = int(e.value.args[0].split("end of epoch ")[1].split(",")[0])
    ref = make()
    sgdlab.fit(ref, X, Y, batch_size=5, lr=0.8, epochs=good_epoch, seed=0, eval_train=False)
    assert params_equal(net.params, ref.params) and all(np.isfinite(W).all() for W, _ in net.params)


def test_non_finite_parameters_are_caught_when_every_cost_is_finite():
    """Batch GD with a step that overflows the weights in one update: the epoch's one batch cost was
    computed before the update and is finite; the parameters after it are not."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 3)).astype(np.float32), 100 * rng.standard_normal((30, 1)).astype(np.float32)
    net = sgdlab.Network([3, 8, 1], activation="identity", output_activation="identity", seed=0)
    before = net.copy_params()
    with pytest.raises(sgdlab.DivergenceError, match=r"in epoch 1 .*non-finite in the parameters.*end of epoch 0"):
        sgdlab.fit(net, X, Y, method="batch", lr=1e38, epochs=3, eval_train=False)
    assert params_equal(net.params, before)


def test_schedule_turning_bad_mid_epoch_restores_the_last_good_parameters(toy):
    X, y = toy
    sched = lambda t: 0.5 if t < 6 else float("nan")  # noqa: E731  (update 7 is in epoch 2 of 4 updates)
    net = sgdlab.Network([5, 4, 3], seed=0)
    with pytest.raises(ValueError, match=r"schedule gave lr=nan at step t=6 \(update 7\).*end of epoch 1"):
        sgdlab.fit(net, X, y, batch_size=10, lr=sched, epochs=3, seed=0)
    ref = sgdlab.Network([5, 4, 3], seed=0)
    sgdlab.fit(ref, X, y, batch_size=10, lr=0.5, epochs=1, seed=0)
    assert params_equal(net.params, ref.params)


def test_default_batch_size_fits_small_data():
    X, y = np.eye(4), np.array([0, 1, 1, 0])
    h = sgdlab.fit(sgdlab.Network([4, 3, 2], seed=0), X, y, epochs=2)
    assert h.config["batch_size"] == 4 and h["updates"] == [0, 1, 2]


def test_eval_every_evaluates_some_epochs_and_the_last(toy):
    X, y = toy
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=5, eval_every=2, validation=(X, y),
                   eval_train=True)
    assert [r["epoch"] for r in h.epochs if "train_cost" in r] == [0, 2, 4, 5]
    assert [r["epoch"] for r in h.epochs if "val_accuracy" in r] == [0, 2, 4, 5]
    assert all(r["updates"] == 4 * r["epoch"] for r in h.epochs)
    # by default the training set only at the ends; the validation set still every eval_every-th epoch
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=5, eval_every=2, validation=(X, y))
    assert [r["epoch"] for r in h.epochs if "train_cost" in r] == [0, 5]
    assert [r["epoch"] for r in h.epochs if "val_accuracy" in r] == [0, 2, 4, 5]


# ----------------------------------------------------------------- the compiled stepper
ARCHS = [dict(), dict(activation="tanh", output_activation="softmax"), dict(cost="cross_entropy"),
         dict(activation="relu", output_activation="softmax", cost="cross_entropy"),
         dict(activation="identity", output_activation="identity"),
         dict(activation="sigmoid", output_activation="tanh"),
         dict(activation="relu", output_activation="relu")]
OPTS = [dict(lr=0.1), dict(lr=schedules.inverse_time(0.05, 0.1), momentum=0.9),
        dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01), dict(lr=0.1, weight_decay=0.05)]
# The compiled kernels sum the first layer's products in another order than BLAS (row by row, one
# input at a time; the rows kernel's upper layers and the blas kernel call gemm, with its own
# blocking), so single updates differ from the reference by a few ulps; over the 3 epochs
# here they stay within ~1e3 ulps (measured 2e-15 in float64, 1.2e-7 in float32 relative to O(1)
# weights). A wrong formula (a missing 1/m, a sign, a stale delta) moves weights by >= 1e-3.
TOL = {"float64": 1e-10, "float32": 2e-5}


def trained(toy, stepper, dtype, arch, opt, batch_size, epochs=3, **kw):
    X, y = toy
    net = sgdlab.Network([5, 6, 4, 3], seed=7, dtype=dtype, **arch)
    h = sgdlab.fit(net, X, y, batch_size=batch_size, epochs=epochs, seed=2, stepper=stepper, record_updates=True,
                   **opt, **kw)
    return net, h


def assert_close(p1, p2, tol):
    for (W1, b1), (W2, b2) in zip(p1, p2, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=tol, atol=tol)
        np.testing.assert_allclose(b1, b2, rtol=tol, atol=tol)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(a.values()) or "default")
@pytest.mark.parametrize("opt", OPTS, ids=["sgd", "momentum-schedule", "nesterov-decay", "decay"])
@pytest.mark.parametrize("dtype,batch_size", [("float64", 1), ("float64", 3), ("float32", 7), ("float64", 40)])
def test_compiled_agrees_with_reference_over_whole_epochs(toy, arch, opt, dtype, batch_size, kernel):
    """Batch 40 is the whole toy set: batch GD, whose rows the BLAS kernel reads in place."""
    ref, h_ref = trained(toy, "reference", dtype, arch, opt, batch_size)
    net, h = trained(toy, "compiled", dtype, arch, opt, batch_size)
    assert h.config["stepper"] == "compiled" and h.config["stepper_info"]["compile_seconds"] >= 0
    assert h.config["stepper_info"]["kernel"] == kernel.split("-")[0]
    assert h.config["stepper_info"]["upper_layers"] == ("loops" if kernel == "rows-loops" else "gemm")
    if kernel.startswith("blas"):
        info = h.config["stepper_info"]
        assert info["forward_products"] == ("tiles" if kernel == "blas-tiles" else "gemm")
        assert info["tiled_layers"] == (len(net.sizes) - 1 if kernel == "blas-tiles" else 0)
        tiled = kernel in ("blas-tiles", "blas-grad-tiles")
        assert info["gradient_products"] == ("tiles" if tiled else "gemm")
        assert info["gradient_tiled_layers"] == (len(net.sizes) - 1 if tiled else 0)
    assert [u["lr"] for u in h.updates] == [u["lr"] for u in h_ref.updates]
    np.testing.assert_allclose([u["batch_cost"] for u in h.updates], [u["batch_cost"] for u in h_ref.updates],
                               rtol=TOL[dtype], atol=TOL[dtype])
    assert_close(net.params, ref.params, TOL[dtype])


class StopAt(sgdlab.Callback):
    def __init__(self, at):
        self.at = at

    def on_update_end(self, r):
        if r["update"] == self.at:
            raise sgdlab.StopTraining


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_resumed_mid_epoch_is_bit_identical_and_agrees_with_reference(toy, dtype, kernel):
    X, y = toy
    opt = dict(lr=schedules.step(0.5, 0.5, every=9), momentum=0.9, nesterov=True, weight_decay=1e-3)

    def run(stepper, stop_at=None):
        net, state = sgdlab.Network([5, 6, 3], seed=1, dtype=dtype), sgdlab.TrainState()
        if stop_at:
            sgdlab.fit(net, X, y, batch_size=3, epochs=3, seed=4, stepper=stepper, state=state,
                       callbacks=[StopAt(stop_at)], **opt)
            assert state.step == stop_at and state.position > 0  # stopped inside an epoch
        sgdlab.fit(net, X, y, batch_size=3, epochs=3, seed=4, stepper=stepper, state=state, **opt)
        return net.numpy_params(), state

    whole, s1 = run("compiled")
    resumed, s2 = run("compiled", stop_at=19)
    assert params_equal(whole, resumed)  # bit for bit: an update does not depend on where its block starts
    assert all(np.array_equal(a, b) for (va, vb), (wa, wb) in zip(optim.sgd_velocity(s1.opt_state),
                                                                   optim.sgd_velocity(s2.opt_state), strict=True)
               for a, b in ((va, wa), (vb, wb)))
    ref, _ = run("reference", stop_at=19)
    assert_close(resumed, ref, TOL[dtype])


def sparse_toy(toy):
    """toy with about 40% of its inputs zero, so the compiled kernel's zero-input skips are exercised."""
    X, y = toy
    X = X.copy()
    X[np.random.default_rng(5).random(X.shape) < 0.4] = 0.0
    return X, y


@pytest.mark.parametrize("sizes", [[5, 3], [5, 6, 3], [5, 6, 4, 3]], ids=["no-hidden", "one-hidden", "two-hidden"])
@pytest.mark.parametrize("opt", OPTS, ids=["sgd", "momentum-schedule", "nesterov-decay", "decay"])
@pytest.mark.parametrize("dtype,batch_size", [("float64", 1), ("float64", 3), ("float32", 1), ("float32", 7)])
def test_compiled_blocks_of_whole_epochs_agree_with_reference(toy, sizes, opt, dtype, batch_size, kernel):
    """Without per-update records each block is an epoch, so the first layer's update is made in one pass
    with the next update's products (the path record_updates=True never takes); 40 % 3 and 40 % 7 leave a
    short last batch, and zero inputs are skipped."""
    X, y = sparse_toy(toy)
    nets = {}
    for stepper in ("reference", "compiled"):
        nets[stepper] = sgdlab.Network(sizes, seed=7, dtype=dtype)
        sgdlab.fit(nets[stepper], X, y, batch_size=batch_size, epochs=3, seed=2, stepper=stepper, **opt)
    assert_close(nets["compiled"].params, nets["reference"].params, TOL[dtype])


class Interrupt(sgdlab.Callback):
    """Stops training at update ``at``; the loop comes back every ``every`` updates (blocks of that length)."""

    def __init__(self, at, every):
        self.at, self.update_interval = at, every

    def on_update_end(self, r):
        if r["update"] == self.at:
            raise sgdlab.StopTraining


@pytest.mark.parametrize("batch_size,opt", [(1, dict(lr=0.1)), (1, dict(lr=0.05, momentum=0.9)),
                                            (3, dict(lr=0.1)), (3, dict(lr=0.1, weight_decay=0.01))])
def test_compiled_long_blocks_resume_bit_identically(toy, batch_size, opt, kernel):
    """An update's arithmetic does not depend on where its block starts or ends, also when a block
    spans many updates (the first layer's pass then also makes the next update's products)."""
    X, y = sparse_toy(toy)

    def run(stop=None):
        net, state = sgdlab.Network([5, 6, 3], seed=1, dtype="float32"), sgdlab.TrainState()
        if stop:
            sgdlab.fit(net, X, y, batch_size=batch_size, epochs=3, seed=4, stepper="compiled", state=state,
                       callbacks=[Interrupt(*stop)], **opt)
            assert state.step == stop[0] and state.position > 0
        sgdlab.fit(net, X, y, batch_size=batch_size, epochs=3, seed=4, stepper="compiled", state=state, **opt)
        return net.numpy_params()

    whole = run()
    assert params_equal(whole, run(stop=(9, 3)))
    assert params_equal(whole, run(stop=(7, 7)))


def test_switching_between_all_steppers_with_momentum_and_a_schedule(toy):
    """reference -> compiled -> reference and buffered -> compiled -> buffered (momentum and Nesterov),
    fused -> reference -> compiled and buffered -> fused -> reference (decay): every update checked
    against a reference-only run (float64, rounding-level tolerance as above)."""
    pytest.importorskip("numba")
    for plan, extra in ((["reference", "compiled", "reference"], dict(momentum=0.9, nesterov=True)),
                        (["buffered", "compiled", "buffered"], dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
                        (["fused", "reference", "compiled"], dict(weight_decay=0.01)),
                        (["buffered", "fused", "reference"], dict(weight_decay=0.01))):
        kw = dict(batch_size=5, lr=schedules.step(1.0, 0.1, every=6), **extra)
        _, ref, _ = switching_run(toy, ["reference"] * 3, **kw)
        _, mixed, state = switching_run(toy, plan, **kw)
        assert_same_updates(ref, mixed, rtol=1e-10)


def test_without_numba_selection_falls_back_and_forcing_says_why(toy, monkeypatch):
    from sgdlab.steppers import compiled

    X, y = toy
    monkeypatch.setattr(compiled, "numba_available", lambda: False)
    assert sgdlab.fit(sgdlab.Network([5, 4, 3]), X, y, batch_size=1, epochs=1).config["stepper"] == "fused"
    with pytest.raises(ValueError, match="stepper 'compiled' cannot run this fit: numba is not installed"):
        sgdlab.fit(sgdlab.Network([5, 4, 3]), X, y, batch_size=1, epochs=1, stepper="compiled")


@pytest.mark.parametrize("how", ["disk-full-batch", "replacement-full-size"])
def test_compiled_full_size_batches_agree_with_reference(tmp_path, toy, kernel, how):
    """Forced on batch GD over data on disk (the kernel is handed the rows, not the file object), and on
    index batches as big as the data set (sampling with replacement: the BLAS kernel's gather buffer
    grows to them)."""
    from sgdlab.data import open_npy

    X, y = toy
    np.save(tmp_path / "X.npy", X)
    data, kw = ((open_npy(tmp_path / "X.npy"), dict(method="batch")) if how == "disk-full-batch"
                else (X, dict(batch_size=len(X), sampling="replacement")))
    nets = {}
    for stepper in ("reference", "compiled"):
        nets[stepper] = sgdlab.Network([5, 6, 3], seed=7)
        h = sgdlab.fit(nets[stepper], data, y, epochs=3, seed=2, stepper=stepper, lr=0.5, **kw)
    assert h.config["stepper_info"]["kernel"] == kernel.split("-")[0]
    assert_close(nets["compiled"].params, nets["reference"].params, TOL["float32"])


def test_compiled_is_chosen_for_small_batches_in_memory(toy, monkeypatch):
    pytest.importorskip("numba")
    from sgdlab.steppers import compiled

    COMPILED_MAX_BATCH_DENSE, COMPILED_MAX_BATCH = compiled.rows_kernel_limits()  # this machine's BLAS's
    X, y = toy  # dense inputs
    sparse = X.copy()
    sparse[:, 2:] = 0.0  # 3 of 5 inputs never used (as MNIST's border pixels): the pass skips 60% of W's rows
    scattered = np.where(np.abs(X) < 1.0, 0.0, X)  # about 68% zeros at random places: few rows skipped

    def chosen(data, m, momentum):
        h = sgdlab.fit(sgdlab.Network([5, 4, 3]), data, y, batch_size=m, epochs=1, momentum=momentum)
        return h.config["stepper"], h.config["stepper_info"].get("kernel")

    blas = ("compiled", "blas") if compiled_blas() else None
    for data, m, momentum, want in ((X, 1, 0.0, ("compiled", "rows")), (X, 1, 0.9, ("compiled", "rows")),
                                    (X, COMPILED_MAX_BATCH_DENSE + 1, 0.0, blas or ("fused", None)),
                                    (sparse, COMPILED_MAX_BATCH, 0.0, ("compiled", "rows")),
                                    (sparse, COMPILED_MAX_BATCH + 1, 0.0, blas or ("fused", None)),
                                    (sparse, COMPILED_MAX_BATCH + 1, 0.9, blas or ("buffered", None)),
                                    # momentum: the first layer's update touches every weight, no skip
                                    (sparse, COMPILED_MAX_BATCH, 0.9, blas or ("buffered", None)),
                                    (scattered, COMPILED_MAX_BATCH_DENSE, 0.0, ("compiled", "rows")),
                                    (scattered, COMPILED_MAX_BATCH_DENSE + 1, 0.0, blas or ("fused", None))):
        assert chosen(data, m, momentum) == want, (m, momentum)
    # without NumPy's CBLAS gemm, the fused and buffered steppers take the bigger batches, as before
    monkeypatch.setattr(compiled, "gemm_address", lambda dtype: None)
    assert chosen(X, COMPILED_MAX_BATCH_DENSE + 1, 0.0) == ("fused", None)
    assert chosen(X, COMPILED_MAX_BATCH_DENSE + 1, 0.9) == ("buffered", None)
    h = sgdlab.fit(sgdlab.Network([5, 4, 3]), X, y, batch_size=8, epochs=1, stepper="compiled")
    assert h.config["stepper_info"]["kernel"] == "rows"  # forced: every batch size runs on the rows kernel


def test_rows_kernel_limits_follow_the_blas_small_matrix_kernels(monkeypatch):
    """The rows/blas crossovers measured on OpenBLAS's Haswell kernels (AMD EPYC) and its SkylakeX ones (Intel
    Xeon), picked by the core type NumPy's OpenBLAS runs on."""
    pytest.importorskip("numba")
    from types import SimpleNamespace

    from sgdlab.steppers import compiled, threads

    try:  # the answer is cached per process: cleared for each pretended BLAS, and for the real one after
        for arch, small in (("SkylakeX", True), ("Haswell", False), ("Zen", False)):
            compiled.blas_small_kernels.cache_clear()
            lib = SimpleNamespace(internal_api="openblas", architecture=arch)
            monkeypatch.setattr(threads, "_numpy_blas", lambda lib=lib: lib)
            assert compiled.blas_small_kernels() is small
            assert compiled.rows_kernel_limits() == ((1, 3) if small else (3, 7))
        compiled.blas_small_kernels.cache_clear()
        monkeypatch.setattr(threads, "_numpy_blas", lambda: None)
        assert compiled.rows_kernel_limits() == (3, 7)
    finally:
        compiled.blas_small_kernels.cache_clear()


def test_skip_fraction_is_the_expected_share_of_first_layer_rows_skipped(toy):
    """sum_i z_i^(2m) / n_in, z_i the zero fraction of input i; and what a pass over real batches skips."""
    from sgdlab.steppers.compiled import skip_fraction
    from sgdlab.train import _TrainingData

    X, y = toy
    X = X[:40].copy()
    X[:, 0] = 0.0  # never used: always skipped
    X[::2, 1] = 0.0  # zero in half the rows
    X[:, 2:] += 10.0  # never zero
    net = sgdlab.Network([5, 4, 3], seed=0)
    data = _TrainingData.prepare(net, X, y[:40])
    for m in (1, 2, 3):
        assert skip_fraction(data, m) == pytest.approx((1 + 0.5 ** (2 * m)) / 5, abs=1e-12)
    # against what it stands for (simulated here, not the kernel): the share of (batch, input) pairs zero
    # in a batch and the next one, over the batches of many shuffled epochs; rows are drawn without
    # replacement there (a little fewer all-zero pairs than the formula's independent draws), hence
    # the tolerance
    rng, m, hits, pairs = np.random.default_rng(0), 2, 0, 0
    for _ in range(500):
        order = rng.permutation(40)
        for k in range(0, 40 - 2 * m + 1, m):
            rows = X[order[k:k + 2 * m]]
            hits, pairs = hits + int(np.sum(np.all(rows == 0, axis=0))), pairs + 5
    assert hits / pairs == pytest.approx(skip_fraction(data, m), abs=0.01)


def test_skip_fraction_is_measured_once_per_fit(toy, monkeypatch):
    """Selection and the chosen stepper's kernel choice share one measurement (``StepContext.fact``)."""
    pytest.importorskip("numba")
    from sgdlab.steppers import compiled

    X, y = toy
    X = X.copy()
    X[:, :3] = 0.0  # sparse enough for the rows kernel above the dense range
    calls = []
    real = compiled.skip_fraction
    monkeypatch.setattr(compiled, "skip_fraction", lambda data, m: calls.append(m) or real(data, m))
    m = compiled.rows_kernel_limits()[0] + 1
    h = sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, batch_size=m, epochs=1)
    assert (h.config["stepper"], h.config["stepper_info"]["kernel"]) == ("compiled", "rows")
    assert calls == [m]


def test_compiled_blas_takes_every_batch_short_of_batch_gd_and_batch_gd_made_in_blocks(toy, tmp_path, monkeypatch):
    """Batches of any size below the whole set run on the BLAS kernel; batch GD too where its rows are made in
    blocks (more than ROW_BLOCKS_MIN blocks of ROW_BLOCK_BYTES of inputs, products on one thread), else on the
    fused or buffered stepper; batch GD on data on disk on the chunked stepper."""
    pytest.importorskip("numba")
    from sgdlab.data import open_npy
    from sgdlab.steppers import compiled
    from sgdlab.train import _TrainingData

    if not compiled_blas():
        pytest.skip("no CBLAS gemm in NumPy's BLAS here")
    net = sgdlab.Network([5, 4, 3], seed=0)
    data = _TrainingData.prepare(net, *toy)

    def chosen(m, momentum=0.0, d=data):
        ctx = StepContext(net, d, optim.sgd(0.1, momentum=momentum), m)
        return select_stepper(ctx).name, compiled.row_block(ctx)

    assert chosen(39) == ("compiled", 39)  # one block
    assert chosen(40) == ("fused", 40)  # small products
    assert chosen(40, 0.9) == ("buffered", 40)
    monkeypatch.setattr(compiled, "ROW_BLOCK_BYTES", 4 * 5 * 4)  # blocks of 4 rows of 5 float32 inputs
    assert chosen(32) == ("compiled", 32)  # 8 blocks: one
    assert chosen(33) == ("compiled", 4)
    assert chosen(40) == chosen(40, 0.9) == ("compiled", 4)
    np.save(tmp_path / "X.npy", toy[0])
    on_disk = _TrainingData.prepare(net, open_npy(tmp_path / "X.npy"), toy[1])
    assert chosen(40, d=on_disk)[0] == "chunked"
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 2)  # products shared by two threads
    assert chosen(40) == ("fused", 40) and chosen(40, 0.9) == ("buffered", 40)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_row_pass_equals_batch_row_pass(dtype):
    """The rows kernel's pass for batches of 2-4 rows (K terms, padded with zeros) against its general pass,
    for every batch and next-batch size it takes, with inputs zero for some rows, some batches and all:
    equal values (array_equal; the sign of an exact zero is the one thing the two may differ in)."""
    pytest.importorskip("numba")
    import numba

    from sgdlab.steppers._numba_kernels import batch_row_pass, small_row_pass

    @numba.njit
    def small(W, Xb, m, D, c, Xn, mn, A, S, K):  # K as a literal, as the block kernel passes it
        if K == 2:
            small_row_pass(W, Xb, m, D, c, Xn, mn, A, S, 2)
        elif K == 3:
            small_row_pass(W, Xb, m, D, c, Xn, mn, A, S, 3)
        else:
            small_row_pass(W, Xb, m, D, c, Xn, mn, A, S, 4)

    rng = np.random.default_rng(3)
    fi, fo, c = 37, 13, np.dtype(dtype).type(0.05)
    for K in (2, 3, 4):
        for m in range(1, K + 1):
            for mn in range(0, K + 1):
                Xb, Xn = rng.standard_normal((4, fi)).astype(dtype), rng.standard_normal((4, fi)).astype(dtype)
                Xb[:, ::5] = 0.0  # inputs no row uses
                Xn[:, ::5] = 0.0
                Xb[0, 1::7] = 0.0  # inputs some rows use
                D = rng.standard_normal((4, fo + 3)).astype(dtype)
                W0 = rng.standard_normal((fi, fo)).astype(dtype)
                W1, W2 = W0.copy(), W0.copy()
                A1, A2 = np.zeros((4, fo + 3), dtype), np.zeros((4, fo + 3), dtype)
                batch_row_pass(W1, Xb, m, D, c, Xn, mn, A1, np.zeros(fo, dtype))
                small(W2, Xb, m, D, c, Xn, mn, A2, np.full((8, fo), np.nan, dtype), K)
                assert np.array_equal(W1, W2) and np.array_equal(A1[:mn, :fo], A2[:mn, :fo]), (K, m, mn)
                assert not np.any(A2[mn:]), (K, m, mn)  # rows beyond the next batch's untouched


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_pass_on_the_transposed_weights_agrees_with_the_row_pass(dtype):
    """Batch 1's pass over W^T (one column of W at a time, multiply-adds fused, sums reordered) against the row
    pass over W: each weight's update w - (eta x_i) d_j within one rounding of the exact value (a fused
    multiply-add rounds once, so it is the exact value rounded; the row pass rounds twice), and each next
    product z_j within the error bound of a sum of n terms in any order, n eps sum_i |xn_i w_ij|; on dense
    inputs and inputs zero in x, in xn and both. A pass with c = d = 0 leaves W as it is and gives the same z as
    a pass that updated it to the same values."""
    pytest.importorskip("numba")
    from sgdlab.steppers._numba_kernels import sgd_column_pass, sgd_row_pass

    rng = np.random.default_rng(4)
    fi, fo, eta = 83, 13, np.dtype(dtype).type(0.05)
    eps = np.finfo(dtype).eps
    for zeros in (0.0, 0.3, 0.7):
        x, xn = rng.standard_normal(fi).astype(dtype), rng.standard_normal(fi).astype(dtype)
        x[rng.random(fi) < zeros] = 0.0
        xn[rng.random(fi) < zeros] = 0.0
        x[8:12] = xn[8:12] = 0.0
        d, W0 = rng.standard_normal(fo).astype(dtype), rng.standard_normal((fi, fo)).astype(dtype)
        W1, z1 = W0.copy(), np.zeros(fo, dtype)
        sgd_row_pass(W1, x, xn, d, z1, eta)
        WT, z2 = np.ascontiguousarray(W0.T), np.full(fo, np.nan, dtype)
        c = eta * x
        sgd_column_pass(WT, c, xn, d, z2)
        cd = c.astype(np.longdouble)[:, None] * d.astype(np.longdouble)
        exact = W0.astype(np.longdouble) - cd
        assert np.all(np.abs(WT.T - exact) <= 0.5 * eps * np.abs(exact) + np.finfo(dtype).tiny), zeros
        assert np.all(np.abs(W1 - exact) <= 0.5 * eps * (np.abs(exact) + np.abs(cd)) + np.finfo(dtype).tiny), zeros
        assert np.array_equal(WT.T[8:12], W0[8:12]) and not np.array_equal(WT.T, W0)
        terms = xn.astype(np.longdouble)[:, None] * WT.T.astype(np.longdouble)
        bound = fi * eps * np.abs(terms).sum(axis=0)
        assert np.all(np.abs(z2 - terms.sum(axis=0)) <= bound), zeros
        np.testing.assert_allclose(z2, z1, rtol=0, atol=float(2 * bound.max()))
        W3, z3 = WT.copy(), np.full(fo, np.nan, dtype)
        sgd_column_pass(W3, np.zeros(fi, dtype), xn, np.zeros(fo, dtype), z3)  # no update: a block's first product
        assert np.array_equal(W3, WT) and np.array_equal(z3, z2), zeros


def test_transposed_first_layer_is_chosen_for_plain_sgd_on_one_row_of_dense_inputs(toy):
    pytest.importorskip("numba")
    X, y = toy

    def transposed(data, m=1, **kw):
        net = sgdlab.Network([5, 4, 3])
        h = sgdlab.fit(net, data, y, batch_size=m, epochs=1, stepper="compiled", **kw)
        assert net.params[0][0].flags.c_contiguous  # given back in row-major order
        return h.config["stepper_info"].get("transposed", False)  # the blas kernel (2 rows, on some BLAS) has none

    assert transposed(X) is True
    assert transposed(sparse_toy(toy)[0]) is True  # 40% zeros at random places: skip fraction 0.16
    sparse = X.copy()
    sparse[:, 1:] = 0.0  # 4 of 5 inputs never used: skip fraction 0.8
    assert transposed(sparse) is False
    assert transposed(X, momentum=0.9) is False and transposed(X, weight_decay=0.01) is False
    assert transposed(X, 2) is False


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_transposed_first_layer_gives_the_same_bits_however_updates_are_cut_into_blocks(dtype):
    """The column pass's sums have their own order, so a block's first product is made by the same pass (with no
    update): an epoch in one block, in blocks of one update (record_updates) and in blocks cut by a callback
    every 7 updates end with equal parameters and batch costs; during the run the network's first weights
    are a column-major view of the stepper's W^T, afterwards row-major arrays of their own. 83 inputs: enough
    for the pass's vectorised sums (5 would be summed in order)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((30, 83)), rng.integers(0, 3, 30)
    seen = []

    class Every7(sgdlab.Callback):
        update_interval = 7

        def on_update_end(self, record):
            seen.append((net.params[0][0].flags.f_contiguous, net.params[0][0].base is not None))

    runs = []
    for kw in ({}, {"record_updates": True}, {"callbacks": [Every7()]}):
        net = sgdlab.Network([83, 6, 3], seed=1, dtype=dtype)
        h = sgdlab.fit(net, X, y, batch_size=1, epochs=2, seed=3, lr=0.3, stepper="compiled", **kw)
        assert h.config["stepper_info"]["transposed"] is True
        assert net.params[0][0].flags.c_contiguous and net.params[0][0].flags.owndata
        runs.append((net.params, h))
    assert seen and all(f and v for f, v in seen)
    for params, h in runs[1:]:
        assert params_equal(params, runs[0][0])
        assert h["train_cost"] == runs[0][1]["train_cost"]

    class StopAt17(sgdlab.Callback):
        def on_update_end(self, record):
            if record["update"] == 17:
                raise sgdlab.StopTraining

    net, state = sgdlab.Network([83, 6, 3], seed=1, dtype=dtype), sgdlab.TrainState()  # interrupted, resumed
    sgdlab.fit(net, X, y, batch_size=1, epochs=2, seed=3, lr=0.3, stepper="compiled", state=state,
               callbacks=[StopAt17()])
    assert state.step == 17
    sgdlab.fit(net, X, y, batch_size=1, epochs=2, seed=3, lr=0.3, stepper="compiled", state=state)
    assert params_equal(net.params, runs[0][0])


def test_exp_of_non_positive_float32_is_within_one_ulp():
    """The compiled sigmoid's exp (a polynomial, so that loops over it vectorize) against e^x in float64,
    over 2 million points of [-87.3, 0]; 0 below (where e^x leaves the normal float32 range)."""
    pytest.importorskip("numba")
    from scipy.special import expit

    from sgdlab.steppers._numba_kernels import activate, exp_nonpos32

    x = np.linspace(-87.33, 0.0, 2_000_001, dtype=np.float32)
    got = np.array([exp_nonpos32(v) for v in x[::1000]], dtype=np.float32)  # the scalar function
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(got - exact[::1000]) / np.spacing(exact[::1000].astype(np.float32))
    assert ulps.max() <= 1.0
    z = np.concatenate([-x, x])  # the vectorized loop, through the sigmoid: sigma(z) = e^z / (1 + e^z), z <= 0
    a = z.copy()
    activate(a, 0, len(a), 0)
    exact_sigmoid = expit(z.astype(np.float64))
    # e^z (1 ulp), 1 + e^z, the division and, for z < 0, the product e^z s (half an ulp each): 2.5 ulps at most
    assert (np.abs(a - exact_sigmoid) / np.spacing(exact_sigmoid.astype(np.float32))).max() <= 2.5
    assert exp_nonpos32(np.float32(-87.4)) == 0.0 and exp_nonpos32(np.float32(-np.inf)) == 0.0
    assert exp_nonpos32(np.float32(0.0)) == 1.0
    assert np.isnan(exp_nonpos32(np.float32(np.nan)))  # a NaN goes on (divergence is seen), as with np.exp
    nan = np.array([np.nan, 1.0], np.float32)
    activate(nan, 0, 2, 0)
    assert np.isnan(nan[0]) and nan[1] == np.float32(expit(1.0))


def test_blas_threads_follow_the_product_size_and_are_restored():
    from threadpoolctl import threadpool_info

    from sgdlab.steppers.threads import MULTI_THREAD_MIN_MACS, blas_threads, largest_product

    def numpy_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = numpy_threads()
    sizes = (784, 100, 10)
    assert largest_product(sizes, 10) == 10 * 784 * 100 < MULTI_THREAD_MIN_MACS
    with blas_threads(sizes, 10):
        assert set(numpy_threads().values()) == {1}  # small products: every BLAS library on one thread
    assert numpy_threads() == before
    big = MULTI_THREAD_MIN_MACS // (784 * 100) + 1
    with blas_threads(sizes, big):
        after = numpy_threads()
        assert all(after[k] == before[k] for k in after if "scipy.libs" not in k)  # NumPy's BLAS keeps its threads
    assert numpy_threads() == before


def test_callbacks_may_be_one_callable_or_any_iterable(toy):
    X, y = toy
    seen = []
    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, callbacks=seen.append)
    sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, callbacks=(cb for cb in [seen.append]))
    assert [r["epoch"] for r in seen] == [0, 1, 0, 1]
    with pytest.raises(TypeError, match="callbacks must be a list"):
        sgdlab.fit(sgdlab.Network([5, 4, 3], seed=0), X, y, epochs=1, callbacks=3)


def test_data_on_disk_and_in_memory_take_the_same_stepper(tmp_path, toy):
    """Same stepper, same arithmetic: training from disk stays bit-identical to training in memory."""
    from sgdlab.data import open_npy
    from sgdlab.steppers.fused import FUSED_MAX_BATCH

    X, y = toy
    X = np.tile(X, (4, 1)).astype(np.float32)
    y = np.tile(y, 4)
    np.save(tmp_path / "X.npy", X)
    for m in (1, 10, FUSED_MAX_BATCH, FUSED_MAX_BATCH + 1):  # (batch GD on disk: the chunked stepper)
        chosen = [sgdlab.fit(sgdlab.Network([5, 4, 3]), data, y, batch_size=m, epochs=1).config["stepper"]
                  for data in (X, open_npy(tmp_path / "X.npy"))]
        assert chosen[0] == chosen[1], (m, chosen)


def test_compiled_on_data_on_disk_is_bit_identical_to_in_memory(tmp_path, toy, monkeypatch, kernel):
    """Rows on disk are gathered a few batches at a time by the rows kernel (7 rows here, to cross many
    gathers), batch by batch through the background reader by the BLAS kernel."""
    from sgdlab.data import open_npy
    from sgdlab.steppers import compiled

    X, y = toy
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    monkeypatch.setattr(compiled, "GATHER_ROWS", 7)
    runs = []
    for data in (X.astype(np.float32), open_npy(tmp_path / "X.npy")):
        net = sgdlab.Network([5, 4, 3], seed=0)
        h = sgdlab.fit(net, data, y, batch_size=2, epochs=2, seed=1, momentum=0.5, stepper="compiled")
        runs.append((net.numpy_params(), h["train_cost"]))
    assert params_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


# ----------------------------------------------------------------- the buffered stepper (big batches)
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(a.values()) or "default")
@pytest.mark.parametrize("opt", OPTS, ids=["sgd", "momentum-schedule", "nesterov-decay", "decay"])
@pytest.mark.parametrize("dtype,batch_size,big_arrays", [("float64", 16, False), ("float32", 40, False),
                                                          ("float32", 16, False), ("float64", 16, True),
                                                          ("float64", 40, True)])
def test_buffered_agrees_with_reference(toy, arch, opt, dtype, batch_size, big_arrays, monkeypatch):
    """Same updates as the reference chain, to rounding: batches of 16 (40 % 16 leaves a short last batch
    in the same buffers) and the full batch (laid out column-major); big_arrays forces the in-place
    activations' big-array forms."""
    from sgdlab import activations

    if big_arrays:
        monkeypatch.setattr(activations, "INPLACE_SIGMOID_MIN", 0)
    ref, h_ref = trained(toy, "reference", dtype, arch, opt, batch_size)
    net, h = trained(toy, "buffered", dtype, arch, opt, batch_size)
    assert h.config["stepper"] == "buffered"
    full = batch_size == len(toy[0])
    assert h.config["stepper_info"].get("layout") == ("column-major" if full else None)
    sigmoid = "sigmoid" in (net.arch.activation.name, net.arch.output_activation.name)
    compiled = dtype == "float32" and sigmoid and importlib.util.find_spec("numba") is not None
    assert h.config["stepper_info"].get("elementwise") == ("compiled" if compiled else None)
    np.testing.assert_allclose([u["batch_cost"] for u in h.updates], [u["batch_cost"] for u in h_ref.updates],
                               rtol=TOL[dtype], atol=TOL[dtype])
    assert_close(net.params, ref.params, TOL[dtype])
    # and in blocks of whole epochs (no per-update records), where an update follows another in one call
    nets = {}
    for name in ("reference", "buffered"):
        nets[name] = sgdlab.Network([5, 6, 4, 3], seed=7, dtype=dtype, **arch)
        sgdlab.fit(nets[name], toy[0], toy[1], batch_size=batch_size, epochs=3, seed=2, stepper=name, **opt)
    assert_close(nets["buffered"].params, nets["reference"].params, TOL[dtype])


def test_batch_gd_runs_column_major_in_buffers_of_that_layout(toy, monkeypatch):
    """The buffered stepper lays batch GD's rows out column-major once (equal values) and every buffer
    of the pass follows: the products' outputs, the f' scratch and the first layer's gradient."""
    from sgdlab import kernels
    from sgdlab.steppers.buffered import BufferedStepper, column_major

    X = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    for rows in (1, 3, 64):
        F = column_major(X, rows)
        assert F.flags.f_contiguous and np.array_equal(F, X) and F.dtype == X.dtype
    assert column_major(F) is F  # already column-major: no copy
    assert kernels.layout(F) == "F" and kernels.layout(X) == "C"
    assert kernels.layout(F[:1]) == "C" and kernels.layout(np.zeros(3)) == "C"  # one row: either

    made = []
    real_run = BufferedStepper.run

    def run(self, state, batches, etas, want_costs):
        out = real_run(self, state, batches, etas, want_costs)
        made.extend((key, kernels.layout(b)) for key, b in self.work.items())
        return out

    monkeypatch.setattr(BufferedStepper, "run", run)
    net = sgdlab.Network([5, 6, 4, 3], seed=7, dtype="float64")
    h = sgdlab.fit(net, toy[0], toy[1], method="batch", epochs=2, stepper="buffered", momentum=0.5)
    assert h.config["stepper_info"]["layout"] == "column-major" and h.config["stepper_info"]["layout_seconds"] >= 0
    keys = {key for key, _ in made}
    assert {("z", 0), ("z", 1), ("z", 2), ("d", 1), ("d", 2), ("tmp", 1), ("G", 0), ("G", 2)} <= keys
    # the layers above the first keep their gradients row-major, as their weights (faster on narrow layers)
    assert {order for key, order in made if key[0] != "G" or key[1] == 0} == {"F"}
    assert {order for key, order in made if key[0] == "G" and key[1] > 0} == {"C"}
    # mini-batches stay row-major (their rows are gathered, one batch at a time)
    h = sgdlab.fit(net, toy[0], toy[1], batch_size=16, epochs=1, stepper="buffered")
    assert "layout" not in h.config["stepper_info"]


def test_batch_gd_reads_memory_mapped_rows_where_they_are(tmp_path, toy):
    """A np.memmap handed to fit is not copied whole into memory for the column-major layout."""
    from sgdlab.steppers.buffered import memory_mapped

    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=toy[0].shape)
    X[:] = toy[0]
    assert memory_mapped(X) and memory_mapped(np.ascontiguousarray(X)) and memory_mapped(X[1:])
    assert not memory_mapped(np.array(X)) and not memory_mapped(toy[0])
    nets = []
    for data in (X, toy[0]):
        nets.append(sgdlab.Network([5, 6, 4, 3], seed=7, dtype="float64"))
        h = sgdlab.fit(nets[-1], data, toy[1], method="batch", epochs=2, stepper="buffered")
        assert h.config["stepper_info"].get("layout") == (None if data is X else "column-major")
    assert_close(nets[0].params, nets[1].params, 1e-12)  # the same updates, to rounding


def test_batch_gd_is_column_major_only_where_its_products_run_on_one_blas_thread(toy, monkeypatch):
    """Products big enough for NumPy's BLAS threads keep their setting: column-major on one thread,
    row-major on two (where the layout gains nothing, measured)."""
    from threadpoolctl import threadpool_limits

    from sgdlab.steppers import threads

    net = sgdlab.Network([5, 6, 4, 3], seed=7)
    monkeypatch.setattr(threads, "MULTI_THREAD_MIN_MACS", 1)  # every product counts as big
    if threads.products_threads(net.sizes, 40) is None:
        pytest.skip("threadpoolctl does not see NumPy's BLAS")
    for n, layout in ((2, None), (1, "column-major")):
        with threadpool_limits(n, user_api="blas"):
            assert threads.products_threads(net.sizes, 40) == n
            h = sgdlab.fit(net, toy[0], toy[1], method="batch", epochs=1, stepper="buffered")
        assert h.config["stepper_info"].get("layout") == layout, n


def test_buffered_is_chosen_above_the_fused_range_and_allocates_no_batch_per_update(monkeypatch):
    import tracemalloc

    from sgdlab.steppers import compiled
    from sgdlab.steppers.fused import FUSED_MAX_BATCH

    # the compiled stepper's BLAS kernel takes these batches where it can run; here as where it cannot
    monkeypatch.setattr(compiled, "gemm_address", lambda dtype: None)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((512, 20)), rng.integers(0, 3, 512)
    net = sgdlab.Network([20, 200, 3], seed=0)
    m = 4 * FUSED_MAX_BATCH
    h = sgdlab.fit(net, X, y, batch_size=m, epochs=1, eval_train=False)
    assert h.config["stepper"] == "buffered"
    assert sgdlab.fit(net, X, y, batch_size=m, epochs=1, momentum=0.9).config["stepper"] == "buffered"
    batch_array = m * 200 * 4  # one float32 (m, 200) intermediate

    class PeakAfterFirstEpoch(sgdlab.Callback):
        def on_epoch_end(self, r):
            if r["epoch"] == 1:  # the buffers exist now: measure the second epoch's updates alone
                tracemalloc.reset_peak()
                self.base = tracemalloc.get_traced_memory()[0]

    for stepper, small in (("buffered", True), ("reference", False)):
        tracemalloc.start()
        probe = PeakAfterFirstEpoch()
        sgdlab.fit(net, X, y, batch_size=m, epochs=2, eval_train=False, stepper=stepper, callbacks=[probe])
        peak = tracemalloc.get_traced_memory()[1] - probe.base
        tracemalloc.stop()
        assert (peak < batch_array) == small, (stepper, peak)


def test_compiled_sigmoid_passes_are_exact_to_ulps_and_saturate_as_numpy():
    """The buffered stepper's compiled float32 sigmoid (``_numba_kernels.sigmoid32``) over 480,000 points of
    [-120, 120] and the extremes, through its vectorised loop: within 2 eps of the exact sigmoid, relative, where
    it is a normal float32 (e^-z within 1 ulp, then 1 + e and the division half an ulp each), as NumPy's passes
    are; 0 and 1
    exactly where they saturate, and below the normal range at most one subnormal's worth (1.2e-38) from
    them; a NaN stays NaN wherever it stands in the loop. d * sigma' equals NumPy's passes bit for bit."""
    pytest.importorskip("numba")
    from scipy.special import expit

    from sgdlab.activations import ACTIVATIONS
    from sgdlab.steppers._numba_kernels import sigmoid32, sigmoid_times_grad32

    z = np.linspace(-120, 120, 240_001).astype(np.float32)
    z = np.concatenate([z, [-1e30, 1e30, 0.0, -0.0, np.inf, -np.inf], z[::-1]]).astype(np.float32)
    got, numpy_ = z.copy(), z.copy()
    sigmoid32(got)
    ACTIVATIONS["sigmoid"].fn_inplace(numpy_)
    exact = expit(z.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    for a in (got, numpy_):  # measured: 1.15 eps compiled, 1.72 eps NumPy's passes
        assert (np.abs(a - exact)[normal] / exact[normal]).max() <= 2 * np.finfo(np.float32).eps
    assert np.abs(got - numpy_)[~normal].max() <= np.finfo(np.float32).tiny
    assert np.array_equal(got[z >= 88], numpy_[z >= 88]) and np.all(got[z >= 88] == 1.0)
    assert np.all(got[z <= -89] == 0.0) and np.all(numpy_[z <= -89] == 0.0)
    assert got[240_003] == got[240_004] == 0.5
    for at in (0, 5, 8, 13, 1_000, 1_999):
        w = np.linspace(-3, 3, 2_000, dtype=np.float32)
        w[at] = np.nan
        sigmoid32(w)
        assert np.isnan(w[at]) and np.isnan(w).sum() == 1, at

    rng = np.random.default_rng(0)
    d, a = rng.normal(size=10_001).astype(np.float32), rng.random(10_001, dtype=np.float32)
    mine, theirs = d.copy(), d.copy()
    sigmoid_times_grad32(mine, a)
    ACTIVATIONS["sigmoid"].times_grad(theirs, a, np.empty_like(a))
    assert np.array_equal(mine, theirs)


def test_compiled_sigmoid_applies_to_float32_sigmoids_and_leaves_strided_arrays_to_numpy(monkeypatch):
    """``compiled_sigmoid`` swaps in the compiled passes for float32 sigmoid layers only; an array that is not
    contiguous (no flat view: a copy would be written and lost) takes NumPy's passes, in place."""
    pytest.importorskip("numba")
    from sgdlab.steppers import buffered

    sig = sgdlab.Network([3, 4, 2], dtype="float32").arch
    for arch, dtype in ((sig, "float64"), (sgdlab.Network([3, 4, 2], activation="relu", output_activation="identity",
                                                         dtype="float32").arch, "float32")):
        assert buffered.compiled_sigmoid(arch, dtype) == (arch, {})
    compiled, info = buffered.compiled_sigmoid(sig, "float32")
    assert info["elementwise"] == "compiled" and info["elementwise_compile_seconds"] >= 0
    assert compiled.activation.fn_inplace is not sig.activation.fn_inplace
    assert compiled.output_activation.fn is not sig.output_activation.fn
    rng = np.random.default_rng(1)
    tol = dict(rtol=3 * np.finfo(np.float32).eps, atol=np.finfo(np.float32).tiny)
    for order in ("C", "F"):
        Z = np.asarray(rng.normal(0, 5, (64, 30)), dtype=np.float32, order=order)
        for cut in ((slice(None), slice(None)), (slice(0, -1), slice(None)), (slice(None), slice(None, None, 2))):
            whole = Z.copy(order="K")
            view = whole[cut]  # the array itself, then views that are not contiguous
            want = view.copy()
            sig.activation.fn_inplace(want)
            compiled.activation.fn_inplace(view)  # written where it lies
            np.testing.assert_allclose(whole[cut], want, **tol)
            logits = Z[cut]
            fresh = compiled.output_activation.fn(logits, np)
            assert np.array_equal(Z[cut], logits)  # the logits are kept
            np.testing.assert_allclose(fresh, want, **tol)
            d = np.asarray(rng.normal(size=Z.shape), np.float32, order=order)
            mine, theirs = d.copy(order="K"), d.copy(order="K")
            compiled.activation.times_grad(mine[cut], want, np.empty(want.shape, np.float32))
            sig.activation.times_grad(theirs[cut], want, np.empty(want.shape, np.float32))
            assert np.array_equal(mine, theirs)
    monkeypatch.setattr(buffered, "numba_available", lambda: False)
    assert buffered.compiled_sigmoid(sig, "float32") == (sig, {})


def test_sigmoid_in_place_matches_expit_and_saturates_without_warnings():
    import warnings

    from scipy.special import expit

    from sgdlab.activations import ACTIVATIONS, INPLACE_SIGMOID_MIN

    z = np.concatenate([np.linspace(-120, 120, INPLACE_SIGMOID_MIN), [-1e30, 1e30, 0.0]]).astype(np.float32)
    a = z.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ACTIVATIONS["sigmoid"].fn_inplace(a)
        fresh = ACTIVATIONS["sigmoid"].fn(z, np)  # the output layer's form: a new array, z kept
    want = expit(z)
    for got in (a, fresh):
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(np.float32).eps, atol=0)  # a few roundings apart
        assert got[-3] == 0.0 and got[-2] == 1.0 and got[-1] == 0.5
    assert ACTIVATIONS["sigmoid"](0.0) == 0.5  # scalars still work


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_aligned_zeros_start_on_a_cache_line(dtype):
    from sgdlab.steppers.compiled import aligned_zeros

    for n in (1, 7, 78_510, 300_000):  # (an empty array points anywhere)
        a = aligned_zeros(n, dtype)
        assert a.ctypes.data % 64 == 0 and a.shape == (n,) and a.dtype == dtype and not a.any()
        a[:] = 1  # writable


def test_weights_are_row_major_after_a_transposed_fit_whichever_way_it_ends():
    """During a batch-1 fit on transposed weights net.params[0][0] is a column-major view; the copies taken of
    it (the last good parameters, the best ones) are row-major, so a fit that diverges, or whose best weights
    are restored, leaves row-major arrays too, and the network keeps no view of the stepper's arrays."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((40, 83)), rng.integers(0, 3, 40)

    def row_major(net):
        return all(W.flags.c_contiguous and W.flags.owndata and b.flags.owndata for W, b in net.params)

    net = sgdlab.Network([83, 6, 3], seed=1)
    h = sgdlab.fit(net, X, y, batch_size=1, stepper="compiled", epochs=3, lr=0.3)
    assert h.config["stepper_info"]["transposed"] is True and row_major(net)
    net = sgdlab.Network([83, 6, 3], seed=1, activation="identity", output_activation="identity")
    with pytest.raises(sgdlab.DivergenceError, match="from the end of epoch 1"):  # epoch 1 good, then NaN
        sgdlab.fit(net, X, y, batch_size=1, stepper="compiled", epochs=6, lr=lambda t: 1e3 if t > 40 else 0.01)
    assert row_major(net) and all(np.all(np.isfinite(W)) for W, _ in net.params)
    net = sgdlab.Network([83, 6, 3], seed=1)
    stop = sgdlab.callbacks.EarlyStopping("val_cost", patience=1, restore_best=True, net=net)
    h = sgdlab.fit(net, X, y, batch_size=1, stepper="compiled", epochs=20, lr=3.0, validation=(X[:10], y[:10]),
                   callbacks=[stop])
    assert len(h.epochs) < 21 and stop.best_params is not None and row_major(net)  # stopped, best restored


def test_kernels_use_512_bit_vectors_where_the_cpu_has_them():
    """``wide_vectors`` asks LLVM, for one function, for the 512-bit registers it otherwise leaves unused on
    CPUs with AVX-512; where the CPU has none it changes nothing (the same code as without it)."""
    numba = pytest.importorskip("numba")
    import llvmlite.binding as llvm

    from sgdlab.steppers._numba_kernels import sgd_column_pass

    # a copy without numba's cache (cached code shows no asm), its options otherwise
    options = {k: v for k, v in sgd_column_pass.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(sgd_column_pass.py_func)
    fresh(np.zeros((3, 40), np.float32), np.zeros(40, np.float32), np.zeros(40, np.float32), np.zeros(3, np.float32),
          np.zeros(3, np.float32))
    asm = "".join(fresh.inspect_asm().values())
    if "+avx512f" in llvm.get_host_cpu_features().flatten():
        assert "zmm" in asm
    else:
        assert "zmm" not in asm
