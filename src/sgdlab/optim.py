"""SGD as pure gradient transformations, in the style of optax.

A transformation is a pair of functions

    init(params) -> state
    update(grads, state, params) -> (updates, state)

and ``apply_updates(params, updates)`` is the one place where parameters change
(p <- p + u). ``sgd`` is a chain of small pieces:

    add_decayed_weights(lam):  g <- g + lam W                  (L2 weight decay; weights only, not biases)
    trace(mu, nesterov):       v <- mu v + g;  u = v, or g + mu v with Nesterov  (PyTorch's convention)
    scale_by_lr(eta):          u <- -eta_t u                   (eta_t from a schedule of the step t)

With mu = lam = 0 this is exactly w' = w - eta grad C, i.e. for a mini-batch of m examples
w' = w - (eta/m) sum_j dC_{X_j}/dw.

``fused_sgd_step`` is the fast path of plain SGD (mu = 0) on NumPy: the gradient and the update
meet in one BLAS gemm, W <- (1 - eta lam) W - (eta/m) a^T delta, with no gradient buffer at all.
It pays for batches of up to FUSED_MAX_BATCH rows, where per-call overhead and memory passes
dominate; above that, NumPy's multi-threaded products in the reference path are faster
(crossover measured at 32-64 rows for 64-30-10, 784-30-10 and 784-100-10 networks).
A test proves both paths agree.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy.linalg import blas

from .schedules import as_schedule
from .validation import check_fraction


class GradientTransformation(NamedTuple):
    init: Callable
    update: Callable


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """g_W <- g_W + lam W (biases are not decayed)."""

    def update(grads, state, params):
        if weight_decay == 0:
            return grads, state
        return [(gW + weight_decay * W, gb) for (gW, gb), (W, _) in zip(grads, params)], state

    return GradientTransformation(lambda params: (), update)


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: v <- mu v + g; the update is v (heavy ball) or g + mu v (Nesterov)."""

    def init(params):
        if momentum == 0:
            return ()
        return [(0 * W, 0 * b) for W, b in params]

    def update(grads, state, params):
        if momentum == 0:
            return grads, state
        velocity = [(momentum * vW + gW, momentum * vb + gb) for (vW, vb), (gW, gb) in zip(state, grads)]
        if nesterov:
            return [(gW + momentum * vW, gb + momentum * vb) for (gW, gb), (vW, vb) in zip(grads, velocity)], velocity
        return velocity, velocity

    return GradientTransformation(init, update)


def scale_by_lr(lr) -> GradientTransformation:
    """u <- -eta_t u, with eta_t = schedule(t) and t the number of updates so far (the state)."""
    schedule = as_schedule(lr)

    def update(grads, step, params):
        eta = schedule(step)
        return [(-eta * gW, -eta * gb) for gW, gb in grads], step + 1

    return GradientTransformation(lambda params: 0, update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations one after another; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params):
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def sgd(lr, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> GradientTransformation:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    >>> import numpy as np
    >>> opt = sgd(0.5)
    >>> params = [(np.ones((1, 1)), np.zeros(1))]
    >>> updates, _ = opt.update([(np.ones((1, 1)), np.ones(1))], opt.init(params), params)
    >>> apply_updates(params, updates)[0][0]
    array([[0.5]])
    """
    check_fraction(momentum, "momentum")
    check_fraction(weight_decay, "weight_decay", high=float("inf"))
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")
    return chain(add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_lr(lr))


def apply_updates(params, updates):
    """p <- p + u for every parameter: the one place parameters change (returns new arrays)."""
    return [(W + uW, b + ub) for (W, b), (uW, ub) in zip(params, updates)]


def fused_sgd_step(net, X, T, lr: float, weight_decay: float = 0.0):
    """One plain SGD step on a NumPy network, in place, via BLAS gemm; returns (acts, deltas, z_L).

        W <- (1 - lr lam) W - (lr/m) a^T delta,    b <- b - (lr/m) sum_rows delta

    Equal (up to rounding) to ``apply_updates`` of ``sgd(lr, weight_decay=lam)`` with the
    gradient ``net.gradient``. All deltas are computed before any parameter changes.
    """
    acts, deltas, z = net._backprop(X, T)
    scale = lr / X.shape[0]
    gemm = _GEMM[net.dtype]
    for (W, b), a, d in zip(net.params, acts[:-1], deltas):
        # W^T is Fortran-ordered, so gemm updates the C-ordered W in place: W^T <- beta W^T + alpha d^T a
        gemm(-scale, d.T, a.T, beta=1.0 - lr * weight_decay, c=W.T, trans_b=True, overwrite_c=True)
        b -= scale * (d[0] if d.shape[0] == 1 else d.sum(axis=0))
    return acts, deltas, z


_GEMM = {np.float32: blas.sgemm, np.float64: blas.dgemm}
FUSED_MAX_BATCH = 32
