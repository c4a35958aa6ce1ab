"""Figures (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COST_LINES = (
    ("train_cost", "training cost after the epoch (exact)", "-"),
    ("mean_batch_cost", "mean batch cost during the epoch", ":"),
    ("val_cost", "validation cost after the epoch", "--"),
)
"""The cost series drawn, each as its own line: the exact costs after each epoch, and the mean over
each epoch of the batch costs before its updates (a different number: never joined with them)."""


def _series(xs, values, epochs, key: str):
    """(x, value) pairs where both are recorded, and whether to join them: a line through a series
    recorded in every epoch record that can have it (``mean_batch_cost``: every one after epoch 0),
    markers alone for one with gaps (joining two points would draw a path that was never measured)."""
    pts = [(x, v) for x, v in zip(xs, values, strict=True) if x is not None and v is not None]
    expected = sum(x is not None and (key != "mean_batch_cost" or (e or 0) > 0)
                   for x, e in zip(xs, epochs, strict=True))
    return pts, len(pts) == expected


def plot_history(history, path, title: str | None = None) -> Path:
    """Cost and, for class labels, accuracy against epochs, as a PNG.

    The cost panel draws each recorded cost series as its own line (``COST_LINES``): the exact
    training cost after the epoch (by default only before training and after the last epoch:
    markers without a line), the epoch's mean batch cost (dotted) and the validation cost
    (dashed). A regression run (no accuracy recorded) gets the cost panel only.
    """
    epochs = history["epoch"]
    has_acc = any(v is not None for key in ("train_accuracy", "val_accuracy") for v in history[key])
    fig, axes = new_figure(2 if has_acc else 1)
    ax_cost = axes[0]
    for key, label, ls in COST_LINES:
        pts, joined = _series(epochs, history[key], epochs, key)
        if pts:
            ax_cost.plot(*zip(*pts, strict=True), marker="." if joined else "o", label=label,
                         ls=ls if joined else "none")
    ax_cost.set(xlabel="epoch", ylabel="cost C", yscale="log", title="cost")
    ax_cost.legend(fontsize=8)
    if has_acc:
        ax_acc = axes[1]
        for key, label in (("train_accuracy", "training accuracy"), ("val_accuracy", "validation accuracy")):
            pts, joined = _series(epochs, history[key], epochs, key)
            if pts:
                ls = ("-" if key.startswith("train") else "--") if joined else "none"
                ax_acc.plot(*zip(*pts, strict=True), marker="." if joined else "o", label=label, ls=ls)
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy after each epoch")
        ax_acc.legend()
    return save_figure(fig, path, title, dpi=100)


def new_figure(ncols: int = 1, nrows: int = 1, size=(5.0, 4.0)):
    """A figure with a grid of axes (always a flat list)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, list(axes.ravel())


def save_figure(fig, path, title: str | None = None, dpi: int = 90) -> Path:
    """Lay out, title, write as PNG and close ``fig``."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


RUN_AXES = (
    ("epoch", "epochs"),
    ("updates", "updates"),
    ("examples_seen", "examples seen"),
    ("train_seconds", "training seconds"),
)


def plot_runs(runs: dict, path, accuracy: bool = True) -> Path:
    """Overlay runs: cost (top; exact training cost solid, mean batch cost dotted, validation cost
    dashed; a series recorded only at some epochs as markers alone) and validation accuracy
    (bottom, only when ``accuracy``) against epochs, updates, examples seen and seconds.

    ``runs`` maps a short label (the run directory's name) to a list of epoch records
    (``History.epochs`` or metrics.jsonl rows). Every panel has its legend.
    """
    rows = ((("train_cost", "training", "-"), ("mean_batch_cost", "mean batch cost", ":"),
             ("val_cost", "validation", "--")), (("val_accuracy", "validation", "--"),))
    rows = rows if accuracy else rows[:1]
    fig, axes = new_figure(4, len(rows), size=(4.2, 3.4))
    for i, (label, records) in enumerate(runs.items()):
        for col, (key, xlabel) in enumerate(RUN_AXES):
            xs = [r.get(key) for r in records]
            for row, series in enumerate(rows):
                ax = axes[row * 4 + col]
                for ykey, what, ls in series:
                    pts, joined = _series(xs, [r.get(ykey) for r in records], [r.get("epoch") for r in records],
                                          ykey)
                    if key != "epoch":
                        pts = [(x, y) for x, y in pts if x > 0]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), marker="." if joined else "o", ms=3, color=f"C{i}",
                                ls=ls if joined else "none", label=f"{label} ({what})")
                ax.set(xlabel=xlabel, ylabel="cost C" if row == 0 else "validation accuracy")
                if ax.lines and row == 0:
                    ax.set_yscale("log")
    for k, ax in enumerate(axes):
        lo, hi = ax.dataLim.intervalx
        if ax.lines and k % 4 and hi > 10 * lo > 0:  # log x where the data span more than a decade
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.5")
    return save_figure(fig, path, "runs compared")
