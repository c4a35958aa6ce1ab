"""Callbacks for the edges of training: progress, metrics logs, checkpoints, signals.

``fit`` itself prints and writes nothing; the command line composes these.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
from pathlib import Path

from .train import EPOCH_FIELDS, Callback, StopTraining


class ProgressBar(Callback):
    """A Keras-style bar per epoch that moves within the epoch: updates done, examples per second
    and the epoch's mean batch cost so far (C over each batch before its update, averaged over the
    epoch's updates up to the last one shown: the update record's ``mean_batch_cost``), then at the
    epoch's end its ``mean_batch_cost``, the exact training cost where the record has one, and the
    validation numbers.

    Per-update work is kept small: ``update_interval = k`` asks the loop to call ``on_update_end``
    every k updates only (default: about 100 calls per epoch); a loop that calls it every update
    is fine too, the bar then skips the calls between multiples of k itself.
    """

    def __init__(self, epochs: int, updates_per_epoch: int, initial_epoch: int = 0, file=None,
                 update_interval: int | None = None):
        self.epochs, self.per_epoch, self.file = int(epochs), max(1, int(updates_per_epoch)), file or sys.stderr
        self.update_interval = update_interval or max(1, self.per_epoch // 100)
        self.bar, self.epoch = None, initial_epoch
        self._t0 = self._seen0 = None

    def _open(self, epoch: int):
        from tqdm import tqdm

        self.close()
        self.epoch = epoch
        self.bar = tqdm(total=self.per_epoch, unit="upd", desc=f"epoch {epoch}/{self.epochs}", file=self.file,
                        dynamic_ncols=True, leave=True)

    def on_update_end(self, r):
        if r["update"] % self.update_interval and r["update"] % self.per_epoch:
            return
        if self.bar is None or r["epoch"] != self.epoch:
            self._open(r["epoch"])
            self._t0, self._seen0 = r["train_seconds"], r["examples_seen"]
        done = r["update"] - (r["epoch"] - 1) * self.per_epoch
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        post = {}
        seconds = r["train_seconds"] - self._t0
        if seconds > 0:
            post["ex/s"] = f"{(r['examples_seen'] - self._seen0) / seconds:,.0f}"
        if r.get("mean_batch_cost") is not None:
            post["mean batch cost"] = f"{r['mean_batch_cost']:.4f}"
        elif r.get("batch_cost") is not None:
            post["batch cost"] = f"{r['batch_cost']:.4f}"
        self.bar.set_postfix(post, refresh=False)

    def on_epoch_end(self, r):
        if r["epoch"] == 0 or self.bar is None:
            return
        self.bar.update(self.bar.total - self.bar.n)
        post = {}
        for key, name in (("mean_batch_cost", "mean batch cost"), ("train_cost", "train cost"),
                          ("val_cost", "val cost"), ("val_accuracy", "val acc")):
            if r.get(key) is not None:
                post[name] = f"{r[key]:.4f}"
        self.bar.set_postfix(post)
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochPrinter(Callback):
    """One line per epoch on standard output (for logs, when no terminal shows a bar).

    "mean batch cost" is the record's ``mean_batch_cost`` (C over each batch before its update,
    averaged over the epoch); "train cost" the exact C over the whole training set after the epoch,
    printed only in the records that have it (by default epoch 0 and the last); then the
    validation numbers. The first call prints a line saying so.
    """

    def __init__(self):
        self._legend = True

    def on_epoch_end(self, r):
        if self._legend:
            print("mean batch cost: C over each batch before its update, averaged over the epoch; train cost: C "
                  "over the whole training set after the epoch (exact)", flush=True)
            self._legend = False
        parts = [f"epoch {r['epoch']:3d}", f"updates {r['updates']:7d}"]
        if r.get("mean_batch_cost") is not None:
            parts.append(f"mean batch cost {r['mean_batch_cost']:.5f}")
        if r.get("train_cost") is not None:
            parts.append(f"train cost {r['train_cost']:.5f}")
        if r.get("val_cost") is not None:
            acc = r.get("val_accuracy")
            parts += [f"validation cost {r['val_cost']:.5f}",
                      f"validation accuracy {'-' if acc is None else f'{acc:.4f}'}"]
        print("  ".join(parts), flush=True)


MONITORS = {"val_cost": "min", "val_accuracy": "max", "train_cost": "min", "train_accuracy": "max",
            "mean_batch_cost": "min"}
_NEEDS = {"val_cost": "validation data or validation_split", "val_accuracy": "validation data or validation_split",
          "train_cost": "fit(eval_train=True) (--eval-train every): by default the training set is evaluated at "
                        "the first and last epochs only",
          "train_accuracy": "fit(eval_train=True) (--eval-train every): by default the training set is evaluated at "
                            "the first and last epochs only",
          "mean_batch_cost": "batch costs averaged over whole epochs, which local SGD does not record"}


class _Plateau:
    """Tracks the best value of a monitored field and how many epochs since it improved.

    An epoch improves on the best when its value is better by more than ``min_delta``:
    value < best - min_delta for costs, value > best + min_delta for accuracies.
    ``mean_batch_cost`` starts with the first record that has it: epoch 0 never does (no update
    yet), nor an epoch that a resume completed from a checkpoint without the epoch's running sum;
    so the first record seen without it is skipped. Any other record without the monitored
    field is an error that says what would record it.
    """

    def __init__(self, monitor: str, min_delta: float, patience: int):
        from .validation import check_choice, check_int

        self.monitor = check_choice(monitor, "monitor", tuple(MONITORS))
        self.mode = MONITORS[monitor]
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be a number >= 0; got {min_delta!r}")
        self.min_delta, self.patience = float(min_delta), check_int(patience, "patience", 1)
        self.best, self.best_epoch, self.wait = None, None, 0
        self.seen = 0  # records seen

    def value(self, r):
        v = r.get(self.monitor)
        if v is None:
            raise ValueError(f"cannot monitor {self.monitor!r}: epoch {r.get('epoch')}'s record does not have it "
                             f"(it needs {_NEEDS[self.monitor]})")
        return v

    def step(self, r) -> bool | None:
        """Record epoch ``r``; True when it improved on the best, None when the record is skipped."""
        self.seen += 1
        if self.monitor == "mean_batch_cost" and r.get(self.monitor) is None and self.seen == 1:
            return None
        v = self.value(r)
        if self.best is None:
            better = True
        elif self.mode == "min":
            better = v < self.best - self.min_delta
        else:
            better = v > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.wait = v, r["epoch"], 0
        else:
            self.wait += 1
        return better


class EarlyStopping(Callback):
    """Stop when the monitored value has not improved for ``patience`` epochs (Keras's EarlyStopping).

    Improvement means better than the best so far by more than ``min_delta`` (lower for costs,
    higher for accuracies). ``monitor`` is "val_cost" (default), "val_accuracy", "train_cost",
    "train_accuracy" (these two need ``fit(eval_train=True)``) or "mean_batch_cost" (the training
    data's batch costs averaged over each epoch, which every epoch records). With
    ``restore_best=True`` the network's parameters of the best epoch are kept (a copy, taken at
    that epoch's end) and put back when training ends, whether it ended by stopping early or by
    running out of epochs: call ``on_train_end`` after ``fit`` if your loop does not (restoring
    twice is harmless). ``stopped_epoch`` and ``best_epoch`` say what happened.

    >>> import numpy as np, sgdlab
    >>> X = np.random.default_rng(0).standard_normal((60, 2)); y = (X[:, 0] > 0).astype(int)
    >>> net = sgdlab.Network([2, 4, 2], seed=0)
    >>> stop = EarlyStopping(patience=3, net=net, restore_best=True)
    >>> h = sgdlab.fit(net, X, y, lr=5.0, epochs=100, validation_split=0.2, callbacks=[stop], seed=0)
    >>> stop.on_train_end(h)
    >>> stop.stopped_epoch, stop.best_epoch, h.config["restored_best_epoch"]
    (32, 29, 29)
    """

    def __init__(self, monitor: str = "val_cost", patience: int = 5, min_delta: float = 0.0, *,
                 restore_best: bool = False, net=None):
        self.plateau = _Plateau(monitor, min_delta, patience)
        if restore_best and net is None:
            raise ValueError("restore_best=True needs the network: EarlyStopping(..., net=net)")
        self.net, self.restore_best = net, restore_best
        self.best_params, self.stopped_epoch = None, None

    @property
    def best_epoch(self):
        return self.plateau.best_epoch

    def on_epoch_end(self, r):
        if r.get("partial"):
            return
        improved = self.plateau.step(r)
        if improved is None:
            return
        if improved:
            if self.restore_best:
                self.best_params = self.net.copy_params()
        elif self.plateau.wait >= self.plateau.patience:
            self.stopped_epoch = r["epoch"]
            raise StopTraining

    def on_train_end(self, history=None):
        """Put the best epoch's parameters back (with ``restore_best``)."""
        if self.restore_best and self.best_params is not None:
            self.net.params = [tuple(p) for p in self.best_params]
            if history is not None:
                history.config["restored_best_epoch"] = self.best_epoch


class ScaledSchedule:
    """``eta_t = scale * base(t)``: a schedule whose ``scale`` a callback may lower while training runs.

    ReduceLROnPlateau owns one: fit calls it as any schedule, and lowering ``scale`` between
    epochs changes every later step size without touching the optimizer or the step counter.
    """

    def __init__(self, base, scale: float = 1.0):
        from .schedules import as_schedule

        self.base, self.scale = as_schedule(base), float(scale)
        self.__name__ = f"plateau-scaled {getattr(self.base, '__name__', 'schedule')}"

    def __call__(self, t: int) -> float:
        return self.scale * self.base(t)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when the monitored value has not improved for
    ``patience`` epochs (Keras's ReduceLROnPlateau), never below ``min_lr``.

    The learning rate changes through a schedule wrapper this callback controls: pass
    ``plateau.schedule`` as fit's ``lr`` (it is ``eta_t = scale * base(t)``, base being ``lr``, a
    number or any schedule), and the callback lowers ``scale`` at the end of a stalled epoch.
    After a reduction the count of epochs without improvement starts again (Keras's cooldown 0).

    >>> import numpy as np, sgdlab
    >>> X = np.random.default_rng(0).standard_normal((60, 2)); y = (X[:, 0] > 0).astype(int)
    >>> plateau = ReduceLROnPlateau(lr=0.5, factor=0.5, patience=1, min_delta=1.0)
    >>> h = sgdlab.fit(sgdlab.Network([2, 4, 2], seed=0), X, y, lr=plateau.schedule, epochs=3,
    ...                validation_split=0.2, callbacks=[plateau], seed=0)
    >>> [r["lr"] for r in h.epochs[1:]]
    [0.5, 0.25, 0.125]
    """

    def __init__(self, lr=None, monitor: str = "val_cost", factor: float = 0.1, patience: int = 5,
                 min_delta: float = 0.0, min_lr: float = 0.0, *, schedule: ScaledSchedule | None = None):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1); got {factor!r}")
        if (lr is None) == (schedule is None):
            raise ValueError("give ReduceLROnPlateau the learning rate (lr=...) or a ScaledSchedule (schedule=...)")
        self.schedule = schedule if schedule is not None else ScaledSchedule(lr)
        self.plateau = _Plateau(monitor, min_delta, patience)
        self.factor, self.min_lr, self.reductions = float(factor), float(min_lr), []

    def on_epoch_end(self, r):
        if r.get("partial"):
            return
        improved = self.plateau.step(r)
        if improved is None or improved or self.plateau.wait < self.plateau.patience:
            return
        lr = r["lr"]
        new = max(lr * self.factor, self.min_lr)
        if new < lr:
            self.schedule.scale *= new / lr
            self.reductions.append((r["epoch"], new))
        self.plateau.wait = 0


class MetricsLog(Callback):
    """Appends each epoch record to ``metrics.csv`` and ``metrics.jsonl``, flushed at once,
    so other tools can read a run while it trains.

    ``history`` (a resumed run's, from its checkpoint) rewrites both files with its epoch records
    first: rows a killed run logged after its last checkpoint are dropped, never duplicated.
    """

    def __init__(self, directory, history=None):
        self.csv_path, self.jsonl_path = Path(directory) / "metrics.csv", Path(directory) / "metrics.jsonl"
        if history is not None:
            self._rewrite([r for r in history.epochs if not r.get("partial")])

    def _rewrite(self, records):
        from .checkpoint import atomic_write

        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=list(EPOCH_FIELDS), extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
        atomic_write(self.csv_path, text.getvalue().encode())
        atomic_write(self.jsonl_path, "".join(json.dumps({k: r.get(k) for k in EPOCH_FIELDS}) + "\n"
                                              for r in records).encode())

    def on_epoch_end(self, r):
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(EPOCH_FIELDS), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(r)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps({k: r.get(k) for k in EPOCH_FIELDS}) + "\n")


class Checkpointer(Callback):
    """Saves the network and its TrainState every ``every`` epochs (atomically)."""

    def __init__(self, path, net, state, every: int, extra: dict):
        self.path, self.net, self.state, self.every, self.extra = Path(path), net, state, every, extra

    def save(self):
        from .checkpoint import save_training

        save_training(self.path, self.net, self.state, extra=self.extra)

    def on_epoch_end(self, r):
        if self.every and r["epoch"] > 0 and r["epoch"] % self.every == 0:
            self.save()


class SignalStop(Callback):
    """Turns SIGINT/SIGTERM into a clean stop within the next ``update_interval`` updates.

    A context manager: handlers are installed on entry and the previous ones restored on exit.
    ``signum`` tells afterwards whether (and by which signal) training was stopped. The loop asks
    it every 16 updates, so steppers run blocks of 16 (a compiled batch-1 update takes ~15 us: a
    check per update would cost as much as the update); the stop still falls between two updates,
    and the saved state resumes exactly.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    update_interval = 16

    def __init__(self):
        self.signum, self._old = None, {}

    def __enter__(self):
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False

    def _handle(self, signum, frame):
        self.signum = signum

    def on_update_end(self, r):
        if self.signum is not None:
            raise StopTraining
