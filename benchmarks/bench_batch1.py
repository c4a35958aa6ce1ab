"""Batch-1 SGD on the compiled stepper: the first layer's row pass against its column pass, by the share of
inputs skipped, and the parameters' placement in memory.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), float32, ``--n`` rows (8,000), ``fit``
with ``stepper="compiled"`` at batch 1, its own training clock (the fastest of ``--epochs`` epochs of a
fit, evaluation off), every BLAS library on one thread and the process pinned to one CPU. Data: dense
rows (uniform in [0, 1)); the same rows with zeros at random places, as many as give each expected skip
fraction of ``--skips`` (``compiled.skip_fraction``: the share of inputs zero in a row and the next one,
p^2 for zeros at rate p); and the first ``--n`` MNIST test digits where ``$SGDLAB_DATA`` (or
``../shared/data``) holds them. Modes, interleaved round by round:

  rows        the row pass over W (``compiled.ROW_COLUMNS_MAX_SKIP`` set below every skip fraction)
  columns     the column pass over W^T (set above every skip fraction)
  rows16, columns16  (``--placement``) the same with the parameters 16 bytes past a cache line, where NumPy
              puts a big array (``compiled.aligned_zeros`` replaced), against their 64-byte placement

A comparison of two source trees (e.g. before a kernel change) runs this script once per tree, with
``PYTHONPATH=TREE/src``, and compares the JSONs; code for another CPU, with ``NUMBA_CPU_FEATURES`` (numba
keeps the host's features unless it is set; e.g. ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,...``
for AVX2 only) and a ``NUMBA_CACHE_DIR`` of its own (recorded in the JSON). Prints a table
(median, min-max over ``--rounds``) and writes JSON with the machine and its load.

    python benchmarks/bench_batch1.py [--rounds 3] [--epochs 2] [--n 8000] [--skips 0.2,0.4,0.56,0.61,0.64,0.67]
        [--placement] [--out benchmarks/results/bench_batch1.json]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

import sgdlab
from sgdlab import machine
from sgdlab.steppers import compiled

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _interleaved import cell, fastest_epoch_ms, interleave, parser, pin_one_cpu, report, summary  # noqa: E402


def datasets(n: int, skips, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    X, y = rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)
    out = {"dense": (X, y)}
    for s in skips:
        Z = X.copy()
        Z[rng.random(Z.shape) < s ** 0.5] = 0.0
        out[f"zeros, skip {s:g}"] = (Z, y)
    root = Path(os.environ.get("SGDLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "mnist"
    images, labels = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        Xm, ym = sgdlab.data.read_idx_pair(str(images), str(labels))
        out["MNIST digits"] = (np.asarray(Xm[:n], np.float32), np.asarray(ym[:n]))
    return out


ALIGNED = compiled.aligned_zeros


def past_a_line(n: int, dtype, align: int = 64) -> np.ndarray:
    """np.zeros(n, dtype) 16 bytes past a cache line, as NumPy places a big array."""
    a = ALIGNED(n + 16, dtype, align)
    s = 16 // a.itemsize
    assert a[s:].ctypes.data % align == 16
    return a[s:s + n]


class InMemory:
    """The two things ``compiled.skip_fraction`` reads of a training-data holder."""

    def __init__(self, X):
        self.X, self.n = X, len(X)

    def batch(self, idx):
        return self.X[idx], None


def epoch_ms(X, y, mode: str, epochs: int, seed: int) -> tuple[float, dict]:
    compiled.ROW_COLUMNS_MAX_SKIP = 2.0 if mode.startswith("columns") else -1.0
    compiled.aligned_zeros = past_a_line if mode.endswith("16") else ALIGNED
    ms, info = fastest_epoch_ms(X, y, epochs, seed, batch_size=1)
    assert info["transposed"] == mode.startswith("columns")
    return ms, info



def main(argv=None) -> dict:
    ap = parser(__doc__, "bench_batch1", 2)
    ap.add_argument("--skips", default="0.2,0.4,0.56,0.61,0.64,0.67")
    ap.add_argument("--placement", action="store_true", help="also with the parameters 16 bytes past a line")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    pin_one_cpu()
    skips = [float(s) for s in args.skips.split(",") if s]
    modes = ["rows", "columns"] + (["rows16", "columns16"] if args.placement else [])
    data = datasets(args.n, skips)
    result = {"benchmark": "bench_batch1", "n": args.n, "epochs": args.epochs, "rounds": args.rounds, "rows": []}
    threshold = compiled.ROW_COLUMNS_MAX_SKIP
    try:
        with machine.recording_load(result), threadpool_limits(1):
            result["machine"] = machine.describe()
            import numba

            # the code numba generates: for the host CPU, or as NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say
            result["numba"] = {"version": numba.__version__, "cpu_name": os.environ.get("NUMBA_CPU_NAME"),
                               "cpu_features": os.environ.get("NUMBA_CPU_FEATURES")}
            times = interleave(list(data), modes, args.rounds,
                               lambda name, mode, r: epoch_ms(*data[name], mode, args.epochs, r)[0])
    finally:
        compiled.ROW_COLUMNS_MAX_SKIP, compiled.aligned_zeros = threshold, ALIGNED
    for name, (X, _) in data.items():
        row = {"data": name, "skip_fraction": compiled.skip_fraction(InMemory(X), 1)}
        result["rows"].append(row | {mode: summary(ms) for mode, ms in times[name].items()})
    columns = [("data", False), ("skip fraction", True)] + [(f"{m} ms/epoch", True) for m in modes]
    rows = [[row["data"], f"{row['skip_fraction']:.2f}", *(cell(row[m]) for m in modes)] for row in result["rows"]]
    return report(result, columns, rows, args.out)

if __name__ == "__main__":
    main()
