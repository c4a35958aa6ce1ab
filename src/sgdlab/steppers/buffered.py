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
the elementwise arithmetic (README, "Speed"). In float32, with numba, the sigmoid's elementwise
passes are compiled loops (``compiled_sigmoid``): NumPy's vectorised exp alone takes 1.05 ms of a
batch-GD step at 8,000 x 100. Automatic selection takes this stepper for batch GD
(unless the fused one's small products pay, or the compiled stepper makes the batch in row blocks:
one BLAS thread, ``compiled.row_block``), and, where the compiled stepper's BLAS kernel cannot
run (no numba, or no CBLAS in NumPy's BLAS), for batches where the fused one stops paying (above
``fused.FUSED_MAX_BATCH`` rows, or with momentum: measured 1.5-8% faster than the reference chain
from 2 to 1,024 rows).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .. import kernels
from ..optim import sgd_state, sgd_velocity
from .base import advance, needs_numpy_sgd, register, rows_into
from .compiled import numba_available
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
        self.arch = self.net.arch  # with compiled sigmoid passes where ``prepare`` finds them (float32)

    @classmethod
    def preferred(cls, ctx):
        return ctx.hyper.momentum != 0 or not FusedStepper.preferred(ctx)

    def prepare(self):
        """The sigmoid's elementwise passes compiled (``compiled_sigmoid``), and batch GD's rows laid out
        column-major (``layout``), each where it applies; their seconds reported."""
        self.arch, info = compiled_sigmoid(self.arch, self.net.dtype)
        return info | self.layout()

    def layout(self):
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
        net, arch, work, hyper = self.net, self.arch, self.work, self.ctx.hyper
        costs = [] if want_costs else None
        for idx, eta in zip(batches, etas, strict=True):
            X, T = rows_into(self.data, idx, work)
            acts, deltas, z = kernels.backprop(arch, net.params, X, T, np, work)
            m = X.shape[0]
            if want_costs:  # before the update, from this forward pass
                costs.append(float(kernels.cost_sum(arch, acts, z, T, np)) / m)
            params = []
            for layer, ((W, b), a, d) in enumerate(zip(net.params, acts[:-1], deltas, strict=True)):
                # column-major rows: the first layer's G column-major too, BLAS then makes G^T = d^T X (83
                # against 79 GFLOP/s at 784 x 100); above it row-major, as W: at 100 x 10, 0.32 against
                # 0.43 ms (8,000 rows; 0.99-1.0 at 100 x 100 and 300 x 100), measured
                order = kernels.layout(d) if layer == 0 else "C"
                G = kernels.buffer(work, ("G", layer), W.shape[0], W.shape[1], W.dtype, order)
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


def compiled_sigmoid(arch: kernels.Arch, dtype) -> tuple[kernels.Arch, dict]:
    """``arch`` with its sigmoid layers' passes compiled, in float32 where numba is installed: the hidden
    layers' sigma in place and d * sigma', the output layer's sigma (``_numba_kernels.sigmoid32``, one
    vectorised loop: 0.39 against 1.45 ms at 8000 x 100, measured; within 2 eps of the exact sigmoid, relative,
    as NumPy's passes are, which a test measures; d * sigma' bit for bit). Compiled, or loaded from numba's
    cache, here, before the clock; arrays that are not contiguous take NumPy's passes. Otherwise ``arch`` as
    it is and no info."""
    hidden, out = arch.activation.name == "sigmoid", arch.output_activation.name == "sigmoid"
    if np.dtype(dtype) != np.float32 or not (hidden or out) or not numba_available():
        return arch, {}
    t0 = time.perf_counter()
    from . import _numba_kernels as nk

    nk.sigmoid32(np.zeros(1, np.float32))
    nk.sigmoid_times_grad32(np.zeros(1, np.float32), np.zeros(1, np.float32))
    info = {"elementwise": "compiled", "elementwise_compile_seconds": time.perf_counter() - t0}
    sigmoid = arch.activation if hidden else arch.output_activation
    fn_inplace, times_grad, fn = sigmoid.fn_inplace, sigmoid.times_grad, sigmoid.fn

    def sigmoid_inplace(z):
        w = _flat(z)
        if w is None:
            fn_inplace(z)
        else:
            nk.sigmoid32(w)

    def sigmoid_times_grad(d, a, tmp):
        w, v = _flat(d), _flat(a)
        if w is None or v is None or d.flags.c_contiguous != a.flags.c_contiguous or d.shape != a.shape:
            times_grad(d, a, tmp)
        else:
            nk.sigmoid_times_grad32(w, v)

    def sigmoid_fresh(z, xp):  # the output layer: z_L is kept for the cost
        a = np.array(z, order="K") if isinstance(z, np.ndarray) and z.dtype == np.float32 else None
        w = None if a is None else _flat(a)
        if w is None:
            return fn(z, xp)
        nk.sigmoid32(w)
        return a

    compiled = dataclasses.replace(sigmoid, fn_inplace=sigmoid_inplace, times_grad=sigmoid_times_grad, fn=sigmoid_fresh)
    return dataclasses.replace(arch, activation=compiled if hidden else arch.activation,
                               output_activation=compiled if out else arch.output_activation), info


def _flat(a):
    """The flat view of a contiguous float32 array (row or column order, as it lies), or None."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        return None
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if a.flags.f_contiguous:
        return a.T.reshape(-1)
    return None


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
