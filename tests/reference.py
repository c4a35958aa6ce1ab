"""The slow reference: Nielsen-style backprop, one example at a time, column vectors.

Written independently of sgdlab's kernels (it shares only the parameter layout) so that
the batched code can be checked against it.
"""

import numpy as np


def act(name, z):
    return {"sigmoid": lambda: 1 / (1 + np.exp(-z)), "tanh": lambda: np.tanh(z),
            "relu": lambda: np.maximum(z, 0), "identity": lambda: z,
            "softmax": lambda: np.exp(z - z.max()) / np.exp(z - z.max()).sum()}[name]()


def act_prime(name, z):
    s = 1 / (1 + np.exp(-z))
    return {"sigmoid": s * (1 - s), "tanh": 1 - np.tanh(z) ** 2, "relu": (z > 0) * 1.0,
            "identity": np.ones_like(z)}[name]


def example_cost(cost, out, zL, a, y):
    if cost == "quadratic":
        return 0.5 * np.sum((y - a) ** 2)
    if out == "sigmoid":
        return -np.sum(y * np.log(a) + (1 - y) * np.log(1 - a))
    return -np.sum(y * np.log(a))


def example_gradient(params, x, y, hidden, out, cost):
    """grad C_x for one example x (1-D) and target y (1-D), by the chain rule, column vectors."""
    a, acts, zs = x.reshape(-1, 1), [x.reshape(-1, 1)], []
    for l, (W, b) in enumerate(params):
        z = W.T @ a + b.reshape(-1, 1)
        zs.append(z)
        a = act(out if l == len(params) - 1 else hidden, z)
        acts.append(a)
    y = y.reshape(-1, 1)
    aL, zL = acts[-1], zs[-1]
    if cost == "cross_entropy":
        delta = aL - y
    elif out == "softmax":
        J = np.diagflat(aL) - aL @ aL.T  # softmax Jacobian
        delta = J.T @ (aL - y)
    else:
        delta = (aL - y) * act_prime(out, zL)
    grads = [None] * len(params)
    for l in range(len(params) - 1, -1, -1):
        grads[l] = (acts[l] @ delta.T, delta.ravel())
        if l > 0:
            delta = (params[l][0] @ delta) * act_prime(hidden, zs[l - 1])
    return grads


def mean_gradient(params, X, Y, hidden, out, cost):
    """(1/n) sum_x grad C_x with a Python loop over the examples."""
    total = None
    for x, y in zip(X, Y, strict=True):
        g = example_gradient(params, x, y, hidden, out, cost)
        total = g if total is None else [(tW + gW, tb + gb) for (tW, tb), (gW, gb) in zip(total, g, strict=True)]
    return [(tW / len(X), tb / len(X)) for tW, tb in total]


def mean_cost(params, X, Y, hidden, out, cost):
    total = 0.0
    for x, y in zip(X, Y, strict=True):
        a = x.reshape(-1, 1)
        for l, (W, b) in enumerate(params):
            z = W.T @ a + b.reshape(-1, 1)
            a = act(out if l == len(params) - 1 else hidden, z)
        total += example_cost(cost, out, z, a, y.reshape(-1, 1))
    return total / len(X)
