"""Figures (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def plot_history(history, path, title: str | None = None) -> Path:
    """Cost (training and validation) and, for class labels, accuracy against epochs, as a PNG.

    A regression run (no accuracy recorded) gets the cost panel only.
    """
    epochs = history["epoch"]
    has_acc = any(v is not None for key in ("train_accuracy", "val_accuracy") for v in history[key])
    fig, axes = new_figure(2 if has_acc else 1)
    ax_cost = axes[0]
    for key, label in (("train_cost", "training cost"), ("val_cost", "validation cost")):
        pts = [(e, v) for e, v in zip(epochs, history[key], strict=True) if v is not None]
        if pts:
            ax_cost.plot(*zip(*pts, strict=True), marker=".", label=label, ls="-" if key.startswith("train") else "--")
    ax_cost.set(xlabel="epoch", ylabel="cost C", yscale="log", title="cost after each epoch")
    ax_cost.legend()
    if has_acc:
        ax_acc = axes[1]
        for key, label in (("train_accuracy", "training accuracy"), ("val_accuracy", "validation accuracy")):
            pts = [(e, v) for e, v in zip(epochs, history[key], strict=True) if v is not None]
            if pts:
                ax_acc.plot(
                    *zip(*pts, strict=True), marker=".", label=label, ls="-" if key.startswith("train") else "--"
                )
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
    """Overlay runs: cost (top; training solid, validation dashed) and validation accuracy (bottom,
    only when ``accuracy``) against epochs, updates, examples seen and seconds.

    ``runs`` maps a short label (the run directory's name) to a list of epoch records
    (``History.epochs`` or metrics.jsonl rows). Every panel has its legend.
    """
    rows = (("train_cost", "training", "-"), ("val_cost", "validation", "--")), (("val_accuracy", "validation", "--"),)
    rows = rows if accuracy else rows[:1]
    fig, axes = new_figure(4, len(rows), size=(4.2, 3.4))
    for i, (label, records) in enumerate(runs.items()):
        for col, (key, xlabel) in enumerate(RUN_AXES):
            xs = [r.get(key) for r in records]
            for row, series in enumerate(rows):
                ax = axes[row * 4 + col]
                for ykey, what, ls in series:
                    pts = [(x, r.get(ykey)) for x, r in zip(xs, records, strict=True)
                           if x is not None and r.get(ykey) is not None]
                    if key != "epoch":
                        pts = [(x, y) for x, y in pts if x > 0]
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True), marker=".", ms=3, color=f"C{i}", ls=ls, label=f"{label} ({what})"
                        )
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
