"""sgdlab: train neural networks by batch, stochastic and mini-batch gradient descent,
and measure how the variants behave.

>>> import sgdlab
>>> X, y = sgdlab.data.load_digits_split(seed=0)[:2]
>>> net = sgdlab.Network([64, 30, 10], seed=0)
>>> history = sgdlab.fit(net, X, y, method="minibatch", batch_size=10, lr=3.0, epochs=2, seed=0)
>>> history.last["epoch"]
2

Heavy parts (scikit-learn, matplotlib, pandas, tqdm, the lab) load on first use: the names below
marked lazy are imported by the module-level ``__getattr__`` (PEP 562) when first touched.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from . import data, optim, schedules
from .checkpoint import load, load_training, save
from .network import Network
from .optim import sgd
from .train import EPOCH_FIELDS, UPDATE_FIELDS, Callback, DivergenceError, History, StopTraining, TrainState, fit

try:
    __version__ = version("sgdlab")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

# lazy: public name -> (submodule, attribute or None for the submodule itself)
_LAZY = {"lr_find": ("lrfinder", "lr_find"), "LRFinderResult": ("lrfinder", "LRFinderResult"),
         "EarlyStopping": ("callbacks", "EarlyStopping"), "ReduceLROnPlateau": ("callbacks", "ReduceLROnPlateau"),
         "callbacks": ("callbacks", None), "estimators": ("estimators", None), "lab": ("lab", None),
         "plots": ("plots", None)}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(f".{module}", __name__)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Network", "fit", "History", "Callback", "StopTraining", "DivergenceError", "EPOCH_FIELDS", "UPDATE_FIELDS",
           "TrainState", "sgd", "save", "load", "load_training", "data", "optim", "schedules", "__version__",
           "lr_find", "LRFinderResult", "EarlyStopping", "ReduceLROnPlateau"]
