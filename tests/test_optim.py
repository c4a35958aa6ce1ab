import math

import numpy as np
import pytest

import sgdlab
from sgdlab import optim, schedules


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_one_hand_worked_update_on_a_tiny_network():
    """Network 2-1, sigmoid, quadratic cost, two examples, one batch step with eta = 0.5.

    By the chain rule, delta_j = (a_j - y_j) a_j (1 - a_j) and
    w' = w - (eta/m) sum_j x_j delta_j,  b' = b - (eta/m) sum_j delta_j.
    """
    net = sgdlab.Network([2, 1], init="zeros", dtype="float64")
    W, b = net.params[0]
    W[:, 0] = [0.1, -0.2]
    b[0] = 0.3
    X = np.array([[1.0, 2.0], [-1.0, 0.5]])
    y = np.array([1.0, 0.0])
    eta, m = 0.5, 2
    deltas = []
    for x, t in zip(X, y, strict=True):
        a = sigmoid(0.1 * x[0] - 0.2 * x[1] + 0.3)
        deltas.append((a - t) * a * (1 - a))
    w_new = [0.1 - eta / m * (X[0, 0] * deltas[0] + X[1, 0] * deltas[1]),
             -0.2 - eta / m * (X[0, 1] * deltas[0] + X[1, 1] * deltas[1])]
    b_new = 0.3 - eta / m * (deltas[0] + deltas[1])
    for fused in (True, False):
        net2 = sgdlab.Network.from_params(net.describe(), [(W.copy(), b.copy())])
        sgdlab.fit(net2, X, y, method="batch", lr=eta, epochs=1, fused=fused)
        W2, b2 = net2.params[0]
        np.testing.assert_allclose(W2[:, 0], w_new, rtol=1e-14)
        assert b2[0] == pytest.approx(b_new, rel=1e-14)


def test_two_layer_hand_worked_update():
    """1-1-1 sigmoid network, one example: the backprop chain written out by hand."""
    w1, b1, w2, b2, x, y, eta = 0.5, -0.1, -0.3, 0.2, 2.0, 1.0, 3.0
    a1 = sigmoid(w1 * x + b1)
    a2 = sigmoid(w2 * a1 + b2)
    d2 = (a2 - y) * a2 * (1 - a2)
    d1 = d2 * w2 * a1 * (1 - a1)
    expected = [w1 - eta * x * d1, b1 - eta * d1, w2 - eta * a1 * d2, b2 - eta * d2]
    net = sgdlab.Network.from_params(sgdlab.Network([1, 1, 1], dtype="float64").describe(),
                                     [(np.array([[w1]]), np.array([b1])), (np.array([[w2]]), np.array([b2]))])
    sgdlab.fit(net, np.array([[x]]), np.array([[y]]), method="stochastic", lr=eta, epochs=1)
    got = [net.params[0][0][0, 0], net.params[0][1][0], net.params[1][0][0, 0], net.params[1][1][0]]
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def params_of(*arrays):
    return [(np.array(arrays[0], dtype=float), np.array(arrays[1], dtype=float))]


def run(opt, grads_seq, params):
    state = opt.init(params)
    for g in grads_seq:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params


def test_momentum_and_nesterov_follow_their_equations():
    p0 = params_of([[1.0]], [0.5])
    gs = [params_of([[0.2]], [0.1]), params_of([[-0.4]], [0.3]), params_of([[0.1]], [-0.2])]
    eta, mu = 0.1, 0.9
    for nesterov in (False, True):
        w, b, vw, vb = 1.0, 0.5, 0.0, 0.0
        for g in gs:
            gw, gb = g[0][0][0, 0], g[0][1][0]
            vw, vb = mu * vw + gw, mu * vb + gb
            w -= eta * ((gw + mu * vw) if nesterov else vw)
            b -= eta * ((gb + mu * vb) if nesterov else vb)
        out = run(optim.sgd(eta, momentum=mu, nesterov=nesterov), gs, p0)
        assert out[0][0][0, 0] == pytest.approx(w, rel=1e-14)
        assert out[0][1][0] == pytest.approx(b, rel=1e-14)


def test_weight_decay_decays_weights_not_biases():
    out = run(optim.sgd(0.1, weight_decay=0.5), [params_of([[0.0]], [0.0])], params_of([[2.0]], [2.0]))
    assert out[0][0][0, 0] == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)
    assert out[0][1][0] == 2.0


def test_schedule_is_a_function_of_the_step():
    seen = []
    sched = lambda t: seen.append(t) or 1.0 / (t + 1)  # noqa: E731
    out = run(optim.sgd(sched), [params_of([[1.0]], [1.0])] * 3, params_of([[0.0]], [0.0]))
    assert seen == [0, 1, 2]
    assert out[0][0][0, 0] == pytest.approx(-(1 + 1 / 2 + 1 / 3))


def test_schedules():
    assert schedules.inverse_time(1.0, 0.5)(2) == 0.5
    assert schedules.step(1.0, 0.1, 10)(25) == pytest.approx(0.01)
    assert schedules.exponential(2.0, 0.5, 4)(8) == pytest.approx(0.5)
    assert schedules.cosine(1.0, 10)(10) == pytest.approx(0.0)
    assert schedules.cosine(1.0, 10)(0) == 1.0


def test_optimizer_does_not_modify_its_inputs():
    params, grads = params_of([[1.0]], [1.0]), params_of([[1.0]], [1.0])
    opt = optim.sgd(0.1, momentum=0.9, weight_decay=0.1)
    state = opt.init(params)
    updates, _ = opt.update(grads, state, params)
    optim.apply_updates(params, updates)
    assert params[0][0][0, 0] == 1.0 and grads[0][0][0, 0] == 1.0


@pytest.mark.parametrize("method,bs", [("batch", None), ("stochastic", None), ("minibatch", 7)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_fused_fast_path_agrees_with_reference_path(toy, method, bs, wd):
    X, y = toy
    runs = []
    for fused in (True, False):
        net = sgdlab.Network([5, 6, 3], seed=4, dtype="float64")
        sgdlab.fit(net, X, y, method=method, batch_size=bs, lr=0.5, epochs=3, seed=9, weight_decay=wd, fused=fused)
        runs.append(net.params)
    for (W1, b1), (W2, b2) in zip(*runs, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b1, b2, rtol=1e-12, atol=1e-14)


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="momentum must be in"):
        optim.sgd(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.sgd(0.1, weight_decay=-1)
