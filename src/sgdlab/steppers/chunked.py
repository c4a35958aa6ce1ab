"""The chunked stepper: batch gradient descent on data on disk.

The full gradient is accumulated as SUMS over chunks of rows (``kernels.chunked_grad_sums``) and
divided once by n, so memory stays bounded by one chunk's activations:

    g = (1/n) sum_chunks sum_{x in chunk} grad C_x
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import kernels
from ..optim import apply_updates
from .base import FULL_BATCH, Stepper, advance, register


@register
class ChunkedStepper(Stepper):
    name = "chunked"
    priority = 10

    @classmethod
    def unsupported(cls, ctx):
        if not ctx.full_batch:
            return "it makes full-batch updates only (method='batch')"
        return None

    @classmethod
    def preferred(cls, ctx):
        return bool(ctx.data.on_disk)

    def guard(self):
        return np.errstate(all="ignore") if self.ctx.numpy else contextlib.nullcontext()

    def run(self, state, batches, etas, want_costs):
        net, opt, data = self.net, self.opt, self.data
        costs = [] if want_costs else None
        for idx in batches:
            if idx is not FULL_BATCH and len(idx) != data.n:
                raise ValueError("the chunked stepper makes full-batch updates only")
            sums, cost = kernels.chunked_grad_sums(net.arch, net.params, data.X, data.T, net.xp)
            grads = [(sW / data.n, sb / data.n) for sW, sb in sums]
            updates, state.opt_state = opt.update(grads, state.opt_state, net.params)
            net.params = apply_updates(net.params, updates)
            advance(state, opt)
            if want_costs:
                costs.append(cost / data.n)
        return costs
