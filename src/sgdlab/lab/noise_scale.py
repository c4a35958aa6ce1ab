"""noise-scale: the simple gradient noise scale B_simple = tr Sigma / ||G||^2, and what it advises.

McCandlish, Kaplan, Amodei et al. (2018), "An Empirical Model of Large-Batch Training":
B_simple predicts the critical batch size B_crit, the batch size of the best trade-off between
the number of updates S and the number of examples E needed to reach a given cost,

    S = S_min (1 + B_crit / B),        E = E_min (1 + B / B_crit),        E_min = S_min B_crit.

Measured here:
1. B_simple exactly, from per-example gradient norms (tr Sigma = mean ||g_i||^2 - ||G||^2);
2. B_simple from the unbiased two-batch-size estimators (small and big batches drawn with
   replacement), with its standard error;
3. B_simple tracked during training from one small/big pair every few updates, with exponential
   moving averages of numerator and denominator (never of the ratio), next to the exact value;
4. a batch-size sweep: for each B the fewest updates (over a grid of learning rates) that reach a
   target training cost, fitted with S = S_min (1 + B_crit/B) and compared with B_simple.
"""

from __future__ import annotations

import math
import numpy as np

from ..plots import new_figure
from ..train import Callback, StopTraining, fit
from .common import load, network_for, trained_network
from .estimators import RatioEMA, flatten, ratio_with_error, trace_sigma, two_batch_estimates
from .result import LabResult


def exact(net, X, y) -> dict:
    """tr Sigma, ||G||^2 and B_simple over all of (X, y), from per-example norms."""
    G = flatten(net.gradient(X, y))
    g2 = float(G @ G)
    tr = trace_sigma(net.per_example_grad_norms(X, y), G)
    return {"tr_sigma": tr, "grad_norm_sq": g2, "b_simple": tr / g2}


def _sq_norm(net, X, y, idx) -> float:
    g = flatten(net.gradient(X[idx], y[idx]))
    return float(g @ g)


def estimate(net, X, y, b_small: int, b_big: int, pairs: int, rng) -> dict:
    """B_simple from ``pairs`` independent small/big batch pairs (with replacement), with standard errors."""
    n = len(X)
    small = [_sq_norm(net, X, y, rng.integers(0, n, b_small)) for _ in range(pairs)]
    big = [_sq_norm(net, X, y, rng.integers(0, n, b_big)) for _ in range(pairs)]
    g2, s = two_batch_estimates(small, big, b_small, b_big)
    ratio, se = ratio_with_error(s, g2)
    return {"tr_sigma": float(s.mean()), "tr_sigma_se": float(s.std(ddof=1) / math.sqrt(pairs)),
            "grad_norm_sq": float(g2.mean()), "grad_norm_sq_se": float(g2.std(ddof=1) / math.sqrt(pairs)),
            "b_simple": ratio, "b_simple_se": se, "b_small": b_small, "b_big": b_big, "pairs": pairs}


class NoiseScaleTracker(Callback):
    """Every ``every`` updates: one small/big pair into a RatioEMA, and the exact value for reference."""

    def __init__(self, net, X, y, b_small, b_big, every, rng, decay=0.9):
        self.net, self.X, self.y, self.b_small, self.b_big, self.every, self.rng = net, X, y, b_small, b_big, every, rng
        self.ema, self.exact_ema, self.rows = RatioEMA(decay), RatioEMA(decay), []

    def on_update_end(self, r):
        if r["update"] % self.every:
            return
        n = len(self.X)
        gs = _sq_norm(self.net, self.X, self.y, self.rng.integers(0, n, self.b_small))
        gb = _sq_norm(self.net, self.X, self.y, self.rng.integers(0, n, self.b_big))
        g2, s = two_batch_estimates(gs, gb, self.b_small, self.b_big)
        ex = exact(self.net, self.X, self.y)
        self.rows.append({"update": r["update"], "ema_b_simple": self.ema.update(float(s), float(g2)),
                          "exact_b_simple": ex["b_simple"],
                          "exact_ema_b_simple": self.exact_ema.update(ex["tr_sigma"], ex["grad_norm_sq"]),
                          "train_cost": self.net.cost(self.X, self.y)})


class _StopAtCost(Callback):
    """Stops training once the training cost is <= target; checks at ~3% steps in the update count."""

    def __init__(self, net, X, y, target):
        self.net, self.X, self.y, self.target = net, X, y, target
        self.next, self.reached = 1, None

    def on_update_end(self, r):
        if r["update"] >= self.next:
            self.next = max(r["update"] + 1, int(r["update"] * 1.03))
            if self.net.cost(self.X, self.y) <= self.target:
                self.reached = r["update"]
                raise StopTraining


def steps_to_target(ds, b: int, lr: float, target: float, max_updates: int, seed: int) -> int | None:
    """Updates of mini-batch SGD (batch b, rate lr) from the lab's initial weights until the cost <= target."""
    net = network_for(ds, seed=seed)
    stop = _StopAtCost(net, ds.X_train, ds.y_train, target)
    n = len(ds.X_train)
    fit(net, ds.X_train, ds.y_train, batch_size=b, lr=lr, epochs=max(1, -(-max_updates * b // n)), seed=seed,
        eval_train=False, callbacks=[stop])
    return stop.reached


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    rng = np.random.default_rng(seed)
    net = trained_network(ds, seed=seed)
    b_small, b_big = 8, min(256, n)
    ex = exact(net, X, y)
    est = estimate(net, X, y, b_small, b_big, 100 if quick else 400, rng)

    # tracking during training, from the initial weights
    track_net = network_for(ds, seed=seed, dtype="float64")
    tracker = NoiseScaleTracker(track_net, X, y, b_small, b_big, every=20, rng=rng)
    fit(track_net, X, y, batch_size=10, lr=3.0 if ds.n_classes else 0.1, epochs=2 if quick else 6, seed=seed,
        eval_train=False, callbacks=[tracker])

    # batch-size sweep: updates and examples to reach a target cost
    ref = network_for(ds, seed=seed)
    lr0 = 3.0 if ds.n_classes else 0.1
    target = fit(ref, X, y, batch_size=10, lr=lr0, epochs=2).last["train_cost"]
    sizes = [b for b in ((2, 8, 32, 128, 512) if quick else (1, 4, 16, 64, 256, 1024)) if b <= n]
    lrs = [lr0 * f for f in ((0.5, 1, 2) if quick else (0.25, 0.5, 1, 2, 4))]
    sweep = []
    for b in sizes:
        tried = {lr: steps_to_target(ds, b, lr, target, max_updates=1000 if quick else 2000, seed=seed) for lr in lrs}
        ok = {lr: s for lr, s in tried.items() if s is not None}
        best = min(ok, key=ok.get) if ok else None
        sweep.append({"B": b, "best_lr": best, "updates": ok.get(best), "examples": None if best is None else ok[best] * b,
                      "updates_by_lr": {str(k): v for k, v in tried.items()}})
    done = [r for r in sweep if r["updates"]]
    inv_b = np.array([1.0 / r["B"] for r in done])
    S = np.array([r["updates"] for r in done], dtype=float)
    a, c = np.linalg.lstsq(np.stack([np.ones_like(inv_b), inv_b], 1), S, rcond=None)[0]  # S = S_min + S_min B_crit / B
    b_crit_fit, s_min = (c / a if a > 0 else math.nan), a
    b_pred = ex["b_simple"]
    s_min_pred = float(np.sum(S * (1 + b_pred * inv_b)) / np.sum((1 + b_pred * inv_b) ** 2))  # LS with B_crit fixed
    numbers = {"n": n, "exact": ex, "two_batch_estimate": est, "tracking": tracker.rows,
               "sweep": {"target_cost": target, "learning_rates": lrs, "rows": sweep, "fit_S_min": s_min,
                         "fit_B_crit": b_crit_fit, "predicted_B_crit": b_pred, "S_min_given_predicted_B_crit": s_min_pred,
                         "E_min_fit": s_min * b_crit_fit}}
    rows = [{"quantity": "B_simple, exact (per-example norms)", "value": ex["b_simple"], "± se": None},
            {"quantity": f"B_simple, two-batch estimate (b={b_small}, B={b_big})", "value": est["b_simple"], "± se": est["b_simple_se"]},
            {"quantity": "B_simple, EMA at end of tracking", "value": tracker.rows[-1]["ema_b_simple"] if tracker.rows else None, "± se": None},
            {"quantity": "B_simple, exact with the same EMA, end of tracking", "value": tracker.rows[-1]["exact_ema_b_simple"] if tracker.rows else None, "± se": None},
            {"quantity": "B_crit fitted from the sweep", "value": b_crit_fit, "± se": None},
            {"quantity": "S_min (updates) fitted from the sweep", "value": s_min, "± se": None}]
    advice = (f"B_simple ~ {b_pred:.0f}: batches much smaller than that waste updates (S grows like 1 + B_crit/B), "
              f"much larger ones waste examples (E grows like 1 + B/B_crit).")
    agree = 0.5 <= b_crit_fit / b_pred <= 2
    result = LabResult(
        "noise-scale", "Gradient noise scale and the critical batch size",
        f"The simple noise scale is B_simple = {ex['b_simple']:.1f} exactly and {est['b_simple']:.1f} ± {est['b_simple_se']:.1f} "
        f"from the two-batch estimators, which predicts the critical batch size. The batch-size sweep fits B_crit = "
        f"{b_crit_fit:.1f}, " + ("in line with the prediction." if agree else
        f"{b_pred / b_crit_fit:.0f}x {'below' if b_crit_fit < b_pred else 'above'} the prediction: here the largest stable "
        f"learning rate is reached at small batches, so bigger batches cannot take bigger steps."), numbers, rows)
    numbers["advice"] = advice
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(5.0, 4.0))
        if tracker.rows:
            u = [r["update"] for r in tracker.rows]
            ax1.plot(u, [r["exact_b_simple"] for r in tracker.rows], label="exact")
            ax1.plot(u, [r["exact_ema_b_simple"] for r in tracker.rows], label="exact, same EMA")
            ax1.plot(u, [r["ema_b_simple"] for r in tracker.rows], label="EMA of two-batch estimates")
        ax1.set(xlabel="update", ylabel="B_simple", yscale="log", title="noise scale during training")
        ax1.legend(fontsize=8)
        bs = np.geomspace(min(sizes), max(sizes), 100)
        ax2.plot([r["B"] for r in done], S, "o", label="measured (best lr)")
        ax2.plot(bs, s_min * (1 + b_crit_fit / bs), "-", label=f"fit, B_crit={b_crit_fit:.0f}")
        ax2.plot(bs, s_min_pred * (1 + b_pred / bs), "--", label=f"predicted, B_crit=B_simple={b_pred:.0f}")
        ax2.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="updates S to target", title="steps")
        ax2.legend(fontsize=8)
        ax3.plot([r["B"] for r in done], [r["examples"] for r in done], "o", label="measured")
        ax3.plot(bs, s_min * b_crit_fit * (1 + bs / b_crit_fit), "-", label="fit")
        ax3.plot(bs, s_min_pred * b_pred * (1 + bs / b_pred), "--", label="predicted")
        ax3.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="examples E to target", title="examples")
        ax3.legend(fontsize=8)
        result.save(out, fig, f"Noise scale: B_simple = {ex['b_simple']:.1f}")
    return result
