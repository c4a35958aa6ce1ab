"""Steppers: how a block of parameter updates is made. One is chosen once per ``fit``.

This docstring is the contract other steppers (GPU, MPI) plug into.

The loop in ``fit`` reads: sampler -> ``stepper.run(block)`` -> records -> callbacks. A block is a
run of consecutive updates; it ends at the epoch's end and wherever a record or a callback needs
one (every update with ``record_updates=True``; every ``update_interval`` updates for a callback
that overrides ``on_update_end``). With no such callback an epoch is one block.

Kernels (``sgdlab.kernels``), pure functions of (arch, params, X, T, xp), no Network:
    ``Arch(activation, output_activation, cost)``; ``net.arch`` returns it.
    ``forward(arch, params, X, xp) -> (acts, z_L)``
    ``backprop(arch, params, X, T, xp) -> (acts, deltas, z_L)``
    ``grad_sums(arch, params, X, T, xp) -> (sums, cost_sum)``: sums = [(a_{l-1}^T delta_l,
    sum_rows delta_l)], cost_sum = sum_x C_x (an xp scalar); NO division, the caller divides once
    by the row count. ``chunked_grad_sums`` accumulates over row chunks; ``evaluate_sums(arch,
    params, X, T, labels, xp) -> (cost_sum, correct)`` for evaluation.

Context (``StepContext``), built by ``fit`` once:
    ``net``, ``data`` (``X, T, labels, n, on_disk, batch(idx) -> (X_b, T_b)``; its
    ``evaluate_sums(net, which)`` gives cost sums and correct counts for a reduction across ranks),
    ``opt`` (a ``GradientTransformation``; ``opt.hyper`` is an ``optim.SGDHyper`` when made by
    ``optim.sgd``), ``batch_size`` (rows per update; n means batch GD), ``comm`` (an MPI
    communicator or None), ``device`` (None or the device); ``full_batch``, ``numpy``, ``hyper``.

Stepper protocol (subclass ``Stepper``, decorate with ``@register``):
    ``name``: the registry key and ``fit(..., stepper=name)``; ``priority``: automatic selection
    tries lower numbers first (chunked 10, compiled 40, fused 50, buffered 60, reference 1000).
    ``unsupported(ctx) -> str | None`` (classmethod): why it cannot run ``ctx``, None when it can.
    ``preferred(ctx) -> bool`` (classmethod): whether automatic selection should take it.
    ``__init__(ctx)``; ``prepare() -> dict``: one-off work before the clock starts (compilation,
    device upload); what it returns goes into ``history.config["stepper_info"]``.
    ``session()``: a context manager entered once around the whole run (evaluation and callbacks
    included) for settings too costly to switch per block: BLAS threads per product size
    (``steppers.threads``; switching OpenBLAS's pool costs ~80 us, a batch-1 update ~15 us).
    ``guard()``: a context manager entered around every block, not around evaluation or
    callbacks: NumPy errstate, device sync.
    ``run(state, batches, etas, want_costs) -> list[float] | None``: make ``len(batches)`` updates
    in order. ``batches``: index arrays into the training rows, or ``FULL_BATCH`` (None) for all
    rows. ``etas``: the learning rate of each update, computed by ``fit`` from the schedule at the
    one step counter (None where the optimizer has no ``hyper`` and scales by itself). It updates
    ``net.params`` (in place or by reassignment) and ``state.opt_state``, and counts each update with
    ``advance(state, opt)``, which moves ``state.step`` and the ``sgd`` state's step together.
    Returns the batch cost C before each update when ``want_costs``, else None; ``fit`` always asks
    (every epoch records their mean, ``mean_batch_cost``), so computing them must stay cheap. An
    entry is None where this process made no step (a rank with no example in local SGD's last round).
    ``sync()``: wait for pending device work (no-op on the CPU); ``fit`` calls it before reading
    the clock.

The step counter lives in ``TrainState.step``; for ``sgd`` the optimizer state's step equals it
at all times (``optim.sgd_step``), so the schedule gives every stepper the same eta_t and steppers
can be switched between ``fit`` calls (a test does it, with momentum and a schedule).
Momentum buffers live in ``state.opt_state`` (``optim.sgd_velocity``), in the parameters' shapes.

Selection: ``select_stepper(ctx, name=None)`` forces ``name`` (a clear ValueError when it cannot
run the context) or takes the first registered stepper by priority that supports and prefers it.
Registered: ``reference`` (array API; any optimizer), ``fused`` (NumPy BLAS gemm, SGD without
momentum, batches <= ``fused.FUSED_MAX_BATCH``), ``buffered`` (NumPy, SGD with or without momentum, bigger
batches: every intermediate in a reused buffer), ``chunked`` (full batch over data on disk),
``compiled`` (numba, its products by NumPy's BLAS above the smallest batches;
see ``steppers.compiled``). GPU and MPI steppers register themselves the
same way from their own modules (imported here when present).
"""

from __future__ import annotations

# register the built-in steppers; mpi imports mpi4py only when run, and torch_step (the PyTorch/GPU stepper)
# imports torch only when it runs
from . import buffered, chunked, fused, mpi, reference, torch_step  # noqa: F401
from .base import FULL_BATCH, StepContext, Stepper, advance, available, register, select_stepper

try:  # the compiled stepper registers itself; numba is imported lazily when it runs
    from . import compiled  # noqa: F401
except ImportError:  # pragma: no cover - only while the module is absent
    pass

__all__ = ["FULL_BATCH", "StepContext", "Stepper", "advance", "available", "register", "select_stepper"]
