"""What every lab experiment returns and writes: numbers, a table, a figure, a reading."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .verdict import CAVEAT, FAILS, HOLDS

VERDICT_COLOUR = {HOLDS: "#1a7f37", CAVEAT: "#9a6700", FAILS: "#cf222e"}
VERDICT_MARK = {HOLDS: "✔", CAVEAT: "~", FAILS: "✘"}


@dataclass
class LabResult:
    """One experiment's outcome. ``numbers`` is everything behind the figure, JSON-ready."""

    name: str
    title: str
    reading: str  # two sentences: what the figure shows
    numbers: dict
    table: list = field(default_factory=list)  # rows (dicts) of the printed summary
    figure: Path | None = None
    json: Path | None = None
    verdicts: list = field(default_factory=list)  # Verdict objects: each claim, decided by a stated rule
    quick: bool | None = None  # run at the --quick settings (set by ``sgdlab.lab.run``)
    machine: dict | None = None  # sgdlab.machine.describe() plus load_before/load_after

    def reading_from_verdicts(self, lead: str = "") -> str:
        """``lead`` followed by each verdict's sentence: a reading that follows the numbers."""
        return " ".join([lead.strip(), *(v.sentence() for v in self.verdicts)]).strip()

    def save(self, out_dir, fig, figure_title: str) -> LabResult:
        """Write ``out_dir/NAME.png`` (from ``fig``) and ``out_dir/NAME.json``.

        ``figure_title`` says what is plotted; the verdicts (computed from the numbers) are written
        under the axes, coloured by verdict, so the figure never claims more than its data show.
        """
        import textwrap

        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        width, height = fig.get_size_inches()
        lines = []
        for v in self.verdicts:
            wrapped = textwrap.wrap(f"{VERDICT_MARK[v.verdict]} {v.verdict}: {v.claim}", int(width * 15))
            lines.append((wrapped, VERDICT_COLOUR[v.verdict]))
        extra = sum(len(w) for w, _ in lines) * 0.2 + (0.1 if lines else 0)
        fig.set_size_inches(width, height + extra)
        bottom = extra / (height + extra)
        y = bottom - 0.05 / (height + extra)
        for wrapped, colour in lines:
            for line in wrapped:
                fig.text(0.01, y, line, color=colour, fontsize=9, va="top", ha="left")
                y -= 0.2 / (height + extra)
        fig.suptitle(figure_title)
        fig.tight_layout(rect=(0, bottom, 1, 1))
        self.figure = out_dir / f"{self.name}.png"
        fig.savefig(self.figure, dpi=90)
        plt.close(fig)
        self.write_json(out_dir)
        return self

    def write_json(self, out_dir: Path) -> Path:
        self.json = Path(out_dir) / f"{self.name}.json"
        if self.machine is None:
            from ..machine import describe

            self.machine = describe()
        payload = {"experiment": self.name, "title": self.title, "reading": self.reading, "quick": self.quick,
                   "table": self.table, "numbers": self.numbers,
                   "verdicts": [v.to_dict() for v in self.verdicts], "machine": self.machine}
        self.json.write_text(json.dumps(_plain(payload), indent=1, allow_nan=True) + "\n")
        return self.json

    def format_table(self) -> str:
        if not self.table:
            return ""
        cols = list(self.table[0])
        cells = [[_cell(r.get(c)) for c in cols] for r in self.table]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "-" if v is None else str(v)


def _plain(o):
    """Numpy scalars and arrays to plain JSON types."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return o
