import numpy as np
import pytest
from scipy import stats

from sgdlab.sampling import BatchSampler


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
    with pytest.raises(ValueError, match="valid: reshuffle, shuffle_once, replacement, sequential"):
        BatchSampler(5, 1, "stratified")
