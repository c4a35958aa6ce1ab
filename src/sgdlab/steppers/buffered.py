"""The buffered stepper: SGD on NumPy for big batches, with no array allocated per update.

    W <- (1 - eta lam) W - (eta/m) a_{l-1}^T delta_l,    b <- b - (eta/m) sum_rows delta_l

the update of the reference chain (``optim.sgd``) up to rounding, as the fused stepper makes it
(a test proves they agree); with momentum, the chain's own steps and roundings, the velocity kept
in the optimizer state. Every intermediate is in a buffer
kept from one update to the next: the batch's rows are gathered into one (``np.take(out=)``), the
backward pass writes into others (``kernels.backprop(..., work)``), the gradient products go into
gradient buffers (``np.matmul(out=)``, NumPy's BLAS and its threads) and the update is made in
place. On a big batch a fresh array is new memory for the kernel to fault in, page by page, and
the reference path makes a dozen per update: at 8,000 x 784-100-10 rows they cost more than all
the elementwise arithmetic (README, "Speed"). Automatic selection takes this stepper for batch GD
(unless the fused one's small products pay), and, where the compiled stepper's BLAS kernel cannot
run (no numba, or no CBLAS in NumPy's BLAS), for batches where the fused one stops paying (above
``fused.FUSED_MAX_BATCH`` rows, or with momentum: measured 1.5-8% faster than the reference chain
from 2 to 1,024 rows).
"""

from __future__ import annotations

import time

import numpy as np

from .. import kernels
from ..optim import sgd_state, sgd_velocity
from .base import advance, needs_numpy_sgd, register, rows_into
from .fused import FusedStepper
from .threads import products_threads


@register
class BufferedStepper(FusedStepper):
    """The fused stepper's threads and guard; its own buffers and update (see above), momentum included."""

    name = "buffered"
    priority = 60

    @classmethod
    def unsupported(cls, ctx):
        return needs_numpy_sgd(ctx)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.work: dict = {}  # buffers reused by every update

    @classmethod
    def preferred(cls, ctx):
        return ctx.hyper.momentum != 0 or not FusedStepper.preferred(ctx)

    def prepare(self):
        """Batch GD on data in memory, its products on one BLAS thread: the training set laid out
        column-major, once, before the clock.

        Every pass of batch GD then runs in that layout (``kernels.layout``): the layer's products go to
        OpenBLAS as Z^T = W^T X^T and G^T = delta^T X, the shapes it runs fastest on one thread here.
        Measured, 784-100-10, 8,000 rows: X W 78 against 85 GFLOP/s, X^T delta 79 against 83; a step
        37.0 against 33.4 ms (73% against 81% of the float32 GEMM rate). On two threads the layout
        gains nothing (147-152 against 147-151 GFLOP/s forward, 139-141 against 144-146 for the
        gradient), so the rows stay row-major there. The copy replaces the row-major one (no second
        copy is kept; the values are the same) and costs 5 ms at 8,000 x 784 float32, about 1.3 epochs
        of what it saves; its seconds are reported here. Rows mapped from a file (``np.memmap``) are
        read where they are, as before: the copy would bring the whole file into memory."""
        data = self.data
        if not (self.ctx.full_batch and not data.on_disk and isinstance(data.X, np.ndarray)  # 2-D: check_X
                and data.n > 1 and not memory_mapped(data.X)
                and products_threads(self.net.sizes, data.n) == 1):
            return {}
        t0 = time.perf_counter()
        data.X, data.T = column_major(data.X), column_major(data.T)
        return {"layout": "column-major", "layout_seconds": time.perf_counter() - t0}

    def run(self, state, batches, etas, want_costs):
        net, arch, work, hyper = self.net, self.net.arch, self.work, self.ctx.hyper
        costs = [] if want_costs else None
        for idx, eta in zip(batches, etas, strict=True):
            X, T = rows_into(self.data, idx, work)
            acts, deltas, z = kernels.backprop(arch, net.params, X, T, np, work)
            m = X.shape[0]
            if want_costs:  # before the update, from this forward pass
                costs.append(float(kernels.cost_sum(arch, acts, z, T, np)) / m)
            params = []
            for layer, ((W, b), a, d) in enumerate(zip(net.params, acts[:-1], deltas, strict=True)):
                # column-major rows: G column-major too, BLAS then makes G^T = d^T a (83 against 79 GFLOP/s)
                G = kernels.buffer(work, ("G", layer), W.shape[0], W.shape[1], W.dtype, kernels.layout(d))
                if not (W.flags.writeable and b.flags.writeable):  # handed in read-only: copies, updated
                    W, b = W.copy(), b.copy()
                if hyper.momentum:
                    self._momentum_step(state, layer, W, b, a, d, G, eta, m)
                else:
                    self._plain_step(W, b, a, d, G, eta, m)
                params.append((W, b))
            net.params = params
            advance(state, self.opt)
        return costs

    def _plain_step(self, W, b, a, d, G, eta, m):
        """W <- (1 - eta lam) W - (eta/m) a^T d,  b <- b - (eta/m) sum_rows d."""
        gb = d.sum(axis=0)
        gb *= eta / m
        if m < W.shape[0]:  # scale the smaller of the (m, fan_out) factor and the (fan_in, fan_out) product
            d *= eta / m
            np.matmul(a.T, d, out=G)  # (eta/m) sum over the rows of a_{l-1}^T delta_l
        else:
            np.matmul(a.T, d, out=G)
            G *= eta / m
        if self.ctx.hyper.weight_decay:
            W *= 1.0 - eta * self.ctx.hyper.weight_decay
        W -= G
        b -= gb

    def _momentum_step(self, state, layer, W, b, a, d, G, eta, m):
        """The reference chain's steps and roundings, in place: g = a^T d / m + lam W; v <- mu v + g;
        u = v, or g + mu v (Nesterov); w <- w - eta u. The velocity lives in the optimizer state."""
        mu, lam = self.ctx.hyper.momentum, self.ctx.hyper.weight_decay
        velocity = sgd_velocity(state.opt_state)
        assert velocity is not None  # sgd keeps momentum buffers whenever momentum > 0
        vW, vb = velocity[layer]
        if not (isinstance(vW, np.ndarray) and vW.flags.writeable and vb.flags.writeable):
            vW, vb = np.array(vW, dtype=W.dtype), np.array(vb, dtype=b.dtype)
            velocity = list(velocity)
            velocity[layer] = (vW, vb)
            state.opt_state = sgd_state(state.opt_state, state.step, velocity=velocity)
        gb = d.sum(axis=0)
        gb /= m
        np.matmul(a.T, d, out=G)
        G /= m
        if lam:
            G += lam * W
        for g, v, p in ((G, vW, W), (gb, vb, b)):
            v *= mu
            v += g
            if self.ctx.hyper.nesterov:
                g += mu * v
                u = g
            else:
                u = v
            p -= eta * u


def memory_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` or an array it views is mapped from a file (``np.memmap``, ``mmap``)."""
    import mmap

    base: object = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def column_major(X: np.ndarray, rows: int = 64) -> np.ndarray:
    """X copied into column-major (Fortran) order, 64 rows at a time (one pass of np.asfortranarray
    walks the output across its strides: 20 against 5 ms at 8,000 x 784 float32, measured)."""
    if X.flags.f_contiguous:
        return X
    out = np.empty(X.shape, X.dtype, order="F")
    for i in range(0, X.shape[0], rows):
        out[i:i + rows] = X[i:i + rows]
    return out
