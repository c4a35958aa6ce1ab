"""Run by tests/test_distributed.py under ``mpiexec -n P`` (and in-process with P = 1).

``python mpi_worker.py SCENARIO OUT.json``: rank 0 writes {run: [digest of every rank, ...]} or
{"error": message} to OUT.json. Not a test module itself.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import sgdlab
from sgdlab.distributed import DistributedError, World, parameter_digest

METHODS = {
    "minibatch": {"method": "minibatch", "batch_size": 16},
    "batch": {"method": "batch"},
    "stochastic": {"method": "stochastic"},
}


def toy_data(n: int = 203):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)


HISTORIES: dict = {}  # the History of the last train() per (method, reduction)


def train(comm, method: str, reduction: str | None, *, X=None, y=None, lr=0.5, epochs=3, sync_every=2, **kw):
    X, y = toy_data() if X is None else (X, y)
    net = sgdlab.Network([X.shape[1], 7, 3], seed=0)
    world = None if reduction is None else World(comm, reduction=reduction, sync_every=sync_every)
    plain = {"stepper": "reference"} if world is None else {}  # the reference path is what the MPI stepper matches
    HISTORIES[method, reduction] = sgdlab.fit(
        net,
        X,
        y,
        lr=lr,
        epochs=epochs,
        seed=1,
        validation=(X[:50], y[:50]),
        comm=world,
        **{**METHODS[method], **plain, **kw},
    )
    return net


def gather(comm, value):
    return [value] if comm is None else comm.allgather(value)


def main(scenario: str, out: str) -> None:
    comm = None
    if scenario != "one-process":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = 0 if comm is None else comm.Get_rank()
    result = {}
    try:
        if scenario in ("one-process", "exact"):
            for method in METHODS:
                result[f"exact-{method}"] = gather(comm, parameter_digest(train(comm, method, "exact")))
                result[f"mean-batch-cost-exact-{method}"] = gather(
                    comm, HISTORIES[method, "exact"]["mean_batch_cost"])
            # local SGD recording every update: in the epoch's last round a rank with no example left (203 rows
            # on 2 or 3 ranks) records no batch cost (it used to record NaN and raise a false DivergenceError)
            train(comm, "stochastic", "exact", epochs=1, record_updates=True)
            last = HISTORIES["stochastic", "exact"].updates[-1]
            result["local-sgd-last-batch-cost"] = gather(comm, last.get("batch_cost"))
            # the same rows from a .npy file on disk (sgdlab.data.open_npy): each rank reads only its rows
            X, y = toy_data()
            path = f"{out}.rank{rank}.npy"
            np.save(path, X)
            net = train(comm, "batch", "exact", X=sgdlab.data.open_npy(path), y=y)
            result["exact-batch-on-disk"] = gather(comm, parameter_digest(net))
            if comm is None:
                for method in METHODS:
                    result[f"plain-{method}"] = [parameter_digest(train(None, method, None))]
                    result[f"mean-batch-cost-plain-{method}"] = [HISTORIES[method, None]["mean_batch_cost"]]
                    result[f"allreduce-{method}"] = [parameter_digest(train(None, method, "allreduce"))]
        elif scenario == "allreduce":
            for method in ("minibatch", "batch"):
                net = train(comm, method, "allreduce")
                result[f"allreduce-{method}"] = gather(comm, parameter_digest(net))
                result[f"params-{method}"] = [
                    np.concatenate([np.ravel(a) for p in net.numpy_params() for a in p]).tolist()
                ]
                result[f"mean-batch-cost-{method}"] = gather(comm, HISTORIES[method, "allreduce"]["mean_batch_cost"])
        elif scenario.startswith("mnist:"):
            folder = scenario.split(":", 1)[1]
            X, y = sgdlab.data.read_idx_pair(
                f"{folder}/t10k-images-idx3-ubyte.gz", f"{folder}/t10k-labels-idx1-ubyte.gz"
            )
            X, y = X[:2000], y[:2000]
            for red in (None, "allreduce"):
                net = sgdlab.Network([784, 30, 10], seed=0)
                sgdlab.fit(
                    net,
                    X,
                    y,
                    batch_size=10,
                    lr=3.0,
                    epochs=1,
                    seed=0,
                    eval_train=False,
                    **({"stepper": "reference"} if red is None else {"comm": World(comm)}),
                )
                result[str(red)] = [np.concatenate([np.ravel(a) for p in net.numpy_params() for a in p]).tolist()]
        elif scenario == "refusals":  # one rank differs from the others; every rank must refuse alike
            for case in ("other-data", "other-settings", "other-version", "small-batch"):
                X, y = toy_data()
                kw, version = {}, sgdlab.__version__
                if case == "other-data" and rank == 1:
                    X[5, 2] += 1
                if case == "other-settings" and rank == 1:
                    kw["lr"] = 0.25
                if case == "other-version" and rank == 1:
                    sgdlab.__version__ = "0.0.1-other"
                if case == "small-batch":
                    kw["batch_size"] = 2
                try:
                    train(comm, "minibatch", "allreduce", X=X, y=y, epochs=1, **kw)
                    result[case] = None
                except (ValueError, DistributedError) as e:
                    result[case] = str(e)
                sgdlab.__version__ = version
    except (ValueError, DistributedError) as e:
        result["error"] = str(e)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
