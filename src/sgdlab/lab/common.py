"""Shared set-up of the lab: data, a network for it, a probe that records cost while training."""

from __future__ import annotations

import numpy as np

from .. import data as datasets
from ..network import Network
from ..train import Callback, fit


def load(data="digits", data_dir=None, seed: int = 0) -> datasets.Dataset:
    """A Dataset object passes through; a name or path is loaded."""
    if isinstance(data, datasets.Dataset):
        return data
    return datasets.load(data, data_dir, seed=seed)


def network_for(ds, *, hidden=(30,), seed: int = 0, dtype="float32", init="glorot", **kw) -> Network:
    """The lab's default network for a dataset: [d, 30, k], sigmoid, quadratic cost."""
    k = ds.n_classes
    out = [1] if k is None else [k]
    return Network([ds.X_train.shape[1], *hidden, *out], output_activation="identity" if k is None else None,
                   seed=seed, dtype=dtype, init=init, **kw)


def trained_network(ds, *, epochs: int = 2, seed: int = 0, dtype="float64") -> Network:
    """The fixed parameters measurements are made at: a network after a few epochs of mini-batch SGD.

    At the initial weights the mean gradient dominates; a little training gives the noise
    something realistic to be measured against.
    """
    net = network_for(ds, seed=seed, dtype=dtype)
    fit(net, ds.X_train, ds.y_train, batch_size=10, lr=3.0 if ds.n_classes else 0.1, epochs=epochs, seed=seed,
        eval_train=False)
    return net


def geometric_grid(low: float, high: float, per_decade: int = 8) -> np.ndarray:
    """Integers from low to high, roughly evenly spaced on a log scale (unique, sorted)."""
    k = max(2, int(np.ceil(np.log10(high / low) * per_decade)) + 1)
    return np.unique(np.round(np.geomspace(low, high, k)).astype(np.int64))


class CostProbe(Callback):
    """Records the full training cost each time ``examples_seen`` passes the next checkpoint.

    Evaluation happens in a callback, so ``fit`` keeps it out of the training seconds.
    """

    def __init__(self, net, X, Y, checkpoints):
        self.net, self.X, self.Y = net, X, Y
        self.checkpoints = list(np.asarray(checkpoints))
        self.rows = [{"examples_seen": 0, "updates": 0, "train_seconds": 0.0, "cost": net.cost(X, Y)}]

    def on_update_end(self, r):
        if self.checkpoints and r["examples_seen"] >= self.checkpoints[0]:
            while self.checkpoints and r["examples_seen"] >= self.checkpoints[0]:
                self.checkpoints.pop(0)
            self.rows.append({"examples_seen": r["examples_seen"], "updates": r["update"],
                              "train_seconds": r["train_seconds"], "cost": self.net.cost(self.X, self.Y)})

    def column(self, key) -> np.ndarray:
        return np.array([row[key] for row in self.rows], dtype=float)
