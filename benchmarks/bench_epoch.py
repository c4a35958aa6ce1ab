"""Seconds per epoch of mini-batch SGD: sgdlab against PyTorch eager, scikit-learn and JAX, in one run.

784-100-10 sigmoid network, quadratic cost, plain SGD (eta = 0.1), 8,000 MNIST-shaped float32
examples, batch sizes 1, 10, 128, 1024 and n (full batch). Every peer does the same work per
update: gather the batch by a shuffled index, forward, backward (no gradient for the input),
w <- w - (eta/m) sum grad. The peers:

  sgdlab        ``sgdlab.fit`` as a user calls it, with its default choice of how updates are made
                (``--stepper NAME`` forces one, where ``fit`` takes ``stepper=``); the time is
                fit's own training clock (``train_seconds``), evaluation off; the wall time of the
                whole call (input checks included) is kept in the JSON
  torch         PyTorch eager: autograd, parameters updated in place
  sklearn       scikit-learn's MLPClassifier.partial_fit (one epoch; logistic hidden layer, but
                softmax and cross-entropy at the output: it offers no quadratic cost; same products)
  jax_step      JAX, one ``jit``-compiled update per batch, the epoch looped in Python
  jax_epoch     JAX, the whole epoch one ``jit``-compiled ``lax.fori_loop``
JAX is optional (skipped when it is not installed), as are PyTorch and scikit-learn.

Honest timing: the peers run interleaved, round by round (each round times one epoch of every
peer at every batch size, the peers' order rotating), so a change in the machine's load hits all
of them alike; the first ``--warmup`` round(s) (compilation, caches) are dropped, and at least
5 rounds are kept (batch 1 included). Every library gets the same number of threads
(``--threads``, default 1): threadpoolctl for the BLAS of NumPy/SciPy/scikit-learn (and sgdlab),
``torch.set_num_threads``, and XLA flags for JAX. Flags are not enough: JAX 0.10's CPU runtime
ignores ``--xla_cpu_multi_thread_eigen=false`` and ran a 1024^3 product on both cores of a 2-core
machine (24.8 ms of CPU in 12.9 ms of wall time), so by default the process is also pinned to
``--threads`` CPUs (sched_setaffinity), which binds every library whatever it decides inside
(``--no-pin`` turns that off). Each peer's CPU seconds per wall second are measured in every
round and reported (column "CPU/wall"), so the thread counts are checked, not assumed.

FLOPs are counted exactly from the layer sizes (``flops_per_example``): 319,600 per example for
784-100-10, the multiply-adds of the matrix products (x2). The float32 GEMM rate (a 1024^3 product)
of NumPy's BLAS, and of PyTorch and JAX where they are peers, is measured in the same run, on the
same threads, once per round; the machine's rate is the best library's median, and each peer's
GFLOP/s is given as a fraction of it (and sgdlab's of NumPy's too). So is each library's rate on the
full batch's own products (``step_products``: every forward, gradient and backward product of the
step on n rows, nothing else), which is well below the 1024^3 rate for 784-100-10: sgdlab's epoch is
also given as a fraction of the best of these (``fraction_of_step_products``). NumPy's alone can understate
the machine: with OPENBLAS_CORETYPE=Haswell set, as some machines here set it for older OpenBLAS
builds, NumPy's OpenBLAS ran 106.2 GFLOP/s on a core of an AMD EPYC (AVX-512) where XLA ran 214.0
(medians; ``results/bench_epoch_coretype_haswell.json``), and unrestricted 206.3 (``bench_epoch.json``).
The CPU, threads, BLAS (the core OpenBLAS runs, and the settings in the environment) and the load
average before and after go into the JSON (``sgdlab.machine``).

    python benchmarks/bench_epoch.py [--quick] [--threads 1] [--repeats 5] [--peers sgdlab,torch,...]
        [--stepper NAME] [--out benchmarks/results/bench_epoch.json]

Prints a table (median, min-max over the kept rounds) and writes JSON. Ratios > 1: sgdlab faster.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

import sgdlab
from sgdlab import machine
from sgdlab.lab.throughput import flops_per_example  # the one FLOP count (bench_gpu and the lab use it too)

N, SIZES, LR = 8000, (784, 100, 10), 0.1
PEERS = ("sgdlab", "torch", "sklearn", "jax_step", "jax_epoch")


def method_for(m: int, n: int) -> dict:
    return {"method": "batch"} if m == n else {"method": "stochastic"} if m == 1 else \
        {"method": "minibatch", "batch_size": m}


# ----------------------------------------------------------------------------- the peers
def sgdlab_peer(X, y, m, stepper=None):
    params = inspect.signature(sgdlab.fit).parameters
    kw = {"eval_train": False} if "eval_train" in params else {}
    if stepper is not None:
        kw["stepper"] = stepper
    net = sgdlab.Network(list(SIZES), seed=0)
    seeds = iter(range(10**9))
    info = {}

    def run():
        t0 = time.perf_counter()
        h = sgdlab.fit(net, X, y, lr=LR, epochs=1, seed=next(seeds), **method_for(m, len(X)), **kw)
        info["wall"] = time.perf_counter() - t0
        info["how"] = {k: v for k, v in h.config.items()
                       if k in ("stepper", "stepper_info", "fused", "threads", "blas_threads")}
        return h.last["train_seconds"]
    run.info = info
    return run


def torch_peer(X, y, m):
    import torch

    n = len(X)
    Xt, Yt = torch.from_numpy(X), torch.nn.functional.one_hot(torch.from_numpy(y), SIZES[-1]).float()
    g = torch.Generator().manual_seed(0)
    W1 = (torch.randn(SIZES[0], SIZES[1], generator=g) / SIZES[0] ** 0.5).requires_grad_()
    b1 = torch.zeros(SIZES[1], requires_grad=True)
    W2 = (torch.randn(SIZES[1], SIZES[2], generator=g) / SIZES[1] ** 0.5).requires_grad_()
    b2 = torch.zeros(SIZES[2], requires_grad=True)
    params = [W1, b1, W2, b2]

    def run():
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        for k in range(0, n, m):
            idx = perm[k:k + m]
            xb, yb = Xt[idx], Yt[idx]
            a = torch.sigmoid(torch.sigmoid(xb @ W1 + b1) @ W2 + b2)
            loss = 0.5 * ((a - yb) ** 2).sum() / len(idx)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gp in zip(params, grads, strict=True):
                    p.sub_(LR * gp)
        return time.perf_counter() - t0
    return run


def sklearn_peer(X, y, m):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(SIZES[1],), activation="logistic", solver="sgd", batch_size=m,
                        learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False, alpha=0.0, random_state=0)
    classes = np.arange(SIZES[-1])

    def run():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.partial_fit(X, y, classes=classes)
        return time.perf_counter() - t0
    return run


def _jax_parts(X, y):
    import jax
    import jax.numpy as jnp

    def loss(p, xb, yb):
        (W1, b1), (W2, b2) = p
        a = jax.nn.sigmoid(jax.nn.sigmoid(xb @ W1 + b1) @ W2 + b2)
        return 0.5 * jnp.sum((a - yb) ** 2) / xb.shape[0]

    def step(p, X, Y, idx):  # the gradient is taken for the parameters only, never for X
        g = jax.grad(loss)(p, X[idx], Y[idx])
        return jax.tree_util.tree_map(lambda w, gw: w - LR * gw, p, g)

    rng = np.random.default_rng(0)
    p = [(jnp.asarray(rng.standard_normal((a, b), dtype=np.float32) / np.float32(a ** 0.5)), jnp.zeros(b, jnp.float32))
         for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    Xj, Yj = jnp.asarray(X), jnp.asarray(np.eye(SIZES[-1], dtype=np.float32)[y])
    return jax, jnp, step, p, Xj, Yj, rng


def jax_step_peer(X, y, m):
    jax, jnp, step, p, Xj, Yj, rng = _jax_parts(X, y)
    step = jax.jit(step)
    n, state = len(X), {"p": p}

    def run():
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        q = state["p"]
        for k in range(0, n, m):
            q = step(q, Xj, Yj, perm[k:k + m])
        jax.block_until_ready(q)
        state["p"] = q
        return time.perf_counter() - t0
    return run


def jax_epoch_peer(X, y, m):
    jax, jnp, step, p, Xj, Yj, rng = _jax_parts(X, y)
    n = len(X)
    full = n // m

    @jax.jit
    def epoch(q, X, Y, perm):
        q = jax.lax.fori_loop(0, full, lambda k, q: step(q, X, Y, jax.lax.dynamic_slice(perm, (k * m,), (m,))), q)
        return step(q, X, Y, perm[full * m:]) if n % m else q

    state = {"p": p}

    def run():
        t0 = time.perf_counter()
        q = epoch(state["p"], Xj, Yj, jnp.asarray(rng.permutation(n).astype(np.int32)))
        jax.block_until_ready(q)
        state["p"] = q
        return time.perf_counter() - t0
    return run


FACTORIES = {"sgdlab": sgdlab_peer, "torch": torch_peer, "sklearn": sklearn_peer,
             "jax_step": jax_step_peer, "jax_epoch": jax_epoch_peer}
MODULES = {"torch": "torch", "sklearn": "sklearn", "jax_step": "jax", "jax_epoch": "jax"}


# ----------------------------------------------------------------------------- threads and the roof
def limit_threads(threads: int, pin: bool) -> dict:
    """Give every library ``threads`` threads; returns what was done, for the JSON."""
    done = {"threads": threads, "pinned_cpus": None}
    if pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
        done["pinned_cpus"] = cpus
    if threads == 1:  # read when JAX is first imported; XLA has no flag for other thread counts
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
        done["jax"] = "XLA_FLAGS=" + flags
    else:
        done["jax"] = "XLA's own thread pool (no XLA flag sets a thread count other than 1)"
    done["jax_already_imported"] = "jax" in __import__("sys").modules
    return done


def peer_gemm(library: str, size: int = 1024):
    """A float32 size^3 product by ``library`` ("numpy", "torch" or "jax"), returned as a call to time (the
    thread limits are the run's: threadpoolctl, torch.set_num_threads, XLA's flags and the pinned CPUs)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    if library == "numpy":
        c = np.empty_like(a)
        return lambda: np.matmul(a, b, out=c)
    if library == "torch":
        import torch

        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(np.empty_like(a))
        return lambda: torch.matmul(ta, tb, out=tc)
    import jax
    import jax.numpy as jnp

    ja, jb, mm = jnp.asarray(a), jnp.asarray(b), jax.jit(jnp.matmul)
    return lambda: mm(ja, jb).block_until_ready()


def library_rates(make, flops: int, threads: int, peers, tries: int = 3) -> dict:
    """GFLOP/s of ``make(library)``'s call, ``flops`` per call, for NumPy and for PyTorch and JAX where they are
    peers: each call made once (warm-up, compilation), then the best of ``tries``, on ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    rates = {}
    with threadpool_limits(threads):
        for library in ("numpy", "torch", "jax"):
            if library == "numpy" or any(MODULES.get(p) == library for p in peers):
                f = make(library)
                f()
                rates[library] = flops / min(_timed(f) for _ in range(tries)) / 1e9
    return rates


def gemm_gflops(threads: int, peers, size: int = 1024, tries: int = 3) -> dict:
    """The float32 GEMM rate of every library in the run (NumPy's BLAS, and PyTorch's and JAX's where they are
    peers; ``library_rates``): the machine's rate is the best of them. NumPy's alone can understate it: an
    OpenBLAS held to older kernels (OPENBLAS_CORETYPE) or without kernels for this CPU runs at a fraction of
    what the same core does for XLA or MKL."""
    return library_rates(lambda library: peer_gemm(library, size), 2 * size ** 3, threads, peers, tries)


def step_products(library: str, n: int):
    """The matrix products of one full-batch training step of SIZES on n float32 rows, exactly the FLOPs
    counted (``flops_per_example`` x n): per layer the forward a W and the gradient a^T delta, and delta W^T
    for every layer but the first; by ``library`` ("numpy", "torch" or "jax", JAX's as one jit-compiled
    function), returned as a call to time. Activations, biases and updates are left out: this is the
    least time the library's GEMM needs for the step's own shapes."""
    rng = np.random.default_rng(0)
    pairs = list(zip(SIZES[:-1], SIZES[1:], strict=True))
    acts = [rng.random((n, a), dtype=np.float32) for a, _ in pairs]  # each layer's input rows
    ws = [rng.random((a, b), dtype=np.float32) for a, b in pairs]
    ds = [rng.random((n, b), dtype=np.float32) for _, b in pairs]

    def products(mm, t, acts, ws, ds):
        out = [mm(a, w) for a, w in zip(acts, ws, strict=True)]
        out += [mm(t(a), d) for a, d in zip(acts, ds, strict=True)]
        out += [mm(d, t(w)) for d, w in zip(ds[1:], ws[1:], strict=True)]
        return out

    if library == "numpy":
        return lambda: products(np.matmul, np.transpose, acts, ws, ds)
    if library == "torch":
        import torch

        ta, tw, td = ([torch.from_numpy(x) for x in xs] for xs in (acts, ws, ds))
        return lambda: products(torch.matmul, torch.t, ta, tw, td)
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda a, w, d: products(jnp.matmul, jnp.transpose, a, w, d))
    ja, jw, jd = ([jnp.asarray(x) for x in xs] for xs in (acts, ws, ds))
    return lambda: jax.block_until_ready(f(ja, jw, jd))


def step_products_gflops(threads: int, peers, n: int, tries: int = 3) -> dict:
    """``step_products``' rate for every library in the run (``library_rates``): on the network's own shapes
    the best library runs well below its 1024^3 rate."""
    return library_rates(lambda library: step_products(library, n), flops_per_example(SIZES) * n, threads, peers,
                         tries)


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _timed_cpu(f) -> tuple[float, float]:
    """(what f returns: its own timing, process CPU seconds per wall second during the call)."""
    t0, c0 = time.perf_counter(), time.process_time()
    seconds = f()
    return seconds, (time.process_time() - c0) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the run
def run(X, y, batch_sizes, peers, rounds: int, warmup: int, threads: int, stepper=None, log=print) -> dict:
    """Time one epoch of every peer at every batch size, ``rounds`` times, interleaved."""
    from threadpoolctl import threadpool_limits

    n = len(X)
    with threadpool_limits(threads):
        if "torch" in peers:
            import torch

            torch.set_num_threads(threads)
        runs = {(m, p): (sgdlab_peer(X, y, m, stepper) if p == "sgdlab" else FACTORIES[p](X, y, m))
                for m in batch_sizes for p in peers}
        times = {key: [] for key in runs}
        cpu = {key: [] for key in runs}
        gemm, shaped = [], []
        for r in range(rounds):
            order = peers[r % len(peers):] + peers[:r % len(peers)]
            gemm.append(gemm_gflops(threads, peers))
            shaped.append(step_products_gflops(threads, peers, n))
            for m in batch_sizes:
                for p in order:
                    seconds, load = _timed_cpu(runs[m, p])
                    times[m, p].append(seconds)
                    cpu[m, p].append(load)
            kept = "warm-up" if r < warmup else f"kept {r - warmup + 1}/{rounds - warmup}"
            log(f"round {r + 1}/{rounds} ({kept}): sgemm " + " ".join(f"{k} {v:.1f}" for k, v in gemm[-1].items()) +
                " GFLOP/s; " +
                ", ".join(f"B={m} " + " ".join(f"{p}={times[m, p][-1]:.4f}" for p in peers) for m in batch_sizes))
    flops = flops_per_example(SIZES) * n
    libraries = {k: statistics.median(g[k] for g in gemm[warmup:]) for k in gemm[0]}
    best = max(libraries, key=libraries.get)
    roof, numpy_roof = libraries[best], libraries["numpy"]
    step = {k: statistics.median(g[k] for g in shaped[warmup:]) for k in shaped[0]}
    step_best = max(step, key=step.get)
    rows = []
    for m in batch_sizes:
        row = {"batch_size": m, "updates_per_epoch": -(-n // m)}
        for p in peers:
            t = times[m, p][warmup:]
            med = statistics.median(t)
            row[p] = {"median_s": med, "min_s": min(t), "max_s": max(t), "all_s": t,
                      "gflops": flops / med / 1e9, "fraction_of_sgemm": flops / med / 1e9 / roof,
                      "fraction_of_numpy_sgemm": flops / med / 1e9 / numpy_roof,
                      "fraction_of_step_products": flops / med / 1e9 / step[step_best],
                      "cpu_per_wall": statistics.median(cpu[m, p][warmup:])}
            if p == "sgdlab":
                row[p]["fit_wall_s_last"] = runs[m, p].info.get("wall")
                row[p]["how"] = runs[m, p].info.get("how")
        rows.append(row)
    return {"rows": rows, "sgemm_gflops": {"median": roof, "library": best, "by_library": libraries,
                                           "per_round": gemm[warmup:], "warmup": gemm[:warmup]},
            "step_products_gflops": {"median": step[step_best], "library": step_best, "by_library": step,
                                     "rows": n, "per_round": shaped[warmup:], "warmup": shaped[:warmup]},
            "flops_per_epoch": flops}


def verdicts(rows, peers) -> list[str]:
    """The issue's speed targets, each read off the measured medians by the rule it states."""
    out = []
    others = [p for p in peers if p != "sgdlab"]
    if "sgdlab" not in peers:
        return out
    behind = [(r["batch_size"], p, r[p]["median_s"] / r["sgdlab"]["median_s"]) for r in rows for p in others
              if r[p]["median_s"] < r["sgdlab"]["median_s"]]
    out.append("sgdlab ahead of every peer at every batch size: " + ("yes" if not behind else
               "no; behind " + ", ".join(f"{p} at B={m} ({x:.2f}x)" for m, p, x in behind)))
    by = {r["batch_size"]: r for r in rows}
    if 1 in by:
        r = by[1]
        if "torch" in peers:
            x = r["torch"]["median_s"] / r["sgdlab"]["median_s"]
            out.append(f"batch 1, PyTorch eager / sgdlab = {x:.1f}x (target >= 20x: {'met' if x >= 20 else 'not met'})")
        if "jax_epoch" in peers:
            x = r["jax_epoch"]["median_s"] / r["sgdlab"]["median_s"]
            out.append(f"batch 1, JAX whole-epoch jit / sgdlab = {x:.2f}x (target > 1x, aim 1.5x: "
                       f"{'met' if x >= 1.5 else 'ahead, aim not met' if x > 1 else 'not met'})")
    full = [r for r in rows if r["updates_per_epoch"] == 1]  # the full batch, when the run has it
    if full:
        f, fn = full[0]["sgdlab"]["fraction_of_sgemm"], full[0]["sgdlab"]["fraction_of_numpy_sgemm"]
        out.append(f"full batch (B={full[0]['batch_size']}): sgdlab at {f:.0%} of the machine's float32 GEMM rate "
                   f"(the best library's) with exact FLOPs (target >= 85%: {'met' if f >= 0.85 else 'not met'}); "
                   f"{fn:.0%} of NumPy's; {full[0]['sgdlab']['fraction_of_step_products']:.0%} of the rate of the "
                   "best library's bare products of the step (no activations, no update)")
    return out


def table(rows, peers) -> str:
    head = "| batch | updates/epoch | " + " | ".join(f"{p} s/epoch (min-max)" for p in peers) + \
        " | sgdlab GFLOP/s | sgdlab / GEMM | " + " | ".join(f"{p} / sgdlab" for p in peers if p != "sgdlab") + \
        " | CPU/wall (" + ", ".join(peers) + ") |"
    n_ratio = len([p for p in peers if p != "sgdlab"])
    lines = [head, "|" + "---:|" * (2 + len(peers) + 2 + n_ratio + 1)]
    for r in rows:
        cells = [str(r["batch_size"]), str(r["updates_per_epoch"])]
        cells += [f"{r[p]['median_s']:.4f} ({r[p]['min_s']:.4f}-{r[p]['max_s']:.4f})" for p in peers]
        s = r.get("sgdlab")
        cells += [f"{s['gflops']:.1f}", f"{s['fraction_of_sgemm']:.0%}"] if s else ["-", "-"]
        cells += [f"{r[p]['median_s'] / s['median_s']:.1f}x" if s else "-" for p in peers if p != "sgdlab"]
        cells.append(" ".join(f"{r[p]['cpu_per_wall']:.2f}" for p in peers))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(threads: int) -> dict:
    """sgdlab.machine.describe(), its BLAS entries read under the thread limit the run uses."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return machine.describe()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: n=1000, batch sizes 10 and n, one warm-up and one kept round")
    ap.add_argument("--n", type=int, default=None, help=f"examples (default {N}; 1000 with --quick)")
    ap.add_argument("--batch-sizes", default=None,
                    help="comma-separated; 'n' is the full batch (default 1,10,128,1024,n)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (default 1)")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="restrict the process to --threads CPUs (default on: XLA ignores its thread flags)")
    ap.add_argument("--repeats", type=int, default=None, help="kept rounds (default 5; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=1, help="rounds dropped first (default 1)")
    ap.add_argument("--stepper", default=None, help="force sgdlab.fit's stepper by name (if fit takes stepper=)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_epoch.json")
    args = ap.parse_args(argv)
    n = args.n or (1000 if args.quick else N)
    sizes = args.batch_sizes or ("10,n" if args.quick else "1,10,128,1024,n")
    batch_sizes = [n if s.strip() == "n" else min(int(s), n) for s in sizes.split(",")]
    repeats = args.repeats or (1 if args.quick else 5)
    if args.stepper is not None and "stepper" not in inspect.signature(sgdlab.fit).parameters:
        ap.error("this sgdlab.fit takes no stepper= argument")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        return _main(args, ap, n, batch_sizes, repeats, limit_threads(args.threads, args.pin))
    finally:  # a caller in the same process (a test) gets its CPUs back
        if cpus is not None:
            os.sched_setaffinity(0, cpus)


def _main(args, ap, n, batch_sizes, repeats, threads) -> dict:
    peers, skipped = [], {}
    for p in args.peers.split(","):
        p = p.strip()
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; valid: {', '.join(PEERS)}")
        try:
            if p in MODULES:
                __import__(MODULES[p])
            peers.append(p)
        except ImportError as e:
            skipped[p] = f"not installed ({e})"
    rng = np.random.default_rng(0)
    X, y = rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)
    versions = {"sgdlab": sgdlab.__version__, "numpy": np.__version__}
    for p in peers:
        mod = MODULES.get(p)
        if mod:
            versions[mod] = __import__(mod).__version__
    result = {"benchmark": f"seconds per epoch, {'-'.join(map(str, SIZES))} sigmoid, quadratic cost, plain SGD "
                           f"(eta={LR}), n={n} float32 examples",
              "flops_per_example": flops_per_example(SIZES), "threads": threads, "peers": peers, "skipped": skipped,
              "stepper_forced": args.stepper, "rounds": {"warmup": args.warmup, "kept": repeats},
              "machine": _describe(args.threads), "versions": versions}
    with machine.recording_load(result):
        result.update(run(X, y, batch_sizes, peers, args.warmup + repeats, args.warmup, args.threads, args.stepper))
    result["verdicts"] = verdicts(result["rows"], peers)
    m = result["machine"]
    print(f"\n{m['cpu']}, {args.threads} thread(s); load {result['load_before']} -> {result['load_after']}")
    g = result["sgemm_gflops"]
    print(f"float32 GEMM here, {args.threads} thread(s), medians of the kept rounds: " +
          ", ".join(f"{k} {v:.1f}" for k, v in g["by_library"].items()) + f" GFLOP/s; the machine's: {g['library']}'s"
          + (f"; BLAS settings {m['blas_env']}" if m.get("blas_env") else ""))
    sp = result["step_products_gflops"]
    print(f"the full batch's own products ({sp['rows']} rows), medians: " +
          ", ".join(f"{k} {v:.1f}" for k, v in sp["by_library"].items()) + " GFLOP/s")
    print(table(result["rows"], peers))
    print("\n".join(result["verdicts"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
