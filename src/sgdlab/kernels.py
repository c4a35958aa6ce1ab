"""Pure kernels: the forward pass and batched backpropagation as functions of
(architecture, params, X, T, xp), with no Network and no state.

Shape convention: rows are examples; layer l computes ``z_l = a_{l-1} @ W_l + b_l``, ``a_l = f(z_l)``.

    delta_L = dC_x/dz_L                                (the cost's output error)
    delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)      (f' from the stored a_l)

``grad_sums`` returns gradient SUMS over the rows, ``(a_{l-1}^T delta_l, sum_rows delta_l)``, and the
cost sum ``sum_x C_x``; nothing is divided. The caller takes the mean once (divides by the row count m),
so a gradient accumulated over chunks, or added across MPI ranks, rounds the division once.

>>> import numpy as np
>>> from sgdlab import Network
>>> net = Network([3, 4, 2], dtype="float64", seed=0)
>>> X, T = np.ones((5, 3)), np.zeros((5, 2))
>>> sums, c = grad_sums(net.arch, net.params, X, T, np)
>>> g = net.gradient(X, T)
>>> bool(np.allclose(sums[0][0] / 5, g[0][0])) and bool(np.isclose(c / 5, net.cost(X, T)))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .activations import Activation
from .backend import dot

EVAL_CHUNK = 8192  # rows per forward pass when evaluating or accumulating, to bound memory


@dataclass(frozen=True)
class Arch:
    """What the kernels need to know about a network besides its parameters."""

    activation: Activation  # hidden layers
    output_activation: Activation
    cost: Any  # a cost from sgdlab.costs (value, delta): duck-typed


def buffer(work: dict, key, rows: int, cols: int, dtype, order: Literal["C", "F"] = "C"):
    """Rows 0..rows-1 of a (>= rows, cols) array kept in ``work`` under ``key``, grown when too small;
    ``order`` "C" (row-major) or "F" (column-major), as ``layout`` says of the rows it is made for."""
    b = work.get(key)
    if b is None or b.shape[0] < rows or b.shape[1] != cols or b.dtype != dtype or layout(b) != order:
        b = work[key] = np.empty((rows, cols), dtype, order=order)
    return b[:rows]


def layout(a) -> Literal["C", "F"]:
    """"F" for a 2-D NumPy array stored column by column (a column-major batch), else "C".

    A buffer made for such rows is made column-major too, so that a whole pass keeps one layout (a
    ufunc over operands of mixed layouts walks one of them across its strides) and each product
    goes to BLAS in the shape it runs fastest here (``BufferedStepper``: batch GD)."""
    return "F" if a.ndim == 2 and a.shape[0] > 1 and a.strides[0] < a.strides[1] else "C"


def _product(xp, a, W, work, key):
    """a @ W: a new array, or written into the buffer ``work[key]`` (NumPy), in the layout of ``a``."""
    if work is None:
        return dot(xp, a, W)
    return np.matmul(a, W, out=buffer(work, key, a.shape[0], W.shape[1], W.dtype, layout(a)))


def forward(arch: Arch, params, X, xp, work: dict | None = None):
    """Activations [a_0 = X, a_1, ..., a_L] and the output pre-activation z_L.

    ``work`` (NumPy only): a dict the caller keeps from one call to the next; the layers' products
    are then written into its buffers, not into fresh arrays, and overwritten by the next call. On
    big batches the fresh arrays cost more than the arithmetic (each 8000x100 float32 temporary is
    new memory to fault in)."""
    acts, a, last = [X], X, len(params) - 1
    inplace = arch.activation.fn_inplace if xp is np else None
    for l, (W, b) in enumerate(params):
        z = _product(xp, a, W, work, ("z", l))
        z += b
        if l < last and inplace is not None:  # a hidden layer's z is this function's own: overwrite it
            inplace(z)
            a = z
        else:  # the output layer keeps z_L for the cost
            a = (arch.output_activation if l == last else arch.activation).fn(z, xp)
        acts.append(a)
    return acts, z


def backprop(arch: Arch, params, X, T, xp, work: dict | None = None):
    """(acts, deltas, z_L) with deltas[l] = dC_x/dz of layer l+1, one row per example; ``work`` as in
    ``forward`` (the deltas too then go into its buffers, multiplied by f' in place)."""
    acts, z = forward(arch, params, X, xp, work)
    delta = arch.cost.delta(z, acts[-1], T, arch.output_activation, xp)
    deltas, grad, times_grad = [delta], arch.activation.grad, arch.activation.times_grad
    for l in range(len(params) - 1, 0, -1):
        if work is None:
            assert grad is not None, "hidden activations are elementwise"
            delta = dot(xp, delta, params[l][0].T) * grad(acts[l], xp)
        else:
            assert times_grad is not None, "hidden activations are elementwise"
            delta = _product(xp, delta, params[l][0].T, work, ("d", l))
            times_grad(delta, acts[l], buffer(work, ("tmp", l), delta.shape[0], delta.shape[1], delta.dtype,
                                              layout(delta)))
        deltas.append(delta)
    deltas.reverse()
    return acts, deltas, z


def sums_from(acts, deltas, xp):
    """Gradient sums [(a_{l-1}^T delta_l, sum_rows delta_l)] from a backward pass."""
    return [(dot(xp, a.T, d), xp.sum(d, axis=0)) for a, d in zip(acts[:-1], deltas, strict=True)]


def cost_sum(arch: Arch, acts, z, T, xp):
    """sum_x C_x over the rows of a forward pass (an xp scalar: no device sync)."""
    return arch.cost.value(z, acts[-1], T, arch.output_activation, xp)


def grad_sums(arch: Arch, params, X, T, xp):
    """(sums, cost_sum): sum_x grad C_x as [(dW, db)] in the shapes of params, and sum_x C_x.

    Divide both by m = X.shape[0] for the mean gradient and the cost C.
    """
    acts, deltas, z = backprop(arch, params, X, T, xp)
    return sums_from(acts, deltas, xp), cost_sum(arch, acts, z, T, xp)


def chunks(n: int, size: int | None = None) -> list:
    """Row slices of at most ``size`` (default EVAL_CHUNK) rows covering 0..n-1."""
    size = size or EVAL_CHUNK
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def chunked_grad_sums(arch: Arch, params, X, T, xp, size: int | None = None):
    """``grad_sums`` over all rows, accumulated chunk by chunk (for data that is not in memory at once)."""
    total, cost = None, 0.0
    for rows in chunks(X.shape[0], size):
        sums, c = grad_sums(arch, params, X[rows, ...], T[rows, ...], xp)
        total = sums if total is None else [(tW + sW, tb + sb) for (tW, tb), (sW, sb) in zip(total, sums, strict=True)]
        cost += float(c)
    return total, cost


def predicted_class(a, xp):
    """argmax of the outputs, or a > 1/2 for a single output unit."""
    return xp.astype(a[:, 0] > 0.5, xp.int64) if a.shape[1] == 1 else xp.argmax(a, axis=1)


def evaluate_sums(arch: Arch, params, X, T, labels, xp, size: int | None = None):
    """(cost_sum, correct or None) over all rows, in chunks: sum_x C_x and the count of right classes."""
    total, correct = 0.0, 0
    for rows in chunks(X.shape[0], size):
        acts, z = forward(arch, params, X[rows, ...], xp)
        total += float(cost_sum(arch, acts, z, T[rows, ...], xp))
        if labels is not None:
            correct += int(xp.sum(xp.astype(predicted_class(acts[-1], xp) == labels[rows], xp.int64)))
    return total, (None if labels is None else correct)
