"""Costs: each knows its value and its output error delta = dC_x/dz_L.

Both are written per example and summed over the rows; the network divides by n.

Quadratic       C_x = 1/2 ||y - a||^2            delta = (a - y) * f'(z)
                with softmax output: delta = J^T (a - y) = a * ((a - y) - sum_k (a_k - y_k) a_k)
Cross-entropy   sigmoid output (binary, per unit):
                C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)] = sum_j softplus(z_j) - y_j z_j
                softmax output (categorical):
                C_x = -sum_k y_k ln a_k = logsumexp(z) sum_k y_k - sum_k y_k z_k
                delta = a - y in both cases (the sigma' factor cancels).
Values are computed from the logits z, so they stay finite where a rounds to 0 or 1.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation


class Quadratic:
    """C = 1/(2n) sum_x ||y(x) - a(x)||^2; any output activation."""

    name = "quadratic"
    default_output = "sigmoid"

    def check(self, output: Activation) -> None:
        pass

    def value(self, z, a, y, output: Activation, xp):
        d = a - y
        if isinstance(d, np.ndarray):  # one BLAS dot product: a third of the time on a small batch
            d = d.ravel()
            return 0.5 * (d @ d)
        return 0.5 * xp.sum(d * d)

    def delta(self, z, a, y, output: Activation, xp):
        d = a - y
        if output.name == "softmax":
            return a * (d - xp.sum(d * a, axis=1, keepdims=True))
        grad = output.grad
        assert grad is not None, f"{output.name} has no elementwise derivative"  # only softmax, handled above
        return d * grad(a, xp)


class CrossEntropy:
    """Binary cross-entropy with sigmoid outputs, categorical with softmax."""

    name = "cross_entropy"
    default_output = "sigmoid"

    def check(self, output: Activation) -> None:
        if output.name not in ("sigmoid", "softmax"):
            raise ValueError(
                f"cost 'cross_entropy' needs output activation 'sigmoid' or 'softmax' "
                f"(outputs in (0, 1)); got {output.name!r}. Use cost='quadratic' for {output.name!r} outputs."
            )

    def value(self, z, a, y, output: Activation, xp):
        if output.name == "softmax":
            m = xp.max(z, axis=1, keepdims=True)
            lse = m + xp.log(xp.sum(xp.exp(z - m), axis=1, keepdims=True))
            return xp.sum(lse * xp.sum(y, axis=1, keepdims=True)) - xp.sum(y * z)
        return xp.sum(xp.logaddexp(xp.zeros_like(z), z) - y * z)

    def delta(self, z, a, y, output: Activation, xp):
        return a - y


COSTS = {"quadratic": Quadratic(), "cross_entropy": CrossEntropy()}


def get_cost(name):
    if isinstance(name, (Quadratic, CrossEntropy)):
        return name
    if name not in COSTS:
        raise ValueError(f"unknown cost {name!r}; valid: {', '.join(COSTS)}")
    return COSTS[name]
