"""The reference stepper: any array-API namespace, any optimizer.

Each update is the plain chain of the notes: gradient sums from the pure kernels, divided once
by the batch's row count m, then the optimizer's transformation and ``apply_updates``:

    g = (1/m) sum_x grad C_x,    (u, s) = opt.update(g, s, w),    w <- w + u
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import kernels
from ..optim import apply_updates
from .base import Stepper, advance, register
from .threads import blas_threads


@register
class ReferenceStepper(Stepper):
    name = "reference"
    priority = 1000  # the fallback: it runs everything

    def session(self):
        return blas_threads(self.net.sizes, self.ctx.batch_size) if self.ctx.numpy else contextlib.nullcontext()

    def guard(self):
        return np.errstate(all="ignore") if self.ctx.numpy else contextlib.nullcontext()  # overflow: NaN cost

    def run(self, state, batches, etas, want_costs):
        net, opt, xp, arch = self.net, self.opt, self.net.xp, self.net.arch
        costs = [] if want_costs else None
        for idx in batches:
            X, T = self.rows(idx)
            m = X.shape[0]
            sums, cost = kernels.grad_sums(arch, net.params, X, T, xp)
            grads = [(sW / m, sb / m) for sW, sb in sums]
            updates, state.opt_state = opt.update(grads, state.opt_state, net.params)
            net.params = apply_updates(net.params, updates)
            advance(state, opt)
            if want_costs:
                costs.append(float(cost) / m)
        return costs
