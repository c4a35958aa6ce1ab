"""The compiled stepper: a block of small-batch SGD updates in one numba-compiled call.

At batch 1 most of a NumPy update is overhead (dispatch, allocation, Python bytecode), not
arithmetic. Here a whole block of updates (an epoch, without per-update callbacks) runs in one
compiled loop over plain arrays: for each batch, the forward pass, the output error,
backpropagation, then the update of every weight, in the order and with the formulas of the
reference chain (``optim.sgd``):

    g_W = (1/m) sum_rows a_{l-1} delta_l^T + lam W,    g_b = (1/m) sum_rows delta_l
    v <- mu v + g;   u = v, or g + mu v (Nesterov), or g when mu = 0;   W <- W - eta_t u

with eta_t computed by ``fit`` for the block beforehand. Every hidden activation (sigmoid, tanh,
relu, identity), every output (those and softmax), both costs, float32 and float64. All deltas of
a batch are computed before its parameters change. The parameters and momentum buffers live in
two flat arrays of which ``net.params`` and the optimizer state's velocity are views, so nothing
is copied between blocks; a stepper that replaces them (the reference one) is followed by a copy
back in. Numbers agree with the reference stepper to rounding (sums in another order); a resumed
compiled run is bit-identical to an uninterrupted one, because each update is computed the same
way whatever block it falls in.

Two kernels make these updates (``stepper_info["kernel"]``):

* ``rows``, for the smallest batches: the first layer's products are compiled loops, row by row,
  and its update and the next batch's products share one pass over its weights; the smaller layers
  above it go through gemm where NumPy's BLAS offers it (below), loops otherwise. It is taken for
  batches of at most COMPILED_MAX_BATCH_DENSE rows, or, for plain SGD, COMPILED_MAX_BATCH rows where
  at least SKIP_MIN of the first layer's rows can be expected to have an input that is zero in the
  batch and the next one (``skip_fraction``: such an input adds nothing to z or to the weights'
  gradient, exactly, and its work is skipped); 1 and 3 rows (SMALL_KERNEL_MAX_BATCH_DENSE and
  SMALL_KERNEL_MAX_BATCH) where NumPy's OpenBLAS has small-matrix kernels (``rows_kernel_limits``).
  With momentum the upper layers' updates stay loops
  (their products still go through gemm); ``stepper_info["upper_layers"]`` says "gemm" or "loops".
  Plain SGD on one row of inputs with few zeros (``skip_fraction`` < ROW_COLUMNS_MAX_SKIP) holds the
  first layer's weights transposed for the whole fit and passes over them a column at a time
  (``stepper_info["transposed"]``; ``net.params[0][0]`` is a column-major view of them during the
  run, a row-major array again at its end).
* ``blas``, for bigger batches: the matrix products are NumPy's own BLAS ``?gemm``, called from
  the compiled loop through its C interface (no Python, no NumPy call, no array allocated per
  update); the plain SGD update happens inside gemm, as in the fused stepper. A batch of more than
  ROW_BLOCKS_MIN row blocks (``row_block``: ROW_BLOCK_BYTES of inputs, 167 rows for MNIST in
  float32), on one BLAS thread, is made block by block instead: each block's forward product,
  backward pass and gradient product run while its inputs are still in the core's cache, the
  gradient is summed over the blocks, and the update is made from the sums
  (``stepper_info["row_block"]``). In float32 on CPUs with 512-bit vectors, for batches of at least
  TILES_MIN_BATCH rows on one BLAS thread, the forward products are made by compiled register tiles
  instead of gemm (``tiled_products``, ``_numba_kernels.forward_product``;
  ``stepper_info["forward_products"]``: "tiles" or "gemm"). Where NumPy's BLAS runs without 512-bit
  kernels (``blas_wide_kernels``: an OpenBLAS held to its Haswell kernels by OPENBLAS_CORETYPE, as some
  machines set it), the forward tiles start at TILES_MIN_BATCH_NARROW_BLAS rows, and from
  GRADIENT_TILES_MIN_BATCH rows the weights' gradient sums are made by register tiles too
  (``gradient_tiles``, ``_numba_kernels.gradient_product``; ``stepper_info["gradient_products"]``), a
  batch's update then made from its sums; so too from GRADIENT_TILES_MIN_BATCH_SPLIT rows on a CPU that
  runs 512-bit vectors as two halves (``split_wide_vectors``: AMD's Zen 4). It needs NumPy's
  BLAS to export CBLAS with 64-bit integers (``scipy_cblas_sgemm64_``: NumPy's wheels from PyPI);
  without it automatic selection leaves these batches to the fused and buffered steppers (and a
  forced ``compiled`` runs the ``rows`` kernel at every batch size). Automatic selection takes it
  for every bigger batch short of the whole training set, and for batch GD in memory where it is
  made in blocks; other batch GD goes to the buffered stepper, or to the fused one while its
  products are small (784-100-10, ms per epoch of 8,000 rows against the buffered stepper, one
  BLAS thread, AMD EPYC, before the row blocks: 37.5 vs 38.7 at 1,024 rows, 40.8 vs 41.0 at 4,000,
  39.4 vs 38.9 for the full batch; two threads: 22.0 vs 23.1 at 1,024, 23.2 vs 23.4 at 2,048, 21.4
  vs 21.3 for the full batch; with them, Intel Xeon, one thread: 33.1 vs 41.2 at 4,000 and 30.4 vs
  35.4 for the full batch, ROW_BLOCKS_MIN).

The kernels' loops ask LLVM for 512-bit vectors where the CPU has them (``_numba_kernels.wide_vectors``;
numba's default there is 256 bits): a batch-1 epoch of dense rows 69 against 81 ms, of MNIST digits 54
against 55-57, on an Intel Xeon (``benchmarks/bench_batch1.py`` on both trees, README).

numba is imported only when this stepper runs; compilation is cached on disk (``cache=True``)
and happens in ``prepare``, before ``fit`` starts its clock; its time is reported once in
``history.config["stepper_info"]["compile_seconds"]``. The crossovers with the other steppers are
measured (README, "Speed").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import time

import numpy as np

from ..optim import sgd_state, sgd_velocity
from .base import FULL_BATCH, Stepper, advance, needs_numpy_sgd, register
from .threads import blas_threads, products_threads

COMPILED_MAX_BATCH = 7
"""Largest batch the ``rows`` kernel takes on sparse inputs (``skip_fraction`` >= SKIP_MIN, e.g. MNIST)
where NumPy's BLAS packs even the smallest products (``rows_kernel_limits``)."""
COMPILED_MAX_BATCH_DENSE = 3
"""... and on any inputs. Measured crossovers with the ``blas`` kernel, 784-100-10, one thread (README;
AMD EPYC, OpenBLAS's Haswell kernels): the ``rows`` kernel skips the inputs that are zero in a batch and
the next one exactly, BLAS does not, so the crossover depends on how often that happens, not on the
fraction of zeros alone."""
SMALL_KERNEL_MAX_BATCH = 3
"""COMPILED_MAX_BATCH where NumPy's OpenBLAS has small-matrix kernels (``SMALL_KERNEL_CORES``): they run a
product of a few rows without packing its operands, and the ``blas`` kernel wins sooner. Measured on an
Intel Xeon (OpenBLAS 0.3.31, SkylakeX kernels), ms per epoch of 8,000 rows, rows against blas kernel:
MNIST 61 vs 147 at batch 1, 65 vs 81 at 2, 59 vs 71 at 3, 59 vs 54 at 4, 80 vs 45 at 7."""
SMALL_KERNEL_MAX_BATCH_DENSE = 1
"""COMPILED_MAX_BATCH_DENSE there. Measured as above on dense inputs: 103 vs 148 at batch 1, 107 vs 81 at 2,
98 vs 71 at 3, 99 vs 53 at 4."""
SMALL_KERNEL_CORES = ("SkylakeX",)
"""OpenBLAS core types (threadpoolctl's ``architecture``) measured to have the small-matrix kernels: the
SkylakeX kernels' ``sgemm_small_kernel_*`` ran the ``blas`` kernel's products at 2-7 rows (perf)."""
SKIP_MIN = 0.4
"""Least ``skip_fraction`` for the ``rows`` kernel above its dense limit (``rows_kernel_limits``). Measured, ms per
epoch of 8,000 rows, rows against blas kernel: MNIST (81% zeros, skip fraction 0.54 at batch 4, 0.49
at 7) 52 vs 70 at 4, 67 vs 78 at 7, 60 vs 55 at 8; uniform random inputs with 80% zeros at random
places (skip fraction 0.17 at 4) 88 vs 71 at 4, slower than on dense inputs (78), the skip's branch
being unpredictable there."""
ROW_BLOCK_BYTES = 512 * 1024
"""Inputs per row block of the ``blas`` kernel (``row_block``): 167 rows of 784 float32. Measured, batch GD
on 8,000 x 784-100-10 float32, one thread, ms per update, three rounds (Intel Xeon, 2 MiB of L2 per core):
31.1-31.7 at 64 rows, 30.4-30.6 at 128, 30.9-31.6 at 167, 30.3-30.9 at 256, 31.6-32.0 at 512, 31.7-32.3
at 900; unblocked 36.1-36.7, the buffered stepper 38.0-38.8 in the same rounds. Flat from 128 to 256 rows
(within the rounds' spread). Not measured on the AMD EPYC (Zen 3, 512 KiB of L2) of the earlier tables."""
ROW_BLOCKS_MIN = 8
"""Batches of at most this many row blocks are one block. Measured as above, ms per epoch of 8,000 rows,
167-row blocks against one block (the buffered stepper): batch 256 33.1 against 30.5 (36.2), 1,024 31.7
against 31.7 (32.5), 2,000 33.3 against 35.9 (34.9), 4,000 33.1 against 42.3 (41.2), 8,000 30.4 against
36.4 (35.4): a block's gradient product on inputs still in cache gains more than the sums' extra pass
over the weights costs once a batch is several times the cache."""
ROW_COLUMNS_MAX_SKIP = 0.69
"""Plain SGD on one row holds the first layer's weights transposed and passes over them column by column
(``_numba_kernels.sgd_column_pass``) where the expected share of skipped rows (``skip_fraction``) is below
this; above it the row pass, which skips the inputs that are zero in a row and the next one, wins.
Measured with the column pass making four columns at a time by ``benchmarks/bench_batch1.py`` on the AMD
EPYC (Zen 5; ``bench_batch1_amd_epyc.json``, medians of 5 interleaved rounds, a noisy hour), ms per epoch,
rows against columns: dense 64.3 vs 44.1, skip 0.61 69.7 vs 53.9, 0.64 66.8 vs 48.9, 0.67 59.2 vs 45.2,
MNIST digits (0.71) 41.1 vs 43.7: the crossover between 0.67 and 0.71. It was 0.6 before, from the
one-column pass on the Intel Xeon (below; its four-column pass not measured there).
Measured by ``benchmarks/bench_batch1.py`` (JSON in ``benchmarks/results/bench_batch1.json``), ms per batch-1
epoch of 8,000 rows, 784-100-10 float32, medians of three interleaved rounds, rows against columns (Intel
Xeon, one core): dense inputs 94.4 vs 70.2; zeros at random places, skip fraction 0.40 96.7 vs 70.9, 0.56
78.3 vs 71.1, 0.61 72.9 vs 71.2, 0.64 69.8 vs 69.7 (even), 0.67 66.3 vs 70.4; MNIST digits (0.71, zeros in
predictable places) 53.2 vs 69.5. With numba's code for an AVX2-only CPU (``NUMBA_CPU_NAME=haswell`` and
``NUMBA_CPU_FEATURES=+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+popcnt,+movbe``, on the same Xeon,
``bench_batch1_avx2_code.json``; load 0.8-1.2): dense 144.3 (108.5-147.9) vs 81.5, 0.56 87.9 vs 83.1, 0.61
83.2 vs 81.2, 0.64 78.6 vs 81.0, MNIST 62.6 vs 80.4."""
FORWARD_TILES = True
"""False: the ``blas`` kernel makes every forward product by gemm (``tiled_products``; for comparisons,
``benchmarks/bench_forward.py``)."""
TILES_MIN_VECTORS = 1
"""Least width of a layer, in whole vectors (16 float32), whose forward product the tiles make; narrower
ones go to gemm: the 10-wide output layer of 784-100-10 took 0.55 ms per 8,000 rows by the tiles (one
vector, 10 lanes written) against 0.25 by gemm (a throwaway measurement). ``stepper_info["tiled_layers"]``
counts the layers made by the tiles."""
GRADIENT_TILES = True
"""False: the ``blas`` kernel makes every gradient product by gemm (``gradient_tiles``; for comparisons,
``benchmarks/bench_forward.py --product gradient``)."""
GRADIENT_TILES_MIN_BATCH = 16
"""Smallest batch whose gradient products are made by register tiles where NumPy's BLAS runs without 512-bit
kernels (``gradient_tiles``): the crossover measured by ``benchmarks/bench_forward.py --product gradient``
(``benchmarks/results/bench_gradient.json``) on the AMD EPYC (Zen 5, AVX-512) with OPENBLAS_CORETYPE=Haswell,
as that machine sets it, 784-100-10 float32, 8,000 dense rows, one thread, medians of 3 interleaved rounds,
ms per epoch, tiles against gemm: 37.1 vs 33.2 at 8 rows, 27.4 vs 27.5 at 12, 25.4 vs 26.7 at 16, 21.0 vs
24.1 at 32, 17.6 vs 22.3 at 128, 17.0 vs 22.0 at 1,024, 15.0 vs 20.1 for the full batch. The same OpenBLAS
on its kernels for the CPU (SkylakeX; ``bench_gradient_skylakex_blas.json``, 5 rounds): 26.1 vs 21.9 at 16,
18.2 vs 17.7 at 128, 17.4 vs 17.1 at 1,024, 14.9 vs 14.8 for the full batch: there gemm stays."""
GRADIENT_TILES_MIN_BATCH_SPLIT = 128
"""Smallest batch whose gradient products are made by register tiles where NumPy's BLAS has 512-bit kernels
but the CPU runs a 512-bit operation as two 256-bit halves (``split_wide_vectors``: AMD's Zen 4). There a
tile's last vector, narrowed to 8 lanes (``_numba_kernels.TAILS``), costs half a 16-lane one, and the tiles
catch up with OpenBLAS's SkylakeX kernels. ``bench_forward.py --product gradient`` on the AMD EPYC (Zen 4),
ms per epoch, tiles against gemm, medians of interleaved rounds: ``bench_gradient_zen4.json`` (7 rounds, load
0.3-0.4) 32.9 vs 32.6 at 64 rows, 32.0 vs 32.6 at 128, 31.3 vs 31.7 at 256, 31.2 vs 32.7 at 512, 32.6 vs
32.4 at 1,024, 27.7 vs 29.0 for the full batch; ``bench_gradient_zen4_first_run.json`` (5 rounds) 35.1 vs
33.9 at 32, 30.2 vs 30.5 at 128, 29.5 vs 30.3 at 1,024, 26.7 vs 27.1 full; ``bench_gradient_zen4_noisy.json``
(load 1.0-1.1, spreads of 10-15%) gemm ahead by 2-6% from 16 to 256 rows, the tiles at 1,024 (1.14x) and
full (1.05x). From the smallest batch where the tiles were ahead in the quieter runs' medians; between 64
and 1,024 rows the two are within a few percent either way."""
SPLIT_VECTOR_CPUS = frozenset({("AuthenticAMD", 25)})
"""(vendor, family) of the CPUs whose AVX-512 runs on 256-bit vector units, a 512-bit fused multiply-add
taking a unit for two cycles and a 256-bit one for one: AMD's family 25 (19h), whose only cores with AVX-512
are Zen 4 (Zen 3 has none, and the tiles need it: ``wide_vector_code``); Zen 5 (family 26) has full-width
units. From /proc/cpuinfo (``machine.cpu_family``), not from LLVM's name for the CPU: the llvmlite of older
numba releases (LLVM 14) knows no ``znver4``."""
TILES_MIN_BATCH_NARROW_BLAS = 8
"""``TILES_MIN_BATCH`` where NumPy's BLAS runs without 512-bit kernels (``blas_wide_kernels``): its gemm
is slower there, and the tiles win earlier. ``bench_forward.py`` as for GRADIENT_TILES_MIN_BATCH
(``bench_forward_coretype_haswell.json``), tiles against gemm: 34.6 vs 39.5 at 8 rows, 30.9 vs 43.5 at 10,
28.5 vs 33.5 at 12, 26.2 vs 30.8 at 16, 18.7 vs 24.0 at 128, 15.5 vs 23.5 for the full batch. Smaller dense
batches go to the ``rows`` kernel, or to gemm at 4-7 rows (not measured)."""

TILES_MIN_BATCH = 16
"""Smallest batch whose forward products are made by register tiles (``tiled_products``): the crossover
measured by ``benchmarks/bench_forward.py`` (JSON in ``benchmarks/results/bench_forward.json``), 784-100-10
float32, 8,000 dense rows, one thread, Intel Xeon, medians of 3 interleaved rounds, ms per epoch, tiles
against gemm: 44.2 vs 38.0 at 10 rows, 38.8 vs 33.8 at 12, 38.1 vs 40.0 at 16, 32.7 vs 34.7 at 32, 27.9 vs
30.0 at 128, 29.2 vs 32.1 at 1,024, 26.1 vs 29.1 for the full batch (167-row blocks). Not measured between
12 and 16 rows."""
GEMM_SYMBOLS = {"float32": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
                "float64": ("scipy_cblas_dgemm64_", "cblas_dgemm64_")}
"""CBLAS gemm with 64-bit integers, as NumPy's OpenBLAS exports it (NumPy >= 2 wheels; older 64-bit builds)."""

ACT_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3, "softmax": 4}
COST_CODES = {"quadratic": 0, "cross_entropy": 1}


GATHER_ROWS = 8192
"""Rows gathered at a time from data on disk (memory stays bounded; results do not depend on it)."""


def aligned_zeros(n: int, dtype, align: int = 64) -> np.ndarray:
    """np.zeros(n, dtype) starting at a multiple of ``align`` bytes (a cache line; n > 0: an empty array's
    address is any). NumPy places a big array 16 bytes past a page boundary, where every other 32-byte load
    of the kernels' passes over the weights straddles two cache lines: ``benchmarks/bench_batch1.py
    --placement``, ms per batch-1 epoch (784-100-10 float32, Intel Xeon), column pass 70.2 against 82.8 on
    dense inputs; the row pass (MNIST digits) 53.2 against 53.7, unchanged."""
    if n < 0:
        raise ValueError(f"negative size {n}")
    size = np.dtype(dtype).itemsize
    buf = np.zeros(n * size + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + n * size].view(dtype)


def skip_fraction(data, batch_size: int, rows: int = 1024) -> float:
    """The expected fraction of the first layer's weight rows whose input is zero in all 2 * batch_size
    rows of a batch and the next one, sum_i z_i^(2m) / n_in with z_i the fraction of zeros in input
    column i over (at most) ``rows`` evenly spaced training rows (rows drawn independently: exact for
    the uniform samplers in expectation over the draws). The ``rows`` kernel's plain-SGD pass skips
    those rows whole at 1-4 rows; at 5-7 it skips their products and gradient terms but still writes
    the row (``batch_row_pass``): there the rule rests on the crossovers measured above."""
    sample, _ = data.batch(np.arange(0, data.n, max(1, -(-data.n // rows))))
    z = np.mean(np.asarray(sample) == 0, axis=0)
    return float(np.mean(z ** (2 * batch_size)))


def expected_skip(ctx) -> float:
    """``skip_fraction`` of this fit's data at its batch size, measured once per fit (``ctx.fact``): selection
    and the stepper read the same number."""
    return ctx.fact("skip_fraction", lambda: skip_fraction(ctx.data, ctx.batch_size))


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def gemm_address(dtype: str) -> int | None:
    """The address of NumPy's own BLAS ``?gemm`` (CBLAS, 64-bit integers) for ``dtype``, or None."""
    from .threads import numpy_blas_path

    path = numpy_blas_path()
    if path is None or dtype not in GEMM_SYMBOLS:
        return None
    lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library and its thread pool
    for name in GEMM_SYMBOLS[dtype]:
        with contextlib.suppress(AttributeError):
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    return None


@functools.cache
def wide_vector_code() -> bool:
    """Whether numba makes code with 512-bit vectors (AVX-512F): it compiles for the host's features unless
    NUMBA_CPU_FEATURES lists others (NUMBA_CPU_NAME alone changes the CPU model LLVM tunes for, not the
    features: numba.core.codegen), so True where that list, or else the host's, enables avx512f."""
    from llvmlite import binding
    from numba.core import config

    features = getattr(config, "CPU_FEATURES", None) or binding.get_host_cpu_features().flatten()  # set at import
    return "+avx512f" in features.split(",")


def tiled_products(ctx) -> bool:
    """Whether the ``blas`` kernel makes its forward products by register tiles
    (``_numba_kernels.forward_product``) instead of gemm: where FORWARD_TILES allows it, in float32, with
    512-bit vectors (``wide_vector_code``), for batches of TILES_MIN_BATCH rows or more (TILES_MIN_BATCH_NARROW_BLAS
    where NumPy's BLAS runs without 512-bit kernels, ``blas_wide_kernels``), where the products
    run on one thread (``threads.products_threads`` for its blocks' rows, ``row_block``)."""
    least = TILES_MIN_BATCH if blas_wide_kernels() else TILES_MIN_BATCH_NARROW_BLAS
    return FORWARD_TILES and _tiles_fit(ctx, least)


def _tiles_fit(ctx, least: int) -> bool:
    """What both kinds of register tiles need: float32, batches of ``least`` rows or more, 512-bit vectors in
    numba's code (``wide_vector_code``), and products on one BLAS thread for the blocks' rows (``row_block``)."""
    return (np.dtype(ctx.net.dtype) == np.float32 and ctx.batch_size >= least and wide_vector_code()
            and products_threads(ctx.net.sizes, row_block(ctx)) == 1)


NARROW_BLAS_CORES = frozenset({"haswell", "zen", "sandybridge", "nehalem", "core2", "prescott"})
"""OpenBLAS's names (threadpoolctl's ``architecture``, lower case) of the cores whose kernels use vectors of at
most 256 bits, among those OpenBLAS may run on a CPU with AVX-512: held to one (OPENBLAS_CORETYPE), or falling
back for a CPU it does not know."""


@functools.cache
def blas_wide_kernels() -> bool:
    """Whether NumPy's BLAS may run kernels with 512-bit vectors: False only for an OpenBLAS on a core of
    NARROW_BLAS_CORES (another BLAS, or a core threadpoolctl does not name, is taken to have them)."""
    from .threads import _numpy_blas

    lc = _numpy_blas()
    if lc is None or lc.internal_api != "openblas":
        return True
    return str(getattr(lc, "architecture", None)).lower() not in NARROW_BLAS_CORES


def gradient_tiles(ctx) -> bool:
    """Whether the ``blas`` kernel makes the weights' gradient sums a^T delta by register tiles
    (``_numba_kernels.gradient_product``) instead of gemm: as ``tiled_products`` (float32, 512-bit vectors in
    numba's code, one BLAS thread), where NumPy's BLAS runs without 512-bit kernels (``blas_wide_kernels``:
    an OpenBLAS held to its Haswell kernels, OPENBLAS_CORETYPE=Haswell, or without kernels for a newer CPU),
    for batches of GRADIENT_TILES_MIN_BATCH rows or more, or where the CPU splits 512-bit vectors in two
    (``split_wide_vectors``), for batches of GRADIENT_TILES_MIN_BATCH_SPLIT or more. Elsewhere gemm is as fast
    or faster (README, "Speed")."""
    if not GRADIENT_TILES:
        return False
    if not blas_wide_kernels():
        return _tiles_fit(ctx, GRADIENT_TILES_MIN_BATCH)
    return split_wide_vectors() and _tiles_fit(ctx, GRADIENT_TILES_MIN_BATCH_SPLIT)


@functools.cache
def split_wide_vectors() -> bool:
    """Whether this CPU runs 512-bit vector operations as two 256-bit halves: its vendor and family (the
    hardware's, whatever NUMBA_CPU_NAME compiles for) among SPLIT_VECTOR_CPUS; False where the OS does not
    say (no /proc/cpuinfo)."""
    from .. import machine

    return machine.cpu_family() in SPLIT_VECTOR_CPUS


@functools.cache
def blas_small_kernels() -> bool:
    """Whether NumPy's BLAS is an OpenBLAS running on a core type with small-matrix kernels (SMALL_KERNEL_CORES)."""
    from .threads import _numpy_blas

    lc = _numpy_blas()
    return lc is not None and lc.internal_api == "openblas" and getattr(lc, "architecture", None) in SMALL_KERNEL_CORES


def rows_kernel_limits() -> tuple[int, int]:
    """(on any inputs, on sparse inputs with plain SGD): the largest batches the ``rows`` kernel takes. The
    crossovers with the ``blas`` kernel depend on how fast NumPy's BLAS makes products of a few rows, so they
    were measured on both kinds of BLAS kernels and are picked by it (fixed per machine, so that a resumed
    run makes the same choice as the run it resumes)."""
    if blas_small_kernels():
        return SMALL_KERNEL_MAX_BATCH_DENSE, SMALL_KERNEL_MAX_BATCH
    return COMPILED_MAX_BATCH_DENSE, COMPILED_MAX_BATCH


def rows_kernel_preferred(ctx) -> bool:
    """Whether the batch is small enough for the ``rows`` kernel (the crossovers above, ``rows_kernel_limits``).
    Above the dense limit only for plain SGD: with momentum or decay the first layer's update touches every
    weight and skips nothing (measured on 8,000 MNIST digits, ms per epoch, rows against blas kernel with
    momentum 0.9: 153 vs 119 at batch 4, 128 vs 108 at 7; AMD EPYC)."""
    dense, sparse = rows_kernel_limits()
    if ctx.batch_size <= dense:
        return True
    h = ctx.hyper
    plain = h is None or (h.momentum == 0 and h.weight_decay == 0)
    return (plain and ctx.batch_size <= sparse
            and expected_skip(ctx) >= SKIP_MIN)


def row_block(ctx) -> int:
    """Rows per block of the ``blas`` kernel: a batch bigger than this is made block by block, its gradient
    summed over the blocks (``_numba_kernels.blas_block``), so that a block's inputs, ROW_BLOCK_BYTES of them,
    are still in the core's cache when the gradient product reads them again after the forward product.
    Only for batches of more than ROW_BLOCKS_MIN blocks, and where the products run on one BLAS thread
    (``threads.products_threads``; on more threads a block's products would be too small to share out);
    otherwise a batch is one block, and the batch size is returned."""
    m = ctx.batch_size
    rows = max(1, ROW_BLOCK_BYTES // (ctx.net.sizes[0] * np.dtype(ctx.net.dtype).itemsize))
    return rows if m > ROW_BLOCKS_MIN * rows and products_threads(ctx.net.sizes, m) == 1 else m


@functools.cache
def _kernel(name: str = "rows"):
    """A compiled kernel (numba imported, and the kernel loaded from its cache, on first use)."""
    from . import _numba_kernels

    return _numba_kernels.block if name == "rows" else _numba_kernels.blas_block


@register
class CompiledStepper(Stepper):
    name = "compiled"
    priority = 40
    reads_batches = False  # rows kernel: it gathers several batches' rows at once, no per-batch prefetch plan

    @classmethod
    def unsupported(cls, ctx):
        if (why := needs_numpy_sgd(ctx)) is not None:
            return why
        if not numba_available():
            return "numba is not installed (pip install numba)"
        return None

    @classmethod
    def preferred(cls, ctx):
        if rows_kernel_preferred(ctx):
            return True
        if gemm_address(np.dtype(ctx.net.dtype).name) is None:
            return False
        # batch GD in memory where its rows are made in blocks (one BLAS thread); on disk the chunked stepper
        return not ctx.full_batch or (not ctx.data.on_disk and row_block(ctx) < ctx.batch_size)

    def __init__(self, ctx):
        super().__init__(ctx)
        net, dtype = self.net, self.net.dtype
        at = gemm_address(np.dtype(dtype).name)  # the rows kernel's upper layers use it too, where it is found
        self.kernel = "rows" if at is None or rows_kernel_preferred(ctx) else "blas"
        h = ctx.hyper
        # plain SGD on one row: the first layer's weights transposed (column passes) unless many rows are skipped
        self.transposed = (self.kernel == "rows" and ctx.batch_size == 1 and h.momentum == 0
                           and h.weight_decay == 0 and expected_skip(ctx) < ROW_COLUMNS_MAX_SKIP)
        self.gemm_at = 0 if at is None else at
        self.reads_batches = self.kernel == "blas"  # data on disk: batch by batch, read ahead by the prefetcher
        sizes = np.asarray(net.sizes, dtype=np.int64)
        shapes = [(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        offs, o = [], 0
        for fi, fo in shapes:
            offs.append((o, o + fi * fo))
            o += fi * fo + fo
        self.sizes, self.shapes = sizes, shapes
        self.offW = np.array([a for a, _ in offs], dtype=np.int64)
        self.offb = np.array([b for _, b in offs], dtype=np.int64)
        self.uoff = np.cumsum([0] + [fo for _, fo in shapes])[:-1].astype(np.int64)
        self.P = aligned_zeros(o, dtype)
        self.V = aligned_zeros(o if ctx.hyper.momentum else 0, dtype)
        self.pviews = self._views(self.P, self.transposed)
        self.vviews = self._views(self.V) if len(self.V) else None
        m = ctx.batch_size if self.kernel == "rows" else row_block(ctx)  # the blas kernel: rows per block
        units = int(sizes[1:].sum())
        self.A, self.D = np.zeros((m, units), dtype), np.zeros((m, units), dtype)
        self.Z, self.acc = np.zeros((m, int(sizes[-1])), dtype), np.zeros(int(sizes[1:].max()), dtype)
        if self.kernel == "blas":  # a block's rows, gathered (batch GD reads them in place: ``run``); the
            # gradient sums, shaped as the parameters
            self.G = np.zeros((0 if ctx.full_batch else m, int(sizes[0])), dtype)
            self.GS = aligned_zeros(o, dtype)
        self.tiles = self.kernel == "blas" and tiled_products(ctx)
        self.gradient_tiles = self.kernel == "blas" and gradient_tiles(ctx)
        self.WP, self.S = np.zeros(0, dtype), np.zeros((0, 0), dtype)  # padded weights, the tiles' scratch rows
        self.tile_fo = 0  # least fan-out of a layer made by the tiles
        self.grad_fo = int(sizes.max()) + 1  # least fan-out of a layer whose gradient the tiles make: none
        if self.tiles or self.gradient_tiles:
            from ._numba_kernels import MR, NV_MAX, VECTOR_BYTES, padded_width

            item = np.dtype(dtype).itemsize
            least = TILES_MIN_VECTORS * VECTOR_BYTES // item
            self.S = np.zeros((MR, NV_MAX * VECTOR_BYTES // item), dtype)
            if self.gradient_tiles:
                self.grad_fo = least
            if self.tiles:
                self.tile_fo = least
                self.WP = aligned_zeros(sum(fi * padded_width(fo, item) for fi, fo in shapes), dtype)
        self.H = np.array([h.momentum, h.weight_decay], dtype=dtype)
        arch = net.arch
        self._no_costs = np.zeros(0)
        self.codes = (ACT_CODES[arch.activation.name], ACT_CODES[arch.output_activation.name],
                      COST_CODES[arch.cost.name],
                      bool(h.nesterov))

    def _views(self, flat, transposed=False):
        """(W, b) views of each layer in ``flat``; ``transposed``: the first layer's W^T lies there (W is then a
        column-major view)."""
        views = [(flat[a:a + fi * fo].reshape(fi, fo), flat[a + fi * fo:a + fi * fo + fo])
                 for (fi, fo), a in zip(self.shapes, self.offW, strict=True)]
        if transposed:
            (fi, fo), a = self.shapes[0], self.offW[0]
            views[0] = (flat[a:a + fi * fo].reshape(fo, fi).T, views[0][1])
        return views

    def _bind(self, state) -> None:
        """Make net.params (and the momentum buffers) views of the flat arrays, copying in if replaced."""
        net = self.net
        if not all(W is pW and b is pb for (W, b), (pW, pb) in zip(net.params, self.pviews, strict=True)):
            for (W, b), (pW, pb) in zip(net.params, self.pviews, strict=True):
                pW[...], pb[...] = W, b
            net.params = list(self.pviews)
        if self.vviews is not None:
            vel = sgd_velocity(state.opt_state)
            assert vel is not None  # views of momentum buffers exist only with momentum
            if not all(W is vW and b is vb for (W, b), (vW, vb) in zip(vel, self.vviews, strict=True)):
                for (W, b), (vW, vb) in zip(vel, self.vviews, strict=True):
                    vW[...], vb[...] = W, b
                state.opt_state = sgd_state(state.opt_state, state.step, velocity=list(self.vviews))

    def _call(self, X, T, idx, starts, etas, costs, want, in_order=False):
        if self.kernel == "blas":
            _kernel("blas")(self.gemm_at, self.P, self.V, self.H, self.offW, self.offb, self.sizes, self.uoff, X, T,
                            idx, starts, etas, *self.codes, self.A, self.Z, self.D, self.G, self.GS, self.WP, self.S,
                            self.tile_fo, self.grad_fo, costs, want, in_order)
        else:
            _kernel()(self.gemm_at, self.P, self.V, self.H, self.offW, self.offb, self.sizes, self.uoff, X, T, idx,
                      starts, etas, *self.codes, self.A, self.Z, self.D, self.acc, costs, want, self.transposed)

    @contextlib.contextmanager
    def session(self):
        """BLAS threads by product size (``steppers.threads``), for the kernels' gemm calls. With the first
        layer transposed, its weights are given back to the network in row-major order at the end (during
        the run ``net.params[0][0]`` is a column-major view of the stepper's W^T): every layer copied out,
        so that the network keeps no view of the stepper's arrays, whose W^T is stale once they are copied."""
        try:
            with blas_threads(self.net.sizes, self.ctx.batch_size) if self.gemm_at else contextlib.nullcontext():
                yield
        finally:
            if self.transposed:
                self.net.params = self.net.copy_params()

    def prepare(self) -> dict:
        """Compile (or load from numba's cache) with this run's dtypes, on an empty block."""
        t0 = time.perf_counter()
        dtype, sizes = self.net.dtype, self.net.sizes
        X, T = np.zeros((0, sizes[0]), dtype), np.zeros((0, sizes[-1]), dtype)
        self._call(X, T, np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, dtype), np.zeros(0), False)
        import numba

        info = {"compile_seconds": time.perf_counter() - t0, "numba": numba.__version__, "kernel": self.kernel,
                "upper_layers": "gemm" if self.gemm_at else "loops"}
        if self.kernel == "blas":
            tiled = sum(fo >= self.tile_fo for _, fo in self.shapes) if self.tiles else 0
            grads = sum(fo >= self.grad_fo for _, fo in self.shapes)
            return info | {"row_block": self.A.shape[0], "forward_products": "tiles" if self.tiles else "gemm",
                           "tiled_layers": tiled, "gradient_products": "tiles" if grads else "gemm",
                           "gradient_tiled_layers": grads}
        return info | {"transposed": self.transposed}

    def run(self, state, batches, etas, want_costs):
        self._bind(state)
        k, n, data = len(batches), self.data.n, self.data
        lengths = [n if b is FULL_BATCH else len(b) for b in batches]
        if k and self.kernel == "rows" and max(lengths) > self.A.shape[0]:  # the blas kernel makes any batch in blocks
            raise ValueError(f"a batch of {max(lengths)} rows exceeds this stepper's {self.A.shape[0]}")
        etas = np.asarray(etas, dtype=self.net.dtype)
        costs = np.zeros(k) if want_costs else self._no_costs
        if data.on_disk or not isinstance(data.X, np.ndarray):
            # the rows kernel reads several batches' rows at once (GATHER_ROWS at most); the BLAS kernel one
            # batch per call, as planned for the background reader (``reads_batches``)
            u = 0
            while u < k:
                v, rows = u + 1, lengths[u]
                while v < k and not self.reads_batches and rows + lengths[v] <= GATHER_ROWS:
                    rows, v = rows + lengths[v], v + 1
                X, T = data.batch(self._indices(batches[u:v]))
                self._call(np.ascontiguousarray(X, dtype=self.net.dtype), np.asarray(T, dtype=self.net.dtype),
                           np.arange(rows, dtype=np.int64), self._starts(lengths[u:v]), etas[u:v],
                           costs[u:v] if want_costs else costs, bool(want_costs), True)
                u = v
        else:  # in memory: batch GD reads the rows in place, index batches are gathered by the kernel
            in_order = all(b is FULL_BATCH for b in batches) and data.X.flags.c_contiguous
            if self.kernel == "blas" and not in_order and k and self.G.shape[0] < min(max(lengths), self.A.shape[0]):
                self.G = np.zeros((self.A.shape[0], self.G.shape[1]), self.G.dtype)
            self._call(data.X, data.T, self._indices(batches), self._starts(lengths), etas, costs, bool(want_costs),
                       in_order)
        advance(state, self.opt, k)
        return costs.tolist() if want_costs else None

    def _indices(self, batches):
        n = self.data.n
        if len(batches) == 1:
            idx = np.arange(n) if batches[0] is FULL_BATCH else batches[0]
        else:
            idx = np.concatenate([np.arange(n) if b is FULL_BATCH else b for b in batches]) if batches else np.zeros(0)
        return np.asarray(idx).astype(np.int64, copy=False)

    @staticmethod
    def _starts(lengths):
        if len(lengths) == 1:
            return np.array([0, lengths[0]], dtype=np.int64)
        starts = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        return starts
