"""The ``blas`` kernel's forward products by register tiles against gemm (NumPy's OpenBLAS), by batch size.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), float32, ``--n`` dense rows (uniform in
[0, 1)), ``fit`` with ``stepper="compiled"``, its own training clock (the fastest epoch of ``--epochs`` in a
fit, evaluation off), every BLAS library on one thread and the process pinned to one CPU, as in
``bench_epoch.py``. Modes, interleaved round by round:

  tiles   forward products by the register tiles (``compiled.FORWARD_TILES``), at every batch size
          (``compiled.TILES_MIN_BATCH`` set to 1, so that the crossover shows)
  gemm    every product by gemm (``compiled.FORWARD_TILES = False``)

The tiles need 512-bit vectors (``compiled.wide_vector_code``); elsewhere this script says so and stops.
Prints a table (ms per epoch, median and min-max over ``--rounds``, and gemm / tiles) and writes JSON with
the machine and its load.

    python benchmarks/bench_forward.py [--rounds 3] [--epochs 3] [--n 8000] [--batch-sizes 10,12,16,32,128,1024,n]
        [--out benchmarks/results/bench_forward.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np

import sgdlab
from sgdlab import machine
from sgdlab.steppers import compiled


def epoch_ms(X, y, batch: int, mode: str, epochs: int, seed: int) -> tuple[float, dict]:
    compiled.FORWARD_TILES, compiled.TILES_MIN_BATCH = mode == "tiles", 1
    net = sgdlab.Network([784, 100, 10], seed=0)
    how = {"method": "batch"} if batch >= len(X) else {"batch_size": batch}
    h = sgdlab.fit(net, X, y, epochs=epochs, lr=0.1, eval_train=False, stepper="compiled", seed=seed, **how)
    return float(np.diff(h["train_seconds"]).min() * 1e3), h.config["stepper_info"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit; the fastest is kept (default 3)")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--batch-sizes", default="10,12,16,32,128,1024,n", help="comma-separated; 'n' is the full batch")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_forward.json")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    if not compiled.wide_vector_code():
        print("no 512-bit vectors in numba's code here: the forward products are gemm's, nothing to compare")
        return {}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    batches = [args.n if b.strip() == "n" else int(b) for b in args.batch_sizes.split(",") if b.strip()]
    rng = np.random.default_rng(0)
    X, y = rng.random((args.n, 784), dtype=np.float32), rng.integers(0, 10, args.n)
    modes = ["tiles", "gemm"]
    result = {"benchmark": "bench_forward", "n": args.n, "epochs": args.epochs, "rounds": args.rounds, "rows": []}
    times: dict = {}
    saved = compiled.FORWARD_TILES, compiled.TILES_MIN_BATCH
    try:
        with machine.recording_load(result), threadpool_limits(1):
            result["machine"] = machine.describe()
            for r in range(args.rounds):
                for batch in batches:
                    for mode in (modes if r % 2 == 0 else modes[::-1]):
                        ms, info = epoch_ms(X, y, batch, mode, args.epochs, r)
                        assert info["forward_products"] == mode, info
                        times.setdefault(batch, {}).setdefault(mode, []).append(ms)
                print(f"round {r + 1}/{args.rounds} done")
    finally:
        compiled.FORWARD_TILES, compiled.TILES_MIN_BATCH = saved
    for batch in batches:
        row: dict = {"batch_size": batch}
        for mode, ms in times[batch].items():
            row[mode] = {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "all_ms": ms}
        row["gemm_over_tiles"] = row["gemm"]["median_ms"] / row["tiles"]["median_ms"]
        result["rows"].append(row)
    print(f"{result['machine']['cpu']}; load {result['load_before']} -> {result['load_after']}")
    print("| batch | tiles ms/epoch | gemm ms/epoch | gemm / tiles |")
    print("|---:|---:|---:|---:|")
    for row in result["rows"]:
        cells = [f"{row[m]['median_ms']:.1f} ({row[m]['min_ms']:.1f}-{row[m]['max_ms']:.1f})" for m in modes]
        print(f"| {row['batch_size']} | " + " | ".join(cells) + f" | {row['gemm_over_tiles']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
