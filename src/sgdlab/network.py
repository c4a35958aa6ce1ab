"""A feedforward network and batched backpropagation.

Shape convention: rows are examples. Layer l holds W_l of shape (fan_in, fan_out) and
b_l of shape (fan_out,) and computes, for the whole batch at once,

    z_l = a_{l-1} @ W_l + b_l,      a_l = f(z_l),      a_0 = X.

Backpropagation, one matrix product per layer over all m rows:

    delta_L = dC_x/dz_L                                (the cost's output error)
    delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)      (f' from the stored a_l)
    dC/dW_l = (1/m) a_{l-1}^T @ delta_l,    dC/db_l = (1/m) sum_rows delta_l

so the gradient returned is the mean of the per-example gradients, grad C = (1/m) sum_x grad C_x.
The kernels themselves are pure functions in ``sgdlab.kernels`` (they return sums; the mean is
taken once here); a Network holds the parameters and the architecture (``net.arch``).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernels
from .activations import Activation, get_activation
from .backend import BACKENDS, Array, Backend, BackendUnavailable, Params, namespace, resolve_backend, to_numpy
from .costs import get_cost
from .init import initialize
from .kernels import Arch
from .rng import Seed, generator
from .validation import check_network_fits, check_X, check_Y, is_out_of_core, to_backend

DTYPES = ("float32", "float64")
_NO_TARGETS = object()


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

    def __init__(self, sizes: Sequence[int], activation: str | Activation = "sigmoid",
                 output_activation: str | Activation | None = None, cost: Any = "quadratic", init: str = "glorot",
                 seed: Seed = None, dtype: str = "float32", backend: str | Backend = "numpy",
                 device: str | None = None) -> None:
        sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else sizes
        if (not isinstance(sizes, list) or len(sizes) < 2
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes)):
            raise ValueError(f"sizes must list at least two positive integer layer widths, e.g. [784, 30, 10]; "
                             f"got {sizes!r}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        check_network_fits(sizes, dtype)
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
    @property
    def arch(self) -> Arch:
        """The architecture the pure kernels need: activations and cost (``sgdlab.kernels.Arch``)."""
        return Arch(self.activation, self.output_activation, self.cost_fn)

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

    def copy_params(self) -> Params:
        """A deep copy of the parameters, in the same structure (NumPy arrays row-major, whatever order the
        originals lie in: a stepper may hold them transposed while it runs)."""
        if self.backend.name == "numpy":
            return [(np.array(W, order="C"), np.array(b, order="C")) for W, b in self.params]
        return [(self.xp.asarray(W, copy=True), self.xp.asarray(b, copy=True)) for W, b in self.params]

    # ----------------------------------------------------------------- validated public API
    def predict(self, X: Any) -> Array:
        """Output activations a_L for every row of X, shape (n, sizes[-1])."""
        X = self._inputs(X)
        arch, xp = self.arch, self.xp
        return xp.concat([kernels.forward(arch, self.params, X[rows, ...], xp)[0][-1]
                          for rows in kernels.chunks(X.shape[0])], axis=0)

    def cost(self, X: Any, Y: Any) -> float:
        """C over the given examples, e.g. quadratic C = 1/(2n) sum_x ||y(x) - a(x)||^2."""
        X, T, _ = self._inputs(X, Y)
        return kernels.evaluate_sums(self.arch, self.params, X, T, None, self.xp)[0] / X.shape[0]

    def accuracy(self, X: Any, y: Any) -> float:
        """Fraction of rows whose predicted class (argmax, or a > 1/2 for one output) equals the label."""
        X, T, labels = self._inputs(X, y)
        if labels is None:
            raise ValueError("accuracy needs integer class labels y")
        return kernels.evaluate_sums(self.arch, self.params, X, T, labels, self.xp)[1] / X.shape[0]

    def gradient(self, X: Any, Y: Any) -> Params:
        """grad C over the given examples: a list of (dC/dW, dC/db), the shapes of ``params``.

        The mean of the per-example gradients grad C_x, computed by batched backprop.
        """
        X, T, _ = self._inputs(X, Y)
        m = X.shape[0]
        sums, _ = kernels.grad_sums(self.arch, self.params, X, T, self.xp)
        return [(sW / m, sb / m) for sW, sb in sums]

    def per_example_grad_norms(self, X: Any, Y: Any) -> Array:
        """||grad C_x|| for every example x (all weights and biases), shape (n,).

        For a dense layer the per-example weight gradient is the outer product a_{l-1} delta_l^T,
        whose squared Frobenius norm is ||a_{l-1}||^2 ||delta_l||^2; the bias adds ||delta_l||^2:

            ||g_x||^2 = sum_l ||delta_l(x)||^2 (||a_{l-1}(x)||^2 + 1)

        computed from what backprop already has, without materialising n gradients.
        """
        X, T, _ = self._inputs(X, Y)
        xp = self.xp
        acts, deltas, _ = kernels.backprop(self.arch, self.params, X, T, xp)
        sq = sum(xp.sum(d * d, axis=1) * (xp.sum(a * a, axis=1) + 1.0) for a, d in zip(acts[:-1], deltas, strict=True))
        return xp.sqrt(sq)

    # ----------------------------------------------------------------- input checks
    def _inputs(self, X, Y=_NO_TARGETS):
        X = self._place(check_X(X, self.sizes[0]), self.dtype)
        if Y is _NO_TARGETS:  # predict: no targets; None given for Y is refused by check_Y, naming Y
            return X
        T, labels = check_Y(Y, X.shape[0], self.sizes[-1], float_dtype=np.dtype(self.dtype_name))
        return X, self._place(T, self.dtype), labels if labels is None else self._place(labels)

    def _place(self, x, dtype=None):
        """A validated array in this network's namespace (and on its device, copied there once)."""
        if self.backend.name in ("numpy", "array_api_strict") or is_out_of_core(x):
            return to_backend(x, self.xp, dtype)
        return self.backend.asarray(to_numpy(x) if namespace(x) is not self.xp else x, dtype)

    # ----------------------------------------------------------------- construction from data
    @classmethod
    def from_params(cls, description: dict, params: Sequence[tuple[Any, Any]], backend: str | Backend = "numpy",
                    device: str | None = None) -> Network:
        """A network with the given architecture description and parameter arrays (host NumPy),
        placed on ``device`` of ``backend``."""
        net = cls(description["sizes"], activation=description["activation"],
                  output_activation=description["output_activation"], cost=description["cost"],
                  init="zeros", dtype=description["dtype"], backend=backend, device=device)
        net.init = description.get("init", "zeros")
        for (W0, b0), (W, b) in zip(net.params, params, strict=True):
            if tuple(W.shape) != tuple(W0.shape) or tuple(b.shape) != tuple(b0.shape):
                raise ValueError(f"parameter shapes {tuple(W.shape)}, {tuple(b.shape)} do not match the "
                                 f"architecture's {tuple(W0.shape)}, {tuple(b0.shape)}")
        if len(params) != len(net.params):
            raise ValueError(f"{len(params)} layers of parameters for a {len(net.params)}-layer architecture")
        place = net.backend.asarray
        net.params = [(place(to_numpy(W), net.dtype_name), place(to_numpy(b), net.dtype_name))
                      for W, b in params]
        return net

    def __getstate__(self) -> dict:
        """Pickle as data: the description, the backend's name and device, host copies of the parameters."""
        return {"description": self.describe(), "params": self.numpy_params(), "backend": self.backend.name,
                "device": self.device}

    def __setstate__(self, state: dict) -> None:
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

    def numpy_params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The parameters as host NumPy arrays."""
        return [(to_numpy(W), to_numpy(b)) for W, b in self.params]

