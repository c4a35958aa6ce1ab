"""Figures (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def plot_history(history, path, title: str | None = None) -> Path:
    """Cost (training and validation) and accuracy against epochs, as a PNG."""
    epochs = history["epoch"]
    fig, (ax_cost, ax_acc) = new_figure(2)
    for key, label in (("train_cost", "training cost"), ("val_cost", "validation cost")):
        if any(v is not None for v in history[key]):
            ax_cost.plot(epochs, history[key], marker=".", label=label)
    ax_cost.set(xlabel="epoch", ylabel="cost C", yscale="log", title="cost after each epoch")
    ax_cost.legend()
    for key, label in (("train_accuracy", "training"), ("val_accuracy", "validation")):
        if any(v is not None for v in history[key]):
            ax_acc.plot(epochs, history[key], marker=".", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy after each epoch")
    if ax_acc.lines:
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


RUN_AXES = (("epoch", "epochs"), ("updates", "updates"), ("examples_seen", "examples seen"), ("train_seconds", "training seconds"))


def plot_runs(runs: dict, path) -> Path:
    """Overlay runs: cost (top) and accuracy (bottom) against epochs, updates, examples seen and seconds.

    ``runs`` maps a label to a list of epoch records (``History.epochs`` or metrics.jsonl rows).
    """
    fig, axes = new_figure(4, 2, size=(4.2, 3.4))
    for i, (label, records) in enumerate(runs.items()):
        for col, (key, xlabel) in enumerate(RUN_AXES):
            xs = [r.get(key) for r in records]
            for row, (ykey, ylabel) in enumerate((("train_cost", "training cost"), ("val_accuracy", "test accuracy"))):
                pts = [(x, r.get(ykey)) for x, r in zip(xs, records) if x is not None and r.get(ykey) is not None]
                if key != "epoch":
                    pts = [(x, y) for x, y in pts if x > 0]
                if pts:
                    ax = axes[row * 4 + col]
                    ax.plot(*zip(*pts), marker=".", color=f"C{i}", label=label)
                    ax.set(xlabel=xlabel, ylabel=ylabel)
                    if key != "epoch":
                        ax.set_xscale("log")
                        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                    if row == 0:
                        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, "runs compared")
