"""gradient-norms: how per-example gradient norms are distributed during training, and who carries the noise.

Notation as in ``lab.estimators``: per-example gradients g_i, G = (1/n) sum_i g_i and
tr Sigma = (1/n) sum_i ||g_i - G||^2. Each example's share of the noise is ||g_i - G||^2 / (n tr Sigma);
the top 1% of examples (the ceil(n/100) largest) carry

    share_1% = sum_{top 1%} ||g_i - G||^2 / sum_i ||g_i - G||^2     (1% if every example were alike).

||g_i - G||^2 = ||g_i||^2 - 2 g_i.G + ||G||^2, with
g_i.G = sum_l [a_{l-1}(x_i)^T G_{W_l} delta_l(x_i) + G_{b_l}.delta_l(x_i)]
taken from one batched backprop, without materialising the n gradients. Also reported: the
variance of the one-example estimator under importance sampling p_i = ||g_i|| / sum_j ||g_j||
(the variance-optimal choice; Alain et al. 2015, Katharopoulos & Fleuret 2018) relative to uniform
sampling, (mean_i ||g_i||)^2 - ||G||^2 over tr Sigma (<= 1 by Cauchy-Schwarz).

The network is trained with the lab's reference setting (mini-batch SGD, B = 10, eta = 3 on classes)
from several seeds; at checkpoints (epochs 0, 1/10, 1, 3, ...), every example's gradient is measured.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..backend import to_numpy
from ..machine import describe, recording_load
from ..plots import new_figure
from ..train import Callback, fit
from .common import load, network_for
from .estimators import flatten, mean_ci
from .result import LabResult
from .tuning import pinned_threads
from .verdict import decide

SHARE_THRESHOLD = 0.10  # "a few examples carry much of the noise": top 1% carry at least 10x their share


def per_example_deviations(net, X, y) -> dict:
    """||g_i||^2, ||g_i - G||^2 (shape (n,) each) and G (flat), from one batched backprop (see module doc)."""
    Xb, T, _ = net._inputs(X, y)
    acts, deltas, _ = kernels.backprop(net.arch, net.params, Xb, T, net.xp)
    m = Xb.shape[0]
    grads = [(gW / m, gb / m) for gW, gb in kernels.sums_from(acts, deltas, net.xp)]  # G = (1/n) sum_i g_i
    G = flatten(grads)
    sq = np.zeros(Xb.shape[0])
    dot = np.zeros(Xb.shape[0])
    for a, d, (GW, Gb) in zip(acts[:-1], deltas, grads, strict=True):
        a, d = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(d), dtype=np.float64)
        GW, Gb = np.asarray(to_numpy(GW), dtype=np.float64), np.asarray(to_numpy(Gb), dtype=np.float64)
        sq += np.sum(d * d, axis=1) * (np.sum(a * a, axis=1) + 1.0)
        dot += np.sum((a @ GW) * d, axis=1) + d @ Gb
    g2 = float(G @ G)
    return {"norm_sq": sq, "deviation_sq": np.maximum(sq - 2 * dot + g2, 0.0), "G": G}


def top_share(values, fraction: float = 0.01) -> float:
    """Share of sum(values) carried by the ceil(fraction * n) largest values.

    >>> top_share([1.0] * 99 + [99.0])
    0.5
    """
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    k = max(1, math.ceil(fraction * len(v)))
    total = v.sum()
    return float(v[:k].sum() / total) if total > 0 else math.nan


def snapshot(net, X, y) -> dict:
    """The distribution's summary at the current parameters."""
    d = per_example_deviations(net, X, y)
    norms = np.sqrt(d["norm_sq"])
    g2 = float(d["G"] @ d["G"])
    tr = float(d["deviation_sq"].mean())
    q = np.quantile(norms, [0.5, 0.9, 0.99])
    pred = np.argmax(np.asarray(to_numpy(net.predict(X))), axis=1) if net.sizes[-1] > 1 else None
    k = max(1, math.ceil(0.01 * len(norms)))
    top = np.argsort(d["deviation_sq"])[::-1][:k]
    return {"tr_sigma": tr, "grad_norm_sq": g2, "mean_norm": float(norms.mean()), "median_norm": float(q[0]),
            "p90_norm": float(q[1]), "p99_norm": float(q[2]), "max_norm": float(norms.max()),
            "p99_over_median": float(q[2] / q[0]) if q[0] > 0 else math.inf,
            "top1_share_tr_sigma": top_share(d["deviation_sq"]), "top1_share_norm_sq": top_share(d["norm_sq"]),
            "importance_sampling_variance_ratio": (float(norms.mean()) ** 2 - g2) / tr if tr > 0 else math.nan,
            "top1_misclassified": None if pred is None else float(np.mean(pred[top] != np.asarray(y)[top])),
            "misclassified": None if pred is None else float(np.mean(pred != np.asarray(y))),
            "norms": norms, "deviation_sq": d["deviation_sq"]}


class _Snapshots(Callback):
    def __init__(self, net, X, y, at_examples):
        self.net, self.X, self.y = net, X, y
        self.at = list(at_examples)
        self.rows = [dict(snapshot(net, X, y), examples_seen=0)] if self.at and self.at[0] == 0 else []
        self.at = [a for a in self.at if a > 0]

    def on_update_end(self, r):
        if self.at and r["examples_seen"] >= self.at[0]:
            self.at.pop(0)
            self.rows.append(dict(snapshot(self.net, self.X, self.y), examples_seen=r["examples_seen"]))


def decide_claims(s: dict) -> list:
    """The verdicts, from the summary numbers only (so a test can feed the opposite outcome).

    ``s`` holds, over seeds: ``share_end`` / ``share_end_ci`` (top-1% share of tr Sigma at the last
    checkpoint, mean and 95% half-width), ``share_growth`` / ``share_growth_ci`` (end minus the first
    checkpoint after the start, paired by seed), ``is_ratio_end`` / ``is_ratio_end_ci``.
    """
    lo = s["share_end"] - s["share_end_ci"]
    v1 = decide("A few examples carry much of the gradient noise (the top 1% carry at least 10% of tr Sigma)",
                holds=lo >= SHARE_THRESHOLD,
                rule="lower end of the 95% t interval over seeds of the top-1% share at the end "
                     f">= {SHARE_THRESHOLD:.0%}",
                evidence=f"top-1% share {s['share_end']:.1%} ± {s['share_end_ci']:.1%}",
                caveat=None if lo >= 0.5 else
                "concentrated, yet most of tr Sigma (the lower end of the interval is under half) is spread over "
                "the other 99% of examples")
    g_lo = s["share_growth"] - s["share_growth_ci"]
    v2 = decide("The noise concentrates on fewer examples as training proceeds",
                holds=g_lo > 0,
                rule="95% paired t interval over seeds of (share at the end - share early in training) above 0",
                evidence=f"change {s['share_growth']:+.1%} ± {s['share_growth_ci']:.1%}")
    hi = s["is_ratio_end"] + s["is_ratio_end_ci"]
    v3 = decide("Sampling examples in proportion to their gradient norm would cut the variance at least 2x",
                holds=hi <= 0.5,
                rule="upper end of the 95% t interval of Var_IS / Var_uniform at the end <= 0.5",
                evidence=f"Var_IS / Var_uniform = {s['is_ratio_end']:.2f} ± {s['is_ratio_end_ci']:.2f}")
    return [v1, v2, v3]


def verdicts(numbers: dict) -> list:
    """The verdicts from a result's ``numbers`` (as saved in its JSON): ``decide_claims(numbers["summary"])``."""
    return decide_claims(numbers["summary"])


def run(data="digits", data_dir=None, *, seed: int = 0, out=None, quick: bool = False, seeds: int | None = None,
        epochs: int | None = None) -> LabResult:
    ds = load(data, data_dir, seed)
    X, y = ds.X_train, ds.y_train
    n = len(X)
    epochs = epochs or (3 if quick else 10)
    seeds = list(range(seed, seed + (seeds or (3 if quick else 5))))
    lr = 3.0 if ds.n_classes else 0.1
    marks = [0.0, 0.1, 1.0, 3.0, 10.0, 30.0]
    marks = [m for m in marks if m <= epochs] + ([float(epochs)] if epochs not in marks else [])
    at = [round(m * n) for m in marks]
    numbers = {"n": n, "epochs": epochs, "lr": lr, "batch_size": 10, "seeds": seeds, "checkpoint_epochs": marks,
               "machine": describe()}
    per_seed = []
    with recording_load(numbers), pinned_threads(1):
        for s in seeds:
            net = network_for(ds, seed=s, dtype="float64")
            snaps = _Snapshots(net, X, y, at)
            fit(net, X, y, batch_size=10, lr=lr, epochs=epochs, seed=s, eval_train=False, callbacks=[snaps])
            per_seed.append(snaps.rows)
    keys = ("top1_share_tr_sigma", "top1_share_norm_sq", "importance_sampling_variance_ratio", "p99_over_median",
            "median_norm", "p99_norm", "max_norm", "tr_sigma", "grad_norm_sq", "top1_misclassified", "misclassified")
    checkpoints = []
    for i, m in enumerate(marks):
        row = {"epoch": m}
        for k in keys:
            vals = [rows[i][k] for rows in per_seed]
            if any(v is None for v in vals):
                continue
            mean, half = mean_ci(np.array(vals, dtype=float))
            row[k], row[k + "_ci95"], row[k + "_per_seed"] = float(mean), float(half), vals
        checkpoints.append(row)
    numbers["checkpoints"] = checkpoints
    last, early = checkpoints[-1], checkpoints[1]
    growth = [a - b for a, b in zip(last["top1_share_tr_sigma_per_seed"], early["top1_share_tr_sigma_per_seed"],
                                    strict=True)]
    gm, gh = mean_ci(np.array(growth))
    summary = {"share_end": last["top1_share_tr_sigma"], "share_end_ci": last["top1_share_tr_sigma_ci95"],
               "share_growth": float(gm), "share_growth_ci": float(gh), "share_growth_from_epoch": early["epoch"],
               "is_ratio_end": last["importance_sampling_variance_ratio"],
               "is_ratio_end_ci": last["importance_sampling_variance_ratio_ci95"]}
    numbers["summary"] = summary
    verdicts = decide_claims(summary)
    # the distribution of the first seed, for the figure and the JSON
    numbers["norms_first_seed"] = {str(m): rows["norms"] for m, rows in zip(marks, per_seed[0], strict=True)}
    table = [{"epoch": r["epoch"], "median ||g_i||": r["median_norm"], "p99 / median": r["p99_over_median"],
              "max ||g_i||": r["max_norm"], "top-1% share of tr Σ": r["top1_share_tr_sigma"],
              "± 95%": r["top1_share_tr_sigma_ci95"], "Var_IS / Var": r["importance_sampling_variance_ratio"],
              "top 1% misclassified": r.get("top1_misclassified")} for r in checkpoints]
    mis = last.get("top1_misclassified")
    reading = (f"After {epochs} epochs the top 1% of examples carry {summary['share_end']:.1%} ± "
               f"{summary['share_end_ci']:.1%} of tr Σ (1% if all were alike), against "
               f"{early['top1_share_tr_sigma']:.1%} at epoch {early['epoch']:g}; the 99th percentile of ||g_i|| is "
               f"{last['p99_over_median']:.0f}× the median"
               + (f", and {mis:.0%} of those top examples are misclassified" if mis is not None else "")
               + f". Sampling by gradient norm would leave {summary['is_ratio_end']:.2f}× the variance of uniform "
               "sampling. " + " ".join(v.sentence() for v in verdicts))
    result = LabResult("gradient-norms", "Per-example gradient norms during training", reading, numbers, table,
                       verdicts=verdicts)
    if out is not None:
        fig, (ax1, ax2, ax3) = new_figure(3, size=(4.6, 4.0))
        for i, m in enumerate(marks):
            norms = np.sort(per_seed[0][i]["norms"])[::-1]
            ccdf = np.arange(1, len(norms) + 1) / len(norms)
            ax1.plot(norms, ccdf, color=f"C{i}", label=f"epoch {m:g}")
            dev = np.sort(per_seed[0][i]["deviation_sq"])[::-1]
            ax3.plot(np.arange(1, len(dev) + 1) / len(dev), np.cumsum(dev) / dev.sum(), color=f"C{i}",
                     label=f"epoch {m:g}")
        ax1.set(xscale="log", yscale="log", xlabel="||g_i||", ylabel="fraction of examples with a larger norm",
                title=f"distribution (seed {seeds[0]})")
        ax1.legend(fontsize=8)
        ep = np.array([r["epoch"] for r in checkpoints])
        for key, label, c in (("top1_share_tr_sigma", "top-1% share of tr Σ", "C0"),
                              ("importance_sampling_variance_ratio", "Var_IS / Var_uniform", "C1")):
            mean = np.array([r[key] for r in checkpoints])
            half = np.array([r[key + "_ci95"] for r in checkpoints])
            ax2.errorbar(ep, mean, yerr=half, fmt="o-", color=c, ms=4, capsize=3, label=label)
        ax2.axhline(0.01, color="gray", ls=":", lw=1)
        ax2.text(ep[-1], 0.012, "1%: all alike", ha="right", fontsize=8, color="gray")
        ax2.set_xscale("symlog", linthresh=0.1)
        ax2.set(xlabel="epoch (linear below 0.1, log above)", ylabel="fraction", yscale="log",
                title=f"mean of {len(seeds)} seeds, 95% t interval", xticks=ep, xticklabels=[f"{m:g}" for m in ep])
        ax2.set_xlim(-0.01, epochs * 1.3)
        ax2.legend(fontsize=8)
        ax3.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        ax3.axvline(0.01, color="gray", lw=0.8)
        ax3.set(xscale="log", xlabel="fraction of examples (largest ||g_i − G||² first)",
                ylabel="cumulative share of tr Σ", title="who carries the noise")
        ax3.set_xlim(1 / n, 1)
        result.save(out, fig, f"Per-example gradient norms, B = 10, η = {lr:g}")
    return result
