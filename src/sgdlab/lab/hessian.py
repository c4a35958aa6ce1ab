"""Curvature of the training cost: Hessian-vector products, the top eigenvalue, and B_noise.

With w the parameters as one vector and C(w) the mean training cost over (X, y):

    H v  ~  (grad C(w + eps v) - grad C(w - eps v)) / (2 eps)          (central difference of gradients)

exact for a quadratic C and O(eps^2) otherwise; eps = 1e-4 / ||v|| in float64 keeps the truncation
error (~eps^2 ||v||^3) and the rounding error (~1e-16 / eps) both near 1e-8 relative.
The top eigenvalue lambda_max of H comes from power iteration on H v. The curvature-weighted
noise scale of McCandlish et al. (2018), eq. 2.8,

    B_noise = tr(H Sigma) / (G^T H G),      tr(H Sigma) = (1/n) sum_i (g_i - G)^T H (g_i - G),

is estimated from m examples drawn with replacement (unbiased for tr(H Sigma), with its standard
error); B_noise = B_simple = tr Sigma / ||G||^2 when H is a multiple of the identity.

>>> import numpy as np
>>> from sgdlab import Network
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(50, 3)); y = X @ np.array([1.0, -2.0, 0.5])
>>> net = Network([3, 1], output_activation="identity", dtype="float64", seed=0)
>>> v = rng.normal(size=net.n_params)
>>> Hv = hvp(net, X, y, v)      # the quadratic cost's Hessian is exact: (1/n) [X 1]^T [X 1] per output
>>> A = np.column_stack([X, np.ones(50)]); bool(np.allclose(Hv, A.T @ A @ v / 50, rtol=1e-6))
True
"""

from __future__ import annotations

import math

import numpy as np

from ..network import Network
from .estimators import flatten


def float64_copy(net) -> Network:
    """A float64 NumPy copy of ``net`` (finite differences need the precision)."""
    return Network.from_params({**net.describe(), "dtype": "float64"}, net.numpy_params())


def flat_params(net) -> np.ndarray:
    """The parameters as one float64 vector, layer by layer (W then b)."""
    return flatten(net.numpy_params())


def set_flat_params(net, w) -> None:
    """Set the parameters of ``net`` from one vector laid out as ``flat_params``."""
    w = np.asarray(w, dtype=np.float64)
    if w.size != net.n_params:
        raise ValueError(f"a parameter vector of {net.n_params} values is needed, got {w.size}")
    params, i = [], 0
    for W, b in net.numpy_params():
        Wn = w[i:i + W.size].reshape(W.shape)
        i += W.size
        bn = w[i:i + b.size].reshape(b.shape)
        i += b.size
        params.append((net.xp.asarray(Wn, dtype=net.dtype), net.xp.asarray(bn, dtype=net.dtype)))
    net.params = params


def hvp(net, X, y, v, eps: float = 1e-4) -> np.ndarray:
    """H v at the current parameters of ``net`` (float64 needed), by central differences of gradients."""
    if net.dtype_name != "float64":
        raise ValueError("hvp needs a float64 network (finite differences); use float64_copy(net)")
    v = np.asarray(v, dtype=np.float64)
    nv = float(np.linalg.norm(v))
    if nv == 0:
        return np.zeros_like(v)
    h = eps / nv
    w = flat_params(net)
    try:
        set_flat_params(net, w + h * v)
        gp = flatten(net.gradient(X, y))
        set_flat_params(net, w - h * v)
        gm = flatten(net.gradient(X, y))
    finally:
        set_flat_params(net, w)
    return (gp - gm) / (2 * h)


def top_eigenvalue(net, X, y, iters: int = 50, tol: float = 1e-4, seed: int = 0) -> dict:
    """lambda_max of the Hessian by power iteration on H v (the eigenvalue of largest magnitude).

    Returns {"lambda_max", "iterations", "converged"}; the relative change between two iterations
    below ``tol`` counts as converged.
    """
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(net.n_params)
    v /= np.linalg.norm(v)
    lam, converged, it = 0.0, False, 0
    for it in range(1, iters + 1):
        Hv = hvp(net, X, y, v)
        new = float(v @ Hv)
        norm = float(np.linalg.norm(Hv))
        if norm == 0:
            break
        v = Hv / norm
        if it > 1 and abs(new - lam) <= tol * abs(new):
            lam, converged = new, True
            break
        lam = new
    return {"lambda_max": lam, "iterations": it, "converged": converged}


def noise_scales(net, X, y, m: int = 100, seed: int = 0) -> dict:
    """B_simple (exact) and B_noise = tr(H Sigma) / G^T H G (tr(H Sigma) from m sampled examples, with its se)."""
    net = float64_copy(net)
    n = len(X)
    G = flatten(net.gradient(X, y))
    norms = np.asarray(net.per_example_grad_norms(X, y), dtype=np.float64)
    tr_sigma = float(np.mean(norms ** 2) - G @ G)
    GHG = float(G @ hvp(net, X, y, G))
    idx = np.random.default_rng(seed).integers(0, n, m)
    q = np.empty(m)
    for j, i in enumerate(idx):
        d = flatten(net.gradient(X[i:i + 1], y[i:i + 1])) - G
        q[j] = d @ hvp(net, X, y, d)
    tr_hs, se = float(q.mean()), float(q.std(ddof=1) / math.sqrt(m))
    return {"tr_sigma": tr_sigma, "grad_norm_sq": float(G @ G), "b_simple": tr_sigma / float(G @ G),
            "tr_H_sigma": tr_hs, "tr_H_sigma_se": se, "GHG": GHG, "b_noise": tr_hs / GHG if GHG > 0 else math.nan,
            "b_noise_se": se / GHG if GHG > 0 else math.nan, "examples_sampled": m, "seed": seed}
