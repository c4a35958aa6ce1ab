"""parallel: examples per second and parallel efficiency against the number of ranks P and the batch size m.

Measured: ``mpiexec -n P`` jobs (P = 1 is one plain process with sgdlab's own choice of stepper) train
a 784-30-10 network on MNIST-shaped data (random pixels in [0, 1), n rows) with the fast allreduce
reduction; examples per second come from the training clock after a warm-up epoch (evaluation off).
P larger than the machine's cores is run and shown, oversubscribed, as what it is.
Parallel efficiency E(m, P) = rate_P / (P rate_1).

Model: one update of a batch of m rows on P ranks takes

    t(m, P) = compute(ceil(m / P)) + allreduce(bytes, P)

with compute(r) the one-process seconds per update measured here, interpolated in r (see ``Compute``),
and allreduce(bytes, P) = 2 log2(P) alpha + 2 (P-1)/P bytes / beta (a tree for latency, a ring for
bandwidth). alpha and beta are measured here (MPI_Allreduce between 2 ranks, latency = median time of a
4-byte allreduce, bandwidth from the largest message); for a cluster the network's are assumed:
10 Gbit/s Ethernet (alpha = 10 us) and 100 Gbit/s RDMA (alpha = 2 us). Predicted efficiency
E = compute(m) / (P t(m, P)) for P = 8 .. 1024 shows where larger batches make parallel hardware pay
and where it stops.

Run as ``sgdlab lab parallel`` (needs mpi4py and mpiexec: ``pip install ".[mpi]"``). The worker side
is ``sgdlab.lab.parallel._main(["train" | "allreduce", ...])``, launched by mpiexec.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

SIZES = (784, 30, 10)
NETWORKS = {"10 Gbit/s Ethernet": (10e-6, 10e9 / 8), "100 Gbit/s RDMA": (2e-6, 100e9 / 8)}  # (alpha s, beta B/s)
PREDICT_RANKS = (8, 16, 32, 64, 128, 256, 512, 1024)


# ----------------------------------------------------------------- launching measured jobs
def mpiexec() -> str:
    """The mpiexec to launch with: on PATH, else beside this Python (the MPICH wheel's)."""
    from ..distributed import INSTALL_HINT, DistributedError, require_mpi

    require_mpi()
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if exe is None:
        raise DistributedError(f"mpiexec not found; {INSTALL_HINT} installs MPICH's")
    return exe


def launch(ranks: int, *args, plain: bool = False, timeout: float = 600) -> dict:
    """Run the worker (``_main(ARGS)``) on ``ranks`` ranks; rank 0's JSON result."""
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from sgdlab.lab.parallel import _main; _main(sys.argv[1:])",
        *map(str, args),
    ]
    if not plain:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure_training(ranks: int, batch: int | None, n: int, epochs: int, seed: int = 0) -> dict:
    """Examples per second of ``ranks`` ranks (1: one plain process) at batch ``batch`` (None: full batch)."""
    r = launch(ranks, "train", n, batch or 0, epochs, seed, ranks, plain=ranks == 1)
    return {"P": ranks, "m": batch or n, **r}


def measure_allreduce(ranks: int = 2, quick: bool = False) -> dict:
    """MPI_Allreduce seconds per call against message bytes, and the fitted latency and bandwidth."""
    r = launch(ranks, "allreduce", 20 if quick else 100)
    sizes, secs = np.asarray(r["bytes"], float), np.asarray(r["seconds"], float)
    alpha = float(secs[0])
    beta = float((sizes[-1]) / max(secs[-1] - alpha, 1e-12))
    return {"P": ranks, **r, "latency_s": alpha, "bandwidth_Bps": beta}


# ----------------------------------------------------------------- the workers (run under mpiexec)
def _mnist_shaped(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)


def _worker_train(n: int, batch: int, epochs: int, seed: int, ranks: int) -> dict:
    from ..network import Network
    from ..train import fit

    X, y = _mnist_shaped(n, seed)
    comm = None
    if ranks > 1:
        from ..distributed import World, require_mpi

        comm = World(require_mpi().COMM_WORLD)
    net = Network(list(SIZES), seed=seed)
    kw = {"method": "batch"} if batch == 0 else {"batch_size": batch}
    h = fit(net, X, y, lr=0.1, epochs=epochs, seed=seed, eval_train=False, comm=comm, **kw)
    first, last = h.epochs[1], h.epochs[-1]  # epoch 1 is the warm-up
    seconds = last["train_seconds"] - first["train_seconds"]
    examples = last["examples_seen"] - first["examples_seen"]
    updates = last["updates"] - first["updates"]
    return {
        "examples_per_second": examples / seconds,
        "seconds_per_update": seconds / updates,
        "updates": updates,
        "stepper": h.config["stepper"],
        "is_root": comm is None or comm.is_root,
    }


def _worker_allreduce(repeats: int) -> dict:
    import time

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    sizes, secs = [], []
    for count in (1, 16, 256, 4096, 65536, 262144, 1048576):
        buf = np.ones(count, np.float32)
        for _ in range(3):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times = []
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        sizes.append(4 * count)
        secs.append(float(np.median(comm.allgather(float(np.median(times))))))
    return {"bytes": sizes, "seconds": secs, "is_root": comm.Get_rank() == 0}


# ----------------------------------------------------------------- the model
class Compute:
    """compute(r): one-process seconds per update of r rows, from the measured (m, seconds) points:
    interpolated linearly in r between them, the smallest m's time below it (per-update overhead
    does not shrink with fewer rows), and proportional to r above the largest."""

    def __init__(self, rows: list[dict]):
        pts = sorted((r["m"], r["seconds_per_update"]) for r in rows)
        self.m = np.asarray([p[0] for p in pts], float)
        self.t = np.asarray([p[1] for p in pts], float)

    def __call__(self, r: float) -> float:
        if r > self.m[-1]:
            return float(self.t[-1] * r / self.m[-1])
        return float(np.interp(r, self.m, self.t))


def allreduce_seconds(nbytes: float, P: int, alpha: float, beta: float) -> float:
    """2 log2(P) alpha + 2 (P-1)/P bytes/beta; zero for one rank."""
    if P <= 1:
        return 0.0
    return 2 * math.log2(P) * alpha + 2 * (P - 1) / P * nbytes / beta


def predicted_efficiency(m: int, P: int, compute, nbytes: float, alpha: float, beta: float) -> float:
    """E(m, P) = compute(m) / (P t(m, P)),  t(m, P) = compute(ceil(m/P)) + allreduce(bytes, P)."""
    return compute(m) / (P * (compute(math.ceil(m / P)) + allreduce_seconds(nbytes, P, alpha, beta)))


# ----------------------------------------------------------------- the experiment
def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False):
    """Measure examples/s against P and m, fit the model, predict 8..1024 ranks; ``data`` is not used
    (the data are MNIST-shaped random pixels, so that every rank builds the same rows without a download)."""
    from .. import machine
    from ..plots import new_figure
    from .result import LabResult
    from .verdict import decide

    mpiexec()  # mpi4py and an mpiexec, or a clear DistributedError naming what to install
    n = 4096 if quick else 60000
    batches = [128, None] if quick else [32, 128, 1024, 8192, None]
    ranks = [1, 2] if quick else [1, 2, 3, 4]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"machine": machine.describe()}
    rows = []
    with machine.recording_load(info):
        comm_local = measure_allreduce(2, quick)
        for m in batches:
            epochs = 4 if m is None else 2
            for P in ranks:
                r = measure_training(P, m, n, epochs, seed)
                r["oversubscribed"] = P > cores
                rows.append(r)
    one = {r["m"]: r for r in rows if r["P"] == 1}
    for r in rows:
        r["speedup"] = r["examples_per_second"] / one[r["m"]]["examples_per_second"]
        r["efficiency"] = r["speedup"] / r["P"]
    compute = Compute(list(one.values()))
    n_params = sum(a * b + b for a, b in itertools.pairwise(SIZES))
    nbytes = 4 * n_params + 8
    alpha, beta = comm_local["latency_s"], comm_local["bandwidth_Bps"]
    # the model checked against what was measured at P = 2 here
    model_check = [
        {
            "m": r["m"],
            "measured": r["efficiency"],
            "model": predicted_efficiency(r["m"], 2, compute, nbytes, alpha, beta),
        }
        for r in rows
        if r["P"] == 2
    ]
    predict_m = [128, 1024, 8192, 60000]
    predictions = {
        net: {m: [predicted_efficiency(m, P, compute, nbytes, a, b) for P in PREDICT_RANKS] for m in predict_m}
        for net, (a, b) in NETWORKS.items()
    }
    reach = {
        net: {
            m: max([P for P, e in zip(PREDICT_RANKS, es, strict=True) if e >= 0.5], default=None)
            for m, es in by_m.items()
        }
        for net, by_m in predictions.items()
    }

    full = next(r for r in rows if r["P"] == 2 and r["m"] == n)
    small = next(r for r in rows if r["P"] == 2 and r["m"] == min(one))
    e10 = predictions["10 Gbit/s Ethernet"]
    verdicts = [
        decide(
            "two ranks beat one process at full batch on this machine (>= 1.6x)",
            holds=full["speedup"] >= 1.6,
            rule="measured speedup at m = n, P = 2 >= 1.6",
            evidence=f"speedup {full['speedup']:.2f}x at m = {n}, load {info['load_before']}",
            caveat=None if cores >= 2 else "one usable core",
        ),
        decide(
            "larger batches make parallel hardware pay",
            holds=full["efficiency"] > small["efficiency"] and e10[60000][3] > e10[128][3],
            rule="measured E(P=2) at m = n above E(P=2) at the smallest m, and predicted E(P=64, 10 Gbit/s) "
            "at m = 60000 above that at m = 128",
            evidence=f"measured E {small['efficiency']:.2f} (m = {small['m']}) -> {full['efficiency']:.2f} (m = {n}); "
            f"predicted at P = 64: {e10[128][3]:.2f} (m = 128) -> {e10[60000][3]:.2f} (m = 60000)",
        ),
        decide(
            "the model predicts the efficiency measured here at P = 2 within a factor of 2",
            holds=all(0.5 <= c["measured"] / c["model"] <= 2 for c in model_check),
            rule="measured / modelled E(m, P = 2) in [0.5, 2] for every measured m",
            evidence=", ".join(
                f"m = {c['m']}: measured {c['measured']:.2f}, model {c['model']:.2f}" for c in model_check
            ),
        ),
    ]
    numbers = {
        "n": n,
        "network": list(SIZES),
        "parameters": n_params,
        "allreduce_bytes": nbytes,
        "cores": cores,
        "rows": rows,
        "allreduce_measured": comm_local,
        "compute_points": {"m": compute.m.tolist(), "seconds_per_update": compute.t.tolist()},
        "model_check_P2": model_check,
        "assumed_networks": {k: {"alpha_s": a, "beta_Bps": b} for k, (a, b) in NETWORKS.items()},
        "predicted_efficiency": {net: {str(m): es for m, es in by_m.items()} for net, by_m in predictions.items()},
        "predict_ranks": list(PREDICT_RANKS),
        "largest_P_with_E_at_least_half": reach,
        **info,
    }
    table = [
        {
            "P": r["P"],
            "m": r["m"],
            "examples_per_s": round(r["examples_per_second"]),
            "speedup": round(r["speedup"], 2),
            "efficiency": round(r["efficiency"], 2),
            "oversubscribed": r["oversubscribed"],
        }
        for r in rows
    ]

    def upto(P):
        return (
            "below P = 8"
            if P is None
            else f"at least up to P = {P}, the largest predicted"
            if P == PREDICT_RANKS[-1]
            else f"up to P = {P}"
        )

    stops = "; ".join(
        f"at {net}, m = {m} keeps E >= 0.5 {upto(P)}"
        for net in reach
        for m, P in reach[net].items()
        if m in (1024, 60000)
    )
    reading = (
        f"Measured on {cores} cores (load {info['load_before']} before, {info['load_after']} after): two ranks run "
        f"{full['speedup']:.2f}x as many examples per second as one process at full batch and "
        f"{small['speedup']:.2f}x at m = {small['m']}, where the per-update allreduce "
        f"({alpha * 1e6:.0f} us latency, {beta / 1e9:.1f} GB/s measured here) weighs more against a smaller compute. "
        f"The model predicts, on a cluster: {stops}"
        + (
            "."
            if verdicts[2].holds
            else "; it did not match the efficiency measured here at P = 2 within a "
            "factor of 2 (see its verdict), so read these predictions as bounds from the measured compute and "
            "the assumed network only."
        )
    )
    result = LabResult(
        "parallel",
        "Data-parallel SGD: examples per second and efficiency against ranks and batch size",
        reading,
        numbers,
        table,
        verdicts=verdicts,
    )
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.0))
        for P in ranks:
            rs = [r for r in rows if r["P"] == P]
            ax1.plot(
                [r["m"] for r in rs],
                [r["examples_per_second"] for r in rs],
                marker="o",
                ls="--" if P > cores else "-",
                label=f"P = {P}" + (" (oversubscribed)" if P > cores else ""),
            )
        ax1.set(xscale="log", yscale="log", xlabel="batch size m", ylabel="examples per second (measured)")
        ax1.legend(fontsize=7)
        for (net, by_m), ls in zip(predictions.items(), ("-", ":"), strict=True):
            for i, (m, es) in enumerate(by_m.items()):
                ax2.plot(PREDICT_RANKS, es, ls=ls, marker=".", color=f"C{i}", label=f"m = {m}, {net}")
        ax2.axhline(0.5, color="grey", lw=0.5)
        top = max(1.05, max(e for by_m in predictions.values() for es in by_m.values() for e in es) * 1.05)
        ax2.set(xscale="log", xlabel="ranks P", ylabel="predicted parallel efficiency", ylim=(0, top))
        ax2.legend(fontsize=6)
        result.save(out, fig, "Measured throughput (left) and modelled efficiency on a cluster (right)")
    return result


def _main(argv) -> None:
    what, *args = argv
    if what == "train":
        n, batch, epochs, seed, ranks = map(int, args)
        r = _worker_train(n, batch, epochs, seed, ranks)
    elif what == "allreduce":
        r = _worker_allreduce(int(args[0]))
    else:
        raise SystemExit(f"unknown worker {what!r}")
    if r.pop("is_root"):
        print(json.dumps(r), flush=True)
