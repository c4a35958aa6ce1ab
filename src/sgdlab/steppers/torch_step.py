"""The native PyTorch stepper: fused in-place ops, no autograd, the index order on the device, and
on a CUDA GPU the whole update captured once in a CUDA graph and replayed.

One update of ``optim.sgd`` (PyTorch's convention: momentum mu, Nesterov, weight decay lam on the
weights only, learning rate eta_t) on a batch of m rows, every buffer allocated once:

    forward    z_l = addmm(b_l, a_{l-1}, W_l),   a_l = f(z_l)
    backward   delta_L = the cost's output error,  delta_l = (delta_{l+1} W_{l+1}^T) * f'(a_l)
    gradient   g_W = addmm(W, a_{l-1}^T, delta_l, beta=lam, alpha=1/m)   (lam W + (1/m) a^T delta: one gemm)
               g_b = (1/m) sum_rows delta_l
    momentum   v <- mu v + g;   u = v, or g + mu v (Nesterov);   u = g when mu = 0
    update     W <- W + (-eta_t) u     (addcmul_, with eta_t read from a device tensor)

All deltas are computed before any parameter changes, as in the reference stepper, which stays the
portable reference (a test checks that both agree).

Device residency: ``fit`` copied X and T to the device once. For each block of updates the batch
indices (a (k, m) matrix) and the k learning rates go to the device in one copy each (from pinned
host buffers, asynchronously, on CUDA); a device step counter ``k`` selects row k and eta_k inside
the update, so an update needs no host-to-device transfer and no host synchronisation. Batch costs,
when asked for, are written to a device buffer and read once at the end of the block.

CUDA graph: on a CUDA device the update (gather the batch rows by ``index_select`` into static
input buffers, forward, backward, update, ``k += 1``) is captured once per (batch kind, costs
wanted) after three warm-up runs on a side stream whose effects on the parameters are undone, and
replayed once per update. A ragged last batch (n mod m rows) runs the same code eagerly. On the CPU
(PyTorch as the stand-in for the device path) the same update runs eagerly, so the tests exercise
the code that a GPU captures. ``SGDLAB_CUDA_GRAPHS=0`` turns capture off.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..optim import sgd_state, sgd_velocity
from .base import FULL_BATCH, Stepper, advance, register

_IN_PLACE = {"sigmoid": "sigmoid_", "tanh": "tanh_", "relu": "relu_"}  # native kernels for a = f(z)
WARMUP_RUNS = 3  # runs on a side stream before capture (PyTorch's recipe for CUDA graphs)


def graphs_enabled(device: str) -> bool:
    """Whether the update is captured in a CUDA graph: on CUDA devices, unless SGDLAB_CUDA_GRAPHS=0."""
    return device.startswith("cuda") and os.environ.get("SGDLAB_CUDA_GRAPHS", "1") != "0"


def index_matrix(batches, m: int) -> np.ndarray:
    """The batches of exactly ``m`` rows, stacked into a (k, m) int64 matrix (one copy to the device).

    >>> index_matrix([np.array([3, 1]), np.array([0, 2]), np.array([4])], 2)
    array([[3, 1],
           [0, 2]])
    """
    full = [np.asarray(b, dtype=np.int64) for b in batches if b is not FULL_BATCH and len(b) == m]
    return np.stack(full) if full else np.empty((0, m), dtype=np.int64)


class TorchStep:
    """The update on PyTorch tensors, with its static buffers (independent of ``fit``).

    ``params`` are adopted as static tensors W_l, b_l that the update changes in place; ``X``, ``T``
    are the training data on the device; ``capacity`` is the largest number of m-row batches in one
    block (it grows, and graphs are recaptured, if a block is longer).
    """

    def __init__(self, net, X, T, m: int, *, momentum=0.0, nesterov=False, weight_decay=0.0, capacity=1,
                 graphs: bool | None = None):
        import torch

        self.torch, self.net, self.X, self.T, self.m = torch, net, X, T, int(m)
        self.mu, self.nesterov, self.lam = float(momentum), bool(nesterov), float(weight_decay)
        self.device = net.device
        self.graphs = graphs_enabled(self.device) if graphs is None else bool(graphs)
        if self.graphs and not self.device.startswith("cuda"):
            raise ValueError(f"CUDA graphs need a CUDA device; this network is on {self.device!r}")
        dt, dev = X.dtype, X.device
        self.W = [W.detach().clone() for W, _ in net.params]
        self.b = [b.detach().clone() for _, b in net.params]
        self.gW = [torch.empty_like(W) for W in self.W]
        self.gb = [torch.empty_like(b) for b in self.b]
        self.vW = [torch.zeros_like(W) for W in self.W] if self.mu else []
        self.vb = [torch.zeros_like(b) for b in self.b] if self.mu else []
        self.Xb = torch.empty((self.m, X.shape[1]), dtype=dt, device=dev)  # static gathered batch
        self.Tb = torch.empty((self.m, T.shape[1]), dtype=dt, device=dev)
        self.k = torch.zeros(1, dtype=torch.int64, device=dev)  # device step counter within a block
        self.eta_ragged = torch.zeros(1, dtype=dt, device=dev)
        self.cost_ragged = torch.zeros(1, dtype=dt, device=dev)
        self._pinned = self.device.startswith("cuda")
        self._copied: Any = None  # CUDA event: the last copy out of the pinned staging buffers
        self._allocate(max(1, int(capacity)))

    # ----------------------------------------------------------------- buffers
    def _allocate(self, capacity: int) -> None:
        torch, dev, dt = self.torch, self.X.device, self.X.dtype
        self.capacity = capacity
        self.order = torch.zeros((capacity, self.m), dtype=torch.int64, device=dev)  # zeros: valid rows for warm-up
        self.etas = torch.zeros(capacity, dtype=dt, device=dev)
        self.costs = torch.zeros(capacity, dtype=dt, device=dev)
        self.order_host = torch.zeros((capacity, self.m), dtype=torch.int64, pin_memory=self._pinned)
        self.etas_host = torch.zeros(capacity, dtype=dt, pin_memory=self._pinned)
        self._graphs: dict[
            tuple[bool, bool], Any
        ] = {}  # captured graphs read these buffers' addresses: recapture after a reallocation

    def load_block(self, batches, etas) -> int:
        """Copy the block's m-row index matrix and its learning rates to the device; return the count
        of updates that read them (every batch but a ragged last one).

        One copy each; on CUDA from pinned host memory without blocking the host (the staging
        buffers are reused only after the previous copy out of them has finished).
        """
        indexed = [b is FULL_BATCH or len(b) == self.m for b in batches]
        if any(b is FULL_BATCH for b in batches) and not all(b is FULL_BATCH for b in batches):
            raise ValueError("a block mixes full-batch updates with index batches")
        rows = index_matrix(batches, self.m)
        lr = np.asarray([e for e, i in zip(etas, indexed, strict=True) if i], dtype=np.float64)
        k = len(lr)
        if k > self.capacity:
            self._allocate(k)
        if self._copied is not None:
            self._copied.synchronize()
        if k:
            self.etas_host[:k].copy_(self.torch.from_numpy(lr))
            self.etas[:k].copy_(self.etas_host[:k], non_blocking=self._pinned)
        if rows.shape[0]:
            self.order_host[:rows.shape[0]].copy_(self.torch.from_numpy(rows))
            self.order[:rows.shape[0]].copy_(self.order_host[:rows.shape[0]], non_blocking=self._pinned)
        if self._pinned:
            self._copied = self.torch.cuda.Event()
            self._copied.record()
        self.k.zero_()
        return k

    def adopt(self, params, velocity) -> None:
        """Make the static buffers hold ``params`` (and momentum ``velocity``) unless they already are them."""
        for dst, src in zip(self.W + self.b, [W for W, _ in params] + [b for _, b in params], strict=True):
            if src is not dst:
                dst.copy_(src)
        if self.mu and velocity is not None:
            for dst, src in zip(self.vW + self.vb, [v for v, _ in velocity] + [v for _, v in velocity], strict=True):
                if src is not dst:
                    dst.copy_(src)
        elif self.mu:
            for v in self.vW + self.vb:
                v.zero_()

    @property
    def params(self):
        return list(zip(self.W, self.b, strict=True))

    @property
    def velocity(self):
        return list(zip(self.vW, self.vb, strict=True)) if self.mu else None

    def _state_tensors(self):
        return self.W + self.b + self.vW + self.vb + [self.k, self.costs]

    # ----------------------------------------------------------------- the update
    def update(self, Xb, Tb, eta, cost_out=None) -> None:
        """One update on the batch (Xb, Tb) with learning rate ``eta`` (a 1-element device tensor).

        With ``cost_out(c)``, the batch cost C = (1/m) sum_x C_x before the update is handed to it
        as a device tensor (no host sync).
        """
        torch, net, xp = self.torch, self.net, self.net.xp
        hidden, output, cost = net.activation, net.output_activation, net.cost_fn
        m, L = Xb.shape[0], len(self.W)
        acts, a = [Xb], Xb
        for l in range(L):
            z = torch.addmm(self.b[l], a, self.W[l])
            f = output if l == L - 1 else hidden
            if f.name in _IN_PLACE and l < L - 1:  # a hidden z is not needed again: overwrite it with a
                a = getattr(z, _IN_PLACE[f.name])()
            elif f.name in _IN_PLACE:
                a = getattr(torch, _IN_PLACE[f.name].rstrip("_"))(z)
            else:
                a = f.fn(z, xp)
            acts.append(a)
        if cost_out is not None:
            cost_out(cost.value(z, a, Tb, output, xp).reshape(1) / m)
        delta = cost.delta(z, a, Tb, output, xp)
        deltas = [delta]
        for l in range(L - 1, 0, -1):
            delta = torch.mm(delta, self.W[l].T).mul_(hidden.grad(acts[l], xp))
            deltas.append(delta)
        deltas.reverse()
        neg_eta = -eta
        for l in range(L):
            gW, gb = self.gW[l], self.gb[l]
            torch.addmm(self.W[l], acts[l].T, deltas[l], beta=self.lam, alpha=1.0 / m, out=gW)
            torch.sum(deltas[l], 0, out=gb)
            gb.mul_(1.0 / m)
            if self.mu:
                vW, vb = self.vW[l], self.vb[l]
                vW.mul_(self.mu).add_(gW)
                vb.mul_(self.mu).add_(gb)
                if self.nesterov:
                    gW.add_(vW, alpha=self.mu)
                    gb.add_(vb, alpha=self.mu)
                else:
                    gW, gb = vW, vb
            self.W[l].addcmul_(gW, neg_eta)
            self.b[l].addcmul_(gb, neg_eta)

    def indexed_update(self, want_cost: bool, full: bool) -> None:
        """The update that a CUDA graph captures: batch row k of ``order`` (or every row when
        ``full``), eta_k, the cost into ``costs[k]`` when wanted, then k <- k + 1. No host sync."""
        torch = self.torch
        if full:
            Xb, Tb = self.X, self.T
        else:
            idx = self.order.index_select(0, self.k).view(-1)
            torch.index_select(self.X, 0, idx, out=self.Xb)
            torch.index_select(self.T, 0, idx, out=self.Tb)
            Xb, Tb = self.Xb, self.Tb
        sink = (lambda c: self.costs.index_copy_(0, self.k, c)) if want_cost else None
        self.update(Xb, Tb, self.etas.index_select(0, self.k), sink)
        self.k.add_(1)

    def replay(self, want_cost: bool, full: bool) -> None:
        """Run ``indexed_update``: replayed from its CUDA graph when graphs are on, else eagerly."""
        if not self.graphs:
            self.indexed_update(want_cost, full)
            return
        key = (want_cost, full)
        if key not in self._graphs:
            self._graphs[key] = self._capture(lambda: self.indexed_update(want_cost, full))
        self._graphs[key].replay()

    def capture_all(self, full: bool) -> int:
        """Capture the graphs a run can need up front (outside the clock); return how many exist."""
        if self.graphs:
            for want_cost in (False, True):
                if (want_cost, full) not in self._graphs:
                    self._graphs[(want_cost, full)] = self._capture(lambda w=want_cost: self.indexed_update(w, full))
        return len(self._graphs)

    def _capture(self, fn):
        """A CUDA graph of ``fn``: warm-up runs on a side stream (their effects undone), then capture.

        Capture records kernels without running them; the buffers ``fn`` reads and writes keep
        their addresses for every replay.
        """
        torch = self.torch
        saved = [t.clone() for t in self._state_tensors()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.k.zero_()
                fn()
        torch.cuda.current_stream().wait_stream(side)
        for t, s in zip(self._state_tensors(), saved, strict=True):
            t.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        for t, s in zip(self._state_tensors(), saved, strict=True):  # capture does not run fn; to be safe
            t.copy_(s)
        return graph

    def run_block(self, batches, etas, want_costs: bool):
        """Make the updates of one block in order; the batch costs as a host list when asked (one sync)."""
        torch = self.torch
        self.load_block(batches, etas)
        pieces: list[
            tuple[str, Any]
        ] = []  # per update: ("k", j) the row j of self.costs, or ("r", c) a ragged batch's cost tensor
        j = 0
        for idx, eta in zip(batches, etas, strict=True):
            if idx is FULL_BATCH or len(idx) == self.m:
                self.replay(want_costs, full=idx is FULL_BATCH)
                pieces.append(("k", j))
                j += 1
            else:  # the ragged last batch of an epoch: the same update, eagerly, with its own index tensor
                i = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.X.device)
                self.eta_ragged.fill_(float(eta))
                c: Any = torch.zeros(1, dtype=self.X.dtype, device=self.X.device) if want_costs else None
                self.update(self.X.index_select(0, i), self.T.index_select(0, i), self.eta_ragged,
                            c.copy_ if want_costs else None)
                pieces.append(("r", c))
        if not want_costs:
            return None
        rows = self.costs[:j].tolist() if j else []  # the one host sync of the block
        return [rows[v] if kind == "k" else float(v.item()) for kind, v in pieces]


@register
class TorchStepper(Stepper):
    """``optim.sgd`` on a PyTorch network with ``TorchStep`` (see the module docstring)."""

    name = "torch"
    priority = 20

    @classmethod
    def unsupported(cls, ctx) -> str | None:
        backend = getattr(ctx.net, "backend", None)
        if backend is None or backend.name != "torch":
            return "it needs a network on backend='torch'"
        if getattr(ctx.opt, "hyper", None) is None:
            return "it makes optim.sgd updates only (momentum, Nesterov, weight decay)"
        if ctx.data.on_disk:
            return "data on disk trains NumPy networks only"
        if ctx.comm is not None:
            return "it runs in one process (use the mpi stepper across ranks)"
        return None

    def __init__(self, ctx):
        super().__init__(ctx)
        h = ctx.hyper
        m, n = ctx.batch_size, ctx.data.n
        self.step = TorchStep(self.net, self.data.X, self.data.T, m, momentum=h.momentum, nesterov=h.nesterov,
                              weight_decay=h.weight_decay, capacity=-(-n // m))

    def prepare(self) -> dict:
        graphs = self.step.capture_all(full=self.ctx.full_batch)  # capture is warm-up: before the clock
        self.sync()
        return {"device": self.net.device, "cuda_graphs": graphs}

    def guard(self):
        return self.step.torch.no_grad()

    def run(self, state, batches, etas, want_costs):
        step = self.step
        step.adopt(self.net.params, sgd_velocity(state.opt_state))
        costs = step.run_block(list(batches), list(etas), want_costs)
        self.net.params = step.params  # the static buffers, changed in place
        advance(state, self.opt, len(batches))
        if step.mu:
            state.opt_state = sgd_state(state.opt_state, state.step, step.velocity)
        return costs

    def sync(self) -> None:
        self.net.backend.sync()


__all__ = ["TorchStep", "TorchStepper", "graphs_enabled", "index_matrix"]
