"""Curvature of the training cost: exact Hessian-vector products, the top eigenvalue, and B_noise.

H v for the Hessian H = d^2 C / dtheta^2 of the cost C over (X, Y), without forming H, by
Pearlmutter's R-operator (1994): R{f} = d/dr f(theta + r v) at r = 0, pushed through the forward
pass and then through backprop. With v = (V_l, c_l) for each layer's (W_l, b_l):

    forward      R{z_l} = R{a_{l-1}} W_l + a_{l-1} V_l + c_l,      R{a_l} = f'(z_l) * R{z_l},   R{a_0} = 0
    output       R{delta_L} = (d^2 C_x / dz_L^2) R{z_L}            (the cost's Hessian in the logits)
    backward     R{delta_l} = (R{delta_{l+1}} W_{l+1}^T + delta_{l+1} V_{l+1}^T) * f'(z_l)
                              + (delta_{l+1} W_{l+1}^T) * f''(z_l) * R{z_l}
    gradient     R{dC/dW_l} = (1/m) (R{a_{l-1}}^T delta_l + a_{l-1}^T R{delta_l}),   R{dC/db_l} = mean_rows R{delta_l}

and (R{dC/dW_l}, R{dC/db_l}) is exactly H v: about the cost of two gradient evaluations. The
second derivatives are written, like the first, in terms of the output a = f(z):

    sigmoid  f'' = a(1-a)(1-2a)     tanh  f'' = -2a(1-a^2)     relu, identity  f'' = 0 (relu: a.e.)

and the output block, per example, with d = a - y:

    quadratic, elementwise f      R{delta} = (f'^2 + d f'') R{z}
    quadratic, softmax            R{a} = a * (R{z} - <a, R{z}>),
                                  R{delta} = R{a} * (d - <d, a>) + a * (R{a} - <R{a}, a + d>)
    cross-entropy, sigmoid        R{delta} = a(1-a) R{z}
    cross-entropy, softmax        R{delta} = R{a} = a * (R{z} - <a, R{z}>)

Everything runs in float64 on host NumPy, whatever the network's dtype. ``hvp`` takes and returns
flat vectors (the layout of ``flat_params``); ``hvp_pairs`` takes and returns (V, c) pairs shaped
like ``net.params``. The top eigenvalue lambda_max comes from power iteration on H v, and the
curvature-weighted noise scale of McCandlish et al. (2018), eq. 2.8,

    B_noise = tr(H Sigma) / (G^T H G),      tr(H Sigma) = (1/n) sum_i (g_i - G)^T H (g_i - G),

from m examples drawn with replacement (``noise_scales``; B_noise = B_simple = tr Sigma / ||G||^2
when H is a multiple of the identity). The tests check ``hvp``
against central differences of the gradient, (grad C(theta + eps v) - grad C(theta - eps v)) / (2 eps),
whose error is O(eps^2 ||d^3 C|| ||v||^3) from truncation plus O(u ||grad C|| / eps) from rounding,
and against PyTorch's double-backward Hessian-vector product.

>>> import numpy as np
>>> from sgdlab import Network
>>> net = Network([2, 3, 1], seed=0, dtype="float64")
>>> X, Y = np.array([[0., 1.], [1., 0.]]), np.array([[1.], [0.]])
>>> v = np.ones(net.n_params)
>>> bool(np.isclose(v @ hvp(net, X, Y, v), rayleigh(net, X, Y, v) * net.n_params))
True
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(50, 3)); y = X @ np.array([1.0, -2.0, 0.5])
>>> lin = Network([3, 1], output_activation="identity", dtype="float64", seed=0)
>>> v = rng.normal(size=lin.n_params)     # least squares: H = (1/n) [X 1]^T [X 1], exactly
>>> A = np.column_stack([X, np.ones(50)]); bool(np.allclose(hvp(lin, X, y, v), A.T @ A @ v / 50))
True
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..network import Network
from .estimators import flatten

# f''(z) written in terms of the output a = f(z) (beside f'(z) of ``sgdlab.activations``)
SECOND_DERIVATIVES = {
    "sigmoid": lambda a: a * (1.0 - a) * (1.0 - 2.0 * a),
    "tanh": lambda a: -2.0 * a * (1.0 - a * a),
    "relu": lambda a: np.zeros_like(a),
    "identity": lambda a: np.zeros_like(a),
}
FIRST_DERIVATIVES = {
    "sigmoid": lambda a: a * (1.0 - a),
    "tanh": lambda a: 1.0 - a * a,
    "relu": lambda a: (a > 0).astype(a.dtype),
    "identity": lambda a: np.ones_like(a),
}


def _params64(net):
    return [(np.asarray(to_numpy(W), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64))
            for W, b in net.params]


def _targets(net, X, Y):
    """X and one-hot/real targets T as float64 host arrays (through the network's own validation)."""
    Xb, T, _ = net._inputs(X, Y)
    return np.asarray(to_numpy(Xb), dtype=np.float64), np.asarray(to_numpy(T), dtype=np.float64)


def flat(pairs) -> np.ndarray:
    """A list of (W, b) pairs as one float64 vector (W row-major, then b, layer by layer)."""
    return np.concatenate([np.asarray(to_numpy(p), dtype=np.float64).ravel() for pair in pairs for p in pair])


def flatten_like(net, vec) -> list:
    """A flat vector of length ``net.n_params`` as a list of (V, c) pairs shaped like ``net.params``."""
    vec = np.asarray(vec, dtype=np.float64)
    if vec.shape != (net.n_params,):
        raise ValueError(f"vector of shape {vec.shape} for a network with {net.n_params} parameters")
    out, i = [], 0
    for W, b in net.params:
        nw, nb = math.prod(W.shape), math.prod(b.shape)
        out.append((vec[i:i + nw].reshape(W.shape), vec[i + nw:i + nw + nb].reshape(b.shape)))
        i += nw + nb
    return out


def _output_r_delta(net, a, Rz, T):
    """R{delta_L} = (d^2 C_x/dz_L^2) R{z_L} for the network's cost and output activation."""
    out, cost = net.output_activation.name, net.cost_fn.name
    if out == "softmax":
        Ra = a * (Rz - np.sum(a * Rz, axis=1, keepdims=True))
        if cost == "cross_entropy":
            return Ra
        d = a - T
        return Ra * (d - np.sum(d * a, axis=1, keepdims=True)) + a * (Ra - np.sum(Ra * (a + d), axis=1, keepdims=True))
    if out not in SECOND_DERIVATIVES:
        raise ValueError(f"no Hessian-vector product for output activation {out!r}")
    f1 = FIRST_DERIVATIVES[out](a)
    if cost == "cross_entropy":  # sigmoid output: delta = a - y
        return f1 * Rz
    return (f1 * f1 + (a - T) * SECOND_DERIVATIVES[out](a)) * Rz


def float64_copy(net) -> Network:
    """A float64 NumPy copy of ``net``."""
    return Network.from_params({**net.describe(), "dtype": "float64"}, net.numpy_params())


def flat_params(net) -> np.ndarray:
    """The parameters as one float64 vector, layer by layer (W row-major, then b)."""
    return flatten(net.numpy_params())


def set_flat_params(net, w) -> None:
    """Set the parameters of ``net`` from one vector laid out as ``flat_params``."""
    w = np.asarray(w, dtype=np.float64)
    if w.size != net.n_params:
        raise ValueError(f"a parameter vector of {net.n_params} values is needed, got {w.size}")
    net.params = [(net.xp.asarray(V, dtype=net.dtype), net.xp.asarray(c, dtype=net.dtype))
                  for V, c in flatten_like(net, w.ravel())]


def hvp_pairs(net, X, Y, v) -> list:
    """H v, the Hessian of C over (X, Y) at ``net.params`` times v, exactly (R-operator; see module doc).

    ``v`` is a list of (V, c) pairs shaped like ``net.params`` (see ``flatten_like``); the result
    has the same structure, in float64.
    """
    hidden = net.activation.name
    if hidden not in SECOND_DERIVATIVES:
        raise ValueError(f"no Hessian-vector product for hidden activation {hidden!r}")
    X, T = _targets(net, X, Y)
    P = _params64(net)
    V = [(np.asarray(Vw, dtype=np.float64), np.asarray(c, dtype=np.float64)) for Vw, c in v]
    if len(V) != len(P) or any(Vw.shape != W.shape or c.shape != b.shape for (Vw, c), (W, b) in zip(V, P, strict=True)):
        raise ValueError("v must have the shapes of net.params")
    m, L = X.shape[0], len(P)
    # forward pass and its R-derivative
    acts, Racts, Rzs, a, Ra = [X], [np.zeros_like(X)], [], X, np.zeros_like(X)
    f1 = FIRST_DERIVATIVES[hidden]
    for l, ((W, b), (Vw, c)) in enumerate(zip(P, V, strict=True)):
        z = a @ W + b
        Rz = Ra @ W + a @ Vw + c
        if l == L - 1:
            a = net.output_activation.fn(z, np)
            Ra = None  # the output block below uses R{z_L} directly
        else:
            a = net.activation.fn(z, np)
            Ra = f1(a) * Rz
        acts.append(a)
        Racts.append(Ra)
        Rzs.append(Rz)
    # backward pass and its R-derivative
    delta = net.cost_fn.delta(z, a, T, net.output_activation, np)
    Rdelta = _output_r_delta(net, a, Rzs[-1], T)
    deltas, Rdeltas = [delta], [Rdelta]
    for l in range(L - 1, 0, -1):
        W, Vw = P[l][0], V[l][0]
        back = delta @ W.T
        a_l = acts[l]
        Rdelta = (Rdelta @ W.T + delta @ Vw.T) * f1(a_l) + back * SECOND_DERIVATIVES[hidden](a_l) * Rzs[l - 1]
        delta = back * f1(a_l)
        deltas.append(delta)
        Rdeltas.append(Rdelta)
    deltas.reverse()
    Rdeltas.reverse()
    return [((Racts[l].T @ deltas[l] + acts[l].T @ Rdeltas[l]) / m, Rdeltas[l].sum(axis=0) / m) for l in range(L)]


def hvp(net, X, Y, vec) -> np.ndarray:
    """H v, exactly, with v and the result flat float64 vectors of length ``net.n_params`` (``flat_params`` layout)."""
    return flat(hvp_pairs(net, X, Y, flatten_like(net, vec)))


hvp_flat = hvp


def rayleigh(net, X, Y, vec) -> float:
    """v^T H v / v^T v: the curvature of C along v."""
    vec = np.asarray(vec, dtype=np.float64)
    return float(vec @ hvp_flat(net, X, Y, vec) / (vec @ vec))


def finite_difference_hvp(net, X, Y, vec, eps: float = 1e-4) -> np.ndarray:
    """(grad C(theta + eps u) - grad C(theta - eps u)) / (2 eps) * ||v|| with u = v/||v||: a check on ``hvp``.

    Error O(eps^2) from truncation plus O(u_machine ||grad C|| / eps) from rounding; run it on a
    float64 network (eps = 1e-4 gives about 1e-8 relative).
    """
    vec = np.asarray(vec, dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    u = vec / norm
    base = flat(_params64(net))
    grads = []
    for sign in (1.0, -1.0):
        shifted = Network.from_params({**net.describe(), "dtype": "float64"},
                                      flatten_like(net, base + sign * eps * u))
        grads.append(flat(shifted.gradient(X, Y)))
    return (grads[0] - grads[1]) / (2 * eps) * norm


def power_iteration(matvec, dim: int, *, iters: int = 100, tol: float = 1e-4, seed: int = 0) -> dict:
    """The largest eigenvalue of a symmetric operator ``matvec`` on R^dim, by power iteration.

    v_{k+1} = A v_k / ||A v_k|| from a seeded Gaussian v_0; lambda_k = v_k^T A v_k (Rayleigh
    quotient); stops when |lambda_k - lambda_{k-1}| <= tol |lambda_k|. Power iteration finds the
    eigenvalue of largest magnitude; if that one is negative, it is run again on A + |lambda| I,
    whose top eigenvalue is lambda_max + |lambda|.

    Returns {"lambda_max", "iterations", "converged", "residual"}, residual = ||A v - lambda v||.

    >>> round(power_iteration(lambda v: np.array([-5.0, 1.0, 2.0]) * v, 3, iters=500, tol=1e-12)["lambda_max"], 6)
    2.0
    """
    rng = np.random.default_rng(seed)

    def power(shift: float):
        v = rng.standard_normal(dim)
        v /= np.linalg.norm(v)
        lam, done, k = math.nan, False, 0
        for k in range(1, iters + 1):
            w = matvec(v) + shift * v
            new = float(v @ w)
            nw = float(np.linalg.norm(w))
            if nw == 0.0:
                return 0.0, v, True, k
            v = w / nw
            if math.isfinite(lam) and abs(new - lam) <= tol * abs(new):
                lam, done = new, True
                break
            lam = new
        return lam, v, done, k

    lam, v, done, total = power(0.0)
    if lam < 0:
        shift = abs(lam)
        lam2, v, done, k = power(shift)
        lam, total = lam2 - shift, total + k
    residual = float(np.linalg.norm(matvec(v) - lam * v))
    return {"lambda_max": lam, "iterations": total, "converged": bool(done), "residual": residual}


def top_eigenvalue(net, X, Y, iters: int = 100, tol: float = 1e-4, seed: int = 0) -> dict:
    """lambda_max of the Hessian of C over (X, Y): ``power_iteration`` on exact ``hvp`` products."""
    X, T = _targets(net, X, Y)
    return power_iteration(lambda v: hvp_flat(net, X, T, v), net.n_params, iters=iters, tol=tol, seed=seed)


def noise_scales(net, X, y, m: int = 100, seed: int = 0) -> dict:
    """B_simple (exact) and B_noise = tr(H Sigma) / G^T H G, tr(H Sigma) from m sampled examples with its se."""
    net = float64_copy(net)
    n = len(X)
    G = flatten(net.gradient(X, y))
    norms = np.asarray(to_numpy(net.per_example_grad_norms(X, y)), dtype=np.float64)
    tr_sigma = float(np.mean(norms ** 2) - G @ G)
    _, T = _targets(net, X, y)
    GHG = float(G @ hvp(net, X, T, G))
    idx = np.random.default_rng(seed).integers(0, n, m)
    q = np.empty(m)
    for j, i in enumerate(idx):
        d = flatten(net.gradient(X[i:i + 1], y[i:i + 1])) - G
        q[j] = d @ hvp(net, X, T, d)
    tr_hs, se = float(q.mean()), float(q.std(ddof=1) / math.sqrt(m))
    return {"tr_sigma": tr_sigma, "grad_norm_sq": float(G @ G), "b_simple": tr_sigma / float(G @ G),
            "tr_H_sigma": tr_hs, "tr_H_sigma_se": se, "GHG": GHG, "b_noise": tr_hs / GHG if GHG > 0 else math.nan,
            "b_noise_se": se / GHG if GHG > 0 else math.nan, "examples_sampled": m, "seed": seed}
