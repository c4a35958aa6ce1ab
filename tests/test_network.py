import itertools
import zlib

import numpy as np
import pytest

import sgdlab
from sgdlab.backend import to_numpy
from sgdlab.init import INITIALIZERS

from reference import mean_cost, mean_gradient

HIDDEN = ["sigmoid", "tanh", "relu", "identity"]
COST_OUTPUT = [("quadratic", "sigmoid"), ("quadratic", "softmax"), ("quadratic", "tanh"), ("quadratic", "relu"),
               ("quadratic", "identity"), ("cross_entropy", "sigmoid"), ("cross_entropy", "softmax")]


def targets(rng, n, k, cost, out):
    """Targets a cost/output pair can meet: one-hot rows for softmax, values in (0,1) else."""
    if out == "softmax":
        return np.eye(k)[rng.integers(0, k, n)]
    return rng.uniform(0.05, 0.95, (n, k))


def numeric_gradient(net, X, Y, eps=1e-6):
    """Central finite differences of net.cost, one parameter at a time."""
    grads = []
    for W, b in net.params:
        gs = []
        for p in (W, b):
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + eps
                up = net.cost(X, Y)
                p[i] = old - eps
                down = net.cost(X, Y)
                p[i] = old
                g[i] = (up - down) / (2 * eps)
            gs.append(g)
        grads.append(tuple(gs))
    return grads


def assert_grads_close(g1, g2, rtol=1e-6, atol=1e-8):
    assert len(g1) == len(g2)
    for (W1, b1), (W2, b2) in zip(g1, g2, strict=True):
        np.testing.assert_allclose(to_numpy(W1), to_numpy(W2), rtol=rtol, atol=atol)
        np.testing.assert_allclose(to_numpy(b1), to_numpy(b2), rtol=rtol, atol=atol)


CASES = [(h, c, o, i) for h, (c, o), i in itertools.product(HIDDEN, COST_OUTPUT, INITIALIZERS)
         if not ("relu" in (h, o) and i == "zeros")]  # z = 0 exactly: relu's kink, where f' is a convention


@pytest.mark.parametrize("hidden,cost,out,init", CASES)
def test_gradient_matches_finite_differences(hidden, cost, out, init):
    rng = np.random.default_rng(zlib.crc32(f"{hidden}-{cost}-{out}-{init}".encode()))
    net = sgdlab.Network([4, 3, 3], activation=hidden, output_activation=out, cost=cost, init=init,
                         seed=int(rng.integers(1000)), dtype="float64")
    X, Y = rng.standard_normal((6, 4)), targets(rng, 6, 3, cost, out)
    while "relu" in (hidden, out) and near_relu_kink(net, X):
        X = rng.standard_normal((6, 4))  # finite differences are only valid away from relu's kink at z = 0
    assert_grads_close(net.gradient(X, Y), numeric_gradient(net, X, Y), rtol=1e-5, atol=1e-8)


def near_relu_kink(net, X, margin=1e-3):
    a = X
    for W, b in net.params:
        z = a @ W + b
        if np.any(np.abs(z) < margin):
            return True
        a = np.maximum(z, 0) if net.activation.name == "relu" else net.activation(z)
    return False


@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_batched_gradient_is_mean_of_per_example_gradients(hidden, cost, out, backend):
    rng = np.random.default_rng(7)
    net = sgdlab.Network([5, 4, 3, 3], activation=hidden, output_activation=out, cost=cost, seed=3, dtype="float64",
                         backend=backend)
    X, Y = rng.standard_normal((11, 5)), targets(rng, 11, 3, cost, out)
    params = net.numpy_params()
    assert_grads_close(net.gradient(X, Y), mean_gradient(params, X, Y, hidden, out, cost), rtol=1e-9, atol=1e-12)
    assert net.cost(X, Y) == pytest.approx(mean_cost(params, X, Y, hidden, out, cost), rel=1e-10)


@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_gradient_matches_pytorch_autograd(hidden, cost, out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    net = sgdlab.Network([5, 4, 3], activation=hidden, output_activation=out, cost=cost, seed=5, dtype="float64")
    X, Y = rng.standard_normal((9, 5)), targets(rng, 9, 3, cost, out)
    P = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in net.params]
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z,
         "softmax": lambda z: torch.softmax(z, dim=1)}
    a, Yt = torch.tensor(X), torch.tensor(Y)
    for l, (W, b) in enumerate(P):
        a = f[out if l == len(P) - 1 else hidden](a @ W + b)
    if cost == "quadratic":
        C = 0.5 * ((a - Yt) ** 2).sum() / len(X)
    elif out == "sigmoid":
        C = torch.nn.functional.binary_cross_entropy(a, Yt, reduction="sum") / len(X)
    else:
        C = -(Yt * torch.log(a)).sum() / len(X)
    C.backward()
    assert net.cost(X, Y) == pytest.approx(C.item(), rel=1e-10)
    assert_grads_close(net.gradient(X, Y), [(W.grad.numpy(), b.grad.numpy()) for W, b in P], rtol=1e-9, atol=1e-12)


def test_quadratic_cost_is_exactly_the_definition():
    net = sgdlab.Network([3, 2], seed=0, dtype="float64")
    X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    Y = np.array([[0.0, 1.0], [1.0, 0.0]])
    a = net.predict(X)
    assert net.cost(X, Y) == pytest.approx(np.sum((Y - a) ** 2) / (2 * len(X)), rel=1e-14)


def test_cross_entropy_stays_finite_when_outputs_saturate():
    net = sgdlab.Network([1, 2], cost="cross_entropy", dtype="float64", init="zeros")
    W, b = net.params[0]
    W[...] = 1000.0  # a = sigmoid(1000) rounds to 1 exactly
    c = net.cost(np.array([[1.0]]), np.array([[0.0, 1.0]]))
    assert c == pytest.approx(1000.0, rel=1e-12)  # -ln(1 - sigmoid(1000)) = 1000 + O(e^-1000)


def test_params_layout_and_predict_shape():
    net = sgdlab.Network([784, 30, 10], seed=0)
    assert [(W.shape, b.shape) for W, b in net.params] == [((784, 30), (30,)), ((30, 10), (10,))]
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in net.params)
    assert net.predict(np.zeros((7, 784))).shape == (7, 10)
    assert net.n_params == 784 * 30 + 30 + 30 * 10 + 10


def test_no_hidden_layer_is_logistic_regression():
    rng = np.random.default_rng(0)
    net = sgdlab.Network([3, 1], cost="cross_entropy", seed=0, dtype="float64")
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    W, b = net.params[0]
    p = 1 / (1 + np.exp(-(X @ W + b)))
    np.testing.assert_allclose(net.predict(X), p, rtol=1e-12)
    gW, gb = net.gradient(X, y)[0]  # logistic regression: grad = X^T (p - y) / n
    np.testing.assert_allclose(gW, X.T @ (p - y[:, None]) / 20, rtol=1e-10)
    np.testing.assert_allclose(gb, np.mean(p - y[:, None], axis=0), rtol=1e-10)


@pytest.mark.parametrize("init", ["normal", "scaled", "glorot", "he"])
def test_random_inits_have_the_documented_scale(init):
    net = sgdlab.Network([400, 300, 10], init=init, seed=0, dtype="float64")
    W = net.params[0][0]
    expected = {"normal": 1.0, "scaled": 1 / np.sqrt(400), "glorot": np.sqrt(2 / 700), "he": np.sqrt(2 / 400)}[init]
    # std of 120,000 draws: relative standard error ~ 1/sqrt(2N) = 0.2%; allow 5 of those
    assert W.std() == pytest.approx(expected, rel=0.01)
    assert abs(W.mean()) < 5 * expected / np.sqrt(W.size)


def test_zeros_init_is_all_zero_and_random_is_not():
    assert all(not W.any() and not b.any() for W, b in sgdlab.Network([4, 3, 2], init="zeros").params)
    assert all(W.any() for W, _ in sgdlab.Network([4, 3, 2], seed=0).params)


def test_pairings_that_cannot_be_done_are_refused():
    for out in ("tanh", "relu", "identity"):
        with pytest.raises(ValueError, match="cross_entropy.*sigmoid.*softmax"):
            sgdlab.Network([2, 2], cost="cross_entropy", output_activation=out)
    with pytest.raises(ValueError, match="valid: sigmoid, tanh, relu, identity"):
        sgdlab.Network([2, 2, 2], activation="softmax")


@pytest.mark.parametrize("kwargs,match", [
    ({"sizes": [3]}, "at least two"), ({"sizes": [3, 0]}, "positive integer"), ({"sizes": "784"}, "sizes"),
    ({"activation": "swish"}, "valid: sigmoid"), ({"cost": "hinge"}, "valid: quadratic, cross_entropy"),
    ({"init": "orthogonal"}, "valid: normal, scaled"), ({"dtype": "float16"}, "valid: float32, float64"),
    ({"backend": "jax"}, "valid backends"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"sizes": [3, 2], **kwargs}
    with pytest.raises(ValueError, match=match):
        sgdlab.Network(args.pop("sizes"), **args)


def test_per_example_grad_norms_equal_explicit_gradients():
    rng = np.random.default_rng(3)
    for hidden, (cost, out) in itertools.product(HIDDEN, COST_OUTPUT):
        net = sgdlab.Network([4, 5, 3, 3], activation=hidden, output_activation=out, cost=cost, seed=1, dtype="float64")
        X, Y = rng.standard_normal((8, 4)), targets(rng, 8, 3, cost, out)
        explicit = [np.sqrt(sum(np.sum(gW ** 2) + np.sum(gb ** 2) for gW, gb in net.gradient(X[i:i + 1], Y[i:i + 1])))
                    for i in range(8)]
        np.testing.assert_allclose(net.per_example_grad_norms(X, Y), explicit, rtol=1e-10)


def test_integer_labels_are_one_hot_targets(toy):
    X, y = toy
    net = sgdlab.Network([5, 4, 3], seed=0, dtype="float64")
    assert_grads_close(net.gradient(X, y), net.gradient(X, np.eye(3)[y]), rtol=0, atol=0)
    assert net.cost(X, y) == net.cost(X, np.eye(3)[y])


def test_core_under_array_api_backends_matches_numpy(backend, toy):
    X, y = toy
    ref = sgdlab.Network(
        [5, 4, 3], activation="tanh", cost="cross_entropy", output_activation="softmax", seed=2, dtype="float64"
    )
    net = sgdlab.Network([5, 4, 3], activation="tanh", cost="cross_entropy", output_activation="softmax", seed=2,
                         dtype="float64", backend=backend)
    assert_grads_close(net.gradient(X, y), ref.gradient(X, y), rtol=1e-12, atol=1e-15)
    assert net.cost(X, y) == pytest.approx(ref.cost(X, y), rel=1e-12)
    np.testing.assert_allclose(to_numpy(net.predict(X)), ref.predict(X), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(net.per_example_grad_norms(X, y)), ref.per_example_grad_norms(X, y), rtol=1e-12)
    assert net.accuracy(X, y) == ref.accuracy(X, y)
