"""Seconds per epoch of mini-batch SGD: sgdlab against PyTorch CPU eager and scikit-learn, in one run.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), 8,000 MNIST-shaped float32
examples, batch sizes 1, 10, 128, 1024 and n (full batch). Every peer does the same work per
update: gather the batch by a shuffled index, forward, backward, w <- w - (eta/m) sum grad.
Each time is the median of several timed epochs after one warm-up epoch; evaluation excluded.

    python benchmarks/bench_epoch.py [--quick] [--out benchmarks/results/bench_epoch.json]

Prints a table and writes JSON. Ratios > 1 mean sgdlab is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

import sgdlab

N, SIZES, LR = 8000, [784, 100, 10], 0.1
FLOPS_PER_EXAMPLE = (
    2 * 3 * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
)  # forward + two backward products


def median_time(run_epoch, reps: int) -> float:
    run_epoch()  # warm-up
    return statistics.median(run_epoch() for _ in range(reps))


def sgdlab_epoch(X, y, m, seed=0):
    net = sgdlab.Network(SIZES, seed=seed)
    method = "batch" if m == N else "stochastic" if m == 1 else "minibatch"

    def run():
        return sgdlab.fit(net, X, y, method=method, batch_size=m, lr=LR, epochs=1, seed=seed, eval_train=False).last[
            "train_seconds"
        ]

    return run


def torch_epoch(X, y, m):
    import torch

    Xt, Yt = torch.from_numpy(X), torch.nn.functional.one_hot(torch.from_numpy(y), 10).float()
    g = torch.Generator().manual_seed(0)
    W1 = (torch.randn(784, 100, generator=g) / 28).requires_grad_()
    b1 = torch.zeros(100, requires_grad=True)
    W2 = (torch.randn(100, 10, generator=g) / 10).requires_grad_()
    b2 = torch.zeros(10, requires_grad=True)
    params = [W1, b1, W2, b2]

    def run():
        t0 = time.perf_counter()
        perm = torch.randperm(N, generator=g)
        for k in range(0, N, m):
            idx = perm[k:k + m]
            xb, yb = Xt[idx], Yt[idx]
            a = torch.sigmoid(torch.sigmoid(xb @ W1 + b1) @ W2 + b2)
            loss = 0.5 * ((a - yb) ** 2).sum() / len(idx)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gp in zip(params, grads, strict=True):
                    p.sub_(LR * gp)
        return time.perf_counter() - t0
    return run


def sklearn_epoch(X, y, m):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(100,), activation="logistic", solver="sgd", batch_size=m,
                        learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False, alpha=0.0, random_state=0)
    classes = np.arange(10)

    def run():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.partial_fit(X, y, classes=classes)
        return time.perf_counter() - t0
    return run


def peak_gflops() -> float:
    """float32 GEMM throughput of NumPy's BLAS on this machine: the roof to compare against."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    np.dot(a, a)
    t = min(_timed(lambda: np.dot(a, a)) for _ in range(5))
    return 2 * 2048 ** 3 / t / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_epoch.json")
    ap.add_argument("--batch-sizes", default=f"1,10,128,1024,{N}")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    X, y = rng.random((N, 784), dtype=np.float32), rng.integers(0, 10, N)
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    try:
        import sklearn

        sklearn_version = sklearn.__version__
    except ImportError:
        sklearn_version = None
    rows = []
    for m in (int(s) for s in args.batch_sizes.split(",")):
        reps = 1 if args.quick else (2 if m == 1 else 5)
        row = {"batch_size": m, "updates_per_epoch": -(-N // m), "sgdlab_s": median_time(sgdlab_epoch(X, y, m), reps)}
        if torch_version:
            row["torch_s"] = median_time(torch_epoch(X, y, m), reps)
        if sklearn_version:
            row["sklearn_s"] = median_time(sklearn_epoch(X, y, m), reps)
        row["sgdlab_gflops"] = FLOPS_PER_EXAMPLE * N / row["sgdlab_s"] / 1e9
        rows.append(row)
        print(_line(row), flush=True)
    peak = peak_gflops()
    result = {"benchmark": "seconds per epoch, 784-100-10 sigmoid, quadratic cost, plain SGD, n=8000 float32",
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "numpy": np.__version__, "torch": torch_version, "sklearn": sklearn_version,
                          "sgdlab": sgdlab.__version__, "blas_sgemm_peak_gflops": round(peak, 1)},
              "rows": rows}
    print(f"\nfloat32 GEMM roof of NumPy's BLAS here: {peak:.0f} GFLOP/s")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


def _line(r) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())


def table(rows) -> str:
    head = ("| batch | updates/epoch | sgdlab s/epoch | GFLOP/s | PyTorch s/epoch | scikit-learn s/epoch "
            "| PyTorch / sgdlab | scikit-learn / sgdlab |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t, s = r.get("torch_s"), r.get("sklearn_s")
        lines.append(
            f"| {r['batch_size']} | {r['updates_per_epoch']} | {r['sgdlab_s']:.4f} | {r['sgdlab_gflops']:.1f} | "
            f"{_f(t)} | {_f(s)} | {_ratio(t, r['sgdlab_s'])} | {_ratio(s, r['sgdlab_s'])} |"
        )
    return "\n".join(lines)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ratio(peer, ours) -> str:
    return "-" if peer is None else f"{peer / ours:.1f}x"


if __name__ == "__main__":
    main()
