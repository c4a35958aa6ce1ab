"""The Stepper protocol, the registry and ``select_stepper`` (see the package docstring)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import is_numpy
from ..optim import sgd_state

FULL_BATCH = None  # a batch that is every training row (batch gradient descent)


@dataclass
class StepContext:
    """What a stepper is chosen from, and what it works on, for one ``fit``.

    net: the Network (its ``params`` are updated); data: the training data holder (``X, T, labels,
    n, on_disk, batch(idx)``); opt: the ``GradientTransformation`` (``opt.hyper`` set by ``sgd``);
    batch_size: rows per update (n for batch GD); comm: an MPI communicator or None; device: None
    or the device the network lives on.
    """

    # duck-typed: the Network, the training-data holder and the optimizer (any backend's arrays)
    net: Any
    data: Any
    opt: Any
    batch_size: int
    comm: Any = None
    device: Any = None
    facts: dict = field(default_factory=dict, repr=False)  # what selection measured once (``fact``)

    def fact(self, key, measure):
        """``measure()``, computed once per context: selection and the chosen stepper share it."""
        if key not in self.facts:
            self.facts[key] = measure()
        return self.facts[key]

    @property
    def full_batch(self) -> bool:
        return self.batch_size == self.data.n

    @property
    def numpy(self) -> bool:
        return is_numpy(self.net.xp)

    @property
    def hyper(self):
        return self.opt.hyper


class Stepper:
    """Makes blocks of parameter updates; chosen once per ``fit`` by ``select_stepper``.

    Subclasses set ``name`` and implement ``run``; ``unsupported`` says why a stepper cannot run a
    context (None when it can), ``preferred`` whether automatic selection should take it.
    """

    name = "stepper"
    priority = 100  # automatic selection tries lower numbers first

    def __init__(self, ctx: StepContext):
        self.ctx, self.net, self.data, self.opt = ctx, ctx.net, ctx.data, ctx.opt

    @classmethod
    def unsupported(cls, ctx: StepContext) -> str | None:
        return None

    @classmethod
    def preferred(cls, ctx: StepContext) -> bool:
        return True

    def prepare(self) -> dict:
        """One-off work before the clock starts (compilation); returns facts for ``history.config``."""
        return {}

    def session(self):
        """A context manager entered once around the whole run (records, evaluation and callbacks
        included): settings too costly to switch per block, such as BLAS thread counts."""
        return contextlib.nullcontext()

    def guard(self):
        """A context manager entered around every block: NumPy errstate, device sync."""
        return contextlib.nullcontext()

    def run(self, state, batches, etas, want_costs: bool) -> list[float] | None:
        """Make ``len(batches)`` updates, in order; advance ``state.step`` and the optimizer state.

        batches: index arrays into the training rows, or FULL_BATCH; etas: the learning rate of each
        update (None where the optimizer has its own). Returns the batch cost C before each update
        (a list of floats) when ``want_costs``, else None.
        """
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for pending device work (nothing to wait for on the CPU)."""

    def rows(self, idx):
        """(X_b, T_b) for one batch (batch GD on data on disk: all its rows, read)."""
        if idx is FULL_BATCH:
            if not self.data.on_disk:
                return self.data.X, self.data.T
            idx = np.arange(self.data.n)
        return self.data.batch(idx)


def rows_into(data, idx, work: dict):
    """(X_b, T_b) for one batch of in-memory NumPy data, gathered into buffers kept in ``work`` (no new
    array per update); other data (on disk, other namespaces, the full batch) as ``data.batch``."""
    if idx is FULL_BATCH:
        return data.X, data.T
    if data.on_disk or not isinstance(data.X, np.ndarray):
        return data.batch(idx)
    from ..kernels import buffer

    X = buffer(work, "X", len(idx), data.X.shape[1], data.X.dtype)
    T = buffer(work, "T", len(idx), data.T.shape[1], data.T.dtype)
    # the sampler's indices are in range; mode="raise" would copy through a temporary (NumPy's docs)
    return data.X.take(idx, axis=0, out=X, mode="clip"), data.T.take(idx, axis=0, out=T, mode="clip")


def needs_numpy_sgd(ctx) -> str | None:
    """Why a stepper that applies the SGD update itself on NumPy arrays cannot run here, or None."""
    if not ctx.numpy:
        return "it needs the NumPy backend"
    if ctx.hyper is None:
        return "it needs an optimizer made by sgdlab.optim.sgd (it applies the SGD update itself)"
    return None


def advance(state, opt, k: int = 1) -> None:
    """Count ``k`` updates made: ``state.step`` and, for ``sgd``, the optimizer state's step (one count)."""
    state.step += k
    if opt.hyper is not None:
        state.opt_state = sgd_state(state.opt_state, state.step)


_REGISTRY: dict[str, type[Stepper]] = {}


def register(cls: type[Stepper]) -> type[Stepper]:
    """Add a Stepper class to the registry under ``cls.name`` (a class decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[Stepper]]:
    """The registered stepper classes by name."""
    return dict(_REGISTRY)


def select_stepper(ctx: StepContext, name: str | None = None) -> Stepper:
    """The stepper for this run: ``name`` if given (refused with the reason if it cannot run it),
    else the first registered stepper, by ``priority``, that supports the context and prefers it."""
    if name is not None:
        if name not in _REGISTRY:
            raise ValueError(f"unknown stepper {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
        why = _REGISTRY[name].unsupported(ctx)
        if why:
            raise ValueError(f"stepper {name!r} cannot run this fit: {why}")
        return _REGISTRY[name](ctx)
    for cls in sorted(_REGISTRY.values(), key=lambda c: c.priority):
        if cls.unsupported(ctx) is None and cls.preferred(ctx):
            return cls(ctx)
    raise ValueError("no stepper can run this fit")  # unreachable while 'reference' is registered
