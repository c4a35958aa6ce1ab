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

from tqdm import tqdm

from .train import EPOCH_FIELDS, Callback, StopTraining


class ProgressBar(Callback):
    """One tqdm bar per run (epochs), with the training cost and test accuracy."""

    def __init__(self, total: int, initial: int = 0, file=sys.stderr):
        self.bar = tqdm(total=total, initial=initial, unit="epoch", desc="training", file=file)

    def on_epoch_end(self, r):
        if r["epoch"] > self.bar.n:
            self.bar.update(r["epoch"] - self.bar.n)
        post = {"cost": f"{r['train_cost']:.4f}"}
        if r.get("val_accuracy") is not None:
            post["test_acc"] = f"{r['val_accuracy']:.4f}"
        self.bar.set_postfix(post)

    def close(self):
        self.bar.close()


class EpochPrinter(Callback):
    """One line per epoch on standard output (for logs, when no terminal shows a bar)."""

    def on_epoch_end(self, r):
        acc = r.get("val_accuracy")
        print(f"epoch {r['epoch']:3d}  updates {r['updates']:7d}  train cost {r['train_cost']:.5f}  "
              f"test cost {r['val_cost']:.5f}  test accuracy {'-' if acc is None else f'{acc:.4f}'}", flush=True)


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
    """Turns SIGINT/SIGTERM into a clean stop after the update in progress.

    A context manager: handlers are installed on entry and the previous ones restored on exit.
    ``signum`` tells afterwards whether (and by which signal) training was stopped.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

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
