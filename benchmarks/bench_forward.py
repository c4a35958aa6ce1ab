"""The ``blas`` kernel's forward or gradient products by register tiles against gemm (NumPy's BLAS), by batch size.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), float32, ``--n`` dense rows (uniform in
[0, 1)), ``fit`` with ``stepper="compiled"``, its own training clock (the fastest epoch of ``--epochs`` in a
fit, evaluation off), every BLAS library on one thread and the process pinned to one CPU, as in
``bench_epoch.py``. ``--product forward`` (the default) compares the forward products z = a W, ``--product
gradient`` the weights' gradient sums a^T delta; the other product is made as selection makes it at that
batch size, the same in both modes. Modes, interleaved round by round:

  tiles   the product by register tiles (``compiled.FORWARD_TILES`` / ``GRADIENT_TILES``) at every batch
          size (``compiled.TILES_MIN_BATCH`` and ``TILES_MIN_BATCH_NARROW_BLAS``, or
          ``GRADIENT_TILES_MIN_BATCH`` set to 1, so that the crossover shows; the gradient tiles also
          where NumPy's BLAS has 512-bit kernels, ``compiled.blas_wide_kernels``)
  gemm    the product by gemm (the flag False)

The tiles need 512-bit vectors (``compiled.wide_vector_code``); elsewhere this script says so and stops.
Prints a table (ms per epoch, median and min-max over ``--rounds``, and gemm / tiles) and writes JSON with
the machine, its BLAS (the core OpenBLAS runs, and the OPENBLAS_* settings) and its load.

    python benchmarks/bench_forward.py [--product forward|gradient] [--rounds 3] [--epochs 3] [--n 8000]
        [--batch-sizes 10,12,16,32,128,1024,n] [--out benchmarks/results/bench_forward.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sgdlab import machine
from sgdlab.steppers import compiled

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _interleaved import cell, fastest_epoch_ms, interleave, parser, pin_one_cpu, report, summary  # noqa: E402

SETTINGS = ("FORWARD_TILES", "TILES_MIN_BATCH", "TILES_MIN_BATCH_NARROW_BLAS", "GRADIENT_TILES",
            "GRADIENT_TILES_MIN_BATCH", "blas_wide_kernels")


def configure(product: str, mode: str) -> None:
    if product == "forward":
        compiled.FORWARD_TILES = mode == "tiles"
        compiled.TILES_MIN_BATCH = compiled.TILES_MIN_BATCH_NARROW_BLAS = 1
    else:
        compiled.GRADIENT_TILES, compiled.GRADIENT_TILES_MIN_BATCH = mode == "tiles", 1
        if compiled.blas_wide_kernels():  # the gradient tiles wherever the flag allows them; the forward
            # products' threshold stays the one for a BLAS with wide kernels, as selection makes it here
            compiled.TILES_MIN_BATCH_NARROW_BLAS = compiled.TILES_MIN_BATCH
            compiled.blas_wide_kernels = lambda: False


def epoch_ms(X, y, batch: int, product: str, mode: str, epochs: int, seed: int) -> tuple[float, dict]:
    how = {"method": "batch"} if batch >= len(X) else {"batch_size": batch}
    saved = {name: getattr(compiled, name) for name in SETTINGS}
    try:
        configure(product, mode)
        ms, info = fastest_epoch_ms(X, y, epochs, seed, **how)
    finally:
        for name, value in saved.items():
            setattr(compiled, name, value)
    assert info[f"{product}_products"] == mode, info
    return ms, info


def main(argv=None) -> dict:
    ap = parser(__doc__, "bench_forward", 3)
    ap.add_argument("--product", choices=("forward", "gradient"), default="forward")
    ap.add_argument("--batch-sizes", default="10,12,16,32,128,1024,n", help="comma-separated; 'n' is the full batch")
    args = ap.parse_args(argv)
    if args.product == "gradient" and args.out == ap.get_default("out"):
        args.out = args.out.with_name("bench_gradient.json")
    from threadpoolctl import threadpool_limits

    if not compiled.wide_vector_code():
        print(f"no 512-bit vectors in numba's code here: the {args.product} products are gemm's, nothing to compare")
        return {}
    pin_one_cpu()
    batches = [args.n if b.strip() == "n" else int(b) for b in args.batch_sizes.split(",") if b.strip()]
    rng = np.random.default_rng(0)
    X, y = rng.random((args.n, 784), dtype=np.float32), rng.integers(0, 10, args.n)
    modes = ["tiles", "gemm"]
    result = {"benchmark": "bench_forward", "product": args.product, "n": args.n, "epochs": args.epochs,
              "rounds": args.rounds, "rows": []}
    with machine.recording_load(result), threadpool_limits(1):
        result["machine"] = machine.describe()
        times = interleave(batches, modes, args.rounds,
                           lambda batch, mode, r: epoch_ms(X, y, batch, args.product, mode, args.epochs, r)[0])
    for batch in batches:
        row: dict = {"batch_size": batch} | {mode: summary(ms) for mode, ms in times[batch].items()}
        row["gemm_over_tiles"] = row["gemm"]["median_ms"] / row["tiles"]["median_ms"]
        result["rows"].append(row)
    columns = [("batch", True), ("tiles ms/epoch", True), ("gemm ms/epoch", True), ("gemm / tiles", True)]
    rows = [[str(row["batch_size"]), *(cell(row[m]) for m in modes), f"{row['gemm_over_tiles']:.2f}"]
            for row in result["rows"]]
    return report(result, columns, rows, args.out)

if __name__ == "__main__":
    main()
