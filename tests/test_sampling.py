import numpy as np
import pytest
from scipy import stats

from sgdlab.sampling import BatchSampler, chunk_shuffled_order


@pytest.mark.parametrize("n,m", [(10, 3), (12, 4), (7, 7), (5, 1)])
def test_reshuffle_covers_every_example_exactly_once_per_epoch(n, m):
    s = BatchSampler(n, m, "reshuffle", np.random.default_rng(0))
    orders = []
    for _ in range(20):
        batches = s.epoch()
        assert len(batches) == len(s) == -(-n // m)
        assert [len(b) for b in batches[:-1]] == [m] * (len(batches) - 1)
        idx = np.concatenate(batches)
        assert sorted(idx) == list(range(n))
        orders.append(tuple(idx))
    if n > 1:
        assert len(set(orders)) > 1  # reshuffled, not one fixed order


def test_shuffle_once_reuses_one_permutation_and_sequential_is_in_order():
    s = BatchSampler(9, 2, "shuffle_once", np.random.default_rng(1))
    first = np.concatenate(s.epoch())
    assert sorted(first) == list(range(9)) and list(first) != list(range(9))
    assert all((np.concatenate(s.epoch()) == first).all() for _ in range(5))
    assert list(np.concatenate(BatchSampler(9, 2, "sequential").epoch())) == list(range(9))


def test_replacement_draws_are_uniform():
    """Pearson chi-square against the uniform distribution over n = 10 indices.

    200,000 draws, 9 degrees of freedom: under uniformity the statistic exceeds the 0.999
    quantile (27.9) with probability 0.001; a seed is fixed, so the test is deterministic.
    """
    n = 10
    s = BatchSampler(n, 4, "replacement", np.random.default_rng(2))
    counts = np.zeros(n)
    repeats = 0
    for _ in range(20_000):
        idx = np.concatenate(s.epoch())
        assert len(idx) == n  # an epoch is still n examples seen
        counts += np.bincount(idx, minlength=n)
        repeats += len(set(idx)) < n
    stat = stats.chisquare(counts).statistic
    assert stat < stats.chi2.ppf(0.999, n - 1)
    # with replacement, an epoch of 10 draws has all-distinct indices with probability 10!/10^10 = 3.6e-4
    assert repeats > 0.99 * 20_000


def test_unknown_sampling_is_refused():
    with pytest.raises(ValueError, match="valid: reshuffle, shuffle_once, replacement, sequential, chunk_shuffle"):
        BatchSampler(5, 1, "stratified")
    with pytest.raises(ValueError, match="chunk_rows and buffer_chunks must be >= 1"):
        chunk_shuffled_order(5, np.random.default_rng(0), chunk_rows=0)


@pytest.mark.parametrize("n,m,chunk,buf", [(100, 7, 8, 3), (64, 8, 4, 2), (10, 3, 16, 4), (1, 1, 4, 2),
                                           (1000, 128, 10, 1)])
def test_chunk_shuffle_covers_every_example_exactly_once_per_epoch(n, m, chunk, buf):
    s = BatchSampler(n, m, "chunk_shuffle", np.random.default_rng(0), chunk_rows=chunk, buffer_chunks=buf)
    orders = set()
    for _ in range(10):
        batches = s.epoch()
        assert len(batches) == len(s) and all(len(b) == m for b in batches[:-1])
        idx = np.concatenate(batches)
        assert sorted(idx.tolist()) == list(range(n))
        orders.add(tuple(idx.tolist()))
    assert len(orders) > 1 or n == 1  # a fresh order every epoch


def test_chunk_shuffle_is_seeded():
    a = [chunk_shuffled_order(500, np.random.default_rng(7), 16, 4) for _ in range(2)]
    b = chunk_shuffled_order(500, np.random.default_rng(8), 16, 4)
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b)


def test_chunk_shuffle_is_not_a_uniform_permutation_as_documented():
    """What the docstring states, checked: chunks stay whole inside one buffer of the epoch.

    n = 64, chunks of 4 rows, buffers of 2 chunks (8 positions). Every row of a chunk lands in the
    same 8-position window, in every epoch. Under a uniform permutation rows 0 and 1 share a window
    with probability 7/63 = 1/9; over 2,000 epochs a uniform sampler would do so about 222 times,
    never 2,000. Within its window each row is uniform: row 0's offset in its window over 2,000
    epochs passes Pearson's chi-square test at the 0.999 quantile (7 degrees of freedom, 24.3).
    """
    rng = np.random.default_rng(3)
    together = 0
    offsets = np.zeros(8)
    for _ in range(2000):
        order = chunk_shuffled_order(64, rng, chunk_rows=4, buffer_chunks=2)
        pos = np.empty(64, np.int64)
        pos[order] = np.arange(64)
        window = pos // 8
        assert all(len(set(window[c * 4:(c + 1) * 4])) == 1 for c in range(16))
        together += window[0] == window[1]
        offsets[pos[0] % 8] += 1
    assert together == 2000
    perm_rng, uniform = np.random.default_rng(4), 0
    for _ in range(2000):
        pos = np.argsort(perm_rng.permutation(64))
        uniform += pos[0] // 8 == pos[1] // 8
    assert 150 < uniform < 300  # the contrast: a uniform permutation separates them 8 times in 9
    assert stats.chisquare(offsets).statistic < stats.chi2.ppf(0.999, 7)


def test_chunk_shuffle_is_a_uniform_permutation_when_one_buffer_holds_everything():
    """n <= chunk_rows * buffer_chunks: one buffer, shuffled uniformly. The position of row 0 among
    n = 12 over 12,000 epochs passes chi-square at the 0.999 quantile (11 degrees of freedom, 31.3)."""
    rng = np.random.default_rng(5)
    counts = np.zeros(12)
    for _ in range(12_000):
        counts[np.flatnonzero(chunk_shuffled_order(12, rng, chunk_rows=4, buffer_chunks=3) == 0)[0]] += 1
    assert stats.chisquare(counts).statistic < stats.chi2.ppf(0.999, 11)
