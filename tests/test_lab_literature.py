"""The lab's literature experiments: frontier, lr-batch, sharpness, gradient-norms; and the exact HVP."""

import json

import numpy as np
import pytest

import sgdlab
from sgdlab.lab import EXPERIMENTS, frontier, gradient_norms, hessian, lr_batch, sharpness
from sgdlab.lab.verdict import CAVEAT, FAILS, HOLDS

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
COST_OUTPUT = (("quadratic", None), ("quadratic", "identity"), ("quadratic", "tanh"), ("quadratic", "softmax"),
               ("cross_entropy", "sigmoid"), ("cross_entropy", "softmax"))


def _problem(hidden, cost, out, seed=3):
    rng = np.random.default_rng(seed)
    net = sgdlab.Network([5, 4, 3, 3], activation=hidden, output_activation=out, cost=cost, seed=seed, dtype="float64")
    # random biases: with zero biases an example whose relu units are all off sits exactly on a kink
    net.params = [(W, rng.standard_normal(b.shape)) for W, b in net.params]
    X = rng.standard_normal((13, 5))
    y = rng.integers(0, 3, 13)
    return net, X, y, rng.standard_normal(net.n_params)


# ------------------------------------------------------------------ Hessian-vector products
@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_hvp_matches_central_differences_of_the_gradient(hidden, cost, out):
    """Central differences err by O(eps^2) (truncation) + O(1e-16/eps) (rounding): ~1e-8 at eps = 1e-4."""
    net, X, y, v = _problem(hidden, cost, out)
    exact, fd = hessian.hvp(net, X, y, v), hessian.finite_difference_hvp(net, X, y, v, eps=1e-4)
    assert np.linalg.norm(exact - fd) <= 1e-6 * np.linalg.norm(fd) + 1e-12


@pytest.mark.parametrize("hidden,cost,out", [(h, c, o) for h in HIDDEN for c, o in COST_OUTPUT])
def test_hvp_matches_pytorch_double_backward(hidden, cost, out):
    torch = pytest.importorskip("torch")
    net, X, y, v = _problem(hidden, cost, out, seed=5)
    Y = np.eye(3)[y]
    flat0 = torch.tensor(hessian.flat(net.params), requires_grad=True)
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z,
         "softmax": lambda z: torch.softmax(z, dim=1)}

    def C(theta):
        a, i, last = torch.tensor(X), 0, len(net.params) - 1
        for l, (W, b) in enumerate(net.params):
            nw, nb = W.size, b.size
            z = a @ theta[i:i + nw].reshape(W.shape) + theta[i + nw:i + nw + nb]
            i += nw + nb
            a = f[(out or "sigmoid") if l == last else hidden](z)
        Yt = torch.tensor(Y)
        if cost == "quadratic":
            return 0.5 * ((a - Yt) ** 2).sum() / len(X)
        if out == "sigmoid":  # from the logits, as sgdlab computes it
            return torch.nn.functional.binary_cross_entropy_with_logits(z, Yt, reduction="sum") / len(X)
        return -(Yt * torch.log_softmax(z, dim=1)).sum() / len(X)

    _, Hv = torch.autograd.functional.hvp(C, flat0, torch.tensor(v))
    np.testing.assert_allclose(hessian.hvp(net, X, y, v), Hv.numpy(), rtol=1e-8, atol=1e-12)


def test_hvp_is_linear_symmetric_and_power_iteration_finds_the_top_eigenvalue():
    net, X, y, _ = _problem("sigmoid", "quadratic", None)
    H = np.array([hessian.hvp(net, X, y, e) for e in np.eye(net.n_params)])
    assert np.abs(H - H.T).max() <= 1e-12 * np.abs(H).max()
    eig = np.linalg.eigvalsh(H)
    top = hessian.top_eigenvalue(net, X, y, iters=2000, tol=1e-10)
    assert top["converged"]
    assert top["lambda_max"] == pytest.approx(eig[-1], rel=1e-6)


def test_power_iteration_shifts_when_the_largest_magnitude_is_negative():
    """A symmetric operator whose dominant eigenvalue is negative: lambda_max is still the top one."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = Q @ np.diag([-9.0, -1.0, 0.5, 1.0, 2.0, 3.0]) @ Q.T
    top = hessian.power_iteration(lambda v: A @ v, 6, iters=5000, tol=1e-13)
    assert top["converged"] and top["lambda_max"] == pytest.approx(3.0, rel=1e-6)
    assert hessian.power_iteration(lambda v: -A @ v, 6, iters=5000, tol=1e-13)["lambda_max"] == pytest.approx(9.0)


def test_hvp_of_a_float32_network_is_that_of_its_float64_copy_and_flat_params_round_trip():
    net = sgdlab.Network([5, 4, 3], seed=2)  # float32
    rng = np.random.default_rng(1)
    X, y, v = rng.standard_normal((9, 5)), rng.integers(0, 3, 9), rng.standard_normal(net.n_params)
    # the same parameters; only X is rounded to float32 on the way in
    np.testing.assert_allclose(hessian.hvp(net, X, y, v), hessian.hvp(hessian.float64_copy(net), X, y, v), rtol=1e-5)
    w = hessian.flat_params(net)
    hessian.set_flat_params(net, w + 1.0)
    np.testing.assert_allclose(hessian.flat_params(net), w + 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="parameter vector"):
        hessian.set_flat_params(net, w[:-1])


def test_hvp_refuses_mismatched_vectors():
    net, X, y, v = _problem("sigmoid", "quadratic", None)
    with pytest.raises(ValueError, match="parameters"):
        hessian.hvp(net, X, y, v[:-1])


# ------------------------------------------------------------------ the four experiments, quick, end to end

MODULES = {"frontier": frontier, "lr-batch": lr_batch, "sharpness": sharpness, "gradient-norms": gradient_norms}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("lit")
    return {name: EXPERIMENTS[name](seed=0, out=out, quick=True) for name in MODULES}


@pytest.mark.parametrize("name", list(MODULES))
def test_quick_run_writes_figure_json_with_machine_seeds_and_verdicts(quick_results, name):
    r = quick_results[name]
    assert r.figure.exists() and r.figure.stat().st_size > 10_000
    data = json.loads(r.json.read_text())
    assert data["experiment"] == name
    assert data["numbers"]["seeds"] and "cpu" in data["numbers"]["machine"]
    assert data["numbers"]["load_before"] is None or len(data["numbers"]["load_before"]) == 3
    assert data["verdicts"] and all(v["verdict"] in (HOLDS, CAVEAT, FAILS) and v["rule"] for v in data["verdicts"])
    assert r.table


@pytest.mark.parametrize("name", list(MODULES))
def test_verdicts_are_recomputed_from_the_json_numbers(quick_results, name):
    """The reading follows the numbers: the stated rules applied to the saved summary give the saved verdicts."""
    data = json.loads(quick_results[name].json.read_text())
    again = MODULES[name].decide_claims(data["numbers"]["summary"])
    assert [v.verdict for v in again] == [v["verdict"] for v in data["verdicts"]]
    for v in data["verdicts"]:
        assert v["verdict"] in data["reading"] and v["claim"] in data["reading"]


def test_frontier_quick_reaches_targets_and_fits(quick_results):
    n = quick_results["frontier"].numbers
    targets = n["targets"]
    assert targets == sorted(targets, reverse=True)
    for f in n["fits"]:
        assert f["B_crit"] > 0 and f["S_min"] > 0 and f["E_min"] == pytest.approx(f["S_min"] * f["B_crit"])
    for row in n["rows"]:  # S falls (weakly) with B at the lowest target, up to the checkpoint resolution
        assert row["budget_updates"] >= 1
    S = [row["per_target"][f"{targets[-1]:.6g}"]["updates"] for row in n["rows"]]
    S = [s for s in S if s is not None]
    assert S[0] > S[-1]


def test_sharpness_measures_lambda_max_at_the_same_training_cost(quick_results):
    n = quick_results["sharpness"].numbers
    for row in n["rows"]:
        for p in row["runs"]:
            assert p["lambda_max"] > 0 and p["power_converged"]
            if p["reached"]:
                assert p["train_cost"] <= n["target_cost"] * 1.0001


# ------------------------------------------------------------------ verdicts flip with the numbers
def test_frontier_verdicts_flip():
    good = {"targets": [0.4, 0.2, 0.1], "b_crit": [2.0, 3.0, 5.0], "b_crit_ci": [[1.8, 2.2], [2.8, 3.2], [4.5, 5.5]],
            "rms": [0.05, 0.04, 0.06], "p_grows": 1.0}
    v = frontier.decide_claims(good)
    assert [x.verdict for x in v] == [HOLDS, HOLDS]
    bad = dict(good, rms=[0.05, 0.5, 0.06], p_grows=0.4, b_crit=[5.0, 3.0, 2.0])
    assert [x.verdict for x in frontier.decide_claims(bad)] == [FAILS, FAILS]
    overlap = dict(good, b_crit_ci=[[1.0, 4.0], [2.8, 3.2], [4.5, 5.5]])
    assert frontier.decide_claims(overlap)[1].verdict == CAVEAT


def test_lr_batch_verdicts_flip():
    linear = {"sizes": [1, 4, 16, 64], "best_lr": [1.0, 4.0, 16.0, 64.0], "eps_max": [2.0, 8.0, 32.0, 128.0],
              "two_over_lambda_end": [100.0, 100.0, 100.0, 80.0], "factor": 2.0}
    v = lr_batch.decide_claims(linear)
    assert v[0].verdict == HOLDS and v[1].verdict == FAILS and v[2].verdict == CAVEAT  # no break in the sweep
    capped = dict(linear, best_lr=[1.0, 4.0, 4.0, 4.0], eps_max=[2.0, 8.0, 8.0, 4.0],
                  two_over_lambda_end=[100.0, 100.0, 100.0, 100.0])
    v = lr_batch.decide_claims(capped)
    assert v[0].verdict == CAVEAT and "B = 16" in v[0].caveat and v[1].verdict == HOLDS and v[2].verdict == HOLDS
    nothing_learned = dict(capped, eps_max=[2.0, 8.0, 8.0, None])  # B = 64: no eta stable at all
    assert lr_batch.decide_claims(nothing_learned)[1].verdict == FAILS
    excused = dict(nothing_learned, learned=[True, True, True, False])  # ... because nothing learned: left out
    assert lr_batch.decide_claims(excused)[1].verdict == HOLDS
    none = dict(capped, best_lr=[1.0, 1.0, 1.0, 1.0], eps_max=[2.0, 16.0, 16.0, None],
                two_over_lambda_end=[0.5, 100.0, 100.0, 100.0])
    v = lr_batch.decide_claims(none)
    assert [x.verdict for x in v] == [FAILS, FAILS, FAILS]


def test_sharpness_verdicts_flip():
    keskar = {"b_small": 1, "b_large": 1437, "log_ratio": np.log(8.0), "log_ratio_ci": 0.5, "acc_gain": 0.03,
              "acc_gain_ci": 0.01}
    assert [v.verdict for v in sharpness.decide_claims(keskar)] == [HOLDS, HOLDS]
    flat = dict(keskar, log_ratio=0.1, acc_gain=0.0)
    assert [v.verdict for v in sharpness.decide_claims(flat)] == [FAILS, FAILS]


def test_gradient_norms_verdicts_flip():
    heavy = {"share_end": 0.6, "share_end_ci": 0.02, "share_growth": 0.1, "share_growth_ci": 0.02,
             "is_ratio_end": 0.3, "is_ratio_end_ci": 0.05}
    assert [v.verdict for v in gradient_norms.decide_claims(heavy)] == [HOLDS, HOLDS, HOLDS]
    mild = dict(heavy, share_end=0.13)
    assert gradient_norms.decide_claims(mild)[0].verdict == CAVEAT
    flat = {"share_end": 0.02, "share_end_ci": 0.01, "share_growth": -0.01, "share_growth_ci": 0.02,
            "is_ratio_end": 0.9, "is_ratio_end_ci": 0.05}
    assert [v.verdict for v in gradient_norms.decide_claims(flat)] == [FAILS, FAILS, FAILS]


# ------------------------------------------------------------------ the pure pieces
def test_per_example_deviations_match_explicit_per_example_gradients():
    from sgdlab.lab.estimators import flatten

    net, X, y, _ = _problem("tanh", "quadratic", None)
    d = gradient_norms.per_example_deviations(net, X, y)
    g = np.array([flatten(net.gradient(X[i:i + 1], y[i:i + 1])) for i in range(len(X))])
    G = g.mean(axis=0)
    np.testing.assert_allclose(d["G"], G, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d["norm_sq"], (g * g).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(d["deviation_sq"], ((g - G) ** 2).sum(axis=1), rtol=1e-9, atol=1e-14)


def test_top_share():
    assert gradient_norms.top_share(np.ones(200)) == pytest.approx(0.01)
    assert gradient_norms.top_share([0.0] * 150 + [3.0, 1.0]) == pytest.approx(1.0)  # ceil(1% of 152) = 2


def test_fit_frontier_recovers_the_hyperbola_and_refuses_too_few_points():
    B = np.array([1, 2, 4, 8, 16, 64, 256])
    f = frontier.fit_frontier(B, 50 * (1 + 3.5 / B))
    assert f["B_crit"] == pytest.approx(3.5, rel=1e-6) and f["rms_log_residual"] < 1e-8
    S, E = 50 * (1 + 3.5 / B), 50 * (1 + 3.5 / B) * B
    np.testing.assert_allclose((S / f["S_min"] - 1) * (E / f["E_min"] - 1), 1.0, rtol=1e-6)
    assert np.isnan(frontier.fit_frontier([4], [10])["B_crit"])


def test_best_per_target_counts_censored_runs_as_the_budget():
    runs = {1.0: [{"t": 100}, {"t": None}], 2.0: [{"t": 400}, {"t": 500}]}
    best = frontier.best_per_target(runs, ["t"], budget=1000)["t"]
    assert best["best_lr"] == 2.0 and best["updates"] == 450  # 1.0 scores (100 + 1000)/2 = 550
    best = frontier.best_per_target(runs, ["t"], budget=600)["t"]
    assert best["best_lr"] == 1.0 and best["censored"] == 1 and best["updates"] is None


def test_scaling_break_and_constant_cost():
    assert lr_batch.scaling_break([2, 8, 32], [1.0, 4.0, 1.0]) == ([1.0, 1.0, 0.0625], 32)
    net = sgdlab.Network([2, 3], seed=0)
    # one-hot of [0, 0, 1, 2]: per-class variances 1/4, 3/16, 3/16 -> C_const = (1/2)(5/8)
    assert lr_batch.constant_cost(net, np.array([0, 0, 1, 2])) == pytest.approx(0.3125)
