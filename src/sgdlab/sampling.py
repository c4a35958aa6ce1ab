"""Which examples each update sees.

``batches(n, batch_size, order, rng)`` yields, for one epoch, index arrays whose sizes add up
to n (the last batch is smaller when batch_size does not divide n):

    reshuffle     a fresh random permutation every epoch: each example exactly once per epoch
    shuffle_once  one random permutation, drawn once and reused every epoch
    replacement   every index drawn uniformly at random, independently, with replacement
    sequential    0, 1, ..., n-1 in order (no randomness; for reference runs)

Batch gradient descent is batch_size = n, stochastic gradient descent batch_size = 1,
mini-batch SGD anything between: one code path. The data is never shuffled, only indices.
"""

from __future__ import annotations

import numpy as np

ORDERS = ("reshuffle", "shuffle_once", "replacement", "sequential")


class BatchSampler:
    """Yields the index arrays of each epoch; ``rng`` is the sampling stream."""

    def __init__(self, n: int, batch_size: int, order: str = "reshuffle", rng: np.random.Generator | None = None):
        if order not in ORDERS:
            raise ValueError(f"unknown sampling {order!r}; valid: {', '.join(ORDERS)}")
        self.n, self.batch_size, self.order = n, batch_size, order
        self.rng = rng if rng is not None else np.random.default_rng()
        self.fixed: np.ndarray | None = None

    def __len__(self) -> int:
        """Updates per epoch: ceil(n / batch_size)."""
        return -(-self.n // self.batch_size)

    def epoch_order(self) -> np.ndarray:
        """The n indices of the next epoch, in the order they will be used."""
        if self.order == "reshuffle":
            return self.rng.permutation(self.n)
        if self.order == "replacement":
            return self.rng.integers(0, self.n, size=self.n)
        if self.fixed is None:
            self.fixed = self.rng.permutation(self.n) if self.order == "shuffle_once" else np.arange(self.n)
        return self.fixed

    def split(self, order: np.ndarray) -> list:
        """An epoch's order cut into batches (views): sizes batch_size, the last one possibly smaller."""
        m = self.batch_size
        return [order[k:k + m] for k in range(0, self.n, m)]

    def epoch(self):
        """The index arrays of the next epoch."""
        return self.split(self.epoch_order())
