"""The fused stepper: plain SGD (no momentum) on NumPy, the gradient and the update in one BLAS gemm.

    W <- (1 - eta lam) W - (eta/m) a^T delta,    b <- b - (eta/m) sum_rows delta

with no gradient buffer at all: gemm writes into W in place. All deltas are computed before any
parameter changes, so this is the reference update up to rounding (a test proves it). It pays for
batches of up to FUSED_MAX_BATCH rows; above that the buffered stepper (no fresh array per update,
NumPy's BLAS on its own threads) is faster. The compiled stepper's ``blas`` kernel makes this same
update without Python in between and takes its batches wherever it can run (numba, and CBLAS in
NumPy's BLAS); this stepper is the NumPy path without them.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import kernels
from .base import Stepper, advance, needs_numpy_sgd, register
from .threads import MULTI_THREAD_MIN_MACS, blas_threads, largest_product

FUSED_MAX_BATCH = 64
"""Largest batch automatic selection gives this stepper (and only while its products stay on one BLAS
thread, ``threads.MULTI_THREAD_MIN_MACS``: its gemm is SciPy's BLAS, kept on one thread). Measured,
784-100-10, one thread, ms per 8,000 examples, against the buffered stepper: 46.5 vs 50.0 at 64
rows, 42.2 vs 43.0 at 128, 40.0 vs 39.7 at 256 (64-30-10 still wins at 256). At 128 rows the two
are within 2%, and there the buffered stepper's NumPy BLAS, which releases the GIL, lets the
background reader of data on disk work during the products (0.87-0.89 of in-RAM throughput on
the 4.3 GB benchmark instead of 0.72), while data in memory and on disk take the same stepper, so
their results stay identical bit for bit."""


def _gemm(dtype):
    from scipy.linalg import blas

    return blas.sgemm if dtype == np.float32 else blas.dgemm


@register
class FusedStepper(Stepper):
    name = "fused"
    priority = 50

    @classmethod
    def unsupported(cls, ctx):
        if (why := needs_numpy_sgd(ctx)) is not None:
            return why
        if ctx.hyper.momentum != 0:
            return "it makes plain SGD updates only (momentum=0)"
        return None

    @classmethod
    def preferred(cls, ctx):
        return (ctx.batch_size <= FUSED_MAX_BATCH
                and largest_product(ctx.net.sizes, ctx.batch_size) < MULTI_THREAD_MIN_MACS)

    def session(self):
        return blas_threads(self.net.sizes, self.ctx.batch_size) if self.ctx.numpy else contextlib.nullcontext()

    def guard(self):
        return np.errstate(all="ignore") if self.ctx.numpy else contextlib.nullcontext()  # overflow: NaN cost

    def run(self, state, batches, etas, want_costs):
        net, arch, lam = self.net, self.net.arch, self.ctx.hyper.weight_decay
        gemm = _gemm(net.dtype)
        if not all(p.flags.c_contiguous and p.flags.writeable for Wb in net.params for p in Wb):
            # gemm writes in place: it needs writeable, C-ordered weights
            net.params = [(np.array(W, order="C"), np.array(b, order="C")) for W, b in net.params]
        costs = [] if want_costs else None
        for idx, eta in zip(batches, etas, strict=True):
            X, T = self.rows(idx)  # small batches: fresh arrays cost less than buffers' bookkeeping (measured)
            acts, deltas, z = kernels.backprop(arch, net.params, X, T, np)
            m = X.shape[0]
            scale = eta / m
            for (W, b), a, d in zip(net.params, acts[:-1], deltas, strict=True):
                # W^T is Fortran-ordered, so gemm updates the C-ordered W in place: W^T <- beta W^T + alpha d^T a
                gemm(-scale, d.T, a.T, beta=1.0 - eta * lam, c=W.T, trans_b=True, overwrite_c=True)
                b -= scale * (d[0] if m == 1 else d.sum(axis=0))
            advance(state, self.opt)
            if want_costs:
                costs.append(float(kernels.cost_sum(arch, acts, z, T, np)) / m)
        return costs
