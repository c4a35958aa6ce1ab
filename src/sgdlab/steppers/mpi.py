"""The MPI stepper: P ranks make the same updates as one process (see ``sgdlab.distributed``).

One update of a batch of m rows (global indices ``idx``, the same on every rank):

    allreduce:  rank r computes S_r = sum over rows idx[floor(r m/P) : floor((r+1) m/P)] of grad C_x
                (one backprop over its slice), then S = MPI_Allreduce(S_r), g = S / m
    exact:      the batch is cut into G = min(shards, m) micro-shards with bounds floor(j m/G); rank r
                computes the sums s_j of micro-shards j in [floor(r G/P), floor((r+1) G/P)); an
                Allgatherv collects s_0, ..., s_{G-1} on every rank, which adds them in that order:
                S = (((s_0 + s_1) + s_2) + ...), g = S / m: the same operations for every P

then every rank applies the same optimizer update to the same parameters. The batch's cost sum and
a stop flag (any rank asked to stop: a signal) travel in the same message, so all ranks stop after
the same update at no extra cost. Batch GD is the batch of all n rows in order; each rank reads only
its own rows, CHUNK_ROWS at a time.

Local SGD (method "stochastic", m = 1): the epoch's order is dealt out in rounds of P indices;
in each round rank r makes one plain SGD step on index r of the round; every ``sync_every`` rounds
and at the end of every epoch the ranks average their parameters (exact: gathered and added in
rank order; allreduce: MPI_Allreduce), then divide by P.

Evaluation (``evaluate``) cuts each data set into EVAL_ROWS-row chunks, each rank evaluates its
share of the chunks, and the per-chunk (cost sum, correct count) pairs are gathered and added in
chunk order: the same numbers for every P, computed once, not on every rank.
"""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np

from .. import kernels
from ..optim import apply_updates
from .base import FULL_BATCH, Stepper, advance, register

CHUNK_ROWS = 8192  # rows per backprop when a rank's share of a full batch is large
EVAL_ROWS = 1024  # rows per evaluation chunk (the unit of work shared among ranks)


def grad_sums(net, X, T):
    """(sums, cost_sum) of ``kernels.grad_sums`` over the rows of X (zeros for no rows); no division."""
    xp = net.xp
    if X.shape[0] == 0:
        return [(xp.zeros_like(W), xp.zeros_like(b)) for W, b in net.params], 0.0
    sums, cost = kernels.grad_sums(net.arch, net.params, X, T, xp)
    return sums, float(cost)


class _Flat:
    """Packs a parameter-shaped list [(W, b), ...] and a few scalars into one contiguous buffer."""

    def __init__(self, params, dtype, extras: int):
        self.shapes = [(tuple(W.shape), tuple(b.shape)) for W, b in params]
        self.size = sum(math.prod(sW) + math.prod(sb) for sW, sb in self.shapes)
        self.length, self.extras, self.dtype = self.size + extras, extras, dtype

    def pack(self, pairs, *extras, out=None) -> np.ndarray:
        buf = np.empty(self.length, self.dtype) if out is None else out
        i = 0
        for W, b in pairs:
            for a in (W, b):
                k = math.prod(a.shape)
                buf[i : i + k] = np.asarray(a).reshape(-1)
                i += k
        buf[self.size :] = extras
        return buf

    def unpack(self, buf, xp) -> list:
        out, i = [], 0
        for sW, sb in self.shapes:
            kW, kb = math.prod(sW), math.prod(sb)
            out.append((xp.asarray(buf[i : i + kW].reshape(sW)), xp.asarray(buf[i + kW : i + kW + kb].reshape(sb))))
            i += kW + kb
        return out


@register
class MPIStepper(Stepper):
    """Makes the updates of ``fit(..., comm=...)`` on every rank of the World; see the module docstring."""

    name = "mpi"
    priority = 0  # whenever fit is given a comm, this stepper makes the updates

    @classmethod
    def unsupported(cls, ctx) -> str | None:
        if ctx.comm is None:
            return "it needs fit(..., comm=...): an mpi4py communicator or a sgdlab.distributed.World"
        if not ctx.numpy:
            return "it exchanges NumPy buffers; use the NumPy backend"
        return None

    def __init__(self, ctx):
        super().__init__(ctx)
        from ..distributed import as_world

        self.world, self.n = as_world(ctx.comm), ctx.data.n
        self.full = ctx.full_batch
        self.local_sgd = ctx.batch_size == 1 and not self.full
        # local SGD deals each epoch's order out in rounds of P indices, one per rank
        self.sample_size = self.world.size if self.local_sgd else ctx.batch_size
        self.batches_per_epoch = -(-self.n // self.sample_size)
        self.flat = _Flat(self.net.params, np.dtype(self.net.dtype_name), extras=2)  # + cost sum, stop flag

    def begin(self, state, config: dict) -> None:
        """Before training, on every rank: refuse ranks that differ (version, settings, data) or settings
        that cannot be split over P ranks, then start every rank from rank 0's parameters and TrainState."""
        from .. import __version__
        from ..distributed import data_digest

        world, data, m = self.world, self.data, config["batch_size"]
        world.agree("sgdlab version", __version__)
        world.agree("training settings", json.dumps(config, sort_keys=True, default=str))
        world.agree("training data (SHA-256)", data_digest(data.X, data.T))
        if data.val is not None:
            world.agree("validation data (SHA-256)", data_digest(data.val[0], data.val[1]))
        P = world.size
        if self.full and self.n < P:
            raise ValueError(
                f"batch gradient descent over n={self.n} rows cannot be split over {P} ranks; use at most {self.n}"
            )
        if not self.full and not self.local_sgd and m < P:
            raise ValueError(
                f"a mini-batch of m={m} rows cannot be split over {P} ranks: every rank needs at least one "
                f"row of each batch; use batch_size >= {P} or at most {m} ranks"
            )
        if self.local_sgd and config.get("momentum", 0) and P > 1:
            raise ValueError(
                "local SGD (stochastic on several ranks) averages parameters only; momentum > 0 is not supported"
            )
        if P > 1:
            xp = self.net.xp
            params, opt_state, rng, order, fixed, counters = world.bcast(
                (
                    self.net.numpy_params(),
                    state.opt_state,
                    state.rng,
                    state.order,
                    state.fixed,
                    {k: getattr(state, k) for k in ("epoch", "step", "seen", "position")},
                )
            )
            self.net.params = [
                (xp.asarray(W, dtype=self.net.dtype), xp.asarray(b, dtype=self.net.dtype)) for W, b in params
            ]
            state.opt_state, state.rng, state.order, state.fixed = opt_state, rng, order, fixed
            for k, v in counters.items():
                setattr(state, k, v)

    def guard(self):
        stack = contextlib.ExitStack()
        stack.enter_context(np.errstate(all="ignore"))
        stack.enter_context(self.world.blas_threads())
        return stack

    def run(self, state, batches, etas, want_costs: bool):
        """Make len(batches) updates in order (``state.position`` is the epoch's index of the first one)."""
        costs = []
        for i, idx in enumerate(batches):
            position = state.position + i
            costs.append(self._round(state, idx, position) if self.local_sgd else self._update(state, idx))
            advance(state, self.opt)
            if position + 1 == self.batches_per_epoch:
                self.world.check_parameters(self.net, f"at the end of epoch {state.epoch + 1}")
        return costs if want_costs else None

    def evaluate(self, net, train: bool = True) -> dict:
        """The record's costs and accuracies, shared among the ranks (see ``evaluate`` below)."""
        return evaluate(self.world, net, self.data, train)

    # ----------------------------------------------------------------- one data-parallel update
    def _rows_sums(self, rows):
        """Gradient sums and cost sum over ``rows`` (a slice of a full batch, or an index array)."""
        data, net = self.data, self.net
        if isinstance(rows, slice):
            total, cost = None, 0.0
            for a in range(rows.start, rows.stop, CHUNK_ROWS):
                b = min(a + CHUNK_ROWS, rows.stop)
                sums, c = grad_sums(net, data.X[a:b, ...], data.T[a:b, ...])
                total = (
                    sums
                    if total is None
                    else [(tW + sW, tb + sb) for (tW, tb), (sW, sb) in zip(total, sums, strict=True)]
                )
                cost += c
            if total is None:
                total, cost = grad_sums(net, data.X[0:0, ...], data.T[0:0, ...])
            return total, cost
        return grad_sums(net, *data.batch(rows))

    def _part(self, idx, a: int, b: int):
        return slice(a, b) if idx is FULL_BATCH else idx[a:b]

    def _update(self, state, idx):
        world, flat, net = self.world, self.flat, self.net
        m = self.n if idx is FULL_BATCH else len(idx)
        stop = float(world.stop_requested)
        if world.reduction == "exact":
            G = min(world.shards, m)
            bounds = [j * m // G for j in range(G + 1)]
            owners = [(r * G // world.size, (r + 1) * G // world.size) for r in range(world.size)]
            j0, j1 = owners[world.rank]
            mine = np.empty((j1 - j0) * flat.length + 1, flat.dtype)
            for k, j in enumerate(range(j0, j1)):
                sums, cost = self._rows_sums(self._part(idx, bounds[j], bounds[j + 1]))
                flat.pack(sums, cost, 0.0, out=mine[k * flat.length : (k + 1) * flat.length])
            mine[-1] = stop
            everything = world.allgather_flat(mine, [(b - a) * flat.length + 1 for a, b in owners])
            total, stops, at = None, 0.0, 0
            for a, b in owners:
                for _ in range(a, b):
                    part = everything[at : at + flat.length]
                    if total is None:
                        total = part.copy()
                    else:
                        total += part
                    at += flat.length
                stops += everything[at]
                at += 1
        else:
            lo, hi = world.share(m)
            sums, cost = self._rows_sums(self._part(idx, lo, hi))
            total = world.allreduce(flat.pack(sums, cost, stop))
            stops = total[-1]
        world.stop_agreed = world.stop_agreed or bool(stops > 0)
        sums = flat.unpack(total, net.xp)
        grads = [(sW / m, sb / m) for sW, sb in sums]
        updates, state.opt_state = self.opt.update(grads, state.opt_state, net.params)
        net.params = apply_updates(net.params, updates)
        return float(total[flat.size]) / m

    # ----------------------------------------------------------------- local SGD
    def _round(self, state, idx, position: int):
        """Rank r makes one SGD step on idx[r]; then the parameters are averaged if the round ends a period.
        A rank with no example left in the epoch's last round makes no step (the count still advances) and
        has no batch cost: None (NaN would read as divergence)."""
        world, net = self.world, self.net
        idx = np.arange(self.n) if idx is FULL_BATCH else idx
        cost = None
        if world.rank < len(idx):
            sums, cost = grad_sums(net, *self.data.batch(idx[world.rank : world.rank + 1]))
            updates, state.opt_state = self.opt.update(
                [(sW / 1, sb / 1) for sW, sb in sums], state.opt_state, net.params
            )
            net.params = apply_updates(net.params, updates)
        done = position + 1
        if done % world.sync_every == 0 or done >= self.batches_per_epoch:
            self.average()
        return cost

    def average(self) -> None:
        """Replace every rank's parameters by their mean over the ranks (and combine stop requests)."""
        world, flat, net = self.world, self.flat, self.net
        if world.size == 1:
            world.stop_agreed = world.stop_agreed or world.stop_requested
            return
        mine = flat.pack(net.params, 0.0, float(world.stop_requested))
        if world.reduction == "exact":
            everything = world.allgather_flat(mine, [flat.length] * world.size).reshape(world.size, flat.length)
            total = everything[0].copy()
            for r in range(1, world.size):
                total += everything[r]
        else:
            total = world.allreduce(mine)
        world.stop_agreed = world.stop_agreed or bool(total[-1] > 0)
        total /= world.size
        net.params = flat.unpack(total, net.xp)


# ----------------------------------------------------------------- evaluation, shared among ranks
def evaluate(world, net, data, train: bool = True) -> dict:
    """The epoch record's train/val cost and accuracy, each rank evaluating its share of the chunks."""
    out = {}
    if train:
        out["train_cost"], out["train_accuracy"] = _shared_evaluate(world, net, data.X, data.T, data.labels)
    if data.val is not None:
        out["val_cost"], out["val_accuracy"] = _shared_evaluate(world, net, *data.val)
    return out


def _shared_evaluate(world, net, X, T, labels):
    xp, n = net.xp, X.shape[0]
    G = -(-n // EVAL_ROWS)
    j0, j1 = world.rank * G // world.size, (world.rank + 1) * G // world.size
    mine = np.zeros((j1 - j0, 2), np.float64)
    for k, j in enumerate(range(j0, j1)):
        a, b = j * EVAL_ROWS, min((j + 1) * EVAL_ROWS, n)
        cost, correct = kernels.evaluate_sums(
            net.arch, net.params, X[a:b, ...], T[a:b, ...], None if labels is None else labels[a:b], xp
        )
        mine[k] = cost, correct or 0
    counts = [2 * ((r + 1) * G // world.size - r * G // world.size) for r in range(world.size)]
    chunks = world.allgather_flat(mine.reshape(-1), counts).reshape(G, 2)
    cost, correct = 0.0, 0
    for c, k in chunks:
        cost += float(c)
        correct += int(k)
    return cost / n, (None if labels is None else correct / n)
