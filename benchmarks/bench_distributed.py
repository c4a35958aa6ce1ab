"""One process against two MPI ranks: examples/second on MNIST-shaped data, and MPI_Allreduce cost.

A 784-30-10 network (float32) trains on n MNIST-shaped rows (random pixels) at batch 128, 1024 and
the full batch: one plain process (sgdlab's own stepper choice) against ``mpiexec -n 2`` with the
fast allreduce reduction. Examples per second come from the training clock after a warm-up epoch
(evaluation off). Then MPI_Allreduce seconds per call from 4 bytes to 4 MB between 2 ranks, with the
latency (4-byte median) and bandwidth (largest message) used by the lab's model.

    python benchmarks/bench_distributed.py [--rows 60000] [--repeats 100]

Prints a table and writes benchmarks/results/bench_distributed.json with the machine and its load.
Needs mpi4py and mpiexec (pip install ".[mpi]").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sgdlab import machine  # noqa: E402  (after the sys.path insert above, so the checkout is benchmarked)
from sgdlab.lab.parallel import measure_allreduce, measure_training  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60000, help="n, MNIST-shaped training rows")
    ap.add_argument("--repeats", type=int, default=100, help="timed allreduce calls per message size")
    args = ap.parse_args(argv)
    info = {"machine": machine.describe(), "rows": args.rows, "network": [784, 30, 10], "dtype": "float32"}
    rows = []
    with machine.recording_load(info):
        for m in (128, 1024, None):
            one = measure_training(1, m, args.rows, 4 if m is None else 2)
            two = measure_training(2, m, args.rows, 4 if m is None else 2)
            rows.append(
                {
                    "batch": "full" if m is None else m,
                    "one_process_examples_per_s": one["examples_per_second"],
                    "two_ranks_examples_per_s": two["examples_per_second"],
                    "speedup": two["examples_per_second"] / one["examples_per_second"],
                    "one_process_stepper": one["stepper"],
                    "updates_timed": [one["updates"], two["updates"]],
                }
            )
        allreduce = measure_allreduce(2, quick=args.repeats < 50) if args.repeats else None
    info.update(results=rows, allreduce=allreduce)
    print(f"{'batch':>6} {'1 process ex/s':>15} {'2 ranks ex/s':>13} {'speedup':>8}")
    for r in rows:
        print(
            f"{r['batch']:>6} {r['one_process_examples_per_s']:>15,.0f} {r['two_ranks_examples_per_s']:>13,.0f} "
            f"{r['speedup']:>7.2f}x"
        )
    if allreduce:
        print(
            f"\nMPI_Allreduce, 2 ranks: latency {allreduce['latency_s'] * 1e6:.1f} us (4 bytes), "
            f"bandwidth {allreduce['bandwidth_Bps'] / 1e9:.2f} GB/s ({allreduce['bytes'][-1]} bytes)"
        )
        for b, s in zip(allreduce["bytes"], allreduce["seconds"], strict=True):
            print(f"  {b:>9} bytes  {s * 1e6:10.1f} us")
    print(
        f"\nload average before {info['load_before']}, after {info['load_after']}; {info['machine']['cpu']}, "
        f"{info['machine']['usable_cpus']} usable cores"
    )
    out = ROOT / "benchmarks" / "results" / "bench_distributed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
