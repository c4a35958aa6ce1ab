"""fit(): batch, stochastic and mini-batch gradient descent as one loop.

The loop composes: sampler -> stepper (a block of updates) -> records -> callbacks. It does no
maths of its own and prints nothing; how updates are made is the stepper's business
(``sgdlab.steppers``), progress bars and files are callbacks and CLI business.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import array_api_compat
import numpy as np

from . import kernels
from .backend import is_numpy, namespace
from .optim import GradientTransformation, sgd, sgd_state
from .rng import Seed, generator
from .sampling import ORDERS, BatchSampler
from .schedules import Schedule, as_schedule, constant, schedule_name
from .steppers import FULL_BATCH, StepContext, select_stepper
from .validation import check_choice, check_int, check_positive, check_X, check_Y, is_out_of_core

if TYPE_CHECKING:
    from .network import Network

METHODS = ("batch", "stochastic", "minibatch")

EPOCH_FIELDS = {
    "epoch": "epochs completed (0 is the state before training)",
    "updates": "parameter updates so far",
    "examples_seen": "examples used in gradient estimates so far",
    "train_seconds": "wall seconds spent in updates so far (sampling, gradient, step); evaluation excluded",
    "lr": "learning rate of the last update",
    "mean_batch_cost": "C over each batch before its update, averaged over this epoch's updates weighted by batch "
                       "size (the batches' cost sums / the epoch's examples): Keras' loss, scikit-learn's "
                       "loss_curve_. Made from the updates' own forward passes, no evaluation; a mean over "
                       "parameters that changed during the epoch, not the cost at its end (method='batch': the "
                       "exact training cost before the epoch's update). Every epoch after 0; absent where the "
                       "epoch's running sum was lost (resumed from a checkpoint written before 0.3.0) and under "
                       "local SGD on several ranks",
    "train_cost": "C over the whole training set with the parameters at the end of the epoch: by default "
                  "(eval_train=None) only at epoch 0, at epoch `epochs` and in the record of an epoch interrupted "
                  "mid-way (a run that a callback stops after an epoch's record, as EarlyStopping does, ends "
                  "without one); with eval_train=True in every epoch that evaluates (every eval_every-th, the "
                  "first and the last); never with eval_train=False",
    "train_accuracy": "accuracy on the whole training set at the end of the epoch (class labels only; in the "
                      "records that have train_cost)",
    "val_cost": "C over the validation set at the end of the epoch (epochs that evaluate: every eval_every-th, "
                "the first and the last)",
    "val_accuracy": "accuracy on the validation set at the end of the epoch (epochs that evaluate)",
}
UPDATE_FIELDS = {
    "update": "index of this update (1-based)",
    "epoch": "epoch this update belongs to (1-based)",
    "examples_seen": "examples used so far, this batch included",
    "train_seconds": "wall seconds spent in updates so far, this one included",
    "lr": "learning rate of this update",
    "batch_size": "examples in this batch",
    "batch_cost": "C over this batch, before the update (a noisy estimate, not the training cost)",
    "mean_batch_cost": "the epoch's mean_batch_cost so far: over this epoch's updates up to this one included "
                       "(absent where the epoch record's would be)",
}
EVAL_TRAIN_MODES = {None: "ends", True: "every", False: "never"}
"""``history.config["eval_train"]`` for each ``fit(eval_train=...)``: when the training set is evaluated."""


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

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n")

    def to_csv(self, path: str | Path, which: str = "epochs") -> None:
        rows = self.epochs if which == "epochs" else self.updates
        names = list(EPOCH_FIELDS if which == "epochs" else UPDATE_FIELDS)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(epochs=list(d.get("epochs", [])), updates=list(d.get("updates", [])),
                   config=dict(d.get("config", {})))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def resolve_batch_size(method: str, batch_size: int | None, n: int) -> int:
    """The batch size each update uses: n for batch GD, 1 for SGD, m for mini-batch (default min(10, n))."""
    check_choice(method, "method", METHODS)
    if method == "batch":
        if batch_size not in (None, n):
            raise ValueError(f"method='batch' uses all n={n} examples per update; batch_size must be {n} or None, "
                             f"got {batch_size}")
        return n
    if method == "stochastic":
        if batch_size not in (None, 1):
            raise ValueError(f"method='stochastic' uses one example per update; batch_size must be 1 or None, "
                             f"got {batch_size}")
        return 1
    return min(10, n) if batch_size is None else check_int(batch_size, "batch_size", 1, n)


def fit(net: Network, X: Any, Y: Any, *, method: str = "minibatch", batch_size: int | None = None,
        lr: float | Schedule | None = None, epochs: int = 30, sampling: str = "reshuffle", momentum: float = 0.0,
        nesterov: bool = False, weight_decay: float = 0.0, optimizer: GradientTransformation | None = None,
        seed: Seed = None, validation: tuple | None = None, record_updates: bool = False,
        eval_train: bool | None = None, eval_every: int = 1, callbacks: Iterable[Any] = (),
        stepper: str | None = None, fused: bool | None = None, state: TrainState | None = None,
        validation_split: float | None = None, comm: Any = None) -> History:
    """Train ``net`` in place by gradient descent and return its History.

    Every update is  w' = w - (eta/m) sum_{j=1..m} dC_{X_j}/dw  (likewise b) over a batch of m
    examples: m = n for ``method="batch"`` (the exact gradient), m = 1 for ``"stochastic"``, and
    m = ``batch_size`` (default min(10, n)) for ``"minibatch"``. An epoch is n examples seen.

    Parameters
    ----------
    net : a ``Network``; its parameters are updated (in place or by reassigning ``net.params``).
    X, Y : inputs (n, d) and targets: integer labels (n,) or arrays (n, k). X may be data on disk
        (``sgdlab.data.open_npy``): batches then read only their rows and memory stays bounded.
    lr : eta > 0 (default 3.0), or a schedule ``lr(t) -> eta_t`` of the update count t (see
        ``sgdlab.schedules``; its name goes into ``history.config["lr"]``).
    sampling : "reshuffle" (default), "shuffle_once", "replacement" or "sequential"; see ``sgdlab.sampling``.
    momentum, nesterov, weight_decay : shortcuts for ``optimizer=sgdlab.optim.sgd(lr, momentum,
        nesterov, weight_decay)`` (off by default).
    optimizer : a ``GradientTransformation`` (``sgdlab.optim``); give it instead of lr/momentum/
        nesterov/weight_decay. One made by ``optim.sgd`` can run on every stepper; any other runs on
        the reference stepper, and its records carry lr None.
    seed : seeds the "sampling" stream (initial weights come from the network's own seed).
    validation : optional (X_val, Y_val), evaluated after the epochs that evaluate.
    validation_split : a fraction of (X, Y) set aside as validation data instead (stratified for
        class labels; see ``sgdlab.data.dataset.split_validation``); not with ``validation``.
    record_updates : also keep one record per update (with the batch cost before the update).
    eval_train : when the exact training cost and accuracy (a full forward pass over the n rows, not
        counted in ``train_seconds``) go into the epoch records. None (default): only at epoch 0, the
        last epoch and the record of an epoch interrupted mid-way; True: in every epoch that evaluates
        (``eval_every``); False: never. Every epoch record has ``mean_batch_cost`` whatever this says:
        the batch costs the updates compute anyway, averaged over the epoch (see ``EPOCH_FIELDS``).
        ``history.config["eval_train"]`` records "ends", "every" or "never".
    eval_every : evaluate the validation set (and, with ``eval_train=True``, the training set) after
        every ``eval_every``-th epoch, and always after epoch 0 and the last epoch (default 1: every
        epoch). The evaluation is a full forward pass over the data and is not counted in ``train_seconds``.
    callbacks : ``Callback`` objects (``on_train_begin``, ``on_epoch_end``, ``on_update_end``,
        ``on_train_end``) or callables ``cb(record)`` called after every epoch record; raising
        ``StopTraining`` ends training early. ``on_update_end`` is called only where a callback
        overrides it, every ``update_interval`` updates.
    stepper : how updates are made: None picks once from the backend, data, batch size and
        optimizer; or a name from ``sgdlab.steppers.available()`` ("reference", "fused",
        "compiled", "chunked", ...). ``fused`` is the older switch: True = "fused", False = "reference".
    state : a ``TrainState`` to continue from and keep up to date (``epochs`` is then the total to
        reach, counting the epochs already done); a checkpoint saves it for an exact resume.
    comm : train one model on several MPI ranks: an mpi4py communicator or a ``sgdlab.distributed.World``
        (reduction "allreduce" or "exact", local SGD's ``sync_every``); every rank calls ``fit`` alike and
        starts from rank 0's parameters and state (see ``sgdlab.distributed``). None: one process.

    Raises
    ------
    DivergenceError : a NaN/inf cost or parameter; ``net`` is left with the parameters of the last
        epoch that ended finite. A schedule giving eta <= 0 or NaN raises ValueError, also leaving
        those parameters.

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
    if validation_split:
        from .data.dataset import split_validation

        if validation is not None:
            raise ValueError("give validation=(X_val, Y_val) or validation_split, not both")
        X, Y, validation = split_validation(X, Y, validation_split, seed)
    data = _TrainingData.prepare(net, X, Y, validation)
    m = resolve_batch_size(method, batch_size, data.n)
    epochs, eval_every = check_int(epochs, "epochs", 1), check_int(eval_every, "eval_every", 1)
    if not (eval_train is None or isinstance(eval_train, bool)):
        raise TypeError(f"eval_train must be None (the ends only), True (every epoch that evaluates) or False "
                        f"(never); got {eval_train!r}")
    check_choice(sampling, "sampling", ORDERS)
    if method == "batch" and sampling == "replacement":
        raise ValueError("method='batch' uses every example once per update; sampling='replacement' does not apply")
    opt = make_optimizer(optimizer, lr, momentum, nesterov, weight_decay)
    hooks = _Hooks(callbacks)
    if stepper is not None and fused is not None:
        raise ValueError("give stepper= or fused=, not both")
    world = None
    if comm is not None:  # several ranks (or the exact reduction in one): the MPI stepper makes the updates
        from .distributed import as_world

        world = as_world(comm)
        if stepper not in (None, "mpi") or fused is not None:
            raise ValueError("with comm= the 'mpi' stepper makes the updates; do not give stepper= or fused=")
    chosen = select_stepper(StepContext(net, data, opt, m, comm=world), stepper if fused is None else
                            ("fused" if fused else "reference"))
    hyper = opt.hyper
    config = {"method": method, "batch_size": m, "n": data.n, "epochs": epochs,
              "lr": schedule_name(hyper.lr) if hyper else "optimizer",
              "sampling": sampling if method != "batch" else "full",
              "momentum": hyper and hyper.momentum, "nesterov": hyper and hyper.nesterov,
              "weight_decay": hyper and hyper.weight_decay, "eval_every": eval_every,
              "eval_train": EVAL_TRAIN_MODES[eval_train], "stepper": chosen.name,
              "seed": seed if not isinstance(seed, np.random.Generator) else "generator", "network": net.describe()}
    if world is not None:
        config["distributed"] = world.describe()
    state = state if state is not None else TrainState()
    if state.rng is None:
        state.rng = generator(seed, "sampling")
    if state.history is None:
        state.history = History(config=config)
    else:
        state.history.config.update(config)
    if state.opt_state is None:
        state.opt_state = opt.init(net.params)
    if hyper is not None:  # one step counter: the optimizer's count is TrainState.step
        state.opt_state = sgd_state(state.opt_state, state.step)
    state.history.config["stepper_info"] = chosen.prepare()  # compilation, before the clock starts
    if world is not None:  # ranks that differ are refused; all start from rank 0's parameters and state
        chosen.begin(state, config)  # type: ignore[attr-defined]  # only the MPI stepper runs with a world
        state.batch_cost_sum, state.batch_cost_examples = world.bcast((state.batch_cost_sum,
                                                                       state.batch_cost_examples))
    sampler = BatchSampler(data.n, getattr(chosen, "sample_size", m), "sequential" if method == "batch" else sampling,
                           state.rng)
    sampler.fixed = state.fixed
    loop = _Loop(net, data, chosen, state, sampler, hooks, record_updates, eval_train, eval_every, epochs)
    return loop.run()


def make_optimizer(optimizer: GradientTransformation | None, lr: float | Schedule | None, momentum: float = 0.0,
                   nesterov: bool = False, weight_decay: float = 0.0) -> GradientTransformation:
    """``optimizer`` as given, or ``sgd(lr, momentum, nesterov, weight_decay)`` from the shortcuts."""
    if optimizer is not None:
        if not isinstance(optimizer, GradientTransformation):
            raise TypeError(f"optimizer must be a GradientTransformation (see sgdlab.optim); "
                            f"got {type(optimizer).__name__}")
        if lr is not None or momentum != 0 or nesterov is not False or weight_decay != 0:
            raise ValueError("give either optimizer= or lr/momentum/nesterov/weight_decay, not both "
                             "(e.g. optimizer=sgdlab.optim.sgd(0.1, momentum=0.9))")
        return optimizer
    lr = 3.0 if lr is None else lr
    schedule = lr if callable(lr) else as_schedule(check_positive(lr, "learning rate lr"))
    return sgd(schedule, momentum, nesterov, weight_decay)


class _Hooks:
    """The callbacks, sorted by hook; a per-update hook only where a callback overrides it."""

    def __init__(self, callbacks):
        if callbacks is None:
            callbacks = ()
        if isinstance(callbacks, Callback) or callable(callbacks):
            callbacks = [callbacks]
        try:
            callbacks = list(callbacks)
        except TypeError:
            raise TypeError(f"callbacks must be a list of Callback objects or callables; got {callbacks!r}") from None
        self.epoch, self.update, self.begin, self.end = [], [], [], []
        for cb in callbacks:
            if not (isinstance(cb, Callback) or callable(cb) or callable(getattr(cb, "on_epoch_end", None))):
                raise TypeError(f"callbacks must be Callback objects or callables cb(record); got {cb!r}")
            on_epoch = _hook(cb, "on_epoch_end") or (None if hasattr(cb, "on_epoch_end") else cb)
            if on_epoch is not None:
                self.epoch.append(on_epoch)
            for name, where in (("on_train_begin", self.begin), ("on_train_end", self.end)):
                if _hook(cb, name):
                    where.append(_hook(cb, name))
            if _hook(cb, "on_update_end"):
                k = getattr(cb, "update_interval", 1)
                self.update.append((check_int(k, f"{type(cb).__name__}.update_interval", 1), cb.on_update_end))
        self.intervals = sorted({k for k, _ in self.update})


def _hook(cb, name: str):
    """cb's method ``name`` if it has one of its own (a Callback's inherited no-op does not count)."""
    method = getattr(cb, name, None)
    if not callable(method):
        return None
    if isinstance(cb, Callback) and getattr(type(cb), name, None) is getattr(Callback, name):
        return None
    return method


class _Loop:
    """The epochs of one ``fit``: sampler -> stepper blocks -> records -> callbacks."""

    def __init__(self, net, data, stepper, state, sampler, hooks, record_updates, eval_train, eval_every, epochs):
        self.net, self.data, self.stepper, self.state, self.sampler = net, data, stepper, state, sampler
        self.hooks, self.record_updates, self.eval_train = hooks, record_updates, eval_train
        self.eval_every, self.epochs = eval_every, epochs
        # the batch costs a stepper returns are the global batch's, except under local SGD on several ranks
        # (each rank's own example's, None where a rank had none): no mean_batch_cost there
        world = getattr(stepper, "world", None)
        self.mean_costs = not (getattr(stepper, "local_sgd", False) and world is not None and world.size > 1)
        self.history, self.opt, self.eta = state.history, stepper.opt, None
        # a stepper may share evaluation among processes (the MPI stepper); else the data evaluates itself
        self.evaluate = getattr(stepper, "evaluate", data.evaluate)
        hyper = self.opt.hyper
        self.schedule = hyper.lr if hyper is not None else None

    def run(self) -> History:
        history = self.history
        while history.epochs and history.epochs[-1].get("partial"):
            history.epochs.pop()  # a record of an interrupted epoch is superseded by the epoch's real end
        self.good = self.net.copy_params()
        with self.stepper.session():
            self._run()
        for hook in self.hooks.end:
            hook(history)
        return history

    def _run(self) -> None:
        history, state = self.history, self.state
        try:
            for hook in self.hooks.begin:
                hook(history.config)
            if not history.epochs:
                self.epoch_end(self.record(0))
            for epoch in range(state.epoch + 1, self.epochs + 1):
                if self.run_epoch(epoch):
                    history.config["stopped_at_update"] = state.step
                    break
        except StopTraining:
            history.config["stopped_at_update"] = state.step

    def run_epoch(self, epoch: int) -> bool:
        """One epoch (or what is left of it); True when a callback stopped training inside it."""
        state, t0 = self.state, time.perf_counter()
        if state.order is None:
            state.order, state.position = self.sampler.epoch_order(), 0
            state.fixed = self.sampler.fixed
        batches = self.sampler.split(state.order)
        if len(batches) == 1 and self.sampler.order != "replacement":
            batches = [FULL_BATCH]  # every row once: the rows' order does not matter
        if self.data.on_disk and batches[0] is not FULL_BATCH and getattr(self.stepper, "reads_batches", True):
            self.data.X.prefetch(batches[state.position:])  # a background reader follows the epoch's known order
        state.seconds += time.perf_counter() - t0
        first, stopped = state.step + 1, False
        while state.position < len(batches) and not stopped:
            stopped = self.block(epoch, batches[state.position:state.position + self.block_length(len(batches))])
        partial = state.position < len(batches)
        if not partial:
            state.epoch, state.order, state.position = epoch, None, 0
        r = self.record(epoch, partial)
        if not partial:  # the next epoch's mean_batch_cost starts from nothing
            state.batch_cost_sum, state.batch_cost_examples = 0.0, 0
        self.check(r, f"in epoch {epoch} (updates {first}-{state.step})")
        self.good = self.net.copy_params()
        if not stopped:
            self.epoch_end(r)
        return stopped

    def block_length(self, n_batches: int) -> int:
        """Updates until the next record or callback that needs the loop back, or the epoch's end."""
        left = n_batches - self.state.position
        if self.record_updates:
            return 1
        if self.hooks.intervals:
            return min([left] + [k - self.state.step % k for k in self.hooks.intervals])
        return left

    def etas(self, k: int):
        """The learning rates of the next k updates, from the schedule at the one step counter."""
        if self.schedule is None:
            return [None] * k
        if isinstance(self.schedule, constant):
            return [self.schedule.params["lr"]] * k
        return [self.schedule(self.state.step + i) for i in range(k)]

    def block(self, epoch: int, block: list) -> bool:
        """Make a block of updates, then its records and callbacks; True when a callback stops training."""
        state, stepper = self.state, self.stepper
        etas = self.etas(len(block))
        bad = next((i for i, e in enumerate(etas) if e is not None and not (e > 0 and math.isfinite(e))), None)
        if bad is not None:
            block, etas, bad_eta = block[:bad], etas[:bad], etas[bad]
        t0 = time.perf_counter()
        with stepper.guard():  # the batch costs are always asked for: mean_batch_cost is made of them
            costs = stepper.run(state, block, etas, True) if block else None
            stepper.sync()
        state.seconds += time.perf_counter() - t0
        sizes = [self.data.n if idx is FULL_BATCH else len(idx) for idx in block]
        state.seen += sum(sizes)
        state.position += len(block)
        self.add_costs(costs, sizes)
        self.eta = etas[-1] if etas else self.eta
        u = self.update_record(epoch, sizes[-1]) if block else None  # the block's last update
        if u is not None and costs is not None and costs[-1] is not None:  # None: a rank had no example
            u["batch_cost"] = float(costs[-1])
            if (mean := self.mean_batch_cost()) is not None:
                u["mean_batch_cost"] = mean
        if self.record_updates and u is not None:
            self.history.updates.append(u)
            if not math.isfinite(u.get("batch_cost", 0.0)):
                self.diverged(f"at update {state.step} (epoch {epoch})", f"the batch cost became {u['batch_cost']}")
        if bad is not None:
            self.net.params = self.good
            raise ValueError(f"the learning-rate schedule gave lr={bad_eta!r} at step t={state.step} "
                             f"(update {state.step + 1}); "
                             f"it must be finite and > 0. {self.kept()}")
        due = [hook for k, hook in self.hooks.update if state.step % k == 0]
        if due and u is not None:
            try:
                for hook in due:
                    hook(u)
            except StopTraining:
                return True
        return False

    def add_costs(self, costs, sizes: list) -> None:
        """Add a block's (batch cost x batch size) to the epoch's sum, one update at a time in update order,
        so the sum is the same however the epoch was cut into blocks (or interrupted and resumed)."""
        state = self.state
        state.batch_cost_examples += sum(sizes)
        if costs is None or state.batch_cost_sum is None or not self.mean_costs:
            return
        total = state.batch_cost_sum
        for c, m in zip(costs, sizes, strict=True):
            total += float(c) * m
        state.batch_cost_sum = total

    def mean_batch_cost(self) -> float | None:
        """The epoch's mean batch cost so far, or None where it is not known (see EPOCH_FIELDS)."""
        s = self.state
        if not self.mean_costs or s.batch_cost_sum is None or not s.batch_cost_examples:
            return None
        return s.batch_cost_sum / s.batch_cost_examples

    def update_record(self, epoch: int, batch_size: int) -> dict:
        s = self.state
        return {"update": s.step, "epoch": epoch, "examples_seen": s.seen, "train_seconds": s.seconds,
                "lr": self.eta, "batch_size": batch_size}

    def record(self, epoch: int, partial: bool = False) -> dict:
        s = self.state
        ends = epoch in (0, self.epochs) or partial
        evaluate = ends or epoch % self.eval_every == 0  # the validation set (and the training set if True)
        train = evaluate if self.eval_train else (ends and self.eval_train is None)
        r = {"epoch": epoch, "updates": s.step, "examples_seen": s.seen, "train_seconds": s.seconds, "lr": self.eta}
        if epoch > 0 and (mean := self.mean_batch_cost()) is not None:
            r["mean_batch_cost"] = mean
        if train or (evaluate and self.data.val is not None):
            r.update(self.evaluate(self.net, train=train))
        if partial:
            r["partial"] = True
        self.history.epochs.append(r)
        return r

    def epoch_end(self, r: dict) -> None:
        for hook in self.hooks.epoch:
            hook(r)

    def check(self, r: dict, where: str) -> None:
        """Divergence: a non-finite cost (the epoch's mean batch cost or an evaluated one), or non-finite
        parameters (also without any cost)."""
        for key, what in (("mean_batch_cost", "mean batch cost"), ("train_cost", "training cost"),
                          ("val_cost", "validation cost")):
            cost = r.get(key)
            if cost is not None and not math.isfinite(cost):
                self.history.epochs.pop()
                self.diverged(where, f"the {what} became {cost}")
        if not _finite(self.net.params, self.net.xp):
            self.history.epochs.pop()
            self.diverged(where, "non-finite in the parameters")

    def kept(self) -> str:
        last = self.history.epochs[-1]["epoch"] if self.history.epochs else self.state.epoch
        return f"The network keeps the parameters from the end of epoch {last}, the last with a finite cost"

    def diverged(self, where: str, what: str):
        self.net.params = self.good
        lr = "its optimizer" if self.eta is None else f"lr={self.eta:g}"
        raise DivergenceError(f"training diverged {where} with {lr}: {what}. {self.kept()}; try a smaller lr.")


def _finite(params, xp) -> bool:
    """Whether every parameter is finite (one reduction per array)."""
    return all(bool(xp.all(xp.isfinite(p))) for Wb in params for p in Wb)


@dataclass
class _TrainingData:
    """The training (and validation) data, checked once and held in the network's namespace and dtype."""

    X: Any  # arrays of the network's namespace (NumPy, CuPy, torch, ...) or a memory-mapped file
    T: Any
    labels: Any
    n: int
    on_disk: bool
    val: tuple | None = None  # (X_val, T_val, labels_val)

    @classmethod
    def prepare(cls, net, X, Y, validation=None) -> _TrainingData:
        xp = net.xp
        X = check_X(X, net.sizes[0])
        n, on_disk = X.shape[0], is_out_of_core(X)
        T, labels = check_Y(Y, n, net.sizes[-1], float_dtype=np.dtype(net.dtype_name))
        val = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (X_val, Y_val)")
            Xv = check_X(validation[0], net.sizes[0], name="X_val")
            Tv, labels_v = check_Y(validation[1], Xv.shape[0], net.sizes[-1], name="Y_val",
                                   float_dtype=np.dtype(net.dtype_name))
            val = (
                net._place(Xv, net.dtype),
                net._place(Tv, net.dtype),
                None if labels_v is None else net._place(labels_v),
            )
        # copied to the network's device once, here; batches are gathered there
        X, T = net._place(X, net.dtype), net._place(T, net.dtype)
        if is_numpy(xp):
            X, T = (X if on_disk else np.ascontiguousarray(X)), np.ascontiguousarray(T)
        return cls(X, T, None if labels is None else net._place(labels), n, on_disk, val)

    def batch(self, idx):
        """The rows ``idx`` of X and T (only those rows are read from data on disk)."""
        if isinstance(self.X, np.ndarray) or self.on_disk:
            return self.X.take(idx, axis=0), self.T.take(idx, axis=0)
        xp = namespace(self.T)
        i = xp.asarray(idx, device=array_api_compat.device(self.T))
        return xp.take(self.X, i, axis=0), xp.take(self.T, i, axis=0)

    def evaluate_sums(self, net, which: str = "train") -> tuple:
        """(cost_sum, correct or None, rows) over the training or validation set: what ranks reduce."""
        if which == "train":
            X, T, labels = self.X, self.T, self.labels
        else:
            assert self.val is not None, "no validation set"
            X, T, labels = self.val
        cost, correct = kernels.evaluate_sums(net.arch, net.params, X, T, labels, net.xp)
        return cost, correct, X.shape[0]

    def evaluate(self, net, train: bool = True) -> dict:
        """{train,val}_{cost,accuracy}: the means of ``evaluate_sums``."""
        out = {}
        for which in ("train",) * bool(train) + ("val",) * (self.val is not None):
            cost, correct, rows = self.evaluate_sums(net, which)
            out[f"{which}_cost"], out[f"{which}_accuracy"] = cost / rows, None if correct is None else correct / rows
        return out


@dataclass
class TrainState:
    """Everything ``fit`` needs to continue exactly where it stopped; ``fit`` keeps it up to date.

    Pass the same TrainState to successive ``fit`` calls (or save it with ``sgdlab.checkpoint``
    and load it later) and training continues bit for bit as if it had never stopped: the
    counters, the order of the epoch in progress and how far into it training got, the sampling
    generator, shuffle_once's permutation, the optimizer's state and the history, and the running
    sum behind the epoch's ``mean_batch_cost``.
    """

    epoch: int = 0  # epochs completed
    step: int = 0  # updates made
    seen: int = 0  # examples used
    seconds: float = 0.0  # training seconds
    position: int = 0  # batches of the epoch in progress already used
    order: np.ndarray | None = None  # index order of the epoch in progress (None between epochs)
    fixed: np.ndarray | None = None  # shuffle_once's permutation, once drawn
    rng: np.random.Generator | None = None  # the sampling stream
    opt_state: Any = None  # the optimizer's state (momentum buffers, step count)
    history: History | None = None
    # the epoch in progress so far: sum of (batch cost before the update x batch size), None where it was lost
    # (resumed from a checkpoint that did not keep it), and the examples of its updates
    batch_cost_sum: float | None = 0.0
    batch_cost_examples: int = 0


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` cleanly after the current update (or epoch)."""


class Callback:
    """Hooks into ``fit``; override what you need. A plain callable counts as ``on_epoch_end``.

    ``on_train_begin(config)`` gets ``history.config`` before anything else; ``on_epoch_end(record)``
    gets each epoch record (epoch 0 included); ``on_update_end(record)`` gets {update, epoch,
    examples_seen, train_seconds, lr, batch_size, batch_cost, mean_batch_cost} (``UPDATE_FIELDS``)
    after every ``update_interval``-th update (counted by the step counter), with the network
    already updated; ``on_train_end(history)`` closes a run that ended normally or by
    ``StopTraining``. A hook is called only where a subclass overrides it: without an
    ``on_update_end`` of its own a callback costs the updates nothing (Keras does the same). The
    training clock is stopped while callbacks run. Raise ``StopTraining`` to end
    training; the epoch in progress then gets its record.
    """

    update_interval: int = 1

    def on_train_begin(self, config: dict) -> None:
        pass

    def on_epoch_end(self, record: dict) -> None:
        pass

    def on_update_end(self, record: dict) -> None:
        pass

    def on_train_end(self, history: History) -> None:
        pass
