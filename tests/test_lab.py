import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import sgdlab
from sgdlab.lab import compare, minima, noise_scale, redundancy, symmetry, unbiased, variance
from sgdlab.lab.estimators import (RatioEMA, minibatch_variance, trace_sigma, two_batch_estimates,
                                   variance_factor)
from sgdlab.lab import EXPERIMENTS
from sgdlab.lab.report import write_report


@pytest.fixture(scope="module")
def digits():
    return sgdlab.data.load_digits_split(seed=0)


@pytest.fixture(scope="module")
def measured_net(digits):
    from sgdlab.lab.common import trained_network

    return trained_network(digits, seed=0)


# ------------------------------------------------------------------ estimators: exact maths, property tests
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 3)), elements=finite), st.data())
def test_finite_population_variance_by_enumeration(g, data):
    """Averaging over every batch of B distinct examples gives tr Sigma/B (n-B)/(n-1) exactly;
    over every B-tuple drawn with replacement, tr Sigma/B."""
    n = len(g)
    b = data.draw(st.integers(1, n))
    G = g.mean(0)
    tr = np.mean(np.sum((g - G) ** 2, axis=1))
    without = np.mean([np.sum((g[list(c)].mean(0) - G) ** 2) for c in itertools.combinations(range(n), b)])
    assert without == pytest.approx(minibatch_variance(tr, b, n), rel=1e-9, abs=1e-9)
    if n ** b <= 4096:
        with_ = np.mean([np.sum((g[list(c)].mean(0) - G) ** 2) for c in itertools.product(range(n), repeat=b)])
        assert with_ == pytest.approx(minibatch_variance(tr, b), rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 5)), elements=finite))
def test_trace_sigma_from_norms_is_the_covariance_trace(g):
    G = g.mean(0)
    cov = np.cov(g.T, bias=True).reshape(g.shape[1], g.shape[1])
    assert trace_sigma(np.linalg.norm(g, axis=1), G) == pytest.approx(np.trace(cov), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 100.0), st.floats(0.0, 100.0), st.integers(1, 50), st.integers(1, 500),
       st.one_of(st.none(), st.integers(600, 10_000)))
def test_two_batch_estimators_invert_the_noise_model(g2, s, b_small, extra, n):
    """E||g_b||^2 = |G|^2 + c(b) tr Sigma; feeding those expectations back returns (|G|^2, tr Sigma)."""
    b_big = b_small + extra
    small, big = g2 + variance_factor(b_small, n) * s, g2 + variance_factor(b_big, n) * s
    g2_est, s_est = two_batch_estimates(small, big, b_small, b_big, n)
    assert g2_est == pytest.approx(g2, rel=1e-7, abs=1e-7)
    assert s_est == pytest.approx(s, rel=1e-7, abs=1e-7)


def test_ratio_ema_averages_numerator_and_denominator_not_the_ratio():
    ema = RatioEMA(decay=0.5)
    assert math.isnan(ema.value)
    assert ema.update(2.0, 4.0) == pytest.approx(0.5)  # bias-corrected: no pull towards 0
    v = ema.update(10.0, 1.0)  # (0.5*2*0.5 + 0.5*10) / (0.5*4*0.5 + 0.5*1), same correction
    assert v == pytest.approx((0.25 * 2 + 0.5 * 10) / (0.25 * 4 + 0.5 * 1))
    assert v != pytest.approx((0.5 + 10) / 2)


# ------------------------------------------------------------------ measurements
def test_variance_matches_theory_within_its_sampling_error(measured_net, digits):
    """Each measured E||g_B - G||^2 is a mean of R = 200 independent squared norms; its standard error
    is their sample sd / sqrt(R). Measured/theory must be within 4 standard errors at every B
    (a two-sided 4-sigma band: ~6e-5 false-alarm rate per point for a normal mean), and the log-log
    slope with replacement within 0.05 of -1."""
    r = variance.run(digits, seed=0, net=measured_net, repeats=200)
    for scheme in ("with_replacement", "without_replacement"):
        d = r.numbers[scheme]
        ok = np.isfinite(d["ratio"])
        assert np.all(np.abs(d["ratio"][ok] - 1) <= 4 * d["ratio_stderr"][ok]), (scheme, d["ratio"], d["ratio_stderr"])
    assert r.numbers["with_replacement"]["loglog_slope"] == pytest.approx(-1.0, abs=0.05)
    assert r.numbers["without_replacement"]["measured"][-1] < 1e-20  # B = n without replacement: G itself


def test_unbiased_mean_of_batch_gradients_converges_like_one_over_sqrt_k(measured_net, digits):
    r = unbiased.run(digits, seed=0, net=measured_net, quick=True, streams=8)
    for scheme in ("replacement", "without_replacement"):
        assert r.numbers[scheme]["loglog_slope_first_epoch"] == pytest.approx(-0.5, abs=0.1)
    k, per_epoch = r.numbers["k"], r.numbers["batches_per_epoch"]
    assert np.all(r.numbers["reshuffle"]["all_streams"][:, k == per_epoch] < 1e-10)  # a full epoch averages to G


def linear_least_squares(n=20_000, d=5, noise=0.5, seed=0):
    """x ~ N(0, I_d), y = w*.x + eps. At parameters (w, b = 0), with u = w - w*, the per-example gradient of
    the quadratic cost is g = r (x, 1) with r = u.x - eps, so in the population
        G = (u, 0),  ||G||^2 = ||u||^2,  tr Sigma = E r^2 (||x||^2 + 1) - ||G||^2 = ||u||^2 (d + 2) + noise^2 (d + 1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w_true = rng.standard_normal(d)
    y = X @ w_true + noise * rng.standard_normal(n)
    net = sgdlab.Network([d, 1], output_activation="identity", dtype="float64", init="zeros")
    u = rng.standard_normal(d) * 0.3
    net.params[0][0][:, 0] = w_true + u
    g2 = u @ u
    return X, y, net, {"grad_norm_sq": g2, "tr_sigma": g2 * (d + 2) + noise ** 2 * (d + 1)}


def test_noise_scale_exact_and_two_batch_estimates_agree_on_least_squares():
    X, y, net, pop = linear_least_squares()
    ex = noise_scale.exact(net, X, y)
    # 1. exact B_simple equals an explicit computation with all n per-example gradients
    r = X @ net.params[0][0][:, 0] + net.params[0][1][0] - y
    g = np.column_stack([r[:, None] * X, r])
    G = g.mean(0)
    assert ex["tr_sigma"] == pytest.approx(np.mean(np.sum((g - G) ** 2, 1)), rel=1e-9)
    assert ex["grad_norm_sq"] == pytest.approx(G @ G, rel=1e-9)
    # 2. the sample matches the closed-form population values up to sampling error (n = 20,000: ~2-3%)
    assert ex["grad_norm_sq"] == pytest.approx(pop["grad_norm_sq"], rel=0.06)
    assert ex["tr_sigma"] == pytest.approx(pop["tr_sigma"], rel=0.06)
    # 3. the two-batch estimate agrees with the exact value within 4 of its standard errors
    est = noise_scale.estimate(net, X, y, 4, 256, pairs=800, rng=np.random.default_rng(1))
    assert abs(est["b_simple"] - ex["b_simple"]) <= 4 * est["b_simple_se"]
    assert abs(est["tr_sigma"] - ex["tr_sigma"]) <= 4 * est["tr_sigma_se"]
    assert abs(est["grad_norm_sq"] - ex["grad_norm_sq"]) <= 4 * est["grad_norm_sq_se"]


def test_noise_scale_on_digits(measured_net, digits):
    ex = noise_scale.exact(measured_net, digits.X_train, digits.y_train)
    est = noise_scale.estimate(measured_net, digits.X_train, digits.y_train, 8, 256, 300, np.random.default_rng(0))
    assert abs(est["b_simple"] - ex["b_simple"]) <= 4 * est["b_simple_se"]


def test_minima_sgd_reaches_the_better_minimum_more_often_than_batch_gd():
    """Default landscape and runs (200 starts), seed 0: at lr = 0.03 SGD escapes the sharp minimum in
    every run and batch GD in none; we require a margin of at least 0.5 at lr = 0.03 and 0.05."""
    r = minima.run(seed=0, xor_seeds=0)
    f = r.numbers["fraction_in_better_minimum"]
    for lr in ("0.03", "0.05"):
        assert f[f"lr={lr}, SGD"] - f[f"lr={lr}, batch GD"] >= 0.5
    assert all(v == 0.0 for k, v in f.items() if "batch GD" in k)  # deterministic descent stays in its basin
    g = minima.grad(np.array([[0.3, -0.7]]))
    eps = 1e-6
    fd = [(minima.loss(np.array([[0.3 + eps, -0.7]])) - minima.loss(np.array([[0.3 - eps, -0.7]]))) / (2 * eps),
          (minima.loss(np.array([[0.3, -0.7 + eps]])) - minima.loss(np.array([[0.3, -0.7 - eps]]))) / (2 * eps)]
    np.testing.assert_allclose(g[0], np.ravel(fd), rtol=1e-6)
    assert minima.loss(minima.C2) < minima.loss(minima.C1)  # c2 is the better minimum


def test_symmetry_zero_init_differences_stay_at_rounding_level(digits):
    r = symmetry.run(digits, seed=0, quick=True)
    z64 = r.numbers["curves"]["zeros (float64)"]["unit_spread"]
    assert z64[0] == 0.0 and z64[1] <= 1e-15  # exactly 0 at the start; rounding level after an epoch (0 on this machine)
    assert max(z64) < 1e-12  # five epochs: rounding, amplified but still ~1e-15 relative
    assert min(r.numbers["curves"]["glorot (float32)"]["unit_spread"]) > 0.1
    rows = {row["init"]: row for row in r.table}
    assert rows["zeros (float64)"]["test accuracy"] < 0.5 < rows["glorot (float32)"]["test accuracy"]


def test_redundancy_full_batch_gd_takes_the_same_steps(digits):
    r = redundancy.run(digits, seed=0, quick=True)
    assert r.numbers["gd_cost_spread_across_k"] < 1e-5  # float32 rounding of k times longer sums
    for row, k in zip(r.table, (1, 4, 16)):
        assert row["n"] == k * len(digits.X_train) and row["GD examples"] == 10 * k * len(digits.X_train)


def test_compare_sgd_makes_progress_before_seeing_all_data(digits):
    r = compare.run(digits, seed=0, quick=True)
    gd, sgd, mb = r.table
    assert gd["after n/10 examples"] == gd["cost at start"]  # batch GD has made no update yet
    assert sgd["after n/10 examples"] < 0.6 * sgd["cost at start"]
    assert gd["updates"] == 5 and sgd["updates"] == 5 * len(digits.X_train)
    c = r.numbers["curves"]["SGD (B=1)"]
    assert np.all(c["cost_ci95"] >= 0) and c["cost_runs"].shape[0] == 3


# ------------------------------------------------------------------ the report and the command line
def test_report_is_well_formed_and_references_only_its_own_files(tmp_path):
    page = write_report(tmp_path, quick=True)
    root = ET.parse(page).getroot()  # raises on malformed markup
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    written = {p.name for p in tmp_path.iterdir()}
    refs = [e.get("src") for e in root.iterfind(".//h:img", ns)] + [e.get("href") for e in root.iterfind(".//h:a", ns)]
    local = [r for r in refs if not r.startswith("#")]
    k = len(EXPERIMENTS)
    assert len([r for r in local if r.endswith(".png")]) == k and len([r for r in local if r.endswith(".json")]) == k
    assert all(r in written and "/" not in r and ":" not in r for r in local)
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())
    assert len(root.findall(".//h:section", ns)) == k


def test_lab_command_line(tmp_path, capsys):
    from sgdlab.cli import main

    assert main(["lab", "symmetry", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "zeros (float64)" in out and "symmetry.png" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["symmetry.json", "symmetry.png"]
    with pytest.raises(SystemExit):
        main(["lab", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
