"""Explicit randomness: separate, reproducible streams for initialisation and sampling.

One user seed gives two independent generators, so changing how batches are drawn
never changes the initial weights, and the other way round.
"""

from __future__ import annotations

import numpy as np

STREAMS = {"init": 0, "sampling": 1}

Seed = int | np.random.Generator | None


def generator(seed: Seed, stream: str) -> np.random.Generator:
    """A ``numpy.random.Generator`` for ``stream`` ("init" or "sampling") derived from ``seed``.

    A Generator passed in is used as it is; an int gives the same stream every time;
    ``None`` draws fresh entropy from the OS.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise TypeError(f"seed must be a non-negative int, a numpy Generator or None; got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAMS[stream],)))
