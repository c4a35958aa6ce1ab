"""Training from data larger than memory: examples/second against the same data in RAM, and peak memory.

Writes a float32 data set (by default 1,370,000 MNIST-shaped rows, 4.3 GB; ``--rows`` for a
smaller one) as .npy, then runs each configuration in a fresh child process, measured by the OS's
own accounting (getrusage's ru_maxrss, and VmHWM from /proc/self/status as a second opinion),
with the CPU time spent per example (user + system, all threads: a measure that a busy machine
does not inflate the way it does wall time), every one with the same BLAS threads (``--threads``,
default 1: the second core is left to the background reader, and a BLAS thread fighting for a
busy core would time the contention):

  ram            np.load, then one epoch of mini-batch SGD (B = 128, 784-100-10, reshuffle)
  disk           the same epoch reading the rows from the file (sgdlab.data.open_npy): os.pread of
                 the batch's rows, a background thread reading the next batches (fit plans them),
                 then one step of batch GD, its gradient accumulated chunk by chunk
  disk_noprefetch  the same epoch from disk with the background reader off (open_npy(prefetch_depth=0):
                 each batch read when it is taken)
  disk_chunk     the epoch from disk with sampling="chunk_shuffle" (NOT a uniform permutation)
  cold           rows/s of reading the first batches of an epoch right after the file was dropped
                 from the page cache (posix_fadvise DONTNEED), for "reshuffle" and "chunk_shuffle"

The warm configurations read the file through the OS page cache, as any second epoch would (the
file was just written). ``--rounds`` repeats ram/disk alternately (interleaved) and reports the
median. The disk and RAM runs use the same seed, and the benchmark checks that they end with the
same parameters bit for bit.

    python benchmarks/bench_out_of_core.py [--dir /tmp/sgdlab-ooc] [--rows 1370000] [--rounds 1] [--keep]

Prints a table and writes benchmarks/results/bench_out_of_core.json, with the machine and the
load average before and after. The written data set is deleted unless --keep. The data set is
written by a child process too: Linux carries a process's peak RSS into the ru_maxrss of the
children it forks, so a parent that had touched 4 GB would spoil the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D, CHUNK, B = 784, 50_000, 128
COLD_BATCHES = 400  # batches read in a cold measurement (51,200 rows)


def write(directory: Path, rows: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(directory / "X.npy", mode="w+", dtype=np.float32, shape=(rows, D))
    y = np.empty(rows, np.int64)
    w = rng.standard_normal((D, 10)).astype(np.float32)
    for a in range(0, rows, CHUNK):
        block = rng.random((min(CHUNK, rows - a), D), dtype=np.float32)
        X[a:a + len(block)] = block
        y[a:a + len(block)] = np.argmax(block @ w, axis=1)  # a learnable rule, not noise
    X.flush()
    del X
    np.save(directory / "y.npy", y)


def peak_rss_mb() -> dict:
    """Peak resident memory by getrusage and by /proc/self/status (VmHWM), in MB."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        with open("/proc/self/status") as f:
            out["vmhwm_mb"] = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        pass
    return out


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads (the reader's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drop_from_page_cache(path: Path) -> None:
    """Ask the OS to forget the file's cached pages (clean pages of a file we may read: no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def digest(net) -> str:
    h = hashlib.sha256()
    for W, b in net.params:
        h.update(np.ascontiguousarray(W).tobytes())
        h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()[:16]


def child(mode: str, directory: Path, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    import sgdlab
    from sgdlab.data import open_npy
    from sgdlab.sampling import BatchSampler

    threadpool_limits(threads)  # the same BLAS threads for every configuration
    y = np.load(directory / "y.npy")
    if mode == "cold":
        X = open_npy(directory / "X.npy")
        out = {"mode": mode, "rows": len(y), "batches_read": COLD_BATCHES}
        for order in ("reshuffle", "chunk_shuffle"):
            drop_from_page_cache(directory / "X.npy")
            batches = BatchSampler(len(y), B, order, np.random.default_rng(1)).epoch()[:COLD_BATCHES]
            t0 = time.perf_counter()
            X.prefetch(batches)
            for b in batches:
                X.take(b)
            out[f"{order}_rows_per_second"] = COLD_BATCHES * B / (time.perf_counter() - t0)
        X.close()
        return out
    t0 = time.perf_counter()
    X = np.load(directory / "X.npy") if mode == "ram" else \
        open_npy(directory / "X.npy", prefetch_depth=0 if mode == "disk_noprefetch" else 4)
    load_s = time.perf_counter() - t0
    net = sgdlab.Network([D, 100, 10], seed=0)
    sampling = "chunk_shuffle" if mode == "disk_chunk" else "reshuffle"
    cpu0 = cpu_seconds()
    h = sgdlab.fit(net, X, y, batch_size=B, lr=0.5, epochs=1, seed=0, eval_train=False, sampling=sampling)
    out = {"mode": mode, "rows": len(y), "sampling": sampling, "load_seconds": load_s,
           "epoch_train_seconds": h.last["train_seconds"], "examples_per_second": len(y) / h.last["train_seconds"],
           "cpu_us_per_example": (cpu_seconds() - cpu0) / len(y) * 1e6,
           "params_sha256": digest(net), "peak_after_minibatch_epoch": peak_rss_mb()}
    if mode == "disk":
        t0 = time.perf_counter()
        sgdlab.fit(net, X, y, method="batch", lr=0.5, epochs=1, eval_train=False)
        out["batch_gd_step_seconds"] = time.perf_counter() - t0
        out["peak_after_batch_gd"] = peak_rss_mb()
    return out


def run_child(mode: str, directory: Path, threads: int) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(directory),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(result, flush=True)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sgdlab-ooc"))
    ap.add_argument("--rows", type=int, default=1_370_000, help="rows of 784 float32 (default 1,370,000: 4.3 GB)")
    ap.add_argument("--rounds", type=int, default=1, help="ram/disk runs, interleaved (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads in every configuration (default 1)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache reading measurement")
    ap.add_argument("--keep", action="store_true", help="keep the data set on disk afterwards")
    ap.add_argument("--child", choices=("write", "disk", "disk_noprefetch", "disk_chunk", "ram", "cold"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_out_of_core.json")
    args = ap.parse_args(argv)
    if args.child == "write":
        write(args.dir, args.rows)
        return None
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.threads)))
        return None
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = src + os.pathsep + os.environ.get("PYTHONPATH", "")
    sys.path.insert(0, src)
    from sgdlab import machine

    record = {"rows": args.rows, "network": [D, 100, 10], "batch_size": B, "blas_threads": args.threads,
              "machine": machine.describe()}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", "write", "--dir", str(args.dir), "--rows", str(args.rows)],
                   check=True)
    size = (args.dir / "X.npy").stat().st_size
    record["file_bytes"] = size
    print(f"wrote {args.dir / 'X.npy'} ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
    runs: dict = {m: [] for m in ("ram", "disk", "disk_noprefetch", "disk_chunk")}
    try:
        with machine.recording_load(record):
            for _ in range(args.rounds):
                for mode in runs:
                    runs[mode].append(run_child(mode, args.dir, args.threads))
            if not args.no_cold:
                record["cold"] = run_child("cold", args.dir, args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir)
    record["runs"] = runs
    eps = {m: statistics.median(r["examples_per_second"] for r in rs) for m, rs in runs.items()}
    record["examples_per_second_median"] = eps
    record["fraction_of_ram"] = {m: eps[m] / eps["ram"] for m in eps}
    record["same_parameters_disk_and_ram"] = len({r["params_sha256"] for r in runs["ram"] + runs["disk"]
                                                  + runs["disk_noprefetch"]}) == 1
    lines = table(runs, eps, size)
    cold = record.get("cold")
    if cold:
        lines.append(f"\ncold page cache, reading {cold['batches_read']} batches of {B}: reshuffle "
                     f"{cold['reshuffle_rows_per_second']:,.0f} rows/s, chunk_shuffle "
                     f"{cold['chunk_shuffle_rows_per_second']:,.0f} rows/s")
    print("\n".join(lines))
    print(f"disk / RAM throughput: {record['fraction_of_ram']['disk']:.2f}; same parameters bit for bit: "
          f"{record['same_parameters_disk_and_ram']}; load {record['load_before']} -> {record['load_after']}")
    record["table"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return record


def table(runs: dict, eps: dict, size: int) -> list[str]:
    def peak(r, key="peak_after_minibatch_epoch"):
        return max(x[key]["ru_maxrss_mb"] for x in r), max(x[key].get("vmhwm_mb", 0) for x in r)

    names = {"disk": f"on disk ({size / 1e9:.1f} GB .npy, open_npy, prefetch)",
             "disk_noprefetch": "on disk, no prefetch thread", "disk_chunk": "on disk, sampling=chunk_shuffle",
             "ram": "in RAM (np.load)"}
    lines = ["| data | peak RSS, ru_maxrss (MB) | VmHWM (MB) | examples/s, B=128 | of in-RAM | CPU µs/example "
             "| epoch s (training) | batch-GD step (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in ("disk", "disk_noprefetch", "disk_chunk", "ram"):
        rs = runs[m]
        rss, hwm = peak(rs, "peak_after_batch_gd" if m == "disk" else "peak_after_minibatch_epoch")
        gd = f"{statistics.median(r['batch_gd_step_seconds'] for r in rs):.1f}" if m == "disk" else "-"
        cpu = [r["cpu_us_per_example"] for r in rs if "cpu_us_per_example" in r]
        lines.append(f"| {names[m]} | {rss:.0f} | {hwm:.0f} | {eps[m]:,.0f} | {eps[m] / eps['ram']:.2f} | "
                     f"{statistics.median(cpu) if cpu else float('nan'):.1f} | "
                     f"{statistics.median(r['epoch_train_seconds'] for r in rs):.1f} | {gd} |")
    return lines


if __name__ == "__main__":
    main()
