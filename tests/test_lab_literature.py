"""The lab's literature experiments: frontier, lr-batch, sharpness, gradient-norms; and the exact HVP."""

import numpy as np
import pytest

import sgdlab
from sgdlab.lab import hessian

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
COST_OUTPUT = (("quadratic", None), ("quadratic", "identity"), ("quadratic", "tanh"), ("quadratic", "softmax"),
               ("cross_entropy", "sigmoid"), ("cross_entropy", "softmax"))


def _problem(hidden, cost, out, seed=3):
    rng = np.random.default_rng(seed)
    net = sgdlab.Network([5, 4, 3, 3], activation=hidden, output_activation=out, cost=cost, seed=seed, dtype="float64")
    # random biases: with zero biases an example whose relu units are all off sits exactly on a kink
    net.params = [(W, rng.standard_normal(b.shape)) for W, b in net.params]
    X = rng.standard_normal((13, 5))
    y = rng.integers(0, 3, 13)
    return net, X, y, rng.standard_normal(net.n_params)


# ------------------------------------------------------------------ Hessian-vector products
@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_hvp_matches_central_differences_of_the_gradient(hidden, cost, out):
    """Central differences err by O(eps^2) (truncation) + O(1e-16/eps) (rounding): ~1e-8 at eps = 1e-4."""
    net, X, y, v = _problem(hidden, cost, out)
    exact, fd = hessian.hvp_flat(net, X, y, v), hessian.finite_difference_hvp(net, X, y, v, eps=1e-4)
    assert np.linalg.norm(exact - fd) <= 1e-6 * np.linalg.norm(fd) + 1e-12


@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_hvp_matches_pytorch_double_backward(hidden, cost, out):
    torch = pytest.importorskip("torch")
    net, X, y, v = _problem(hidden, cost, out, seed=5)
    Y = np.eye(3)[y]
    flat0 = torch.tensor(hessian.flat(net.params), requires_grad=True)
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z,
         "softmax": lambda z: torch.softmax(z, dim=1)}

    def C(theta):
        a, i, last = torch.tensor(X), 0, len(net.params) - 1
        for l, (W, b) in enumerate(net.params):
            nw, nb = W.size, b.size
            z = a @ theta[i:i + nw].reshape(W.shape) + theta[i + nw:i + nw + nb]
            i += nw + nb
            a = f[(out or "sigmoid") if l == last else hidden](z)
        Yt = torch.tensor(Y)
        if cost == "quadratic":
            return 0.5 * ((a - Yt) ** 2).sum() / len(X)
        if out == "sigmoid":  # from the logits, as sgdlab computes it
            return torch.nn.functional.binary_cross_entropy_with_logits(z, Yt, reduction="sum") / len(X)
        return -(Yt * torch.log_softmax(z, dim=1)).sum() / len(X)

    _, Hv = torch.autograd.functional.hvp(C, flat0, torch.tensor(v))
    np.testing.assert_allclose(hessian.hvp_flat(net, X, y, v), Hv.numpy(), rtol=1e-8, atol=1e-12)


def test_hvp_is_linear_symmetric_and_power_iteration_finds_the_top_eigenvalue():
    net, X, y, _ = _problem("sigmoid", "quadratic", None)
    H = np.array([hessian.hvp_flat(net, X, y, e) for e in np.eye(net.n_params)])
    assert np.abs(H - H.T).max() <= 1e-12 * np.abs(H).max()
    eig = np.linalg.eigvalsh(H)
    top = hessian.top_eigenvalue(net, X, y, iters=2000, tol=1e-10)
    assert top["converged"]
    assert top["lambda_max"] == pytest.approx(eig[-1], rel=1e-6)


def test_power_iteration_shifts_when_the_largest_magnitude_is_negative():
    """A symmetric operator whose dominant eigenvalue is negative: lambda_max is still the top one."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = Q @ np.diag([-9.0, -1.0, 0.5, 1.0, 2.0, 3.0]) @ Q.T
    top = hessian.power_iteration(lambda v: A @ v, 6, iters=5000, tol=1e-13)
    assert top["converged"] and top["lambda_max"] == pytest.approx(3.0, rel=1e-6)
    assert hessian.power_iteration(lambda v: -A @ v, 6, iters=5000, tol=1e-13)["lambda_max"] == pytest.approx(9.0)


def test_hvp_refuses_mismatched_vectors():
    net, X, y, v = _problem("sigmoid", "quadratic", None)
    with pytest.raises(ValueError, match="parameters"):
        hessian.hvp_flat(net, X, y, v[:-1])
