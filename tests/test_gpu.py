"""The torch stepper (the GPU step) against the NumPy reference, on the CPU and, with ``--device cuda``, on a GPU.

PyTorch's CPU build runs the same device code path in CI: the update that a CUDA graph captures
(``TorchStep.indexed_update``) runs eagerly there. Tests marked ``gpu`` need a CUDA GPU and skip
cleanly without one; ``python -m pytest tests/test_gpu.py --device cuda`` runs the device-generic
tests on the GPU as well.

Tolerances. float64 runs agree with NumPy's to 1e-12: the two compute the same sums in a different
order, so they differ by a few units of roundoff (2^-53 ~ 1.1e-16) times the terms summed. float32
runs agree to 2e-5 absolute: unit roundoff u = 2^-24 ~ 6e-8, an m-row sum can differ by up to ~m u
relative, and K updates accumulate that: with K <= 8 updates of m <= 16 rows on weights of size
<= 1, K m u ~ 8e-6 < 2e-5.
"""

import json

import numpy as np
import pytest

from sgdlab import Network, checkpoint, fit
from sgdlab.optim import apply_updates, sgd
from sgdlab.train import TrainState

torch = pytest.importorskip("torch")
from sgdlab.steppers import FULL_BATCH  # noqa: E402
from sgdlab.steppers.torch_step import TorchStep, graphs_enabled, index_matrix  # noqa: E402

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (PyTorch with CUDA)")
TOL = {"float64": 1e-12, "float32": 2e-5}


@pytest.fixture
def device(request):
    d = request.config.getoption("--device", default="cpu")
    if d.startswith("cuda") and not CUDA:
        pytest.skip("--device cuda given but no CUDA GPU is visible")
    return d


def problem(n=50, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = rng.integers(0, k, n)
    return X, y, np.eye(k)[y]


def reference_epoch(net, X, T, batches, etas, opt):
    """The plain chain on NumPy: gradient -> optimizer -> apply_updates; the batch cost before each update."""
    s, costs = opt.init(net.params), []
    for b, _eta in zip(batches, etas, strict=True):
        Xb, Tb = (X, T) if b is FULL_BATCH else (X[b], T[b])
        costs.append(net.cost(Xb, Tb))
        u, s = opt.update(net.gradient(Xb, Tb), s, net.params)
        net.params = apply_updates(net.params, u)
    return costs


def assert_params_close(torch_params, numpy_params, tol):
    for (W, b), (Wr, br) in zip(torch_params, numpy_params, strict=True):
        np.testing.assert_allclose(W.cpu().numpy(), Wr, rtol=0, atol=tol)
        np.testing.assert_allclose(b.cpu().numpy(), br, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.5, True, 0.1)])
@pytest.mark.parametrize("cost, out", [("quadratic", None), ("cross_entropy", "softmax")])
def test_torch_step_epoch_matches_numpy_reference(device, dtype, momentum, nesterov, weight_decay, cost, out):
    X, y, T = problem()
    kw = {"cost": cost, "output_activation": out, "dtype": dtype, "seed": 1}
    ref, net = Network([6, 5, 3], **kw), Network([6, 5, 3], backend="torch", device=device, **kw)
    Xt, Tt = net.backend.asarray(X, dtype), net.backend.asarray(T, dtype)
    step = TorchStep(net, Xt, Tt, 8, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, capacity=7,
                     graphs=False)
    order = np.random.default_rng(2).permutation(50)
    batches = [order[i:i + 8] for i in range(0, 50, 8)]  # six of 8 rows and a ragged one of 2
    etas = [0.5 / (1 + 0.1 * t) for t in range(len(batches))]  # a schedule: eta differs per update
    costs_ref = reference_epoch(ref, X, T, batches, etas, sgd(lambda t: etas[t], momentum, nesterov, weight_decay))
    with torch.no_grad():
        costs = step.run_block(batches, etas, want_costs=True)
    assert_params_close(step.params, ref.params, TOL[dtype])
    np.testing.assert_allclose(costs, costs_ref, rtol=0, atol=TOL[dtype])


def test_torch_step_full_batch_matches_reference(device):
    X, y, T = problem(n=40)
    ref, net = Network([6, 4, 3], seed=3, dtype="float64"), Network([6, 4, 3], seed=3, dtype="float64",
                                                                    backend="torch", device=device)
    step = TorchStep(net, net.backend.asarray(X, "float64"), net.backend.asarray(T, "float64"), 40, capacity=1,
                     graphs=False)
    batches, etas = [FULL_BATCH] * 3, [1.0, 0.5, 0.25]
    costs_ref = reference_epoch(ref, X, T, batches, etas, sgd(lambda t: etas[t]))
    with torch.no_grad():
        costs = step.run_block(batches, etas, want_costs=True)
    assert_params_close(step.params, ref.params, TOL["float64"])
    np.testing.assert_allclose(costs, costs_ref, rtol=0, atol=1e-12)


def test_torch_gradients_agree_with_numpy(device):
    """The array-API kernels on torch give NumPy's gradient; the stepper's g_W buffer holds it after an update."""
    X, y, T = problem(n=16)
    ref, net = Network([6, 5, 3], seed=4), Network([6, 5, 3], seed=4, backend="torch", device=device)
    for (gW, gb), (rW, rb) in zip(net.gradient(X, y), ref.gradient(X, y), strict=True):
        np.testing.assert_allclose(gW.cpu().numpy(), rW, rtol=0, atol=TOL["float32"] * 0.1)
        np.testing.assert_allclose(gb.cpu().numpy(), rb, rtol=0, atol=TOL["float32"] * 0.1)
    step = TorchStep(net, net.backend.asarray(X, "float32"), net.backend.asarray(T, "float32"), 16, graphs=False)
    with torch.no_grad():
        step.run_block([np.arange(16)], [0.1], want_costs=False)
    for gW, (rW, _) in zip(step.gW, ref.gradient(X, y), strict=True):
        np.testing.assert_allclose(gW.cpu().numpy(), rW, rtol=0, atol=TOL["float32"] * 0.1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fit_with_the_torch_stepper_matches_the_numpy_reference(device, momentum):
    X, y, _ = problem(n=60)
    ref = Network([6, 5, 3], seed=5, dtype="float64")
    net = Network([6, 5, 3], seed=5, dtype="float64", backend="torch", device=device)
    kw = {"batch_size": 16, "lr": 0.7, "momentum": momentum, "epochs": 2, "seed": 0, "record_updates": True,
          "eval_train": True}
    h_ref = fit(ref, X, y, stepper="reference", **kw)
    h = fit(net, X, y, **kw)
    assert h.config["stepper"] == "torch"
    assert_params_close(net.params, ref.params, 1e-12)
    np.testing.assert_allclose(h["train_cost"], h_ref["train_cost"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(h["mean_batch_cost"][1:], h_ref["mean_batch_cost"][1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose([u["batch_cost"] for u in h.updates], [u["batch_cost"] for u in h_ref.updates],
                               rtol=0, atol=1e-12)
    assert [u["update"] for u in h.updates] == list(range(1, 9))  # 4 batches (3 of 16, 1 of 12) x 2 epochs


def test_switching_between_torch_and_reference_steppers_keeps_momentum_and_step(device):
    X, y, _ = problem(n=48)
    kw = {"batch_size": 8, "lr": lambda t: 0.5 / (1 + t), "momentum": 0.9, "nesterov": True, "seed": 0,
          "eval_train": False}
    a = Network([6, 4, 3], seed=6, dtype="float64", backend="torch", device=device)
    b = Network([6, 4, 3], seed=6, dtype="float64", backend="torch", device=device)
    sa, sb = TrainState(), TrainState()
    fit(a, X, y, epochs=2, stepper="reference", state=sa, **kw)
    fit(b, X, y, epochs=1, stepper="torch", state=sb, **kw)
    fit(b, X, y, epochs=2, stepper="reference", state=sb, **kw)
    assert sa.step == sb.step == 12
    for (W, _), (W2, _) in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(W.cpu().numpy(), W2.cpu().numpy(), rtol=0, atol=1e-12)


def test_checkpoint_round_trip_mid_training_with_the_torch_stepper(tmp_path, device):
    X, y, _ = problem(n=40)
    kw = {"batch_size": 6, "lr": 0.4, "momentum": 0.8, "seed": 0, "eval_train": False}
    a = Network([6, 4, 3], seed=7, backend="torch", device=device)
    state = TrainState()
    fit(a, X, y, epochs=1, state=state, **kw)
    checkpoint.save_training(tmp_path / "c.safetensors", a, state)
    b, state_b, _ = checkpoint.load_training(tmp_path / "c.safetensors", "torch", device)
    assert b.params[0][0].device == a.params[0][0].device
    fit(a, X, y, epochs=3, state=state, **kw)
    fit(b, X, y, epochs=3, state=state_b, **kw)
    for (W, w), (W2, w2) in zip(a.params, b.params, strict=True):
        assert torch.equal(W, W2) and torch.equal(w, w2)


# ----------------------------------------------------------------- graph-capture code, CPU-testable parts
def test_index_matrix_stacks_only_full_batches():
    m = index_matrix([np.array([4, 0, 2]), np.array([1, 3, 5]), np.array([6])], 3)
    assert m.dtype == np.int64 and m.tolist() == [[4, 0, 2], [1, 3, 5]]
    assert index_matrix([FULL_BATCH], 3).shape == (0, 3)


def test_load_block_puts_order_and_etas_on_the_device_once(device):
    X, y, T = problem(n=20)
    net = Network([6, 4, 3], seed=0, backend="torch", device=device)
    step = TorchStep(net, net.backend.asarray(X, "float32"), net.backend.asarray(T, "float32"), 4, capacity=2,
                     graphs=False)
    batches = [np.array([0, 1, 2, 3]), np.array([7, 6, 5, 4]), np.array([9, 8, 11, 10]), np.array([12, 13])]
    k = step.load_block(batches, [0.1, 0.2, 0.3, 0.4])
    assert k == 3 and step.capacity >= 3  # grew from 2; the ragged batch is not in the matrix
    assert step.order[:3].cpu().tolist() == [b.tolist() for b in batches[:3]]
    np.testing.assert_allclose(step.etas[:3].cpu().numpy(), [0.1, 0.2, 0.3], rtol=1e-7)
    assert step.order.device == step.X.device and step.k.item() == 0
    with pytest.raises(ValueError, match="mixes"):
        step.load_block([FULL_BATCH, np.arange(4)], [0.1, 0.1])


def test_indexed_update_reads_row_k_and_advances_the_device_counter(device):
    """The captured body: gathers batch k into the static buffers, writes costs[k], k <- k + 1."""
    X, y, T = problem(n=12)
    net = Network([6, 4, 3], seed=0, dtype="float64", backend="torch", device=device)
    ref = Network([6, 4, 3], seed=0, dtype="float64")
    step = TorchStep(net, net.backend.asarray(X, "float64"), net.backend.asarray(T, "float64"), 3, capacity=4,
                     graphs=False)
    batches = [np.array([2, 5, 7]), np.array([0, 11, 3])]
    step.load_block(batches, [0.3, 0.6])
    buffers = (step.Xb.data_ptr(), step.Tb.data_ptr(), step.W[0].data_ptr())
    with torch.no_grad():
        step.indexed_update(want_cost=True, full=False)
        step.indexed_update(want_cost=True, full=False)
    assert step.k.item() == 2
    assert (step.Xb.data_ptr(), step.Tb.data_ptr(), step.W[0].data_ptr()) == buffers  # static addresses
    np.testing.assert_array_equal(step.Xb.cpu().numpy(), X[batches[1]])
    costs_ref = reference_epoch(ref, X, np.eye(3)[y], batches, [0.3, 0.6], sgd(lambda t: [0.3, 0.6][t]))
    np.testing.assert_allclose(step.costs[:2].cpu().numpy(), costs_ref, rtol=0, atol=1e-12)
    assert_params_close(step.params, ref.params, 1e-12)


def test_graphs_are_for_cuda_devices_only(monkeypatch):
    assert not graphs_enabled("cpu")
    assert graphs_enabled("cuda:0")
    monkeypatch.setenv("SGDLAB_CUDA_GRAPHS", "0")
    assert not graphs_enabled("cuda:0")
    X, y, T = problem(n=8)
    net = Network([6, 3], seed=0, backend="torch", device="cpu")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchStep(net, net.backend.asarray(X, "float32"), net.backend.asarray(T, "float32"), 4, graphs=True)


def test_the_torch_stepper_is_chosen_for_torch_networks_only():
    X, y, _ = problem(n=20)
    h = fit(Network([6, 3], seed=0, backend="torch", device="cpu"), X, y, epochs=1, eval_train=False)
    assert h.config["stepper"] == "torch" and h.config["stepper_info"]["device"] == "cpu"
    assert h.config["stepper_info"]["cuda_graphs"] == 0
    assert fit(Network([6, 3], seed=0), X, y, epochs=1, eval_train=False).config["stepper"] != "torch"
    with pytest.raises(ValueError, match="backend='torch'"):
        fit(Network([6, 3], seed=0), X, y, epochs=1, stepper="torch")


def test_bench_gpu_runs_its_cpu_smoke_mode(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    info = bench.main(["--device", "cpu", "--quick", "--n", "64", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["B"] for r in saved["rows"]] == [1, 10, 128, 1024, "full"]
    assert all(r["sgdlab_stepper"] == "torch" and r["sgdlab_s"] > 0 and r["eager_s"] > 0 for r in saved["rows"])
    assert saved["flop_per_example"] == 319600 and not saved["tf32"]
    assert isinstance(info["targets"], str) and "not judged" in info["targets"]


# ----------------------------------------------------------------- on a CUDA GPU only
@gpu
@needs_cuda
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_cuda_graph_epoch_matches_numpy_reference(momentum):
    X, y, _ = problem(n=60)
    ref = Network([6, 5, 3], seed=5, dtype="float64")
    net = Network([6, 5, 3], seed=5, dtype="float64", backend="torch", device="cuda")
    kw = {"batch_size": 16, "lr": 0.7, "momentum": momentum, "epochs": 2, "seed": 0, "record_updates": True}
    h_ref = fit(ref, X, y, stepper="reference", **kw)
    h = fit(net, X, y, **kw)
    assert h.config["stepper"] == "torch" and h.config["stepper_info"]["cuda_graphs"] >= 1
    assert_params_close(net.params, ref.params, 1e-12)
    np.testing.assert_allclose([u["batch_cost"] for u in h.updates], [u["batch_cost"] for u in h_ref.updates],
                               rtol=0, atol=1e-12)


@gpu
@needs_cuda
def test_cuda_graph_replay_equals_eager_on_the_gpu():
    X, y, T = problem(n=64)
    runs = []
    for graphs in (False, True):
        net = Network([6, 5, 3], seed=1, backend="torch", device="cuda")
        step = TorchStep(net, net.backend.asarray(X, "float32"), net.backend.asarray(T, "float32"), 8, capacity=8,
                         graphs=graphs)
        order = np.random.default_rng(0).permutation(64)
        with torch.no_grad():
            costs = step.run_block([order[i:i + 8] for i in range(0, 64, 8)], [0.5] * 8, want_costs=True)
        runs.append(([W.cpu().numpy() for W in step.W], costs))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)  # the same kernels in the same order: bitwise equal
    assert runs[0][1] == runs[1][1]


@gpu
@needs_cuda
def test_cuda_backend_sync_checkpoint_and_pickle(tmp_path):
    import pickle

    net = Network([4, 3, 2], seed=0, backend="torch", device="cuda")
    assert net.params[0][0].is_cuda
    net.backend.sync()
    checkpoint.save(tmp_path / "w.safetensors", net)
    assert checkpoint.load(tmp_path / "w.safetensors", "torch", "cuda").params[0][0].is_cuda
    assert pickle.loads(pickle.dumps(net)).params[0][0].is_cuda
    assert checkpoint.load(tmp_path / "w.safetensors", "torch", "cpu").params[0][0].device.type == "cpu"
