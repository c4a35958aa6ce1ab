"""Plain words after training: was the result better than chance, did the cost move, and why not.

Every sentence comes from the numbers by a rule stated here:

- chance (classes): the accuracy of always predicting the most frequent training class,
  ``chance = max_k n_k / n``. An accuracy ``a`` measured on ``m`` examples is "no better than
  chance" when ``a <= chance + 2 sqrt(chance (1 - chance) / m)`` (two binomial standard errors).
- chance (real targets): predicting the training mean. R^2 = 1 - SS_res / SS_tot on the evaluated
  data; R^2 <= 0 is "no better than predicting the mean".
- "the cost barely moved": the exact training cost (the validation cost when the training cost
  was not evaluated both before training and after some epoch) changed by less than 1% of its
  value before training, |C_end - C_0| < 0.01 C_0, between its first and last evaluations.
- the likely cause, first rule that applies, read from the epoch series ``trend`` picks (the
  exact training cost where it was evaluated after every epoch; else the exact training cost
  before training followed by each epoch's mean batch cost, the mean over the epoch's updates of C
  over each batch before its update; else the validation cost, where it was evaluated after
  every epoch; else the costs of the first rule). Each sentence names the series it read:
  1. a value above the start at some epoch, or one class predicted for every example (saturated
     units): the step is too large;
  2. the value fell in every epoch (only read from a series recorded after every epoch: two
     evaluations, before and after training, say nothing about the epochs between): still
     falling, so too few epochs or a step too small;
  3. otherwise the cost stopped at a poor value: a step too small or too large; lr-find tells which.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

BARELY = 0.01  # relative change of the cost below which it "barely moved"


def chance_accuracy(y_train) -> float:
    """max_k n_k / n: the accuracy of always predicting the most frequent class.

    >>> chance_accuracy([0, 0, 1, 2])
    0.5
    """
    counts = np.unique(np.asarray(y_train), return_counts=True)[1]
    return float(counts.max() / counts.sum())


def diagnose(history, *, y_train=None, y_eval=None, predicted=None, lr: float | None = None) -> list[str]:
    """Sentences saying when a run is no better than chance or its cost barely moved, with the likely cause.

    ``y_train``: training targets (class frequencies give chance); ``y_eval`` and ``predicted``:
    the evaluated targets and the network's predictions on them (class labels, or values for
    regression). Empty when nothing is wrong.

    >>> from sgdlab.train import History
    >>> h = History(epochs=[{"epoch": 0, "train_cost": 1.29}, {"epoch": 1, "train_cost": 0.5},
    ...                     {"epoch": 2, "train_cost": 0.5}])
    >>> for s in diagnose(h, y_train=[0, 1, 2, 3], y_eval=[0, 1, 2, 3] * 25, predicted=[0] * 100, lr=1000):
    ...     print(s)  # doctest: +NORMALIZE_WHITESPACE
    accuracy 0.2500 is no better than chance (0.2500, always predicting the most frequent class; 100 examples)
    likely cause: the network predicts one class for every example (saturated units): the step lr=1000 is
    probably too large; try a smaller --lr, or sgdlab lr-find
    """
    said = []
    poor = False
    if y_eval is not None and predicted is not None and len(y_eval):
        y_eval, predicted = np.asarray(y_eval), np.asarray(predicted)
        if np.issubdtype(y_eval.dtype, np.integer) and y_train is not None:
            chance, m = chance_accuracy(y_train), len(y_eval)
            acc = float(np.mean(predicted == y_eval))
            if acc <= chance + 2 * math.sqrt(chance * (1 - chance) / m):
                poor = True
                said.append(f"accuracy {acc:.4f} is no better than chance ({chance:.4f}, always predicting the most "
                            f"frequent class; {m} examples)")
        elif not np.issubdtype(y_eval.dtype, np.integer):
            y, p = y_eval.reshape(len(y_eval), -1).astype(float), predicted.reshape(len(y_eval), -1).astype(float)
            ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
            r2 = 1 - float(((y - p) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
            if not r2 > 0:
                poor = True
                said.append(f"R^2 = {r2:.4f}: no better than predicting the mean")
    records = [r for r in history.epochs if not r.get("partial")]
    key = "train_cost" if sum(r.get("train_cost") is not None for r in records) >= 2 else "val_cost"
    costs = [r.get(key) for r in records if r.get(key) is not None]
    if len(costs) >= 2:
        c0, c_end = costs[0], costs[-1]
        if math.isfinite(c0) and math.isfinite(c_end) and abs(c_end - c0) < BARELY * abs(c0):
            poor = True
            said.append(f"the cost barely moved ({c0:.5g} before training, {c_end:.5g} after)")
    if not poor:
        return said
    step = f"the step lr={lr:g}" if lr is not None else "the step"
    one_class = (predicted is not None and np.issubdtype(np.asarray(predicted).dtype, np.integer)
                 and len(predicted) > 1 and len(np.unique(predicted)) == 1)
    if one_class:
        said.append(f"likely cause: the network predicts one class for every example (saturated units): {step} is "
                    "probably too large; try a smaller --lr, or sgdlab lr-find")
        return said
    series, what, start, every_epoch = trend(records, costs, key)
    if len(series) >= 2 and any(c > series[0] for c in series[1:]):
        said.append(f"likely cause: {what} rose above {start}: {step} is too large; try a "
                    "smaller --lr, or sgdlab lr-find")
    elif every_epoch and len(series) >= 2 and all(b < a for a, b in itertools.pairwise(series)):
        said.append(f"likely cause: {what} was still falling at the end: too few epochs or {step} too small; "
                    "try more --epochs or a larger --lr (sgdlab lr-find suggests one)")
    else:
        said.append(f"likely cause: the cost stopped at a poor value: {step} is too small or too large; "
                    "sgdlab lr-find measures which")
    return said


def trend(records: list, costs: list, key: str) -> tuple[list, str, str, bool]:
    """(the epoch series the likely-cause rules read, the words that name it, the words that name its
    first value, whether it was recorded after every epoch): see the module docstring.

    >>> trend([{"epoch": 0, "train_cost": 2.0}, {"epoch": 1, "mean_batch_cost": 1.5},
    ...        {"epoch": 2, "mean_batch_cost": 1.2, "train_cost": 1.1}], [2.0, 1.1], "train_cost")[:2]
    ([2.0, 1.5, 1.2], 'the mean batch cost (C over each batch before its update, averaged over the epoch)')
    """
    later = [r for r in records if r.get("epoch", 0) > 0]
    if later and all(r.get("train_cost") is not None for r in records):
        return [r["train_cost"] for r in records], "the training cost", "its value before training", True
    if later and all(r.get("mean_batch_cost") is not None for r in later):
        what = "the mean batch cost (C over each batch before its update, averaged over the epoch)"
        series = [r["mean_batch_cost"] for r in later]
        if records[0].get("epoch") == 0 and records[0].get("train_cost") is not None:
            return [records[0]["train_cost"], *series], what, "the training cost before training", True
        return series, what, "its value in the first epoch", True
    if later and all(r.get("val_cost") is not None for r in records):
        return [r["val_cost"] for r in records], "the validation cost", "its value before training", True
    return costs, ("the training cost" if key == "train_cost" else "the validation cost"), "its first value", False
