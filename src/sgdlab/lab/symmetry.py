"""symmetry: zero initial weights against random ones.

With W = 0 every hidden unit of a layer computes the same value and receives the same gradient,
so the units stay clones for ever and the network is no wider than one unit per layer. Recorded
every epoch: the largest difference between two hidden units of a layer (incoming weights and
bias, outgoing weights) and the test accuracy.

In exact arithmetic the clones' difference stays 0 for ever. In floating point it starts at
rounding level (BLAS kernels round the columns of one product differently: OpenBLAS computes
tail columns with another code path) and the symmetric state is unstable, so training amplifies
that difference by a constant factor per epoch. In float64 the clones stay clones to ~1e-8 for
20 epochs; in float32 the rounding noise breaks the symmetry after ~10 epochs, and only then
does the network start to learn. Both are shown.
"""

from __future__ import annotations

import numpy as np

from ..plots import new_figure
from ..train import fit
from .common import load, network_for
from .result import LabResult


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
    ds = load(data, data_dir, seed)
    epochs = epochs or (5 if quick else 20)
    lr = 3.0 if ds.n_classes else 0.1
    curves, rows = {}, []
    for init, dtype in variants:
        net = network_for(ds, seed=seed, init=init, dtype=dtype)
        spreads = []
        h = fit(net, ds.X_train, ds.y_train, batch_size=10, lr=lr, epochs=epochs, seed=seed,
                validation=(ds.X_test, ds.y_test), callbacks=[lambda r, net=net: spreads.append(unit_spread(net))])
        scale = max(float(np.max(np.abs(W))) for W, _ in net.numpy_params())
        name = f"{init} ({dtype})"
        growth = [b / a for a, b in zip(spreads[1:], spreads[2:]) if a > 0 and b > 0]
        curves[name] = {"epoch": h["epoch"], "unit_spread": spreads, "val_accuracy": h["val_accuracy"], "val_cost": h["val_cost"]}
        rows.append({"init": name, "after 1 epoch": spreads[1], f"after {epochs} epochs": spreads[-1],
                     "relative to largest weight": spreads[-1] / scale,
                     "growth per epoch": float(np.median(growth)) if growth else None,
                     "test accuracy": h.last["val_accuracy"], "test cost": h.last["val_cost"]})
    numbers = {"epochs": epochs, "lr": lr, "curves": curves, "rows": rows}
    z64, z32 = rows[0], rows[1]

    def score(r):  # accuracy for classes, cost for real-valued targets
        return f"{r['test accuracy']:.1%} test accuracy" if r["test accuracy"] is not None else f"test cost {r['test cost']:.4f}"

    others = ", ".join(f"{score(r)} ({r['init']})" for r in rows[2:])
    result = LabResult(
        "symmetry", "Why zero initial weights fail",
        f"From zero weights the hidden units are clones: in float64 their largest difference is "
        f"{z64[f'after {epochs} epochs']:.1g} after {epochs} epochs (rounding, amplified about {z64['growth per epoch'] or 0:.0f}x per epoch) "
        f"and the network reaches {score(z64)}; in float32 the difference is {z32[f'after {epochs} epochs']:.1g}"
        + (" (rounding has broken the symmetry)" if z32[f"after {epochs} epochs"] > 1e-3 else "")
        + f" and it reaches {score(z32)}. Random starts differ by O(1) and reach {others}.", numbers, rows)
    if out is not None:
        fig, (ax1, ax2) = new_figure(2, size=(5.5, 4.0))
        for init, c in curves.items():
            ax1.plot(c["epoch"], c["unit_spread"], marker=".", label=init)
            ax2.plot(c["epoch"], c["val_accuracy"] if c["val_accuracy"][0] is not None else c["val_cost"], marker=".", label=init)
        ax1.set(yscale="symlog", xlabel="epoch", ylabel="largest difference between hidden units",
                title="hidden units stay clones from zeros")
        ax1.set_yscale("symlog", linthresh=1e-20)
        ax2.set(xlabel="epoch", ylabel="test accuracy (or cost)", title="how well each start learns")
        ax1.legend(fontsize=8)
        result.save(out, fig, "Zero against random initialisation")
    return result
