"""Training from data larger than memory: peak resident memory and examples/second.

Writes a float32 data set of more than 4 GB (1,370,000 MNIST-shaped rows, 4.3 GB) as .npy, then in
fresh child processes, each measured by the OS's own accounting (getrusage's ru_maxrss):

  disk   one epoch of mini-batch SGD (B = 128, 784-100-10) reading rows from the file on demand
         (sgdlab.data.open_npy), then one step of batch GD, its gradient accumulated chunk by chunk;
  ram    the same epoch with the whole array loaded into memory first.

    python benchmarks/bench_out_of_core.py [--dir /tmp/sgdlab-ooc] [--rows 1370000] [--keep]

Prints a table and writes benchmarks/results/bench_out_of_core.json. The files are read through
the OS page cache, as any second epoch would be; the written data set is deleted unless --keep.
The data set is written by a child process too: Linux carries a process's peak RSS into the
ru_maxrss of the children it forks, so a parent that had touched 4 GB would spoil the numbers.
Each child also reports VmHWM (its own peak, from /proc/self/status) as a second opinion.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D, CHUNK = 784, 50_000


def write(directory: Path, rows: int) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    X_path, y_path = directory / "X.npy", directory / "y.npy"
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(X_path, mode="w+", dtype=np.float32, shape=(rows, D))
    y = np.empty(rows, np.int64)
    w = rng.standard_normal((D, 10)).astype(np.float32)
    for a in range(0, rows, CHUNK):
        block = rng.random((min(CHUNK, rows - a), D), dtype=np.float32)
        X[a:a + len(block)] = block
        y[a:a + len(block)] = np.argmax(block @ w, axis=1)  # a learnable rule, not noise
    X.flush()
    del X
    np.save(y_path, y)
    return X_path, y_path


def peak_rss_mb() -> dict:
    """Peak resident memory by getrusage and by /proc/self/status (VmHWM), in MB."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        out["vmhwm_mb"] = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        pass
    return out


def child(mode: str, directory: Path) -> dict:
    import sgdlab
    from sgdlab.data import open_npy

    y = np.load(directory / "y.npy")
    t0 = time.perf_counter()
    X = open_npy(directory / "X.npy") if mode == "disk" else np.load(directory / "X.npy")
    load_s = time.perf_counter() - t0
    net = sgdlab.Network([D, 100, 10], seed=0)
    t0 = time.perf_counter()
    h = sgdlab.fit(net, X, y, batch_size=128, lr=0.5, epochs=1, seed=0, eval_train=False)
    wall = time.perf_counter() - t0
    out = {"mode": mode, "rows": len(y), "load_seconds": load_s, "epoch_train_seconds": h.last["train_seconds"],
           "epoch_wall_seconds_incl_validation": wall, "examples_per_second": len(y) / h.last["train_seconds"],
           "peak_after_minibatch_epoch": peak_rss_mb()}
    if mode == "disk":
        t0 = time.perf_counter()
        sgdlab.fit(net, X, y, method="batch", lr=0.5, epochs=1, eval_train=False)
        out["batch_gd_step_seconds"] = time.perf_counter() - t0
        out["peak_after_batch_gd"] = peak_rss_mb()
    cost = net.cost(X[:20000], y[:20000])
    out["cost_on_first_20000_rows"] = cost
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sgdlab-ooc"))
    ap.add_argument("--rows", type=int, default=1_370_000)
    ap.add_argument("--keep", action="store_true", help="keep the data set on disk afterwards")
    ap.add_argument("--child", choices=("write", "disk", "ram"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_out_of_core.json")
    args = ap.parse_args(argv)
    if args.child == "write":
        write(args.dir, args.rows)
        return
    if args.child:
        print(json.dumps(child(args.child, args.dir)))
        return
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", "write", "--dir", str(args.dir), "--rows", str(args.rows)], check=True
    )
    X_path = args.dir / "X.npy"
    size = X_path.stat().st_size
    print(f"wrote {X_path} ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
    results = []
    try:
        for mode in ("disk", "ram"):
            run = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(args.dir)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir)
    disk, ram = results
    dp, rp = disk["peak_after_batch_gd"], ram["peak_after_minibatch_epoch"]
    lines = [
        "| data | peak RSS, ru_maxrss (MB) | VmHWM (MB) | examples/s, mini-batch SGD B=128 | epoch seconds (training) "
        "| batch-GD step (s) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| on disk ({size / 1e9:.1f} GB .npy, open_npy) | {dp['ru_maxrss_mb']:.0f} | {dp.get('vmhwm_mb', 0):.0f} | "
        f"{disk['examples_per_second']:,.0f} | {disk['epoch_train_seconds']:.1f} | "
        f"{disk['batch_gd_step_seconds']:.1f} |",
        f"| in RAM (np.load) | {rp['ru_maxrss_mb']:.0f} | {rp.get('vmhwm_mb', 0):.0f} | "
        f"{ram['examples_per_second']:,.0f} | "
        f"{ram['epoch_train_seconds']:.1f} | - |",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"file_bytes": size, "rows": args.rows, "network": [D, 100, 10], "results": results,
                                    "table": lines}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
