"""lab throughput: the FLOP count, the verdict rules, and a small measured run (no timed number is asserted)."""

import numpy as np
import pytest

from sgdlab.lab import throughput
from sgdlab.lab.verdict import CAVEAT, FAILS, HOLDS


def test_flops_per_example_counts_forward_backward_without_the_input_gradient():
    # 784-100-10: forward 2(78400 + 1000), weight gradients the same, delta back through layer 2 only: 2 * 1000
    assert throughput.flops_per_example([784, 100, 10]) == 2 * 79400 + 2 * 79400 + 2 * 1000 == 319600
    wide = [784 * 1000, 1000 * 1000, 1000 * 10]
    assert throughput.flops_per_example([784, 1000, 1000, 10]) == 4 * sum(wide) + 2 * (wide[1] + wide[2])
    assert throughput.flops_per_example([5, 2]) == 4 * 10  # one layer: no delta to propagate


def curve(eps):
    flop = 319600
    return [{"B": b, "examples_per_second": e, "gflops": e * flop / 1e9} for b, e in eps]


@pytest.mark.parametrize("eps, expected", [
    ([(1, 1e3), (16, 2e4), (256, 5e4)], (HOLDS, HOLDS)),  # 50x, rising to the end
    ([(1, 1e3), (16, 4e3), (256, 3e3)], (CAVEAT, HOLDS)),  # only 4x: caveat; falls to 75% (not below 50%)
    ([(1, 1e3), (16, 2e4), (256, 5e3)], (HOLDS, CAVEAT)),  # falls to 25% of the best after B = 16
    ([(1, 1e3), (16, 1.2e3), (256, 1.1e3)], (FAILS, FAILS)),  # batching buys nothing here
])
def test_verdicts_follow_their_stated_rules(eps, expected):
    v = throughput.judge(curve(eps), "net on cpu")
    assert (v[0].verdict, v[1].verdict) == expected
    assert all(x.rule and x.evidence for x in v)


def test_mnist_shaped_inputs_are_seeded_and_shaped():
    X, y, source = throughput.mnist_shaped(None, 32, seed=3)
    X2, y2, _ = throughput.mnist_shaped(None, 32, seed=3)
    assert X.shape == (32, 784) and X.dtype == np.float32 and y.max() < 10
    np.testing.assert_array_equal(X, X2)
    assert "synthetic" in source


def test_a_small_measured_run_writes_its_figure_and_numbers(tmp_path, monkeypatch):
    small = {"784-100-10": {"n": 64, "sizes": [1, 8, 64], "updates": 8},
             "784-1000-1000-10": {"n": 8, "sizes": [1, 8], "updates": 2}, "repeats": 1}
    monkeypatch.setattr(throughput, "settings", lambda quick: small)
    r = throughput.run(None, out=tmp_path, quick=True)
    assert r.figure.exists() and r.json.exists()
    rows = r.numbers["rows"]
    assert [x["B"] for x in rows] == [1, 8, 64, 1, 8]
    for x in rows:
        assert x["eps_min"] <= x["examples_per_second"] <= x["eps_max"]
        flop = r.numbers["flop_per_example"][x["network"]]
        assert x["gflops"] == pytest.approx(x["examples_per_second"] * flop / 1e9)
    assert len(r.verdicts) == 4 and r.numbers["load_before"] is not None and r.numbers["machine"]["cpu"]
    assert "No GPU" in r.reading or r.numbers["devices"][1]["device"].startswith("cuda")
