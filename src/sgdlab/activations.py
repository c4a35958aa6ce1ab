"""Activations as (value, derivative) pairs.

Each derivative is written in terms of the activation's *output* a = f(z), which the
forward pass already holds, so backprop needs no stored pre-activations:

    sigmoid   a = 1/(1+e^{-z})          f'(z) = a(1-a)
    tanh      a = tanh z                f'(z) = 1-a^2
    relu      a = max(0, z)             f'(z) = 1[a > 0]
    identity  a = z                     f'(z) = 1
    softmax   a_k = e^{z_k}/sum_j e^{z_j}   (output only; its Jacobian is handled by the cost)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .backend import is_numpy


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable  # fn(z, xp) -> a
    grad: Callable | None  # grad(a, xp) -> f'(z) from the output a; None when not elementwise

    def __call__(self, z, xp=np):
        return self.fn(z, xp)


@functools.cache
def _expit():
    """SciPy's logistic function, imported on first use so that ``import sgdlab`` does not load SciPy."""
    from scipy.special import expit

    return expit


def _sigmoid(z, xp):
    if is_numpy(xp):
        return _expit()(z)  # one pass, no overflow warning
    return 0.5 * (xp.tanh(0.5 * z) + 1.0)  # = 1/(1+e^{-z}), overflow-free


def _softmax(z, xp):
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", _sigmoid, lambda a, xp: a * (1.0 - a)),
    "tanh": Activation("tanh", lambda z, xp: xp.tanh(z), lambda a, xp: 1.0 - a * a),
    "relu": Activation("relu", lambda z, xp: xp.maximum(z, 0.0), lambda a, xp: xp.astype(a > 0, a.dtype)),
    "identity": Activation("identity", lambda z, xp: z, lambda a, xp: xp.ones_like(a)),
    "softmax": Activation("softmax", _softmax, None),
}
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")


def get_activation(name: str | Activation, *, hidden: bool = False) -> Activation:
    """Look up an activation by name; ``hidden=True`` refuses softmax (an output-only activation)."""
    if isinstance(name, Activation):
        return name
    valid = HIDDEN_ACTIVATIONS if hidden else tuple(ACTIVATIONS)
    if name not in valid:
        where = "hidden activation" if hidden else "activation"
        raise ValueError(f"unknown {where} {name!r}; valid: {', '.join(valid)}")
    return ACTIVATIONS[name]
