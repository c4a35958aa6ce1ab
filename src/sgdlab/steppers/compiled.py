"""The compiled stepper: a block of small-batch SGD updates in one numba-compiled call.

At batch 1 most of a NumPy update is overhead (dispatch, allocation, Python bytecode), not
arithmetic. Here a whole block of updates (an epoch, without per-update callbacks) runs in one
compiled loop over plain arrays: for each batch, the forward pass row by row, the output error,
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

numba is imported only when this stepper runs; compilation is cached on disk (``cache=True``)
and happens in ``prepare``, before ``fit`` starts its clock; its time is reported once in
``history.config["stepper_info"]["compile_seconds"]``. Automatic selection takes this stepper for
batches of at most COMPILED_MAX_BATCH_DENSE rows, or COMPILED_MAX_BATCH rows where at least half
the inputs are zero (a zero input is skipped, exactly: it adds nothing to z or to the weights'
gradient); above that the BLAS-fused path is faster (measured; README).
"""

from __future__ import annotations

import functools
import importlib.util
import time

import numpy as np

from ..optim import sgd_state, sgd_velocity
from .base import FULL_BATCH, Stepper, advance, register

COMPILED_MAX_BATCH = 8
"""Largest batch automatic selection runs compiled on sparse inputs (at least half zeros, e.g. MNIST)."""
COMPILED_MAX_BATCH_DENSE = 2
"""... and on dense inputs. Measured crossovers with the fused path, 784-100-10, one thread (README):
the compiled kernel skips zero inputs exactly, BLAS does not, so the crossover depends on sparsity."""

ACT_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3, "softmax": 4}
COST_CODES = {"quadratic": 0, "cross_entropy": 1}


def zero_fraction(X, rows: int = 1024) -> float:
    """The fraction of zeros among the inputs of (at most) ``rows`` evenly spaced rows of X."""
    sample = X[:: max(1, X.shape[0] // rows)]
    return float(np.mean(sample == 0))


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _kernel():
    """The compiled block kernel (numba imported and the function built on first use)."""
    import numba

    njit = functools.partial(numba.njit, cache=True, nogil=True)

    @njit
    def activate(z, lo, hi, code):
        if code == 0:  # sigmoid, without overflow: e^{-|z|} <= 1
            for j in range(lo, hi):
                v = z[j]
                if v >= 0:
                    z[j] = 1.0 / (1.0 + np.exp(-v))
                else:
                    e = np.exp(v)
                    z[j] = e / (1.0 + e)
        elif code == 1:
            for j in range(lo, hi):
                z[j] = np.tanh(z[j])
        elif code == 2:
            for j in range(lo, hi):
                if z[j] < 0:
                    z[j] = 0.0
        elif code == 4:  # softmax over the row's slice
            mx = z[lo]
            for j in range(lo + 1, hi):
                mx = max(mx, z[j])
            s = 0.0
            for j in range(lo, hi):
                z[j] = np.exp(z[j] - mx)
                s += z[j]
            for j in range(lo, hi):
                z[j] = z[j] / s

    @njit
    def slope(a, code):
        """f'(z) from the activation's output a."""
        if code == 0:
            return a * (1.0 - a)
        if code == 1:
            return 1.0 - a * a
        if code == 2:
            return 1.0 if a > 0 else 0.0
        return 1.0

    @njit
    def block(P, V, H, offW, offb, sizes, uoff, X, T, idx, starts, etas, hidden, out, cost, nesterov,
              A, Z, D, acc, costs, want_costs):
        """Make len(etas) updates. P/V: flat params/velocity; H = [mu, lam] in the params' dtype;
        A, Z, D: (max batch, units) workspaces for activations, output logits and deltas."""
        L = sizes.shape[0] - 1
        mu, lam = H[0], H[1]
        k_out = sizes[L]
        oo = uoff[L - 1]  # column offset of the output layer in A and D
        for u in range(etas.shape[0]):
            r0, r1 = starts[u], starts[u + 1]
            m = r1 - r0
            eta = etas[u]
            total = 0.0
            # forward: z_l = a_{l-1} W_l + b_l, a_l = f(z_l); A[r] holds row r's layers side by side.
            # One row: z += a_i W_i over the inputs. Several: the same, each row W_i read once for all rows.
            for l in range(L):
                fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
                W, b = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo)), P[offb[l]:offb[l] + fo]
                A[:m, o:o + fo] = 0.0
                if m == 1:
                    a_in = X[idx[r0]] if l == 0 else A[0, uoff[l - 1]:uoff[l - 1] + fi]
                    z = A[0, o:o + fo]
                    for i in range(fi):
                        ai = a_in[i]
                        if ai != 0:  # exact: a zero input adds nothing (sparse inputs such as MNIST pixels)
                            for j in range(fo):
                                z[j] += ai * W[i, j]
                else:
                    for i in range(fi):
                        w = W[i]
                        for r in range(m):
                            ai = X[idx[r0 + r], i] if l == 0 else A[r, uoff[l - 1] + i]
                            if ai != 0:
                                z = A[r, o:o + fo]
                                for j in range(fo):
                                    z[j] += ai * w[j]
                for r in range(m):
                    z = A[r, o:o + fo]
                    for j in range(fo):
                        z[j] += b[j]
                    if l == L - 1:
                        Z[r, :] = z
                    activate(A[r], o, o + fo, out if l == L - 1 else hidden)
            for r in range(m):
                # the output error delta_L and the cost of this row
                y = T[idx[r0 + r]]
                if cost == 1:  # cross-entropy with its natural output: delta = a - y
                    for j in range(k_out):
                        D[r, oo + j] = A[r, oo + j] - y[j]
                elif out == 4:  # quadratic cost through the softmax Jacobian
                    s = 0.0
                    for j in range(k_out):
                        s += (A[r, oo + j] - y[j]) * A[r, oo + j]
                    for j in range(k_out):
                        a = A[r, oo + j]
                        D[r, oo + j] = a * ((a - y[j]) - s)
                else:
                    for j in range(k_out):
                        a = A[r, oo + j]
                        D[r, oo + j] = (a - y[j]) * slope(a, out)
                if want_costs:
                    if cost == 0:
                        for j in range(k_out):
                            d = A[r, oo + j] - y[j]
                            total += 0.5 * d * d
                    elif out == 4:  # logsumexp(z) sum_k y_k - sum_k y_k z_k
                        mx = Z[r, 0]
                        for j in range(1, k_out):
                            mx = max(mx, Z[r, j])
                        se, sy, syz = 0.0, 0.0, 0.0
                        for j in range(k_out):
                            se += np.exp(Z[r, j] - mx)
                            sy += y[j]
                            syz += y[j] * Z[r, j]
                        total += (mx + np.log(se)) * sy - syz
                    else:  # sum_j softplus(z_j) - y_j z_j
                        for j in range(k_out):
                            z = Z[r, j]
                            total += max(z, 0.0) + np.log1p(np.exp(-abs(z))) - y[j] * z
                # backward: delta_{l-1} = (W_l delta_l) * f'(a_{l-1})
                for l in range(L - 1, 0, -1):
                    fi, fo, o, oi = sizes[l], sizes[l + 1], uoff[l], uoff[l - 1]
                    W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
                    d, d_in, a_in = D[r, o:o + fo], D[r, oi:oi + fi], A[r, oi:oi + fi]
                    for i in range(fi):
                        s = 0.0
                        for j in range(fo):
                            s += W[i, j] * d[j]
                        d_in[i] = s * slope(a_in[i], hidden)
            if want_costs:
                costs[u] = total / m
            # the update of every layer, from the deltas of all m rows
            fm = P.dtype.type(m)
            plain = mu == 0 and lam == 0
            for l in range(L):
                fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
                W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
                acc_l = acc[:fo]
                for i in range(fi):
                    if m == 1 and plain:  # W_i <- W_i - (eta a_i / 1) delta: one pass, nothing to add for a_i = 0
                        ai = X[idx[r0], i] if l == 0 else A[0, uoff[l - 1] + i]
                        if ai != 0:
                            c = eta * ai
                            d = D[0, o:o + fo]
                            for j in range(fo):
                                W[i, j] -= c * d[j]
                        continue
                    acc_l[:] = 0.0
                    for r in range(m):
                        ai = X[idx[r0 + r], i] if l == 0 else A[r, uoff[l - 1] + i]
                        if ai != 0:
                            d = D[r, o:o + fo]
                            for j in range(fo):
                                acc_l[j] += ai * d[j]
                    if mu != 0:
                        vW = V[offW[l] + i * fo:offW[l] + (i + 1) * fo]
                        for j in range(fo):
                            g = acc_l[j] / fm + lam * W[i, j]
                            v = mu * vW[j] + g
                            vW[j] = v
                            W[i, j] -= eta * (g + mu * v if nesterov else v)
                    elif lam != 0:
                        for j in range(fo):
                            W[i, j] -= eta * (acc_l[j] / fm + lam * W[i, j])
                    else:
                        c = eta / fm
                        for j in range(fo):
                            W[i, j] -= c * acc_l[j]
                b = P[offb[l]:offb[l] + fo]
                for j in range(fo):
                    s = D[0, o + j]
                    for r in range(1, m):
                        s += D[r, o + j]
                    g = s / fm
                    if mu != 0:
                        v = mu * V[offb[l] + j] + g
                        V[offb[l] + j] = v
                        g = g + mu * v if nesterov else v
                    b[j] -= eta * g

    return block


@register
class CompiledStepper(Stepper):
    name = "compiled"
    priority = 40

    @classmethod
    def unsupported(cls, ctx):
        if not ctx.numpy:
            return "it needs the NumPy backend"
        if ctx.hyper is None:
            return "it needs an optimizer made by sgdlab.optim.sgd (it applies the SGD update itself)"
        if ctx.data.on_disk or not isinstance(ctx.data.X, np.ndarray):
            return "it needs the training data in memory"
        if not numba_available():
            return "numba is not installed (pip install numba)"
        return None

    @classmethod
    def preferred(cls, ctx):
        if ctx.batch_size <= COMPILED_MAX_BATCH_DENSE:
            return True
        return ctx.batch_size <= COMPILED_MAX_BATCH and zero_fraction(ctx.data.X) >= 0.5

    def __init__(self, ctx):
        super().__init__(ctx)
        net, dtype = self.net, self.net.dtype
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
        self.P = np.zeros(o, dtype=dtype)
        self.V = np.zeros(o if ctx.hyper.momentum else 0, dtype=dtype)
        self.pviews, self.vviews = self._views(self.P), (self._views(self.V) if len(self.V) else None)
        m = ctx.batch_size
        units = int(sizes[1:].sum())
        self.A, self.D = np.zeros((m, units), dtype), np.zeros((m, units), dtype)
        self.Z, self.acc = np.zeros((m, int(sizes[-1])), dtype), np.zeros(int(sizes[1:].max()), dtype)
        h = ctx.hyper
        self.H = np.array([h.momentum, h.weight_decay], dtype=dtype)
        arch = net.arch
        self._no_costs = np.zeros(0)
        self.codes = (ACT_CODES[arch.activation.name], ACT_CODES[arch.output_activation.name], COST_CODES[arch.cost.name],
                      bool(h.nesterov))

    def _views(self, flat):
        return [(flat[a:a + fi * fo].reshape(fi, fo), flat[a + fi * fo:a + fi * fo + fo])
                for (fi, fo), a in zip(self.shapes, self.offW, strict=True)]

    def _bind(self, state) -> None:
        """Make net.params (and the momentum buffers) views of the flat arrays, copying in if replaced."""
        net = self.net
        if not all(W is pW and b is pb for (W, b), (pW, pb) in zip(net.params, self.pviews, strict=True)):
            for (W, b), (pW, pb) in zip(net.params, self.pviews, strict=True):
                pW[...], pb[...] = W, b
            net.params = list(self.pviews)
        if self.vviews is not None:
            vel = sgd_velocity(state.opt_state)
            if not all(W is vW and b is vb for (W, b), (vW, vb) in zip(vel, self.vviews, strict=True)):
                for (W, b), (vW, vb) in zip(vel, self.vviews, strict=True):
                    vW[...], vb[...] = W, b
                state.opt_state = sgd_state(state.opt_state, state.step, velocity=list(self.vviews))

    def _call(self, idx, starts, etas, costs, want):
        data = self.data
        _kernel()(self.P, self.V, self.H, self.offW, self.offb, self.sizes, self.uoff, data.X, data.T, idx, starts,
                  etas, *self.codes[:3], self.codes[3], self.A, self.Z, self.D, self.acc, costs, want)

    def prepare(self) -> dict:
        """Compile (or load from numba's cache) with this run's dtypes, on an empty block."""
        t0 = time.perf_counter()
        e = np.zeros(0, self.net.dtype)
        self._call(np.zeros(0, np.int64), np.zeros(1, np.int64), e, np.zeros(0), False)
        import numba

        return {"compile_seconds": time.perf_counter() - t0, "numba": numba.__version__}

    def run(self, state, batches, etas, want_costs):
        self._bind(state)
        k, n = len(batches), self.data.n
        lengths = [n if b is FULL_BATCH else len(b) for b in batches]
        if k and max(lengths) > self.A.shape[0]:
            raise ValueError(f"a batch of {max(lengths)} rows exceeds this stepper's {self.A.shape[0]}")
        if k == 1:
            idx = np.arange(n) if batches[0] is FULL_BATCH else batches[0]
            starts = np.array([0, lengths[0]], dtype=np.int64)
        else:
            idx = np.concatenate([np.arange(n) if b is FULL_BATCH else b for b in batches]) if k else np.zeros(0, np.int64)
            starts = np.zeros(k + 1, np.int64)
            np.cumsum(lengths, out=starts[1:])
        costs = np.zeros(k) if want_costs else self._no_costs
        self._call(idx.astype(np.int64, copy=False), starts, np.asarray(etas, dtype=self.net.dtype), costs,
                   bool(want_costs))
        advance(state, self.opt, k)
        return costs.tolist() if want_costs else None
