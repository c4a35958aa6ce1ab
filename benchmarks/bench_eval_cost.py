"""What the per-epoch evaluation of the training set costs, before and after ``fit(eval_train=None)``.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), float32, 8,000 dense random rows
(uniform in [0, 1), labels 0..9), every BLAS library on one thread (``threadpoolctl``), ``fit`` as a
user calls it with its default stepper. Two source trees are compared: ``--before SRC`` (e.g. the
``src`` of an export of the main branch: ``git archive main src | tar -x -C /tmp/before``) and this
checkout's ``src``. Each runs in its own fresh process, once per round, the two alternating which
goes first; inside a process the modes alternate per batch size. Per mode, one warm-up epoch, then
``--epochs`` (6) epochs timed:

  default        ``fit`` with no evaluation arguments: before, the training set after every epoch;
                 after, only after epoch 0 and the last (every epoch records mean_batch_cost)
  no_eval        ``eval_train=False``: no evaluation (after: the batch costs still summed)
  no_eval_costs  (before only) ``eval_train=False`` and a callback asking for the batch costs, as the
                 progress bar did: the stepper's batch-cost computation alone, switched on
  no_eval_nocosts  (after only) ``eval_train=False`` with every stepper's ``run`` told not to compute
                 batch costs (``want_costs=False``; so no mean_batch_cost): against no_eval, in the same
                 process, what always asking for them and summing them costs

Numbers per (tree, mode, batch): ``epoch_wall_s``, the median wall time between two epoch records of
the epochs that are not the last (1..E-1: what an epoch costs in the steady state, evaluation
included); ``fit_wall_s``, the wall time of the whole E-epoch ``fit`` call divided by E (epoch 0's
and the last epoch's evaluation included); ``train_s``, fit's own training clock per epoch
(``train_seconds``: updates only, evaluation excluded). Each printed cell is the median over the
rounds and its min-max. The load average is read before and after every process (the machine may be
shared) and goes into the JSON with the machine.

    python benchmarks/bench_eval_cost.py --before /tmp/before/src [--rounds 5] [--epochs 6]
        [--batch-sizes 1,10,128,1024,8000] [--out benchmarks/results/bench_eval_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
SIZES, LR = (784, 100, 10), 0.1


# ----------------------------------------------------------------------------- one process, one tree
def child(batch_sizes: list[int], n: int, epochs: int, modes: list[str], rotate: int) -> dict:
    import numpy as np
    from threadpoolctl import threadpool_limits

    import sgdlab

    rng = np.random.default_rng(0)
    X = rng.random((n, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], n)

    class Clock(sgdlab.Callback):
        def __init__(self):
            self.at = []

        def on_epoch_end(self, r):
            self.at.append(time.perf_counter())

    class WantCosts(sgdlab.Callback):  # before issue 7's change: asks the stepper for the batch costs
        wants_batch_cost = True

        def on_epoch_end(self, r):
            pass

    def method(m):
        return {"method": "batch"} if m == n else {"method": "stochastic"} if m == 1 else \
            {"method": "minibatch", "batch_size": m}

    def no_costs(run):
        def wrapped(self, state, batches, etas, want_costs):
            run(self, state, batches, etas, False)
            return None
        return wrapped

    def run(m, mode, E):
        kw = {} if mode == "default" else {"eval_train": False}
        clock = Clock()
        cbs = [clock, WantCosts()] if mode == "no_eval_costs" else [clock]
        net = sgdlab.Network(list(SIZES), seed=0)
        runs = {cls: cls.run for cls in sgdlab.steppers.available().values()}
        if mode == "no_eval_nocosts":
            for cls, r in runs.items():
                cls.run = no_costs(r)
        try:
            t0 = time.perf_counter()
            h = sgdlab.fit(net, X, y, lr=LR, epochs=E, seed=0, callbacks=cbs, **method(m), **kw)
            wall = time.perf_counter() - t0
        finally:
            for cls, r in runs.items():
                cls.run = r
        steps = [b - a for a, b in zip(clock.at[:-1], clock.at[1:], strict=True)]  # epoch e: steps[e - 1]
        secs = h["train_seconds"]
        return {"epoch_wall_s": statistics.median(steps[:-1]) if E > 1 else steps[-1],
                "last_epoch_wall_s": steps[-1], "fit_wall_s": wall / E,
                "train_s": (secs[-1] - secs[0]) / E, "stepper": h.config["stepper"],
                "train_cost_epochs": [r["epoch"] for r in h.epochs if r.get("train_cost") is not None],
                "mean_batch_cost": "mean_batch_cost" in h.last}

    out = {}
    with threadpool_limits(1):
        for m in batch_sizes:
            order = modes[rotate % len(modes):] + modes[:rotate % len(modes)]
            for mode in order:
                run(m, mode, 1)  # warm-up: caches, compiled kernel, BLAS buffers
                out[f"{m}/{mode}"] = run(m, mode, epochs)
    return out


# ----------------------------------------------------------------------------- the rounds
def spawn(tree: str, src: Path, args, modes: list[str], rotate: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, str(HERE), "--child", "--n", str(args.n), "--epochs", str(args.epochs),
           "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--modes", ",".join(modes), "--rotate", str(rotate)]
    load_before = os.getloadavg()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"{tree}: {p.stderr[-2000:]}")
    return {"tree": tree, "load_before": load_before, "load_after": os.getloadavg(),
            "results": json.loads(p.stdout.splitlines()[-1])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="src directory of the tree to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 10, 128, 1024, 8000])
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "bench_eval_cost.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--modes", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rotate", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.batch_sizes = [args.n if m > args.n else m for m in args.batch_sizes]
    if args.child:
        print(json.dumps(child(args.batch_sizes, args.n, args.epochs, args.modes.split(","), args.rotate)))
        return {}
    trees = {"after": (SRC, ["default", "no_eval", "no_eval_nocosts"])}
    if args.before is not None:
        trees = {"before": (args.before.resolve(), ["default", "no_eval", "no_eval_costs"]), **trees}
    sys.path.insert(0, str(SRC))
    from sgdlab import machine

    record = {"network": list(SIZES), "n": args.n, "epochs": args.epochs, "batch_sizes": args.batch_sizes,
              "threads": 1, "trees": {k: str(v[0]) for k, v in trees.items()}, "machine": machine.describe(),
              "runs": []}
    names = list(trees)
    for r in range(args.rounds):
        for tree in (names if r % 2 == 0 else names[::-1]):
            src, modes = trees[tree]
            run = spawn(tree, src, args, modes, r)
            run["round"] = r
            record["runs"].append(run)
            print(f"round {r + 1}/{args.rounds} {tree}: load {run['load_before'][0]:.2f} -> "
                  f"{run['load_after'][0]:.2f}", file=sys.stderr, flush=True)
    record["summary"] = summarise(record)
    print(table(record))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return record


def summarise(record) -> dict:
    """Per tree/mode/batch and number: median and min-max over the rounds."""
    cells: dict = {}
    for run in record["runs"]:
        for key, res in run["results"].items():
            for what in ("epoch_wall_s", "fit_wall_s", "train_s", "last_epoch_wall_s"):
                cells.setdefault(f"{run['tree']}/{key}", {}).setdefault(what, []).append(res[what])
    return {k: {what: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v}
                for what, v in d.items()} for k, d in cells.items()}


def table(record) -> str:
    s, lines = record["summary"], []
    loads = [x for run in record["runs"] for x in (run["load_before"][0], run["load_after"][0])]
    lines.append(f"load average (1 min) over the runs: {min(loads):.2f}-{max(loads):.2f}; medians over "
                 f"{max(r['round'] for r in record['runs']) + 1} rounds (min-max); seconds per epoch")

    def cell(key, what):
        c = s.get(key, {}).get(what)
        return "-" if c is None else f"{c['median']:.4f} ({c['min']:.4f}-{c['max']:.4f})"

    lines.append("batch | before default: epoch wall | after default: epoch wall | before: fit/E | after: fit/E")
    for m in record["batch_sizes"]:
        b, a = f"before/{m}/default", f"after/{m}/default"
        lines.append(f"{m} | {cell(b, 'epoch_wall_s')} | {cell(a, 'epoch_wall_s')} | {cell(b, 'fit_wall_s')} | "
                     f"{cell(a, 'fit_wall_s')}")
    lines.append("batch | train_s: before no_eval | before no_eval_costs | after no_eval_nocosts | after no_eval")
    for m in record["batch_sizes"]:
        lines.append(f"{m} | {cell(f'before/{m}/no_eval', 'train_s')} | {cell(f'before/{m}/no_eval_costs', 'train_s')}"
                     f" | {cell(f'after/{m}/no_eval_nocosts', 'train_s')} | {cell(f'after/{m}/no_eval', 'train_s')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
