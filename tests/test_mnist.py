"""Real-data training on the MNIST test set in $SGDLAB_DATA/mnist or ../shared/data/mnist (skipped where absent).

784-30-10, sigmoid, quadratic cost, eta = 3.0, mini-batches of 10, 10 epochs, trained on the
first 8,000 images and tested on the last 2,000.
"""

import numpy as np

import sgdlab


def accuracy(X, y, init, seed):
    net = sgdlab.Network([784, 30, 10], init=init, seed=seed)
    h = sgdlab.fit(net, X[:8000], y[:8000], batch_size=10, lr=3.0, epochs=10, seed=seed,
                   validation=(X[8000:], y[8000:]), eval_train=False)
    return h.last["val_accuracy"]


def test_classic_normal_init_reaches_90_percent(mnist_test_set):
    """The classic N(0, 1) start: median test accuracy over seeds 0..8 is >= 0.90.

    Nine seeds, not three: with the quadratic cost an N(0, 1) start sometimes saturates one
    output unit, whose class then stays unlearned (sigma'(z) ~ 0: the learning slowdown), and
    such a run ends near 0.85. That happened for 3 of 12 seeds measured (seeds 1 and 2 among
    them), so a median of three is often below 0.90; a median of nine is not.
    """
    X, y = mnist_test_set
    accs = [accuracy(X, y, "normal", seed) for seed in range(9)]
    assert np.median(accs) >= 0.90, accs


def test_default_init_does_better_than_classic(mnist_test_set):
    X, y = mnist_test_set
    default = [accuracy(X, y, "glorot", seed) for seed in range(3)]
    classic = [accuracy(X, y, "normal", seed) for seed in range(3)]
    assert np.median(default) >= 0.93, default
    assert np.median(default) > np.median(classic)
    assert min(default) > 0.93  # no stuck class with the scaled start
