"""A feedforward network and batched backpropagation.

Shape convention: rows are examples. Layer l holds W_l of shape (fan_in, fan_out) and
b_l of shape (fan_out,) and computes, for the whole batch at once,

    z_l = a_{l-1} @ W_l + b_l,      a_l = f(z_l),      a_0 = X.

Backpropagation, one matrix product per layer over all m rows:

    delta_L = dC_x/dz_L                                (the cost's output error)
    delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)      (f' from the stored a_l)
    dC/dW_l = (1/m) a_{l-1}^T @ delta_l,    dC/db_l = (1/m) sum_rows delta_l

so the gradient returned is the mean of the per-example gradients, grad C = (1/m) sum_x grad C_x.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np

from .activations import get_activation
from .backend import BACKENDS, BackendUnavailable, dot, namespace, resolve_backend, to_numpy
from .costs import get_cost
from .init import initialize
from .rng import Seed, generator
from .validation import check_X, check_Y, is_out_of_core, to_backend

DTYPES = ("float32", "float64")
EVAL_CHUNK = 8192  # rows per forward pass when evaluating, to bound memory


class Network:
    """A feedforward network trained by gradient descent.

    Parameters
    ----------
    sizes : layer widths, input first, e.g. ``[784, 30, 10]``. ``[d, k]`` is linear or
        logistic regression (no hidden layer).
    activation : hidden activation: "sigmoid", "tanh", "relu" or "identity".
    output_activation : None picks the cost's natural one (sigmoid); "softmax" is output-only.
    cost : "quadratic", C = 1/(2n) sum_x ||y(x) - a(x)||^2, or "cross_entropy".
    init : "normal", "scaled", "glorot", "he" or "zeros" (see ``sgdlab.init``). The default,
        "glorot", had the best median and worst-case test accuracy of the four random ones on
        MNIST with 784-30-10 sigmoid units over 12 seeds (README); "normal" sometimes saturates
        an output unit so that its class is never learned.
    seed : int, numpy Generator or None; draws the initial weights from the "init" stream.
    dtype : "float32" (default, fast) or "float64".
    backend : "numpy" (default) or another array-API namespace name/module: "torch", "cupy",
        "array_api_strict" (or a ``sgdlab.backend.Backend``).
    device : where the parameters live: "cpu", "cuda" (or "cuda:K"), or "auto" (a GPU when the
        backend sees one). None is the backend's natural device (the GPU for CuPy, else the CPU).

    Example
    -------
    >>> net = Network([2, 3, 1], seed=0)
    >>> [W.shape for W, b in net.params]
    [(2, 3), (3, 1)]
    """

    def __init__(self, sizes, activation="sigmoid", output_activation=None, cost="quadratic",
                 init="glorot", seed: Seed = None, dtype="float32", backend="numpy", device=None):
        sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else sizes
        if (not isinstance(sizes, list) or len(sizes) < 2
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes)):
            raise ValueError(f"sizes must list at least two positive integer layer widths, e.g. [784, 30, 10]; got {sizes!r}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = get_activation(activation, hidden=True)
        self.cost_fn = get_cost(cost)
        self.output_activation = get_activation(output_activation or self.cost_fn.default_output)
        self.cost_fn.check(self.output_activation)
        self.init = init
        self.backend = resolve_backend(backend, device)  # namespace + device + sync()
        self.xp = self.backend.xp
        self.dtype_name = dtype
        self.dtype = getattr(self.xp, dtype)
        self.params = [(self.backend.asarray(W, dtype), self.backend.asarray(b, dtype))
                       for W, b in initialize(init, self.sizes, generator(seed, "init"))]

    @property
    def device(self) -> str:
        """Where the parameters live: "cpu" or "cuda:K"."""
        return self.backend.device

    # ----------------------------------------------------------------- description
    def describe(self) -> dict:
        """The architecture as plain data (what checkpoints and ``--out`` store)."""
        return {"sizes": list(self.sizes), "activation": self.activation.name,
                "output_activation": self.output_activation.name, "cost": self.cost_fn.name,
                "init": self.init, "dtype": self.dtype_name}

    def __repr__(self) -> str:
        d = self.describe()
        where = "" if self.backend.name == "numpy" else f", backend={self.backend.name!r}, device={self.device!r}"
        return (f"Network({d['sizes']}, activation={d['activation']!r}, output_activation="
                f"{d['output_activation']!r}, cost={d['cost']!r}, dtype={d['dtype']!r}{where})")

    @property
    def n_params(self) -> int:
        return sum(math.prod(W.shape) + math.prod(b.shape) for W, b in self.params)

    def copy_params(self):
        """A deep copy of the parameters, in the same structure."""
        return [(self.xp.asarray(W, copy=True), self.xp.asarray(b, copy=True)) for W, b in self.params]

    # ----------------------------------------------------------------- validated public API
    def predict(self, X):
        """Output activations a_L for every row of X, shape (n, sizes[-1])."""
        X = self._inputs(X)
        return self.xp.concat([self._forward(X[rows, ...])[0][-1] for rows in _chunks(X.shape[0])], axis=0)

    def cost(self, X, Y) -> float:
        """C over the given examples, e.g. quadratic C = 1/(2n) sum_x ||y(x) - a(x)||^2."""
        X, T, _ = self._inputs(X, Y)
        return self._evaluate(X, T, None)[0]

    def accuracy(self, X, y) -> float:
        """Fraction of rows whose predicted class (argmax, or a > 1/2 for one output) equals the label."""
        X, T, labels = self._inputs(X, y)
        if labels is None:
            raise ValueError("accuracy needs integer class labels y")
        return self._evaluate(X, T, labels)[1]

    def gradient(self, X, Y):
        """grad C over the given examples: a list of (dC/dW, dC/db), the shapes of ``params``.

        The mean of the per-example gradients grad C_x, computed by batched backprop.
        """
        X, T, _ = self._inputs(X, Y)
        acts, deltas, _ = self._backprop(X, T)
        return self._gradient_from(acts, deltas)

    def per_example_grad_norms(self, X, Y):
        """||grad C_x|| for every example x (all weights and biases), shape (n,).

        For a dense layer the per-example weight gradient is the outer product a_{l-1} delta_l^T,
        whose squared Frobenius norm is ||a_{l-1}||^2 ||delta_l||^2; the bias adds ||delta_l||^2:

            ||g_x||^2 = sum_l ||delta_l(x)||^2 (||a_{l-1}(x)||^2 + 1)

        computed from what backprop already has, without materialising n gradients.
        """
        X, T, _ = self._inputs(X, Y)
        xp = self.xp
        acts, deltas, _ = self._backprop(X, T)
        sq = sum(xp.sum(d * d, axis=1) * (xp.sum(a * a, axis=1) + 1.0) for a, d in zip(acts[:-1], deltas))
        return xp.sqrt(sq)

    # ----------------------------------------------------------------- kernels (no validation)
    def _inputs(self, X, Y=None):
        X = self._place(check_X(X, self.sizes[0]), self.dtype)
        if Y is None:
            return X
        T, labels = check_Y(Y, X.shape[0], self.sizes[-1])
        return X, self._place(T, self.dtype), labels if labels is None else self._place(labels)

    def _place(self, x, dtype=None):
        """A validated array in this network's namespace (and on its device, copied there once)."""
        if self.backend.name in ("numpy", "array_api_strict") or is_out_of_core(x):
            return to_backend(x, self.xp, dtype)
        return self.backend.asarray(to_numpy(x) if namespace(x) is not self.xp else x, dtype)

    def _forward(self, X):
        """Activations [a_0 = X, a_1, ..., a_L] and the output pre-activation z_L."""
        xp = self.xp
        acts, a, last = [X], X, len(self.params) - 1
        for l, (W, b) in enumerate(self.params):
            z = dot(xp, a, W)
            z += b
            a = (self.output_activation if l == last else self.activation).fn(z, xp)
            acts.append(a)
        return acts, z

    def _backprop(self, X, T):
        """(activations, deltas, z_L) with deltas[l] = dC_x/dz for layer l+1, one row per example."""
        xp = self.xp
        acts, z = self._forward(X)
        delta = self.cost_fn.delta(z, acts[-1], T, self.output_activation, xp)
        deltas = [delta]
        for l in range(len(self.params) - 1, 0, -1):
            delta = dot(xp, delta, self.params[l][0].T) * self.activation.grad(acts[l], xp)
            deltas.append(delta)
        deltas.reverse()
        return acts, deltas, z

    def _gradient_from(self, acts, deltas):
        xp, m = self.xp, acts[0].shape[0]
        return [(dot(xp, a.T, d) / m, xp.sum(d, axis=0) / m) for a, d in zip(acts[:-1], deltas)]

    def _chunked_gradient(self, X, T):
        """(grad C over all rows, C) accumulated chunk by chunk: sum_c (m_c/n) grad C_c.

        For data on disk, where a full-batch step cannot hold every row's activations at once.
        """
        n, total, cost = X.shape[0], None, 0.0
        for rows in _chunks(n):
            Xc, Tc = X[rows, ...], T[rows, ...]
            acts, deltas, z = self._backprop(Xc, Tc)
            g = self._gradient_from(acts, deltas)
            w = Xc.shape[0] / n
            total = [(w * gW, w * gb) for gW, gb in g] if total is None else \
                [(tW + w * gW, tb + w * gb) for (tW, tb), (gW, gb) in zip(total, g)]
            cost += float(self.cost_fn.value(z, acts[-1], Tc, self.output_activation, self.xp))
        return total, cost / n

    def _batch_cost(self, acts, z, T) -> float:
        """C over the rows of a batch whose forward pass is (acts, z)."""
        return float(self.cost_fn.value(z, acts[-1], T, self.output_activation, self.xp)) / T.shape[0]

    def _evaluate(self, X, T, labels):
        """(cost, accuracy or None) over all rows, in chunks of EVAL_CHUNK rows."""
        xp, n = self.xp, X.shape[0]
        total, correct = 0.0, 0
        for rows in _chunks(n):
            acts, z = self._forward(X[rows, ...])
            a = acts[-1]
            total += float(self.cost_fn.value(z, a, T[rows, ...], self.output_activation, xp))
            if labels is not None:
                pred = xp.astype(a[:, 0] > 0.5, xp.int64) if a.shape[1] == 1 else xp.argmax(a, axis=1)
                correct += int(xp.sum(xp.astype(pred == labels[rows], xp.int64)))
        return total / n, (None if labels is None else correct / n)

    # ----------------------------------------------------------------- construction from data
    @classmethod
    def from_params(cls, description: dict, params, backend="numpy", device=None) -> "Network":
        """A network with the given architecture description and parameter arrays (host NumPy),
        placed on ``device`` of ``backend``."""
        net = cls(description["sizes"], activation=description["activation"],
                  output_activation=description["output_activation"], cost=description["cost"],
                  init="zeros", dtype=description["dtype"], backend=backend, device=device)
        net.init = description.get("init", "zeros")
        for (W0, b0), (W, b) in zip(net.params, params):
            if tuple(W.shape) != tuple(W0.shape) or tuple(b.shape) != tuple(b0.shape):
                raise ValueError(f"parameter shapes {tuple(W.shape)}, {tuple(b.shape)} do not match the "
                                 f"architecture's {tuple(W0.shape)}, {tuple(b0.shape)}")
        if len(params) != len(net.params):
            raise ValueError(f"{len(params)} layers of parameters for a {len(net.params)}-layer architecture")
        net.params = [(net.backend.asarray(to_numpy(W), net.dtype_name), net.backend.asarray(to_numpy(b), net.dtype_name))
                      for W, b in params]
        return net

    def __getstate__(self):
        """Pickle as data: the description, the backend's name and device, host copies of the parameters."""
        return {"description": self.describe(), "params": self.numpy_params(), "backend": self.backend.name,
                "device": self.device}

    def __setstate__(self, state):
        """Unpickle onto the same backend and device; a GPU network unpickled where no GPU is visible
        comes back on the CPU (same backend), with a warning."""
        backend = state["backend"] if state["backend"] in BACKENDS else "numpy"
        device = state.get("device")
        try:
            resolve_backend(backend, device)
        except BackendUnavailable as e:
            fallback = "torch" if backend == "torch" and importlib.util.find_spec("torch") else "numpy"
            warnings.warn(f"unpickling a network saved on {backend}/{device}: {e}; it is placed on "
                          f"{fallback} on the CPU instead", RuntimeWarning, stacklevel=2)
            backend, device = fallback, "cpu"
        self.__dict__.update(Network.from_params(state["description"], state["params"], backend=backend,
                                                 device=device).__dict__)

    def numpy_params(self):
        """The parameters as host NumPy arrays."""
        return [(to_numpy(W), to_numpy(b)) for W, b in self.params]


def _chunks(n: int):
    """Row slices of at most EVAL_CHUNK rows covering 0..n-1."""
    return [slice(i, min(i + EVAL_CHUNK, n)) for i in range(0, n, EVAL_CHUNK)]
