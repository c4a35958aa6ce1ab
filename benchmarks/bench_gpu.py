"""sgdlab on a GPU against PyTorch eager on the same GPU: seconds per epoch of mini-batch SGD.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), float32, 60,000 MNIST-shaped
examples (seeded uniform [0, 1) inputs, random labels: the work depends on the shapes only), batch
sizes 1, 10, 128, 1024 and n (full batch). Both sides do the same work per update: gather the batch
by a shuffled index on the device, forward, backward, w <- w - (eta/m) sum grad.

  * sgdlab: ``Network(..., backend="torch", device=D)`` and ``fit`` (the torch stepper: in-place
    fused ops, the epoch's index order on the device, the update replayed from a CUDA graph on CUDA);
    its clock is ``fit``'s train_seconds, read after ``stepper.sync()``.
  * PyTorch eager: ``nn.Linear`` layers, manual index batching (``randperm`` on the device), autograd
    and ``optim.SGD``; timed with CUDA events on a GPU (``perf_counter`` after a synchronise on the CPU).

TF32 is off unless ``--tf32`` (``torch.backends.cuda.matmul.allow_tf32``), so both sides do float32
arithmetic. One warm-up epoch per case is excluded (CUDA context, cuBLAS handles, graph capture);
each time is the median of ``--repeats`` epochs. Also measured: the device's float32 GEMM rate
(an N x N x N product), against which the full-batch step's GFLOP/s are set, and the targets of
issue 12 (faster than eager at every B, >= 3x at B <= 128, a B = 128 epoch in <= 10 ms, full batch
>= 50% of the GEMM rate), judged only on a GPU.

    python benchmarks/bench_gpu.py [--device cuda|cpu] [--n 60000] [--quick] [--out FILE.json]

On the CPU (``--device cpu``, default n = 2000) it is a smoke test of the same code path; its
numbers are not GPU numbers. Prints a table, writes JSON (benchmarks/results/bench_gpu_DEVICE.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import sgdlab
from sgdlab import machine
from sgdlab.backend import resolve_backend
from sgdlab.lab.throughput import flops_per_example

SIZES, LR = [784, 100, 10], 0.1
BATCHES = (1, 10, 128, 1024, "full")


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)


class Clock:
    """Seconds of device work: CUDA events on a GPU, perf_counter after a synchronise on the CPU."""

    def __init__(self, backend):
        import torch

        self.torch, self.backend = torch, backend

    def time(self, fn) -> float:
        torch, b = self.torch, self.backend
        if b.is_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(b.device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        b.sync()
        return time.perf_counter() - t0


def sgdlab_epoch(backend, X, y, m: int, seed: int):
    """One epoch of sgdlab's fit; the time is fit's own clock (device synchronised before it is read)."""
    net = sgdlab.Network(SIZES, seed=seed, backend="torch", device=backend.device)
    kw = {"method": "batch"} if m == len(X) else {"method": "minibatch", "batch_size": m}

    seen = {}

    def run() -> float:
        h = sgdlab.fit(net, X, y, lr=LR, epochs=1, seed=seed, eval_train=False, **kw)
        seen["stepper"] = h.config.get("stepper", "?")  # which stepper fit chose
        return h.last["train_seconds"]
    return run, seen


def torch_epoch(backend, X, y, m: int, seed: int):
    """One epoch of PyTorch eager: nn.Linear + Sigmoid, autograd, optim.SGD, manual index batching."""
    import torch

    dev = backend.device
    g = torch.Generator(device=dev).manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.Sigmoid(), torch.nn.Linear(100, 10),
                                torch.nn.Sigmoid()).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xd = torch.from_numpy(X).to(dev)
    Yd = torch.nn.functional.one_hot(torch.from_numpy(y), 10).to(device=dev, dtype=torch.float32)
    n = len(X)
    clock = Clock(backend)

    def epoch():
        perm = torch.randperm(n, device=dev, generator=g)
        for k in range(0, n, m):
            idx = perm[k:k + m]
            xb, yb = Xd.index_select(0, idx), Yd.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * ((model(xb) - yb) ** 2).sum() / xb.shape[0]  # the quadratic cost, as sgdlab's
            loss.backward()
            opt.step()

    return lambda: clock.time(epoch)


def gemm_rate(backend, size: int, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of an N x N @ N x N product on the device (2 N^3 FLOPs), median of repeats."""
    import torch

    a = torch.rand(size, size, device=backend.device)
    b = torch.rand(size, size, device=backend.device)
    clock = Clock(backend)
    clock.time(lambda: a @ b)
    return 2 * size ** 3 / statistics.median(clock.time(lambda: a @ b) for _ in range(repeats)) / 1e9


def median(run, repeats: int) -> tuple[float, float, float]:
    run()  # warm-up, excluded
    t = sorted(run() for _ in range(repeats))
    return statistics.median(t), t[0], t[-1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:K or cpu (a smoke test of the same path)")
    p.add_argument("--n", type=int, default=None, help="examples (default 60000 on a GPU, 2000 on the CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per case (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="n = 256 on the CPU and 2 repeats: a smoke test")
    p.add_argument("--tf32", action="store_true", help="allow TF32 tensor-core products (off by default)")
    p.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads, both sides (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    backend = resolve_backend("torch", args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.set_num_threads(args.threads)  # on the CPU: both sides alike (OpenMP pools spin badly on a loaded machine)
    torch.set_float32_matmul_precision("high" if args.tf32 else "highest")
    n = args.n or (60000 if backend.is_gpu else 256 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 5)
    X, y = data(n, args.seed)
    flop = flops_per_example(SIZES)
    info = {"benchmark": "bench_gpu", "backend": backend.describe(), "n": n, "network": SIZES, "dtype": "float32",
            "tf32": bool(args.tf32), "torch": torch.__version__, "torch_threads": args.threads, "repeats": repeats,
            "flop_per_example": flop,
            "warm_up": "one epoch per case, excluded",
            "timing": "sgdlab: fit's train_seconds after stepper.sync(); eager: CUDA events (GPU) or perf_counter "
                      "after sync (CPU)"}
    rows = []
    with machine.recording_load(info):
        info["machine"] = machine.describe()
        info["gemm_gflops"] = gemm_rate(backend, 8192 if backend.is_gpu else 1024)
        for B in BATCHES:
            m = n if B == "full" else min(int(B), n)
            run, seen = sgdlab_epoch(backend, X, y, m, args.seed)
            s_med, s_lo, s_hi = median(run, repeats)
            e_med, e_lo, e_hi = median(torch_epoch(backend, X, y, m, args.seed), repeats)
            rows.append({"B": B, "updates": -(-n // m), "sgdlab_s": s_med, "sgdlab_min": s_lo, "sgdlab_max": s_hi,
                         "eager_s": e_med, "eager_min": e_lo, "eager_max": e_hi, "speedup": e_med / s_med,
                         "sgdlab_gflops": n * flop / s_med / 1e9, "eager_gflops": n * flop / e_med / 1e9,
                         "sgdlab_stepper": seen["stepper"]})
    info["rows"] = rows
    info["targets"] = targets(rows, info["gemm_gflops"]) if backend.is_gpu else \
        "not judged: the targets are for a GPU; this was a CPU smoke test of the same code path"
    print(table(rows, info))
    out = args.out or Path(__file__).parent / "results" / f"bench_gpu_{backend.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}")
    return info


def targets(rows, gemm: float) -> dict:
    """Issue 12's targets, each judged from the rows (GPU runs only)."""
    by = {r["B"]: r for r in rows}
    return {"faster_than_eager_at_every_B": all(r["speedup"] > 1 for r in rows),
            "at_least_3x_at_B_le_128": all(by[b]["speedup"] >= 3 for b in (1, 10, 128)),
            "B128_epoch_le_10ms": by[128]["sgdlab_s"] <= 0.010,
            "full_batch_ge_50pct_gemm": by["full"]["sgdlab_gflops"] >= 0.5 * gemm,
            "full_batch_fraction_of_gemm": by["full"]["sgdlab_gflops"] / gemm}


def table(rows, info) -> str:
    head = (f"sgdlab vs PyTorch eager on {info['backend']}: n = {info['n']}, 784-100-10, float32, TF32 "
            f"{'on' if info['tf32'] else 'off'}; median of {info['repeats']} epochs after a warm-up; "
            f"load {info.get('load_before')}; GEMM {info['gemm_gflops']:.1f} GFLOP/s")
    lines = [head, f"{'B':>6} {'updates':>8} {'sgdlab s':>10} {'eager s':>10} {'speedup':>8} {'sgdlab GFLOP/s':>15}"]
    for r in rows:
        lines.append(f"{r['B']!s:>6} {r['updates']:>8} {r['sgdlab_s']:>10.4g} {r['eager_s']:>10.4g} "
                     f"{r['speedup']:>8.2f} {r['sgdlab_gflops']:>15.3g}")
    t = info.get("targets")
    lines.append(f"targets: {t}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
