"""fit(): batch, stochastic and mini-batch gradient descent as one loop.

The loop composes: next batch -> gradient -> update -> record. It does no maths of its own
and prints nothing; progress bars and files are callbacks and CLI business.
"""

from __future__ import annotations

import csv
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import is_numpy, namespace, scipy_blas_single_threaded
from .optim import FUSED_MAX_BATCH, apply_updates, fused_sgd_step, sgd
from .rng import Seed, generator
from .sampling import ORDERS, BatchSampler
from .schedules import as_schedule
from .validation import check_choice, check_fraction, check_int, check_positive, check_X, check_Y, is_out_of_core, to_backend

METHODS = ("batch", "stochastic", "minibatch")

EPOCH_FIELDS = {
    "epoch": "epochs completed (0 is the state before training)",
    "updates": "parameter updates so far",
    "examples_seen": "examples used in gradient estimates so far",
    "train_seconds": "wall seconds spent in updates so far (sampling, gradient, step); evaluation excluded",
    "lr": "learning rate of the last update",
    "train_cost": "C over the whole training set with the parameters at the end of the epoch",
    "train_accuracy": "accuracy on the whole training set at the end of the epoch (class labels only)",
    "val_cost": "C over the validation set at the end of the epoch",
    "val_accuracy": "accuracy on the validation set at the end of the epoch",
}
UPDATE_FIELDS = {
    "update": "index of this update (1-based)",
    "epoch": "epoch this update belongs to (1-based)",
    "examples_seen": "examples used so far, this batch included",
    "train_seconds": "wall seconds spent in updates so far, this one included",
    "lr": "learning rate of this update",
    "batch_size": "examples in this batch",
    "batch_cost": "C over this batch, before the update (a noisy estimate, not the training cost)",
}


class DivergenceError(ArithmeticError):
    """Training produced a NaN or infinite cost; the network holds the last good parameters."""


@dataclass
class History:
    """What happened during ``fit``: one record per epoch, and per update on request.

    ``history["val_accuracy"]`` is the list of that field over the epoch records.
    The meaning of every field is in ``EPOCH_FIELDS`` and ``UPDATE_FIELDS``.
    """

    epochs: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict:
        return self.epochs[-1]

    def to_dict(self) -> dict:
        return {"config": self.config, "fields": {"epochs": EPOCH_FIELDS, "updates": UPDATE_FIELDS},
                "epochs": self.epochs, "updates": self.updates}

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n")

    def to_csv(self, path, which: str = "epochs") -> None:
        rows = self.epochs if which == "epochs" else self.updates
        names = list(EPOCH_FIELDS if which == "epochs" else UPDATE_FIELDS)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(epochs=list(d.get("epochs", [])), updates=list(d.get("updates", [])), config=dict(d.get("config", {})))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def resolve_batch_size(method: str, batch_size, n: int) -> int:
    """The batch size each update uses: n for batch GD, 1 for SGD, m for mini-batch (default 10)."""
    check_choice(method, "method", METHODS)
    if method == "batch":
        if batch_size not in (None, n):
            raise ValueError(f"method='batch' uses all n={n} examples per update; batch_size must be {n} or None, got {batch_size}")
        return n
    if method == "stochastic":
        if batch_size not in (None, 1):
            raise ValueError(f"method='stochastic' uses one example per update; batch_size must be 1 or None, got {batch_size}")
        return 1
    m = 10 if batch_size is None else batch_size
    return min(check_int(m, "batch_size", 1, n), n)


def fit(net, X, Y, *, method: str = "minibatch", batch_size: int | None = None, lr=3.0, epochs: int = 30,
        sampling: str = "reshuffle", momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
        seed: Seed = None, validation=None, record_updates: bool = False, eval_train: bool = True,
        callbacks=(), fused: bool | None = None, state: "TrainState | None" = None) -> History:
    """Train ``net`` in place by gradient descent and return its History.

    Every update is  w' = w - (eta/m) sum_{j=1..m} dC_{X_j}/dw  (likewise b) over a batch of m
    examples: m = n for ``method="batch"`` (the exact gradient), m = 1 for ``"stochastic"``, and
    m = ``batch_size`` (default 10) for ``"minibatch"``. An epoch is n examples seen.

    Parameters
    ----------
    net : a ``Network``; its parameters are updated in place (``net.params`` is reassigned).
    X, Y : inputs (n, d) and targets: integer labels (n,) or arrays (n, k). X may be data on disk
        (``sgdlab.data.open_npy``): batches then read only their rows and memory stays bounded.
    lr : eta > 0, or a schedule ``lr(t) -> eta_t`` of the update count t (see ``sgdlab.schedules``).
    sampling : "reshuffle" (default), "shuffle_once", "replacement" or "sequential"; see ``sgdlab.sampling``.
    momentum, nesterov, weight_decay : SGD options (off by default); see ``sgdlab.optim``.
    seed : seeds the "sampling" stream (initial weights come from the network's own seed).
    validation : optional (X_val, Y_val), evaluated after every epoch.
    record_updates : also keep one record per update (with the batch cost before the update).
    eval_train : compute the full training-set cost after every epoch (default True).
    callbacks : ``Callback`` objects (``on_epoch_end``, ``on_update_end``) or callables ``cb(record)``
        called after every epoch record; raising ``StopTraining`` ends training early.
    state : a ``TrainState`` to continue from and keep up to date (``epochs`` is then the total to
        reach, counting the epochs already done); a checkpoint saves it for an exact resume.
    fused : None picks the BLAS-fused fast path where it applies and pays (NumPy, momentum 0,
        batches of at most ``optim.FUSED_MAX_BATCH`` rows); False forces the reference path;
        True demands the fast path.

    Raises
    ------
    DivergenceError : a NaN/inf cost; ``net`` is left with the parameters of the last epoch whose
        cost was finite.

    Example
    -------
    >>> from sgdlab import Network, fit
    >>> import numpy as np
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]]); y = np.array([0, 1, 1, 0])
    >>> net = Network([2, 8, 2], seed=1)
    >>> h = fit(net, X, y, method="batch", lr=3.0, epochs=3, seed=0)
    >>> [r["epoch"] for r in h.epochs]
    [0, 1, 2, 3]
    """
    xp = net.xp
    data = _TrainingData.prepare(net, X, Y, validation)
    n = data.n
    m = resolve_batch_size(method, batch_size, n)
    epochs = check_int(epochs, "epochs", 1)
    check_choice(sampling, "sampling", ORDERS)
    if method == "batch" and sampling == "replacement":
        raise ValueError("method='batch' uses every example once per update; sampling='replacement' does not apply")
    schedule = lr if callable(lr) else as_schedule(check_positive(lr, "learning rate lr"))
    check_fraction(momentum, "momentum")
    check_fraction(weight_decay, "weight_decay", high=float("inf"))
    opt = sgd(schedule, momentum, nesterov, weight_decay)
    can_fuse = is_numpy(xp) and momentum == 0
    if fused and not can_fuse:
        raise ValueError("fused=True needs the NumPy backend and momentum=0")
    fused = (can_fuse and m <= FUSED_MAX_BATCH) if fused is None else bool(fused)
    # how one update is made: the full gradient chunk by chunk (batch GD on data on disk), the
    # BLAS-fused step, or the reference chain gradient -> optimizer -> apply_updates
    mode = "chunked" if data.on_disk and m == n else "fused" if fused else "reference"

    config = {"method": method, "batch_size": m, "n": n, "epochs": epochs,
              "lr": lr if not callable(lr) else getattr(lr, "__name__", "schedule"),
              "sampling": sampling if method != "batch" else "full", "momentum": momentum, "nesterov": nesterov,
              "weight_decay": weight_decay, "seed": seed if not isinstance(seed, np.random.Generator) else "generator",
              "fused": mode == "fused", "network": net.describe()}
    state = state if state is not None else TrainState()
    if state.rng is None:
        state.rng = generator(seed, "sampling")
    if state.history is None:
        state.history = History(config=config)
    else:
        state.history.config.update(config)
    if state.opt_state is None:
        state.opt_state = opt.init(net.params)
    sampler = BatchSampler(n, m, "sequential" if method == "batch" else sampling, state.rng)
    sampler.fixed = state.fixed
    history = state.history

    def record(epoch: int, eta, partial: bool = False) -> dict:
        r = {"epoch": epoch, "updates": state.step, "examples_seen": state.seen, "train_seconds": state.seconds,
             "lr": eta, **data.evaluate(net, train=eval_train)}
        if partial:
            r["partial"] = True
        history.epochs.append(r)
        return r

    def diverged(where: str, eta, cost):
        net.params = good
        last = history.epochs[-1]
        raise DivergenceError(
            f"training diverged {where} with lr={eta:g}: the cost became {cost}. The network keeps the "
            f"parameters from the end of epoch {last['epoch']}, the last with a finite cost; try a smaller lr.")

    full = m == n
    on_epoch = [getattr(cb, "on_epoch_end", None) or cb for cb in callbacks
                if callable(getattr(cb, "on_epoch_end", None) or cb)]
    on_update = [cb.on_update_end for cb in callbacks if callable(getattr(cb, "on_update_end", None))]
    per_update = record_updates or bool(on_update)
    errstate = (lambda: np.errstate(all="ignore")) if is_numpy(xp) else contextlib.nullcontext
    blas_guard = scipy_blas_single_threaded if mode == "fused" else contextlib.nullcontext
    good = net.copy_params()
    eta, stopped = None, False
    while history.epochs and history.epochs[-1].get("partial"):
        history.epochs.pop()  # a record of an interrupted epoch is superseded by the epoch's real end
    try:
        if not history.epochs:
            r0 = record(0, None)
            for cb in on_epoch:
                cb(r0)
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.order is None:
                state.order, state.position = sampler.epoch_order(), 0
                state.fixed = sampler.fixed
            batches = sampler.split(state.order)
            if data.on_disk and not full:  # data on disk: read the epoch's next batches ahead, in the background
                data.X.prefetch(batches[state.position:])
            first_update = state.step + 1
            with errstate(), blas_guard():
                t0 = time.perf_counter()
                for k in range(state.position, len(batches)):
                    Xb, Tb = (data.X, data.T) if full else data.batch(batches[k])
                    eta = schedule(state.step)
                    if not (eta > 0 and math.isfinite(eta)):
                        raise ValueError(f"the learning-rate schedule gave lr={eta!r} at update {state.step}; it must be finite and > 0")
                    batch_cost = _update(mode, net, opt, state, data, Xb, Tb, eta, weight_decay)
                    state.step += 1
                    state.seen += Xb.shape[0]
                    state.position = k + 1
                    if per_update:  # the clock stops while records are made and callbacks run
                        state.seconds += time.perf_counter() - t0
                        u = {"update": state.step, "epoch": epoch, "examples_seen": state.seen,
                             "train_seconds": state.seconds, "lr": eta, "batch_size": Xb.shape[0]}
                        if record_updates:
                            u["batch_cost"] = batch_cost()
                            history.updates.append(u)
                            if not math.isfinite(u["batch_cost"]):
                                diverged(f"at update {state.step} (epoch {epoch})", eta, u["batch_cost"])
                        try:
                            for cb in on_update:
                                cb(u)
                        except StopTraining:
                            stopped = True
                            break
                        t0 = time.perf_counter()
                if not stopped:
                    state.seconds += time.perf_counter() - t0
            if stopped and state.position < len(batches):
                r = record(epoch, eta, partial=True)
            else:
                state.epoch, state.order, state.position = epoch, None, 0
                r = record(epoch, eta)
            cost = r.get("train_cost", r.get("val_cost"))
            if cost is not None and not math.isfinite(cost):
                history.epochs.pop()
                diverged(f"in epoch {epoch} (updates {first_update}-{state.step})", eta, cost)
            good = net.copy_params()
            if stopped:
                history.config["stopped_at_update"] = state.step
                break
            for cb in on_epoch:
                cb(r)
    except StopTraining:
        history.config["stopped_at_update"] = state.step
    return history


def _update(mode: str, net, opt, state, data, Xb, Tb, eta: float, weight_decay: float):
    """Make one parameter update; return a function giving the batch's cost before it."""
    if mode == "chunked":
        grads, cost = net._chunked_gradient(data.X, data.T)
        updates, state.opt_state = opt.update(grads, state.opt_state, net.params)
        net.params = apply_updates(net.params, updates)
        return lambda: cost
    if mode == "fused":
        acts, _, z = fused_sgd_step(net, Xb, Tb, eta, weight_decay)
    else:
        acts, deltas, z = net._backprop(Xb, Tb)
        updates, state.opt_state = opt.update(net._gradient_from(acts, deltas), state.opt_state, net.params)
        net.params = apply_updates(net.params, updates)
    return lambda: net._batch_cost(acts, z, Tb)


@dataclass
class _TrainingData:
    """The training (and validation) data, checked once and held in the network's namespace and dtype."""

    X: object
    T: object
    labels: object
    n: int
    on_disk: bool
    val: tuple | None = None  # (X_val, T_val, labels_val)

    @classmethod
    def prepare(cls, net, X, Y, validation=None) -> "_TrainingData":
        xp = net.xp
        X = check_X(X, net.sizes[0])
        n, on_disk = X.shape[0], is_out_of_core(X)
        T, labels = check_Y(Y, n, net.sizes[-1])
        val = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (X_val, Y_val)")
            Xv = check_X(validation[0], net.sizes[0], name="X_val")
            Tv, labels_v = check_Y(validation[1], Xv.shape[0], net.sizes[-1], name="Y_val")
            val = (to_backend(Xv, xp, net.dtype), to_backend(Tv, xp, net.dtype),
                   None if labels_v is None else to_backend(labels_v, xp))
        X, T = to_backend(X, xp, net.dtype), to_backend(T, xp, net.dtype)
        if is_numpy(xp):
            X, T = (X if on_disk else np.ascontiguousarray(X)), np.ascontiguousarray(T)
        return cls(X, T, None if labels is None else to_backend(labels, xp), n, on_disk, val)

    def batch(self, idx):
        """The rows ``idx`` of X and T (only those rows are read from data on disk)."""
        if isinstance(self.X, np.ndarray) or self.on_disk:
            return self.X.take(idx, axis=0), self.T.take(idx, axis=0)
        xp = namespace(self.T)
        i = xp.asarray(idx)
        return xp.take(self.X, i, axis=0), xp.take(self.T, i, axis=0)

    def evaluate(self, net, train: bool = True) -> dict:
        out = {}
        if train:
            out["train_cost"], out["train_accuracy"] = net._evaluate(self.X, self.T, self.labels)
        if self.val is not None:
            out["val_cost"], out["val_accuracy"] = net._evaluate(*self.val)
        return out


@dataclass
class TrainState:
    """Everything ``fit`` needs to continue exactly where it stopped; ``fit`` keeps it up to date.

    Pass the same TrainState to successive ``fit`` calls (or save it with ``sgdlab.checkpoint``
    and load it later) and training continues bit for bit as if it had never stopped: the
    counters, the order of the epoch in progress and how far into it training got, the sampling
    generator, shuffle_once's permutation, the optimizer's state and the history.
    """

    epoch: int = 0  # epochs completed
    step: int = 0  # updates made
    seen: int = 0  # examples used
    seconds: float = 0.0  # training seconds
    position: int = 0  # batches of the epoch in progress already used
    order: np.ndarray | None = None  # index order of the epoch in progress (None between epochs)
    fixed: np.ndarray | None = None  # shuffle_once's permutation, once drawn
    rng: np.random.Generator | None = None  # the sampling stream
    opt_state: object = None  # the optimizer's state (momentum buffers, step count)
    history: History | None = None


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` cleanly after the current update (or epoch)."""


class Callback:
    """Hooks into ``fit``; override what you need. A plain callable counts as ``on_epoch_end``.

    ``on_epoch_end(record)`` gets each epoch record (epoch 0 included); ``on_update_end(record)``
    gets {update, epoch, examples_seen, train_seconds, lr, batch_size} after every update, with the
    network already updated. The training clock is stopped while callbacks run. Raise
    ``StopTraining`` to end training; the epoch in progress then gets its record.
    """

    def on_epoch_end(self, record: dict) -> None:
        pass

    def on_update_end(self, record: dict) -> None:
        pass
