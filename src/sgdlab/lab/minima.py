"""minima: does gradient noise carry SGD out of a poor, sharp minimum into a better, wide one?

1. A landscape that can be drawn. On w in R^2 the mean loss is

       L(w) = -A1 exp(-|w - c1|^2 / 2 s1^2) - A2 exp(-|w - c2|^2 / 2 s2^2) + k |w|^2

   with a sharp, poor minimum at c1 (s1 = 0.2, A1 = 1) and a wide, better one at c2 (s2 = 1,
   A2 = 1.3). The data are n examples whose losses are f_i(w) = L(w) + xi_i . w, with xi_i drawn
   from N(0, sigma^2 I) and centred (sum_i xi_i = 0): the full-batch gradient is exactly grad L, a
   mini-batch adds noise of variance ~ sigma^2/B. Every run starts in the sharp minimum's basin
   (c1 plus a uniform offset in [-0.25, 0.25]^2) and trains for the same number of epochs with
   reshuffled mini-batches; it "ends in the better minimum" when plain gradient descent from its
   last point (2,000 steps of 0.01) settles nearer c2 than c1. All runs advance together as arrays.
2. A small network: 2-2-1 sigmoid on XOR, from N(0,1) weights, where batch GD, mini-batch (m=2)
   and SGD get the same number of updates; "solved" means all four points classified right.
"""

from __future__ import annotations

import numpy as np

from ..network import Network
from ..plots import new_figure
from ..train import fit
from .result import LabResult

C1, S1, A1 = np.array([-1.0, 0.0]), 0.2, 1.0  # sharp, poor
C2, S2, A2 = np.array([1.5, 0.0]), 1.0, 1.3  # wide, better
K = 0.02


def loss(w):
    """Mean loss L(w) for points w of shape (..., 2)."""
    d1, d2 = w - C1, w - C2
    return (-A1 * np.exp(-np.sum(d1 * d1, -1) / (2 * S1 ** 2)) - A2 * np.exp(-np.sum(d2 * d2, -1) / (2 * S2 ** 2))
            + K * np.sum(w * w, -1))


def grad(w):
    """grad L(w) for points w of shape (..., 2)."""
    d1, d2 = w - C1, w - C2
    e1 = A1 * np.exp(-np.sum(d1 * d1, -1, keepdims=True) / (2 * S1 ** 2))
    e2 = A2 * np.exp(-np.sum(d2 * d2, -1, keepdims=True) / (2 * S2 ** 2))
    return e1 * d1 / S1 ** 2 + e2 * d2 / S2 ** 2 + 2 * K * w


def descend(w0, xi, batch: int, lr: float, epochs: int, rng, keep_path: bool = False):
    """Mini-batch SGD on f_i(w) = L(w) + xi_i . w for every row of w0 at once (reshuffled epochs)."""
    n, R = len(xi), len(w0)
    w, path = w0.copy(), [w0.copy()]
    for _ in range(epochs):
        perm = rng.permuted(np.tile(np.arange(n), (R, 1)), axis=1)
        for k in range(0, n, batch):
            w -= lr * (grad(w) + xi[perm[:, k:k + batch]].mean(axis=1))
            if keep_path:
                path.append(w.copy())
    return w, np.array(path)


def ends_in_better(w) -> np.ndarray:
    for _ in range(2000):
        w = w - 0.01 * grad(w)
    return np.linalg.norm(w - C2, axis=1) < np.linalg.norm(w - C1, axis=1)


def xor_case(seeds: int, lrs, updates: int) -> dict:
    X, y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array([0, 1, 1, 0])
    out = {}
    for lr in lrs:
        for method, m in (("batch", 4), ("minibatch", 2), ("stochastic", 1)):
            solved = 0
            for s in range(seeds):
                net = Network([2, 2, 1], init="normal", seed=s, dtype="float64")
                fit(net, X, y, method=method, batch_size=2 if method == "minibatch" else None, lr=lr,
                    epochs=updates * m // 4, seed=s, eval_train=False)
                solved += net.accuracy(X, y) == 1.0
            out[f"{method}, lr={lr:g}"] = solved / seeds
    return out


def run(data=None, data_dir=None, *, seed: int = 0, out=None, quick: bool = False, n: int = 100, sigma: float = 4.0,
        epochs: int = 60, runs: int | None = None, lrs=(0.02, 0.03, 0.05), batch_sizes=(1, 2, 5, 10),
        xor_seeds: int | None = None) -> LabResult:
    """``data`` is not used: the landscape is synthetic (the option exists for a uniform command line)."""
    rng = np.random.default_rng(seed)
    R = runs or (60 if quick else 200)
    xi = rng.standard_normal((n, 2)) * sigma
    xi -= xi.mean(axis=0)
    starts = C1 + rng.uniform(-0.25, 0.25, (R, 2))
    fractions, rows = {}, []
    for lr in lrs:
        row = {"lr": lr}
        for b in (*batch_sizes, n):
            w, _ = descend(starts, xi, b, lr, epochs, np.random.default_rng([seed, b, int(lr * 1e6)]))
            frac = float(ends_in_better(w).mean())
            name = "batch GD" if b == n else ("SGD" if b == 1 else f"B={b}")
            fractions[f"lr={lr:g}, {name}"] = frac
            row[name] = frac
        rows.append(row)
    xor_seeds = (10 if quick else 30) if xor_seeds is None else xor_seeds
    xor = xor_case(xor_seeds, (1.0,) if quick else (1.0, 4.0), 1000 if quick else 4000) if xor_seeds else {}
    numbers = {"landscape": {"c1_sharp_poor": C1, "s1": S1, "A1": A1, "L_at_c1": float(loss(C1)),
                             "c2_wide_better": C2, "s2": S2, "A2": A2, "L_at_c2": float(loss(C2)), "k": K,
                             "curvature_at_c1": A1 / S1 ** 2, "curvature_at_c2": A2 / S2 ** 2},
               "n": n, "sigma": sigma, "epochs": epochs, "runs": R, "seed": seed,
               "fraction_in_better_minimum": fractions, "xor_2_2_1_fraction_solved_equal_updates": xor}
    best_sgd = max(v for k, v in fractions.items() if "SGD" in k)
    best_gd = max(v for k, v in fractions.items() if "batch GD" in k)
    result = LabResult(
        "minima", "Escaping a sharp, poor minimum",
        f"From the sharp minimum's basin, batch gradient descent ends in the better, wide minimum in at most "
        f"{best_gd:.0%} of {R} runs while SGD (B = 1) does in up to {best_sgd:.0%}; larger batches and smaller steps "
        f"lower the noise (~ lr/B) and with it the escapes."
        + (f" On XOR with a 2-2-1 network at equal updates it does not show: solved fractions "
           f"{', '.join(f'{k}: {v:.0%}' for k, v in xor.items())}." if xor else ""), numbers, rows)
    if out is not None:
        fig, (ax, ax2) = new_figure(2, size=(6.0, 4.5))
        g1, g2 = np.meshgrid(np.linspace(-2.2, 3.2, 200), np.linspace(-2.0, 2.0, 160))
        ax.contourf(g1, g2, loss(np.stack([g1, g2], -1)), levels=30, cmap="viridis")
        start = starts[:1]
        lr = lrs[len(lrs) // 2]
        for b, colour in ((n, "white"), (10, "orange"), (1, "red")):
            _, path = descend(start, xi, b, lr, max(10, epochs // 3), np.random.default_rng([seed, 99, b]), keep_path=True)
            ax.plot(path[:, 0, 0], path[:, 0, 1], "-", color=colour, lw=0.8,
                    label={n: "batch GD", 10: "B = 10", 1: "SGD (B = 1)"}[b])
        ax.plot(*C1, "kx")
        ax.plot(*C2, "k+")
        ax.set(xlabel="w1", ylabel="w2", title=f"trajectories (lr = {lr:g}) over L(w)")
        ax.legend(fontsize=8, loc="lower left")
        labels = list(rows[0])[1:]
        for row in rows:
            ax2.plot(labels, [row[k] for k in labels], marker="o", label=f"lr = {row['lr']:g}")
        ax2.set(ylabel="fraction ending in the better minimum", ylim=(-0.05, 1.05), title=f"{R} runs from the sharp basin")
        ax2.legend(fontsize=8)
        result.save(out, fig, "SGD's noise escapes the sharp, poor minimum")
    return result
