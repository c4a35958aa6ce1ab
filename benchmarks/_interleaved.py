"""What the compiled stepper's A/B benchmarks share (``bench_batch1.py``, ``bench_forward.py``): the fastest
epoch of a fit, modes interleaved round by round, their summaries and the table's cells."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np

import sgdlab


def parser(doc: str, name: str, epochs: int) -> argparse.ArgumentParser:
    """The options every such benchmark takes: --rounds, --epochs (per fit; the fastest is kept), --n, --out."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=epochs,
                    help=f"epochs per fit; the fastest is kept (default {epochs})")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / f"{name}.json")
    return ap


def pin_one_cpu() -> None:
    """Restrict the process to one CPU (where the OS allows it), as ``bench_epoch.py`` does."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])


def fastest_epoch_ms(X, y, epochs: int, seed: int, **how) -> tuple[float, dict]:
    """ms of the fastest epoch of a ``fit`` of 784-100-10 (plain SGD, eta = 0.1, evaluation off) on the compiled
    stepper, by its own training clock, and the stepper's info; ``how``: the method or batch size."""
    net = sgdlab.Network([784, 100, 10], seed=0)
    h = sgdlab.fit(net, X, y, epochs=epochs, lr=0.1, eval_train=False, stepper="compiled", seed=seed, **how)
    return float(np.diff(h["train_seconds"]).min() * 1e3), h.config["stepper_info"]


def interleave(cases, modes, rounds: int, run) -> dict:
    """times[case][mode]: ``run(case, mode, round)`` for every case and mode, round by round, the modes in
    turn forwards and backwards so that neither always runs first."""
    times: dict = {}
    for r in range(rounds):
        for case in cases:
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                times.setdefault(case, {}).setdefault(mode, []).append(run(case, mode, r))
        print(f"round {r + 1}/{rounds} done")
    return times


def summary(ms: list) -> dict:
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "all_ms": ms}


def cell(s: dict) -> str:
    return f"{s['median_ms']:.1f} ({s['min_ms']:.1f}-{s['max_ms']:.1f})"


def report(result: dict, columns: list, rows: list, out: Path) -> dict:
    """Print the machine, its load and a markdown table (``columns``: (title, alignment) pairs, ``rows``: lists
    of cells), and write ``result`` as JSON to ``out``."""
    print(f"{result['machine']['cpu']}; load {result['load_before']} -> {result['load_after']}")
    print("| " + " | ".join(title for title, _ in columns) + " |")
    print("|" + "|".join("---:" if right else "---" for _, right in columns) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result
