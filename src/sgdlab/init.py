"""Weight initialisers. Each returns (W, b) for one layer, W of shape (fan_in, fan_out).

    normal   W ~ N(0, 1),                     b ~ N(0, 1)   the classic network.py start
    scaled   W ~ N(0, 1/fan_in),              b ~ N(0, 1)   network2.py's fix for saturated sigmoids
    glorot   W ~ U(+-sqrt(6/(fan_in+fan_out))), b = 0       Glorot & Bengio 2010
    he       W ~ N(0, 2/fan_in),              b = 0         He et al. 2015, for relu
    zeros    W = 0,                           b = 0         kept to show why it fails: every hidden
                                                            unit of a layer gets the same gradient
                                                            and they stay identical for ever
"""

from __future__ import annotations

import numpy as np


def _normal(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out)


def _scaled(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), rng.standard_normal(fan_out)


def _glorot(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)), np.zeros(fan_out)


def _he(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in), np.zeros(fan_out)


def _zeros(rng, fan_in, fan_out):
    return np.zeros((fan_in, fan_out)), np.zeros(fan_out)


INITIALIZERS = {"normal": _normal, "scaled": _scaled, "glorot": _glorot, "he": _he, "zeros": _zeros}


def initialize(name: str, sizes, rng: np.random.Generator):
    """Float64 NumPy (W, b) for every layer of ``sizes``, drawn layer by layer from ``rng``."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown init {name!r}; valid: {', '.join(INITIALIZERS)}")
    return [INITIALIZERS[name](rng, fi, fo) for fi, fo in zip(sizes[:-1], sizes[1:], strict=True)]
