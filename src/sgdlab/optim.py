"""SGD as pure gradient transformations, in the style of optax.

A transformation is a pair of functions

    init(params) -> state
    update(grads, state, params) -> (updates, state)

and ``apply_updates(params, updates)`` is the one place where the reference path changes
parameters (p <- p + u); the fast steppers (``sgdlab.steppers``) make the same update in place and
are tested against it. ``sgd`` is a chain of small pieces:

    add_decayed_weights(lam):  g <- g + lam W                  (L2 weight decay; weights only, not biases)
    trace(mu, nesterov):       v <- mu v + g;  u = v, or g + mu v with Nesterov  (PyTorch's convention)
    scale_by_lr(eta):          u <- -eta_t u                   (eta_t from a schedule of the step t)

With mu = lam = 0 this is exactly w' = w - eta grad C, i.e. for a mini-batch of m examples
w' = w - (eta/m) sum_j dC_{X_j}/dw.

``sgd`` also carries its hyperparameters (``opt.hyper``, an ``SGDHyper``) and keeps a fixed state
layout, ``(decay_state, velocity, step)``: that is what lets ``fit``'s fast steppers (fused BLAS,
compiled) make the same updates without calling the chain, and keep the same step counter and
momentum buffers (``sgd_step``, ``sgd_velocity``, ``sgd_state``). A transformation without
``hyper`` is run by the reference stepper only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .backend import Params
from .schedules import Schedule, as_schedule
from .validation import check_fraction


class SGDHyper(NamedTuple):
    """The hyperparameters of ``sgd``: schedule eta(t), momentum mu, Nesterov, weight decay lambda."""

    lr: Callable
    momentum: float
    nesterov: bool
    weight_decay: float


class GradientTransformation(NamedTuple):
    init: Callable
    update: Callable
    hyper: SGDHyper | None = None  # set by ``sgd``: what fast steppers need to make the same updates


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """g_W <- g_W + lam W (biases are not decayed)."""

    def update(grads, state, params):
        if weight_decay == 0:
            return grads, state
        return [(gW + weight_decay * W, gb) for (gW, gb), (W, _) in zip(grads, params, strict=True)], state

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
        velocity = [(momentum * vW + gW, momentum * vb + gb) for (vW, vb), (gW, gb) in zip(state, grads, strict=True)]
        if nesterov:
            nesterov_step = [(gW + momentum * vW, gb + momentum * vb)
                             for (gW, gb), (vW, vb) in zip(grads, velocity, strict=True)]
            return nesterov_step, velocity
        return velocity, velocity

    return GradientTransformation(init, update)


def scale_by_lr(lr: float | Schedule) -> GradientTransformation:
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
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def sgd(lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> GradientTransformation:
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
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")
    schedule = as_schedule(lr)
    opt = chain(add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_lr(schedule))
    return opt._replace(hyper=SGDHyper(schedule, float(momentum), bool(nesterov), float(weight_decay)))


def sgd_step(opt_state: tuple) -> int:
    """The number of updates an ``sgd`` state has made (the schedule's t)."""
    return opt_state[2]


def sgd_velocity(opt_state: tuple) -> Params | None:
    """The momentum buffers [(v_W, v_b)] of an ``sgd`` state, or None without momentum."""
    return opt_state[1] if len(opt_state[1]) else None


def sgd_state(opt_state: tuple, step: int, velocity: Params | None = None) -> tuple:
    """An ``sgd`` state with the step count ``step`` (and momentum buffers ``velocity`` if given)."""
    return (opt_state[0], opt_state[1] if velocity is None else velocity, int(step))


def apply_updates(params: Params, updates: Params) -> Params:
    """p <- p + u for every parameter: the one place parameters change (returns new arrays)."""
    return [(W + uW, b + ub) for (W, b), (uW, ub) in zip(params, updates, strict=True)]
