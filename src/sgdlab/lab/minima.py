"""minima: does gradient noise carry SGD out of a poor, sharp minimum into a better one?

1. A landscape that can be drawn. On w in R^2 the mean loss is

       L(w) = -A1 exp(-|w - c1|^2 / 2 s1^2) - A2 exp(-|w - c2|^2 / 2 s2^2) + k |w|^2

   with a sharp, poor minimum at c1 (s1 = 0.2, A1 = 1: curvature lambda_max ~ A1/s1^2 = 25, so plain
   gradient descent is stable there only for eta < 2/lambda_max ~ 0.08). The examples' losses are
   f_i(w) = L(w) + xi_i . w with centred xi_i ~ N(0, sigma^2 I): the full-batch gradient is exactly
   grad L and a mini-batch adds noise of covariance ~ sigma^2/B, so the noise that moves w per update
   scales with eta/B. Every run starts in the sharp basin (c1 plus a uniform offset in
   [-0.25, 0.25]^2); it "ends in the other minimum" when plain descent from its last point settles
   nearer c2. The same starts are used for every (eta, B), so outcomes are paired (McNemar tests).
   Depth and width are varied separately: c2 wide and deeper (s2 = 1, A2 = 1.3), wide and as deep as
   c1 (A2 chosen so the two minima have equal loss), and as sharp as c1 but deeper (s2 = 0.2).
2. A small network: 2-2-1 sigmoid on XOR from N(0, 1) weights, many seeds, batch GD (B = 4) against
   SGD (B = 1) at equal updates, each at its best eta of a grid; paired by seed (same initial weights),
   McNemar test. The runs are vectorised over seeds (``xor_train``), tested against ``fit``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..network import Network
from ..plots import new_figure
from .estimators import mcnemar, proportion_ci
from .result import LabResult
from .verdict import decide

C1, S1, A1 = np.array([-1.0, 0.0]), 0.2, 1.0  # sharp, poor
C2, S2, A2 = np.array([1.5, 0.0]), 1.0, 1.3  # wide, better
K = 0.02


@dataclass(frozen=True)
class Landscape:
    """Two Gaussian wells and a weak quadratic bowl (see the module docstring)."""

    c1: tuple = (-1.0, 0.0)
    s1: float = S1
    a1: float = A1
    c2: tuple = (1.5, 0.0)
    s2: float = S2
    a2: float = A2
    k: float = K

    def loss(self, w):
        d1, d2 = w - np.array(self.c1), w - np.array(self.c2)
        return (-self.a1 * np.exp(-np.sum(d1 * d1, -1) / (2 * self.s1 ** 2))
                - self.a2 * np.exp(-np.sum(d2 * d2, -1) / (2 * self.s2 ** 2)) + self.k * np.sum(w * w, -1))

    def grad(self, w):
        x, y = w[..., 0], w[..., 1]
        x1, y1, x2, y2 = x - self.c1[0], y - self.c1[1], x - self.c2[0], y - self.c2[1]
        e1 = self.a1 / self.s1 ** 2 * np.exp((x1 * x1 + y1 * y1) * (-0.5 / self.s1 ** 2))
        e2 = self.a2 / self.s2 ** 2 * np.exp((x2 * x2 + y2 * y2) * (-0.5 / self.s2 ** 2))
        return np.stack([e1 * x1 + e2 * x2 + 2 * self.k * x, e1 * y1 + e2 * y2 + 2 * self.k * y], -1)

    def settle(self, w, steps: int = 700, lr: float = 0.03):
        """Plain gradient descent from each row of ``w`` (steps below 2/lambda_max): where it comes to rest."""
        for _ in range(steps):
            w = w - lr * self.grad(w)
        return w

    def minima(self) -> dict:
        """The two local minima (settled from the centres), their losses and curvatures (Hessian eigenvalues)."""
        out = {}
        for name, c in (("sharp", self.c1), ("other", self.c2)):
            w = self.settle(np.array([c], dtype=float))[0]
            h, H = 1e-5, np.empty((2, 2))
            for i in range(2):
                e = np.zeros(2)
                e[i] = h
                H[:, i] = (self.grad(w + e) - self.grad(w - e)) / (2 * h)
            out[name] = {"w": w, "loss": float(self.loss(w)), "lambda_max": float(np.linalg.eigvalsh(H).max())}
        return out


DEFAULT = Landscape()


def loss(w):
    """Mean loss L(w) of the default landscape for points w of shape (..., 2)."""
    return DEFAULT.loss(w)


def grad(w):
    """grad L(w) of the default landscape for points w of shape (..., 2)."""
    return DEFAULT.grad(w)


@functools.lru_cache(maxsize=8)
def equal_depth_a2(base: Landscape = DEFAULT) -> float:
    """The A2 at which the two minima of ``base`` (with its s2) have the same loss (bisection)."""
    lo, hi = 0.5, 2.0
    for _ in range(16):
        mid = (lo + hi) / 2
        m = Landscape(**{**base.__dict__, "a2": mid}).minima()
        lo, hi = (mid, hi) if m["other"]["loss"] > m["sharp"]["loss"] else (lo, mid)
    return (lo + hi) / 2


def descend(w0, xi, batch: int, lr: float, epochs: int, rng, keep_path: bool = False, land: Landscape = DEFAULT):
    """Mini-batch SGD on f_i(w) = L(w) + xi_i . w for every row of w0 at once (reshuffled epochs)."""
    n, R = len(xi), len(w0)
    w, path = w0.copy(), [w0.copy()]
    for _ in range(epochs):
        perm = rng.permuted(np.tile(np.arange(n), (R, 1)), axis=1)
        for k in range(0, n, batch):
            w -= lr * (land.grad(w) + xi[perm[:, k:k + batch]].mean(axis=1))
            if keep_path:
                path.append(w.copy())
    return w, np.array(path)


def ends_in_other(w, land: Landscape = DEFAULT) -> np.ndarray:
    """True where plain descent from w settles nearer c2 than c1."""
    w = land.settle(np.where(np.isfinite(w), w, 0.0))
    return np.linalg.norm(w - np.array(land.c2), axis=1) < np.linalg.norm(w - np.array(land.c1), axis=1)


ends_in_better = ends_in_other


# ------------------------------------------------------------------ XOR, vectorised over seeds
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def xor_train(params, batch: int, lr: float, updates: int, rng):
    """Mini-batch descent (reshuffled epochs) on XOR for a stack of 2-2-1 sigmoid networks, quadratic cost.

    ``params`` = (W1 (R,2,2), b1 (R,2), W2 (R,2,1), b2 (R,1)); each network draws its own batch order
    from ``rng``. The same maths as ``fit``: w -= (eta/m) sum_batch grad C_x.
    """
    W1, b1, W2, b2 = (p.copy() for p in params)
    R = len(W1)
    order, pos = None, 4
    for _ in range(updates):
        if pos >= 4:
            order, pos = rng.permuted(np.tile(np.arange(4), (R, 1)), axis=1), 0
        idx = order[:, pos:pos + batch]
        pos += batch
        X, T = XOR_X[idx], XOR_Y[idx][..., None]  # (R, m, 2), (R, m, 1)
        a1 = _sigmoid(np.einsum("rmi,rij->rmj", X, W1) + b1[:, None, :])
        a2 = _sigmoid(np.einsum("rmj,rjk->rmk", a1, W2) + b2[:, None, :])
        d2 = (a2 - T) * a2 * (1 - a2)
        d1 = np.einsum("rmk,rjk->rmj", d2, W2) * a1 * (1 - a1)
        m = X.shape[1]
        W2 -= lr * np.einsum("rmj,rmk->rjk", a1, d2) / m
        b2 -= lr * d2.mean(1)
        W1 -= lr * np.einsum("rmi,rmj->rij", X, d1) / m
        b1 -= lr * d1.mean(1)
    return W1, b1, W2, b2


def xor_solved(params) -> np.ndarray:
    """True for each network that classifies all four XOR points right (output > 1/2 means 1)."""
    W1, b1, W2, b2 = params
    a1 = _sigmoid(np.einsum("mi,rij->rmj", XOR_X, W1) + b1[:, None, :])
    a2 = _sigmoid(np.einsum("rmj,rjk->rmk", a1, W2) + b2[:, None, :])[..., 0]
    return np.all((a2 > 0.5) == (XOR_Y > 0.5), axis=1)


def xor_initial(seeds) -> tuple:
    """The initial weights Network([2, 2, 1], init="normal", seed=s) has, stacked over seeds."""
    ps = [Network([2, 2, 1], init="normal", seed=int(s), dtype="float64").numpy_params() for s in seeds]
    return (np.array([p[0][0] for p in ps]), np.array([p[0][1] for p in ps]), np.array([p[1][0] for p in ps]),
            np.array([p[1][1] for p in ps]))


def xor_case(seeds, lrs, updates: int, rng_seed: int = 0) -> dict:
    """Solved (bool per seed) for batch GD (B = 4) and SGD (B = 1) at each eta, from the same initial weights."""
    init = xor_initial(seeds)
    out = {}
    for method, b in (("batch GD", 4), ("SGD", 1)):
        out[method] = {}
        for lr in lrs:
            rng = np.random.default_rng([rng_seed, b, int(lr * 1000)])
            out[method][f"{lr:g}"] = xor_solved(xor_train(init, b, lr, updates, rng)).tolist()
    return out


# ------------------------------------------------------------------ the claims
def verdicts(numbers: dict) -> list:
    """The claims, decided from ``numbers`` (paired outcomes per start / seed)."""
    out = []
    eta_c = numbers["eta_compare"]
    limit = numbers["variants"]["wide, deeper"]["minima"]["sharp"]["lambda_max"]
    for vname, claim in (("wide, deeper", "Below 2/λ_max, SGD (B = 1) leaves the sharp minimum for the better one "
                                          "more often than batch GD at the same η"),
                         ("wide, same depth", "Noise carries SGD to the wider minimum when it is no deeper"),
                         ("sharp, deeper", "Noise carries SGD to a deeper minimum that is as sharp as the poor one")):
        o = numbers["variants"][vname]["outcomes"]
        t = mcnemar(o[f"SGD, η={eta_c:g}"], o[f"batch GD, η={eta_c:g}"])
        out.append(decide(claim, holds=t["rate_a"] > t["rate_b"] and t["p_value"] < 0.05,
                          rule=f"paired starts, exact McNemar test at 5%, η = {eta_c:g} < 2/λ_max = {2 / limit:.3g}",
                          evidence=f"SGD {t['rate_a']:.0%}, batch GD {t['rate_b']:.0%} of {len(o[f'SGD, η={eta_c:g}'])}"
                                   f" starts, p = {t['p_value']:.2g}"))
    # batch GD alone: does it stay whatever eta?
    o = numbers["variants"]["wide, deeper"]["outcomes"]
    gd = {k: float(np.mean(v)) for k, v in o.items() if k.startswith("batch GD")}
    escaped = {k: v for k, v in gd.items() if v > 0}
    out.append(decide("Without noise (batch GD) descent never leaves the sharp minimum, whatever η",
                      holds=not escaped, rule="batch GD's fraction ending in the other minimum is 0 at every η tried",
                      evidence=", ".join(f"{k.split(', ')[1]}: {v:.0%}" for k, v in gd.items())
                               + f"; 2/λ_max = {2 / limit:.3g}"))
    # eta / B: equal ratios give equal escape fractions
    groups: dict = {}
    for key, frac in numbers["variants"]["wide, deeper"]["fraction"].items():
        name, eta = key.split(", η=")
        b = numbers["batch_sizes"].get(name)
        if b is not None and b < numbers["n"]:
            groups.setdefault(round(float(eta) / b, 12), []).append((key, frac))
    pairs = [(g[i], g[j]) for g in groups.values() for i in range(len(g)) for j in range(i + 1, len(g))]
    R = numbers["runs"]
    from scipy import stats

    ps = [stats.fisher_exact([[round(a[1] * R), R - round(a[1] * R)], [round(b[1] * R), R - round(b[1] * R)]])[1]
          for a, b in pairs]
    alpha = 0.05 / max(1, len(pairs))
    out.append(decide("The escape fraction depends on η/B alone (equal η/B, equal fraction)",
                      holds=bool(pairs) and all(p >= alpha for p in ps),
                      rule=f"Fisher exact test for every pair of settings with equal η/B, level 0.05/{len(pairs)}",
                      evidence="; ".join(f"{a[0]} {a[1]:.0%} vs {b[0]} {b[1]:.0%} (p = {p:.2g})"
                                         for (a, b), p in zip(pairs, ps, strict=True)) or "no pairs"))
    x = numbers["xor"]
    t = mcnemar(x["SGD"][x["best_lr"]["SGD"]], x["batch GD"][x["best_lr"]["batch GD"]])
    out.append(decide("On XOR (2-2-1) SGD finds a solution more often than batch GD, each at its best η",
                      holds=t["rate_a"] > t["rate_b"] and t["p_value"] < 0.05,
                      rule="same initial weights per seed, exact McNemar test at 5%, equal updates",
                      evidence=f"SGD (η {x['best_lr']['SGD']}) {t['rate_a']:.0%}, "
                               f"batch GD (η {x['best_lr']['batch GD']})"
                               f" {t['rate_b']:.0%} of {len(x['seeds'])} seeds, p = {t['p_value']:.2g}"))
    return out


def run(data=None, data_dir=None, *, seed: int = 0, out=None, quick: bool = False, n: int = 100, sigma: float = 4.0,
        epochs: int = 60, runs: int | None = None, lrs=(0.02, 0.03, 0.04, 0.05),
        gd_lrs=(0.02, 0.03, 0.05, 0.1, 0.2, 0.3),
        batch_sizes=(1, 2, 5, 10), xor_seeds: int | None = None) -> LabResult:
    """``data`` is not used: the landscape and XOR are synthetic (the option exists for a uniform command line)."""
    rng = np.random.default_rng(seed)
    R = runs or (60 if quick else 200)
    xi = rng.standard_normal((n, 2)) * sigma
    xi -= xi.mean(axis=0)
    starts = np.array(DEFAULT.c1) + rng.uniform(-0.25, 0.25, (R, 2))
    variants = {"wide, deeper": DEFAULT, "wide, same depth": Landscape(a2=equal_depth_a2()),
                "sharp, deeper": Landscape(s2=S1)}
    names = {b: ("SGD" if b == 1 else f"B={b}") for b in batch_sizes}
    eta_compare = 0.03
    vnum, rows = {}, []
    for vname, land in variants.items():
        outcomes, fraction = {}, {}
        settings = [(b, lr) for b in batch_sizes for lr in lrs] + [(n, lr) for lr in gd_lrs]
        if vname != "wide, deeper":  # the other landscapes: SGD against batch GD at one eta
            settings = [(1, eta_compare), (n, eta_compare)]
        for b, lr in settings:
            w, _ = descend(starts, xi, b, lr, epochs, np.random.default_rng([seed, b, int(lr * 1e6)]), land=land)
            key = f"{'batch GD' if b == n else names[b]}, η={lr:g}"
            o = ends_in_other(w, land)
            outcomes[key], fraction[key] = o.tolist(), float(o.mean())
        vnum[vname] = {"landscape": land.__dict__, "minima": land.minima(), "outcomes": outcomes, "fraction": fraction}
        for key, f in fraction.items():
            lo, hi = proportion_ci(round(f * R), R)
            name, eta = key.split(", η=")
            b = n if name == "batch GD" else next(k for k, v in names.items() if v == name)
            rows.append({"landscape": vname, "setting": key, "η/B": float(eta) / b, "fraction in other minimum": f,
                         "95% CI": f"[{lo:.2f}, {hi:.2f}]"})
    xs = xor_seeds if xor_seeds is not None else (40 if quick else 100)
    xor_lrs = (2.0, 8.0, 32.0) if quick else (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    xor_updates = 1000 if quick else 4000
    xor = xor_case(range(seed, seed + xs), xor_lrs, xor_updates, rng_seed=seed)
    best = {m: max(xor[m], key=lambda k, m=m: np.mean(xor[m][k])) for m in xor}
    xor.update({"seeds": list(range(seed, seed + xs)), "updates": xor_updates, "best_lr": best,
                "solved_fraction": {m: {k: float(np.mean(v)) for k, v in xor[m].items()} for m in ("batch GD", "SGD")}})
    numbers = {"n": n, "sigma": sigma, "epochs": epochs, "runs": R, "seed": seed, "eta_compare": eta_compare,
               "batch_sizes": {**{v: k for k, v in names.items()}, "batch GD": n}, "variants": vnum, "xor": xor}
    for m in ("batch GD", "SGD"):
        for k, f in xor["solved_fraction"][m].items():
            lo, hi = proportion_ci(round(f * xs), xs)
            rows.append({"landscape": "XOR 2-2-1", "setting": f"{m}, η={k}",
                         "η/B": float(k) / (4 if m == "batch GD" else 1),
                         "fraction in other minimum": f, "95% CI": f"[{lo:.2f}, {hi:.2f}] (solved)"})
    result = LabResult("minima", "Sharp and wide minima: where noise takes descent", "", numbers, rows)
    result.verdicts = verdicts(numbers)
    lam = vnum["wide, deeper"]["minima"]["sharp"]["lambda_max"]
    result.reading = result.reading_from_verdicts(
        f"{R} paired starts in the sharp basin (λ_max = {lam:.3g}, so 2/λ_max = {2 / lam:.3g}); XOR: {xs} seeds, "
        f"{xor_updates} updates.")
    if out is not None:
        fig, (ax, ax2, ax3) = new_figure(3, size=(4.6, 4.0))
        land = DEFAULT
        g1, g2 = np.meshgrid(np.linspace(-2.2, 3.2, 200), np.linspace(-2.0, 2.0, 160))
        ax.contourf(g1, g2, land.loss(np.stack([g1, g2], -1)), levels=30, cmap="viridis")
        for b, lr, colour, label in ((n, eta_compare, "white", f"batch GD, η = {eta_compare:g}"),
                                     (1, eta_compare, "red", f"SGD, η = {eta_compare:g}"),
                                     (n, max(gd_lrs), "orange", f"batch GD, η = {max(gd_lrs):g} > 2/λ_max")):
            _, path = descend(starts[:1], xi, b, lr, max(10, epochs // 3), np.random.default_rng([seed, 99, b]),
                              keep_path=True)
            ax.plot(path[:, 0, 0], path[:, 0, 1], "-", color=colour, lw=0.8, label=label)
        ax.plot(*land.c1, "kx")
        ax.plot(*land.c2, "k+")
        ax.set(xlabel="w1", ylabel="w2", xlim=(-2.2, 3.2), ylim=(-2, 2), title="trajectories over L(w)")
        ax.legend(fontsize=7, loc="lower left")
        for i, (vname, v) in enumerate(vnum.items()):
            for key, f in v["fraction"].items():
                name, eta = key.split(", η=")
                b = numbers["batch_sizes"][name]
                lo, hi = proportion_ci(round(f * R), R)
                ax2.errorbar(float(eta) / b, f, yerr=[[max(0.0, f - lo)], [max(0.0, hi - f)]],
                             fmt="s" if name == "batch GD" else "o",
                             color=f"C{i}", ms=4, alpha=0.8, label=vname if key == next(iter(v["fraction"])) else None)
        ax2.set(xscale="log", xlabel="η / B (batch GD: squares)", ylabel="fraction ending in the other minimum",
                ylim=(-0.05, 1.05), title=f"{R} paired starts, 95% Wilson intervals")
        ax2.legend(fontsize=7)
        for i, m in enumerate(("batch GD", "SGD")):
            ks = list(xor["solved_fraction"][m])
            fr = [xor["solved_fraction"][m][k] for k in ks]
            ci = [proportion_ci(round(f * xs), xs) for f in fr]
            ax3.errorbar([float(k) for k in ks], fr, yerr=[[max(0.0, f - c[0]) for f, c in zip(fr, ci, strict=True)],
                                                           [max(0.0, c[1] - f) for f, c in zip(fr, ci, strict=True)]],
                         fmt="o-", color=f"C{i}", label=m, capsize=2)
        ax3.set(xscale="log", xlabel="η", ylabel="fraction of seeds solving XOR", ylim=(-0.05, 1.05),
                title=f"XOR 2-2-1: {xs} seeds, {xor_updates} updates")
        ax3.set_xticks(list(xor_lrs), [f"{v:g}" for v in xor_lrs])
        ax3.minorticks_off()
        ax3.legend(fontsize=8)
        result.save(out, fig, "Where descent ends from a sharp minimum's basin, against η/B; XOR solved against η")
    return result

