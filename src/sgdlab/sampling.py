"""Which examples each update sees.

``batches(n, batch_size, order, rng)`` yields, for one epoch, index arrays whose sizes add up
to n (the last batch is smaller when batch_size does not divide n):

    reshuffle     a fresh random permutation every epoch: each example exactly once per epoch
    shuffle_once  one random permutation, drawn once and reused every epoch
    replacement   every index drawn uniformly at random, independently, with replacement
    sequential    0, 1, ..., n-1 in order (no randomness; for reference runs)
    chunk_shuffle each example exactly once per epoch, in a chunk-local order for data on disk
                  that is not in the page cache: NOT a uniform permutation (see below)

``chunk_shuffle`` cuts 0..n-1 into chunks of ``chunk_rows`` consecutive rows, shuffles the
chunks, then takes them ``buffer_chunks`` at a time and shuffles the rows inside each such
buffer. A cold file is then read in long runs (whole chunks) instead of one random row at a time.
The price, stated plainly: **this is not a uniform random permutation.** Rows of one chunk always
land in the same buffer, i.e. within ``chunk_rows * buffer_chunks`` consecutive positions of the
epoch, and rows of the same chunk meet in a batch far more often than under "reshuffle". The order
is a uniform permutation only when n <= chunk_rows * buffer_chunks (one buffer holds everything).
Use it when reading speed decides; use "reshuffle" when the statistics of SGD's sampling matter.

Batch gradient descent is batch_size = n, stochastic gradient descent batch_size = 1,
mini-batch SGD anything between: one code path. The data is never shuffled, only indices.
"""

from __future__ import annotations

import numpy as np

ORDERS = ("reshuffle", "shuffle_once", "replacement", "sequential", "chunk_shuffle")
CHUNK_ROWS = 1024  # chunk_shuffle: consecutive rows read together (about 3 MB of MNIST-shaped float32)
BUFFER_CHUNKS = 16  # chunk_shuffle: chunks whose rows are shuffled together


def chunk_shuffled_order(n: int, rng: np.random.Generator, chunk_rows: int = CHUNK_ROWS,
                         buffer_chunks: int = BUFFER_CHUNKS) -> np.ndarray:
    """Every index 0..n-1 once: chunks shuffled, then rows shuffled within buffers of chunks.

    NOT a uniform permutation (unless n <= chunk_rows * buffer_chunks): see the module docstring.

    >>> order = chunk_shuffled_order(12, np.random.default_rng(0), chunk_rows=3, buffer_chunks=2)
    >>> sorted(order.tolist()) == list(range(12))
    True
    >>> [sorted({int(p) // 6 for p in np.flatnonzero(order // 3 == c)}) for c in range(4)]  # buffer of each chunk
    [[0], [1], [0], [1]]
    """
    if chunk_rows < 1 or buffer_chunks < 1:
        raise ValueError(f"chunk_rows and buffer_chunks must be >= 1; got {chunk_rows} and {buffer_chunks}")
    chunks = rng.permutation(-(-n // chunk_rows))
    out = np.empty(n, np.int64)
    pos = 0
    for g in range(0, len(chunks), buffer_chunks):
        rows = np.concatenate([np.arange(c * chunk_rows, min((c + 1) * chunk_rows, n))
                               for c in chunks[g:g + buffer_chunks]])
        rng.shuffle(rows)
        out[pos:pos + len(rows)] = rows
        pos += len(rows)
    return out


class BatchSampler:
    """Yields the index arrays of each epoch; ``rng`` is the sampling stream."""

    def __init__(self, n: int, batch_size: int, order: str = "reshuffle", rng: np.random.Generator | None = None,
                 chunk_rows: int = CHUNK_ROWS, buffer_chunks: int = BUFFER_CHUNKS):
        if order not in ORDERS:
            raise ValueError(f"unknown sampling {order!r}; valid: {', '.join(ORDERS)}")
        self.n, self.batch_size, self.order = n, batch_size, order
        self.chunk_rows, self.buffer_chunks = chunk_rows, buffer_chunks
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
        if self.order == "chunk_shuffle":
            return chunk_shuffled_order(self.n, self.rng, self.chunk_rows, self.buffer_chunks)
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
