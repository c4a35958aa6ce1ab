"""sgdlab: train neural networks by batch, stochastic and mini-batch gradient descent,
and measure how the variants behave.

>>> import sgdlab
>>> X, y = sgdlab.data.load_digits_split(seed=0)[:2]
>>> net = sgdlab.Network([64, 30, 10], seed=0)
>>> history = sgdlab.fit(net, X, y, method="minibatch", batch_size=10, lr=3.0, epochs=2, seed=0)
>>> history.last["epoch"]
2
"""

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

__all__ = ["Network", "fit", "History", "Callback", "StopTraining", "DivergenceError", "EPOCH_FIELDS", "UPDATE_FIELDS",
           "TrainState", "sgd", "save", "load", "load_training", "data", "optim", "schedules", "__version__"]
