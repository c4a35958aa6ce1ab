"""throughput: examples per second and GFLOP/s against the batch size B, on the CPU and on a GPU.

The claim from the notes: single-example SGD "can't exploit efficient vector and matrix operations
and parallelism (GPUs)", and larger batches use parallel hardware better. Measured on MNIST-shaped
inputs (784 features, 10 classes) for a 784-100-10 network and a wide 784-1000-1000-10 one.

Work per example, counting the matrix products (exact from the layer sizes): the forward pass
costs 2 sum_l fan_in_l fan_out_l FLOPs, the weight gradients as much again, and propagating delta
back costs 2 fan_in fan_out for every layer but the first (no gradient w.r.t. the input is formed):

    FLOP/example = 6 sum_l fan_in_l fan_out_l - 2 fan_in_1 fan_out_1      (319,600 for 784-100-10)

Elementwise work (activations, bias sums) and the per-update parameter change are not counted.

For each B: one warm-up epoch (excluded: it pays for first-touch memory, BLAS thread start-up,
CUDA-graph capture and compilation), then ``repeats`` timed epochs of mini-batch SGD with ``fit``,
whose clock excludes evaluation and, on a GPU, is read only after the device has synchronised
(``stepper.sync()``). An epoch for batch size B uses min(n, B x U) rows, U updates at most, so
that B = 1 stays short; the work per update does not depend on which rows are used. Reported: the
median examples/s over the repeats, with the min and max as the spread. NumPy's BLAS threads are
capped at the process's usable CPUs (threadpoolctl) and recorded, with the machine and its load
(``sgdlab.machine``); the steppers still drop to one thread for small products, as in training.
A GPU curve (PyTorch with CUDA, else CuPy) is added when one is visible.
"""

from __future__ import annotations

import contextlib
import statistics

import numpy as np

from .. import machine
from ..backend import resolve_backend, visible_gpu_backends
from ..network import Network
from ..plots import new_figure
from ..train import fit
from .common import load
from .result import LabResult
from .verdict import CAVEAT, FAILS, decide

NETWORKS = {"784-100-10": (784, 100, 10), "784-1000-1000-10": (784, 1000, 1000, 10)}
VECTOR_GAP = 10.0  # "single-example SGD cannot use vector hardware": best examples/s >= 10x those at B = 1
KNEE = 0.9  # the knee: the first B whose examples/s reach 90% of the best


def flops_per_example(sizes) -> int:
    """Floating-point operations of one example's forward and backward pass, products only.

    Forward, each layer l: a_{l-1} W_l, 2 n_{l-1} n_l. Backward: the weight gradient
    a_{l-1}^T delta_l, 2 n_{l-1} n_l for every layer; the error sent back, delta_l W_l^T,
    2 n_{l-1} n_l for every layer but the first (no gradient is taken for the input). Biases,
    activations and the update are O(n_l) and left out.

    >>> flops_per_example([784, 100, 10])  # 2 * (78,400 + 1,000) * 2 + 2 * 1,000
    319600
    """
    pairs = [int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 6 * sum(pairs) - 2 * pairs[0]


def settings(quick: bool) -> dict:
    """Rows n, batch sizes, the cap U on updates per timed epoch, and repeats, per network."""
    if quick:
        return {"784-100-10": {"n": 2048, "sizes": [1, 8, 64, 512, 2048], "updates": 64},
                "784-1000-1000-10": {"n": 128, "sizes": [1, 16, 128], "updates": 8}, "repeats": 3}
    return {"784-100-10": {"n": 60000, "sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
                                                 16384, 60000], "updates": 2048},
            "784-1000-1000-10": {"n": 8192, "sizes": [1, 8, 64, 512, 4096, 8192], "updates": 64}, "repeats": 5}


def mnist_shaped(ds, n: int, seed: int):
    """The first n rows of ``ds`` when it has 784 features and 10 classes, else seeded uniform inputs in
    [0, 1) with random labels: the work of an update depends on the shapes only."""
    if ds is not None and ds.X_train.shape[1] == 784 and ds.n_classes == 10 and len(ds.X_train) >= n:
        return np.asarray(ds.X_train[:n], dtype=np.float32), np.asarray(ds.y_train[:n]), ds.name
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n), "synthetic MNIST-shaped (uniform [0, 1))"


def measure(sizes, X, y, batch_sizes, updates: int, repeats: int, backend: str, device: str, seed: int) -> list[dict]:
    """One row per batch size: median, min and max examples/s and GFLOP/s over ``repeats`` timed epochs."""
    flop = flops_per_example(sizes)
    n, rows = len(X), []
    for b in batch_sizes:
        rows_used = min(n, b * updates)
        Xs, ys = X[:rows_used], y[:rows_used]
        net = Network(list(sizes), seed=seed, backend=backend, device=device)

        def epoch(net=net, Xs=Xs, ys=ys, b=b, rows_used=rows_used):
            kw = {"method": "batch"} if b == rows_used else {"method": "minibatch", "batch_size": b}
            return fit(net, Xs, ys, lr=0.01, epochs=1, seed=seed, eval_train=False, **kw).last["train_seconds"]

        epoch()  # warm-up, excluded
        eps = sorted(rows_used / epoch() for _ in range(repeats))
        med = statistics.median(eps)
        rows.append({"device": device, "backend": backend, "B": int(b), "rows": rows_used,
                     "updates": -(-rows_used // b),
                     "examples_per_second": med, "eps_min": eps[0], "eps_max": eps[-1],
                     "gflops": med * flop / 1e9, "gflops_min": eps[0] * flop / 1e9, "gflops_max": eps[-1] * flop / 1e9})
    return rows


def judge(curve: list[dict], label: str) -> list:
    """Verdicts on one (network, device) curve, decided by the rules stated in each."""
    best = max(curve, key=lambda r: r["examples_per_second"])
    one = curve[0]
    gap = best["examples_per_second"] / one["examples_per_second"]
    knee = next(r for r in curve if r["examples_per_second"] >= KNEE * best["examples_per_second"])
    after = [r for r in curve if r["B"] > best["B"]]
    worst_after = min(after, key=lambda r: r["examples_per_second"]) if after else None
    v1 = decide(f"{label}: single-example SGD cannot use the vector hardware",
                holds=gap >= 2, caveat=None if gap >= VECTOR_GAP else f"the gap is only {gap:.1f}-fold",
                rule=f"holds if the best examples/s over B are >= {VECTOR_GAP:g}x those at B = 1; "
                     "with a caveat from 2x; else does not hold",
                evidence=f"{one['examples_per_second']:.3g} examples/s at B = 1, {best['examples_per_second']:.3g} at "
                         f"B = {best['B']} ({gap:.1f}x; {one['gflops']:.3g} vs {best['gflops']:.3g} GFLOP/s)")
    drop = worst_after is not None and worst_after["examples_per_second"] < 0.5 * best["examples_per_second"]
    v2 = decide(f"{label}: larger batches use the parallel hardware better",
                holds=knee["B"] > 1 and gap >= 2,
                caveat=(f"only up to B = {best['B']}: at B = {worst_after['B']} throughput falls to "
                        f"{worst_after['examples_per_second'] / best['examples_per_second']:.0%} of the best")
                if drop else None,
                rule=f"holds if GFLOP/s rise >= 2x from B = 1 to the best B and stay >= 50% of the best at larger B; "
                     f"with a caveat if they fall below 50% after the best; knee = first B at {KNEE:.0%} of the best",
                evidence=f"GFLOP/s {one['gflops']:.3g} at B = 1, best {best['gflops']:.3g} at B = {best['B']}, "
                         f"knee B = {knee['B']}")
    return [v1, v2]


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, devices=None,
        threads: int | None = None) -> LabResult:
    cfg = settings(quick)
    ds = load(data, data_dir, seed) if data not in (None, "synthetic") else None
    if devices is None:
        gpus = visible_gpu_backends()
        devices = [("numpy", "cpu")] + ([(gpus[0], resolve_backend(gpus[0], "cuda").device)] if gpus else [])
    info = machine.describe()
    threads = threads or info["usable_cpus"]
    rows, verdicts, curves = [], [], {}
    numbers = {"flop_per_example": {k: flops_per_example(v) for k, v in NETWORKS.items()},
               "devices": [resolve_backend(b, d).describe() for b, d in devices], "blas_threads_cap": threads,
               "repeats": cfg["repeats"], "warm_up": "one epoch per point, excluded",
               "timing": "fit's train_seconds: evaluation excluded, device synchronised before the clock is read"}
    with _blas_cap(threads), machine.recording_load(numbers):
        numbers["machine"] = machine.describe()
        for name, sizes in NETWORKS.items():
            c = cfg[name]
            X, y, source = mnist_shaped(ds, c["n"], seed)
            numbers.setdefault("data", source)
            for backend, device in devices:
                r = measure(sizes, X, y, c["sizes"], c["updates"], cfg["repeats"], backend, device, seed)
                for row in r:
                    row["network"] = name
                curves[(name, device)] = r
                rows += r
                verdicts += judge(r, f"{name} on {device}")
    numbers["rows"] = rows
    gpu = [d for _, d in devices if d != "cpu"]
    if gpu:
        for name in NETWORKS:
            cpu_best = max(curves[(name, "cpu")], key=lambda r: r["examples_per_second"])
            gpu_curve = curves[(name, gpu[0])]
            g_best = max(gpu_curve, key=lambda r: r["examples_per_second"])
            faster = g_best["examples_per_second"] > cpu_best["examples_per_second"]
            cpu_one = curves[(name, "cpu")][0]["examples_per_second"]
            evidence = (f"best: CPU {cpu_best['examples_per_second']:.3g}/s at B = {cpu_best['B']}, "
                        f"GPU {g_best['examples_per_second']:.3g}/s at B = {g_best['B']}; at B = 1: CPU "
                        f"{cpu_one:.3g}/s, GPU {gpu_curve[0]['examples_per_second']:.3g}/s")
            verdicts.append(decide(f"{name}: a GPU pays at large batches, and its best batch is larger than the CPU's",
                                   holds=g_best["B"] >= cpu_best["B"] and faster, evidence=evidence,
                                   rule="holds if the GPU's best examples/s exceed the CPU's and its best B is "
                                        ">= the CPU's"))
    table = [{"network": r["network"], "device": r["device"], "B": r["B"], "examples/s": r["examples_per_second"],
              "spread": f"{r['eps_min']:.3g}-{r['eps_max']:.3g}", "GFLOP/s": r["gflops"]} for r in rows]
    small = curves[("784-100-10", "cpu")]
    best = max(small, key=lambda r: r["examples_per_second"])
    held = sum(v.verdict != FAILS for v in verdicts)
    reading = (f"On the CPU the 784-100-10 network trains {small[0]['examples_per_second']:.3g} examples/s at B = 1 "
               f"({small[0]['gflops']:.2g} GFLOP/s) and {best['examples_per_second']:.3g} at B = {best['B']} "
               f"({best['gflops']:.2g} GFLOP/s); {held} of {len(verdicts)} claims hold here "
               f"({sum(v.verdict == CAVEAT for v in verdicts)} with a caveat). "
               + ("GPU curves are dashed." if gpu else "No GPU was visible in this run, so there is no GPU curve."))
    result = LabResult("throughput", "What batching buys on this hardware", reading, numbers, table, verdicts=verdicts)
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.2))
        colors = {"784-100-10": "C0", "784-1000-1000-10": "C3"}
        for (name, device), r in curves.items():
            style = "-" if device == "cpu" else "--"
            label = f"{name}, {'CPU' if device == 'cpu' else 'GPU ' + device}"
            B = [x["B"] for x in r]
            for ax, key in ((ax1, "examples_per_second"), (ax2, "gflops")):
                lo = [x[key] - x[key.replace("examples_per_second", "eps") + "_min"] for x in r]
                hi = [x[key.replace("examples_per_second", "eps") + "_max"] - x[key] for x in r]
                ax.errorbar(B, [x[key] for x in r], yerr=[lo, hi], fmt=style, marker=".", color=colors[name],
                            label=label, capsize=2)
        ax1.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="examples per second")
        ax2.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="GFLOP/s (matrix products)",
                title=f"median of {cfg['repeats']}, bars: min-max; warm-up excluded")
        ax1.legend(fontsize=7)
        load_avg = numbers.get("load_before") or ["?"]
        ax1.set_title(f"{'GPU + CPU' if gpu else 'CPU only: no GPU visible'}; load {load_avg[0]}", fontsize=9)
        result.save(out, fig, "Throughput against batch size")
    return result


def gpu_backends() -> list[str]:
    """GPU libraries that see a CUDA device here (kept for callers of the earlier API)."""
    return visible_gpu_backends()


@contextlib.contextmanager
def _blas_cap(threads: int):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield
