"""symmetry: zero initial weights against random ones.

With W = 0 every hidden unit of a layer computes the same value and receives the same gradient,
so the units stay clones for ever and the network is no wider than one unit per layer. Recorded
every epoch: the largest difference between two hidden units of a layer (incoming weights and
bias, outgoing weights) and the test accuracy.

In exact arithmetic the clones' difference stays 0 for ever. In floating point it starts at
rounding level (BLAS kernels round the columns of one product differently: OpenBLAS computes
tail columns with another code path) and the symmetric state is unstable, so training amplifies
that difference by a constant factor per epoch. Both float64 and float32 are run, and the
verdicts say, per precision, whether the clones stayed clones (largest difference between units
below 1e-6 of the largest weight after the last epoch) and whether the zero start learned less
than a random one (test accuracy lower, two-proportion z-test at 5% on the test set).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import load, network_for
from .result import LabResult
from .tuning import pinned_threads
from .verdict import decide


def verdicts(numbers: dict) -> list:
    """Per precision: do the units stay clones, and does the zero start learn less than Glorot's?"""
    from scipy import stats

    rows = {r["init"]: r for r in numbers["rows"]}
    ref = rows.get("glorot (float32)")
    m = numbers["test_size"]
    out = []
    for dtype in ("float64", "float32"):
        r = rows.get(f"zeros ({dtype})")
        if r is None:
            continue
        rel = r["relative to largest weight"]
        out.append(decide(f"From zero weights the hidden units stay clones ({dtype})", holds=rel < 1e-6,
                          rule="largest difference between units of a layer < 1e-6 × the largest weight "
                               "after the last epoch",
                          evidence=f"{r['after last epoch']:.2g} absolute, {rel:.2g} relative after "
                                   f"{numbers['epochs']} epochs"))
        if ref is not None and r["test accuracy"] is not None:
            p1, p2 = r["test accuracy"], ref["test accuracy"]
            pool = (p1 + p2) / 2
            se = np.sqrt(max(pool * (1 - pool), 1e-12) * 2 / m)
            p = float(stats.norm.sf((p2 - p1) / se))
            out.append(decide(f"A zero start learns less than a random (Glorot) start ({dtype})",
                              holds=p1 < p2 and p < 0.05, rule="one-sided two-proportion z-test on test accuracy at 5%",
                              evidence=f"zeros {p1:.1%} against Glorot {p2:.1%} on {m} test examples, p = {p:.2g}"))
    return out


def unit_spread(net) -> float:
    """Largest difference between hidden units of one layer, over all hidden layers."""
    spread = 0.0
    for l, (W, b) in enumerate(net.numpy_params()[:-1]):
        W_out = net.numpy_params()[l + 1][0]
        spread = max(spread, float(np.max(np.abs(W - W[:, :1]))), float(np.max(np.abs(b - b[0]))),
                     float(np.max(np.abs(W_out - W_out[:1, :]))))
    return spread


VARIANTS = (("zeros", "float64"), ("zeros", "float32"), ("glorot", "float32"), ("normal", "float32"))


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, epochs: int | None = None,
        variants=VARIANTS) -> LabResult:
    with pinned_threads(1):
        return _run(data, data_dir, seed=seed, out=out, quick=quick, epochs=epochs, variants=variants)


def _run(data, data_dir, *, seed, out, quick, epochs, variants) -> LabResult:
    ds = load(data, data_dir, seed)
    epochs = epochs or (5 if quick else 20)
    lr = 3.0 if ds.n_classes else 0.1
    curves, rows = {}, []
    for init, dtype in variants:
        net = network_for(ds, seed=seed, init=init, dtype=dtype)
        spreads = []
        h = fit(net, ds.X_train, ds.y_train, batch_size=10, lr=lr, epochs=epochs, seed=seed,
                validation=(ds.X_test, ds.y_test),
                callbacks=[lambda r, net=net, spreads=spreads: spreads.append(unit_spread(net))])
        scale = max(float(np.max(np.abs(W))) for W, _ in net.numpy_params())
        name = f"{init} ({dtype})"
        growth = [b / a for a, b in pairwise(spreads[1:]) if a > 0 and b > 0]
        curves[name] = {"epoch": h["epoch"], "unit_spread": spreads, "val_accuracy": h["val_accuracy"],
                        "val_cost": h["val_cost"]}
        rows.append({"init": name, "after 1 epoch": spreads[1], "after last epoch": spreads[-1],
                     "relative to largest weight": spreads[-1] / scale,
                     "growth per epoch": float(np.median(growth)) if growth else None,
                     "test accuracy": h.last["val_accuracy"], "test cost": h.last["val_cost"]})
    numbers = {"epochs": epochs, "lr": lr, "seed": seed, "curves": curves, "rows": rows, "test_size": len(ds.X_test)}
    result = LabResult("symmetry", "Zero against random initial weights", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    result.reading = result.reading_from_verdicts(
        "In exact arithmetic units started equal stay equal; in floating point BLAS rounds the columns of one "
        f"product differently, and training can amplify that. {epochs} epochs, B = 10, η = {lr:g}.")
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.0))
        for init, c in curves.items():
            ax1.plot(c["epoch"], c["unit_spread"], marker=".", label=init)
            ax2.plot(c["epoch"], c["val_accuracy"] if c["val_accuracy"][0] is not None else c["val_cost"],
                     marker=".", label=init)
        ax1.set(yscale="symlog", xlabel="epoch", ylabel="largest difference between hidden units",
                title="difference between hidden units")
        ax1.set_yscale("symlog", linthresh=1e-20)
        ax1.set_yticks([0, 1e-20, 1e-15, 1e-10, 1e-5, 1.0])
        ax2.set(xlabel="epoch", ylabel="test accuracy (or cost)", title="how well each start learns")
        ax1.legend(fontsize=8)
        result.save(out, fig, "Zero against random initial weights: unit differences and test accuracy")
    return result
