"""The buffered stepper: plain SGD (no momentum) on NumPy for big batches, with no array allocated per update.

    W <- (1 - eta lam) W - (eta/m) a_{l-1}^T delta_l,    b <- b - (eta/m) sum_rows delta_l

the update of the reference chain (``optim.sgd``) up to rounding, as the fused stepper makes it
(a test proves they agree), with every intermediate in a buffer
kept from one update to the next: the batch's rows are gathered into one (``np.take(out=)``), the
backward pass writes into others (``kernels.backprop_into``), the gradient products go into
gradient buffers (``np.matmul(out=)``, NumPy's BLAS and its threads) and the update is made in
place. On a big batch a fresh array is new memory for the kernel to fault in, page by page, and
the reference path makes a dozen per update: at 8,000 x 784-100-10 rows they cost more than all
the elementwise arithmetic (README, "Speed"). Automatic selection takes this stepper where the fused
one stops paying (above ``fused.FUSED_MAX_BATCH`` rows, or products big enough for several threads).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .base import advance, register, rows_into
from .fused import FusedStepper


@register
class BufferedStepper(FusedStepper):
    """The fused stepper's preconditions, buffers, threads and guard; its own update (see above)."""

    name = "buffered"
    priority = 60

    @classmethod
    def preferred(cls, ctx):
        return not FusedStepper.preferred(ctx)

    def run(self, state, batches, etas, want_costs):
        net, arch, lam, work = self.net, self.net.arch, self.ctx.hyper.weight_decay, self.work
        costs = [] if want_costs else None
        for idx, eta in zip(batches, etas, strict=True):
            X, T = rows_into(self.data, idx, work)
            acts, deltas, z = kernels.backprop_into(arch, net.params, X, T, work)
            m = X.shape[0]
            if want_costs:  # before the update, from this forward pass
                costs.append(float(kernels.cost_sum(arch, acts, z, T, np)) / m)
            params = []
            for layer, ((W, b), a, d) in enumerate(zip(net.params, acts[:-1], deltas, strict=True)):
                G = kernels.buffer(work, ("G", layer), W.shape[0], W.shape[1], W.dtype)
                gb = d.sum(axis=0)
                gb *= eta / m
                if m < W.shape[0]:  # scale the smaller of the (m, fan_out) factor and the (fan_in, fan_out) product
                    d *= eta / m
                    np.matmul(a.T, d, out=G)  # (eta/m) sum over the rows of a_{l-1}^T delta_l
                else:
                    np.matmul(a.T, d, out=G)
                    G *= eta / m
                if not (W.flags.writeable and b.flags.writeable):  # handed in read-only: copies, updated
                    W, b = W.copy(), b.copy()
                if lam:
                    W *= 1.0 - eta * lam
                W -= G
                b -= gb
                params.append((W, b))
            net.params = params
            advance(state, self.opt)
        return costs
