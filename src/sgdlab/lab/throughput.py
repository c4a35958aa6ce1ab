"""throughput: seconds per update and examples per second against the batch size.

For each batch size B from 1 to n (powers of 2, then n), one warm-up epoch, then the median
over repeats of the training seconds of one epoch of mini-batch SGD (evaluation excluded),
divided into seconds per update and examples per second. Where examples per second first
reaches 90% of its best, vectorisation has stopped paying: larger batches only make fewer
updates. Runs on every backend present: NumPy on the CPU, and CuPy or PyTorch on a GPU when
one is visible.
"""

from __future__ import annotations

import statistics
import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import load, network_for
from .result import LabResult


def gpu_backends() -> list[str]:
    """Array backends with a GPU behind them in this process (none on a CPU-only machine)."""
    found = []
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append("cupy")
    except Exception:  # no CuPy, or no CUDA device
        pass
    return found


def measure(ds, sizes, backend: str, repeats: int, seed: int) -> list[dict]:
    X, y = ds.X_train, ds.y_train
    n = len(X)
    rows = []
    for b in sizes:
        net = network_for(ds, seed=seed, backend=backend)
        method = "batch" if b == n else "minibatch"

        def epoch():
            return fit(net, X, y, method=method, batch_size=None if b == n else b, lr=0.01, epochs=1, seed=seed,
                       eval_train=False).last["train_seconds"]
        epoch()
        secs = statistics.median(epoch() for _ in range(repeats))
        updates = -(-n // b)
        rows.append({"backend": backend, "B": int(b), "seconds_per_update": secs / updates, "examples_per_second": n / secs})
    return rows


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, backends=None) -> LabResult:
    ds = load(data, data_dir, seed)
    n = len(ds.X_train)
    sizes = sorted({*(2 ** np.arange(0, int(np.log2(n)) + 1)), n})
    backends = backends or ["numpy", *gpu_backends()]
    repeats = 2 if quick else 5
    rows, knees = [], {}
    for backend in backends:
        r = measure(ds, sizes, backend, repeats, seed)
        best = max(x["examples_per_second"] for x in r)
        knees[backend] = next(x["B"] for x in r if x["examples_per_second"] >= 0.9 * best)
        rows += r
    numbers = {"n": n, "network": network_for(ds).describe(), "rows": rows, "knee_90_percent": knees,
               "backends": backends, "gpu_found": len(backends) > 1}
    cpu = [x for x in rows if x["backend"] == "numpy"]
    table = [{k: x[k] for k in ("backend", "B", "seconds_per_update", "examples_per_second")} for x in rows
             if x["B"] in (1, 8, 64, 512, n) or x["B"] == knees[x["backend"]]]
    result = LabResult(
        "throughput", "What batching buys on this hardware",
        f"On the CPU one update costs {cpu[0]['seconds_per_update'] * 1e6:.0f} µs at B = 1 and {cpu[-1]['seconds_per_update'] * 1e3:.1f} ms at "
        f"B = {n}, so examples per second rise {cpu[-1]['examples_per_second'] / cpu[0]['examples_per_second']:.0f}-fold with the batch size; "
        + (f"they reach 90% of their best at B = {knees['numpy']}, beyond which a bigger batch only means fewer updates."
           if knees["numpy"] < n else "they are still rising at the full batch: on a network this small, per-call "
           "overhead outweighs the arithmetic at every batch size the data allows.")
        + ("" if len(backends) > 1 else " No GPU was visible in this run."), numbers, table)
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.0))
        for backend in backends:
            r = [x for x in rows if x["backend"] == backend]
            ax1.plot([x["B"] for x in r], [x["seconds_per_update"] for x in r], marker=".", label=backend)
            ax2.plot([x["B"] for x in r], [x["examples_per_second"] for x in r], marker=".", label=backend)
            ax2.axvline(knees[backend], ls=":", color="grey")
        ax1.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="seconds per update")
        ax2.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="examples per second",
                title="dotted: 90% of the best throughput")
        ax1.legend(fontsize=8)
        result.save(out, fig, "Throughput against batch size")
    return result
