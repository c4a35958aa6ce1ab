"""Backend = namespace + device + sync(): device placement through network, data, checkpoints, pickling, CLI.

Runs on the CPU with PyTorch's CPU build standing in for the device path; the CUDA checks are in
test_gpu.py, marked ``gpu``.
"""

import pickle
import warnings

import numpy as np
import pytest

from sgdlab import Network, checkpoint, fit
from sgdlab.backend import Backend, BackendUnavailable, backend_of, gpu_backend, resolve_backend, visible_gpu_backends
from sgdlab.train import TrainState, _TrainingData

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
no_gpu = pytest.mark.skipif(CUDA, reason="checks the error raised where no CUDA GPU is visible")


def test_resolve_numpy_and_torch_on_the_cpu():
    b = resolve_backend("numpy")
    assert (b.name, b.device, b.is_gpu) == ("numpy", "cpu", False)
    t = resolve_backend("torch", "cpu")
    assert (t.name, t.device) == ("torch", "cpu")
    assert resolve_backend(t) is t
    assert resolve_backend(np).name == "numpy"
    assert resolve_backend("numpy", "auto").device == "cpu"
    b.sync(), t.sync()  # nothing pending on the CPU: returns


@no_gpu
def test_auto_falls_back_to_the_cpu_without_a_gpu():
    assert resolve_backend("torch", "auto").device == "cpu"
    assert gpu_backend("auto").name == "numpy"
    assert visible_gpu_backends() == []


@pytest.mark.parametrize("backend, device, match", [
    ("numpy", "cuda", "CPU only"), ("array_api_strict", "cuda:0", "CPU only"), ("cupy", "cpu", "GPU only")])
def test_impossible_pairs_name_the_alternative(backend, device, match):
    with pytest.raises(BackendUnavailable, match=match) as e:
        resolve_backend(backend, device)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ImportError)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3, "CPU"])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_backend("torch", device)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        resolve_backend("jax")


@no_gpu
def test_a_missing_gpu_says_what_to_install():
    with pytest.raises(BackendUnavailable, match="CUDA build of PyTorch"):
        resolve_backend("torch", "cuda")
    with pytest.raises(BackendUnavailable, match=r'pip install "\.\[gpu\]"'):
        gpu_backend("cuda")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        Network([2, 2], backend="torch", device="cuda")


def test_asarray_converts_on_the_host_and_places_once():
    t = resolve_backend("torch", "cpu")
    a = t.asarray(np.arange(6, dtype=np.float64).reshape(2, 3), "float32")
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert t.asarray(a) is a or t.asarray(a).data_ptr() == a.data_ptr()  # already there: no copy
    assert t.asarray(a, torch.float64).dtype == torch.float64
    assert t.asarray([1, 2]).dtype == torch.int64
    assert backend_of(a).name == "torch" and backend_of(np.ones(2)).name == "numpy"
    s = resolve_backend("array_api_strict")
    assert s.asarray([1.0, 2.0], "float32").dtype == s.xp.float32


def test_backend_pickles_by_name_and_device():
    t = resolve_backend("torch", "cpu")
    u = pickle.loads(pickle.dumps(t))
    assert isinstance(u, Backend) and (u.name, u.device) == ("torch", "cpu")


def test_network_on_a_torch_device():
    net = Network([4, 3, 2], seed=0, backend="torch", device="cpu")
    ref = Network([4, 3, 2], seed=0)
    assert net.device == "cpu" and net.backend.name == "torch"
    for (W, b), (Wr, br) in zip(net.params, ref.params, strict=True):
        assert isinstance(W, torch.Tensor) and W.device.type == "cpu" and W.dtype == torch.float32
        np.testing.assert_array_equal(W.numpy(), Wr)  # same seed, same initial weights on every backend
        np.testing.assert_array_equal(b.numpy(), br)
    assert "backend='torch', device='cpu'" in repr(net)
    assert "backend" not in repr(ref)


def test_training_data_is_placed_on_the_network_device_once():
    net = Network([4, 3, 2], seed=0, backend="torch", device="cpu")
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4)), rng.integers(0, 2, 20)
    data = _TrainingData.prepare(net, X, y, validation=(X[:5], y[:5]))
    for a in (data.X, data.T, data.labels, *data.val):
        assert isinstance(a, torch.Tensor) and str(a.device) == "cpu"
    Xb, Tb = data.batch(np.array([3, 1]))
    np.testing.assert_allclose(Xb.numpy(), X[[3, 1]].astype(np.float32))
    # inputs given as torch tensors are accepted as they are
    p = net.predict(torch.from_numpy(X))
    assert isinstance(p, torch.Tensor) and p.shape == (20, 2)


def test_pickling_keeps_backend_device_and_weights():
    net = Network([4, 3, 2], seed=1, backend="torch", device="cpu")
    back = pickle.loads(pickle.dumps(net))
    assert back.backend.name == "torch" and back.device == "cpu"
    for (W, b), (W2, b2) in zip(net.params, back.params, strict=True):
        assert torch.equal(W, W2) and torch.equal(b, b2)


@no_gpu
def test_unpickling_a_gpu_network_without_a_gpu_lands_on_the_cpu_with_a_warning():
    net = Network([3, 2], seed=0, backend="torch", device="cpu")
    state = net.__getstate__()
    state["device"] = "cuda:0"
    back = Network.__new__(Network)
    with pytest.warns(RuntimeWarning, match="placed on torch on the CPU"):
        back.__setstate__(state)
    assert back.device == "cpu" and isinstance(back.params[0][0], torch.Tensor)


def test_checkpoint_loads_onto_a_torch_device(tmp_path):
    net = Network([4, 3, 2], seed=0)
    checkpoint.save(tmp_path / "w.safetensors", net)
    t = checkpoint.load(tmp_path / "w.safetensors", "torch", "cpu")
    assert t.backend.name == "torch" and t.device == "cpu"
    for (W, _), (Wr, _) in zip(t.params, net.params, strict=True):
        np.testing.assert_array_equal(W.numpy(), Wr)


def test_training_checkpoint_round_trips_momentum_buffers_as_device_tensors(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), rng.integers(0, 2, 30)
    net = Network([4, 3, 2], seed=0, backend="torch", device="cpu")
    state = TrainState()
    fit(net, X, y, batch_size=7, lr=0.5, momentum=0.9, epochs=1, seed=0, state=state, eval_train=False)
    checkpoint.save_training(tmp_path / "c.safetensors", net, state)
    net2, state2, _ = checkpoint.load_training(tmp_path / "c.safetensors", "torch", "cpu")
    velocity = [v for v in _tensors(state2.opt_state)]
    assert velocity and all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in velocity)
    for a, b in zip(_tensors(state.opt_state), velocity, strict=True):
        assert torch.equal(a, b)
    # and training continues from there exactly as without the interruption
    fit(net, X, y, batch_size=7, lr=0.5, momentum=0.9, epochs=2, seed=0, state=state, eval_train=False)
    fit(net2, X, y, batch_size=7, lr=0.5, momentum=0.9, epochs=2, seed=0, state=state2, eval_train=False)
    for (W, b), (W2, b2) in zip(net.params, net2.params, strict=True):
        assert torch.equal(W, W2) and torch.equal(b, b2)


def _tensors(tree):
    if isinstance(tree, (list, tuple)):
        return [t for x in tree for t in _tensors(x)]
    return [tree] if isinstance(tree, torch.Tensor) else []


def test_cli_device_cpu_trains(capsys):
    from sgdlab.cli import main

    assert main(["train", "--device", "cpu", "--epochs", "1", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out


@no_gpu
def test_cli_device_cuda_without_a_gpu_is_one_clear_line(capsys):
    from sgdlab.cli import main

    assert main(["train", "--device", "cuda", "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sgdlab: error: no GPU backend for device='cuda'")
    assert 'pip install ".[gpu]"' in err[0]


def test_warnings_free_construction():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Network([2, 2], backend="torch", device="auto")
