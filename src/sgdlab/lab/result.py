"""What every lab experiment returns and writes: numbers, a table, a figure, a reading."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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

    def save(self, out_dir, fig, figure_title: str) -> "LabResult":
        """Write ``out_dir/NAME.png`` (from ``fig``) and ``out_dir/NAME.json``."""
        from ..plots import save_figure

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.figure = save_figure(fig, out_dir / f"{self.name}.png", figure_title)
        self.write_json(out_dir)
        return self

    def write_json(self, out_dir: Path) -> Path:
        self.json = Path(out_dir) / f"{self.name}.json"
        payload = {"experiment": self.name, "title": self.title, "reading": self.reading,
                   "table": self.table, "numbers": self.numbers,
                   "verdicts": [v.to_dict() for v in self.verdicts]}
        self.json.write_text(json.dumps(_plain(payload), indent=1, allow_nan=True) + "\n")
        return self.json

    def format_table(self) -> str:
        if not self.table:
            return ""
        cols = list(self.table[0])
        cells = [[_cell(r.get(c)) for c in cols] for r in self.table]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
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
