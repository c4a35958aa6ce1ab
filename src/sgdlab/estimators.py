"""scikit-learn estimators: GDClassifier and GDRegressor.

They train an ``sgdlab.Network`` with ``sgdlab.fit`` and follow scikit-learn's conventions:
hyperparameters in ``__init__``, learned attributes with a trailing underscore, ``fit`` /
``partial_fit`` / ``predict`` / ``score``, ``get_params`` / ``set_params``. They work in a
``Pipeline`` and in ``GridSearchCV``, and pass scikit-learn's estimator checks.

>>> from sklearn.datasets import load_iris
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> X, y = load_iris(return_X_y=True)
>>> model = make_pipeline(StandardScaler(), GDClassifier(epochs=30, random_state=0)).fit(X, y)
>>> model.score(X, y) > 0.9
True
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .network import Network
from .train import Callback, StopTraining, TrainState, fit


class _NoChange(Callback):
    """scikit-learn's MLP stopping rule, checked after each epoch.

    With validation data (``early_stopping=True``) the score is ``estimator.score`` on it
    (accuracy, or R^2): an epoch counts as no improvement when score < best + tol. Otherwise the
    epoch's loss, ``mean_batch_cost`` (the mean over the epoch's updates of the batch cost before
    each update, what scikit-learn's MLP accumulates for its ``loss_curve_`` and stops on): no
    improvement when loss > best - tol. ``n_iter_no_change`` such epochs in a row stop training
    (``tol=None``: never); with validation data the best epoch's parameters are kept.
    """

    def __init__(self, est, validation):
        self.est, self.validation = est, validation
        self.count, self.best, self.best_params = 0, None, None

    def on_epoch_end(self, r):
        est = self.est
        if r["epoch"] == 0 or r.get("partial"):
            return
        if self.validation is not None:
            score = est.score(*self.validation)
            est.validation_scores_.append(score)
            worse = est.tol is not None and self.best is not None and score < self.best + est.tol
            if self.best is None or score > self.best:
                self.best, self.best_params = score, est.net_.copy_params()
                est.best_validation_score_ = score
        else:
            loss = r.get("mean_batch_cost")
            if loss is None:  # not recorded for this epoch (see EPOCH_FIELDS): nothing to compare
                return
            worse = est.tol is not None and self.best is not None and loss > self.best - est.tol
            if self.best is None or loss < self.best:
                self.best = est.best_loss_ = loss
        self.count = self.count + 1 if worse else 0
        if self.count >= est.n_iter_no_change:
            raise StopTraining


class _GDEstimator(BaseEstimator):
    """What the classifier and the regressor share: the hyperparameters and the training loop."""

    def __init__(self, hidden=(30,), activation="sigmoid", method="minibatch", batch_size=10, lr=0.5, epochs=50,
                 sampling="reshuffle", momentum=0.0, nesterov=False, weight_decay=0.0, init="glorot", dtype="float64",
                 random_state=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4):
        self.hidden = hidden
        self.activation = activation
        self.method = method
        self.batch_size = batch_size
        self.lr = lr
        self.epochs = epochs
        self.sampling = sampling
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.init = init
        self.dtype = dtype
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    # subclasses define _network(n_features, n_outputs, seed): the Network they train

    def _start(self, X, n_outputs):
        rs = check_random_state(self.random_state)
        init_seed, sample_seed = (int(s) for s in rs.randint(0, 2 ** 31 - 1, size=2))
        self.net_ = self._network(X.shape[1], n_outputs, init_seed)
        self.state_ = TrainState(rng=np.random.default_rng(sample_seed))

    def _fit_stopping(self, X, T, epochs, y_original):
        """fit with scikit-learn's stopping: ``tol``/``n_iter_no_change`` on the epoch's loss, or with
        ``early_stopping`` on the score of a held-out ``validation_fraction`` (stratified for classes)."""
        from .data.dataset import split_validation

        if not (isinstance(self.n_iter_no_change, (int, np.integer)) and self.n_iter_no_change >= 1):
            raise ValueError(f"n_iter_no_change must be an int >= 1; got {self.n_iter_no_change!r}")
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"tol must be >= 0 or None; got {self.tol!r}")
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = None
        self.best_loss_ = None
        validation = None
        if self.early_stopping:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}")
            idx = np.arange(len(X))
            stratify = T if T.ndim == 1 else np.zeros(len(X), dtype=np.int64)
            seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 1))
            tr, _, (va, _) = split_validation(idx, stratify, self.validation_fraction, seed)
            validation = (X[va], y_original[va])
            X, T = X[tr], T[tr]
        stop = _NoChange(self, validation) if (self.tol is not None or self.early_stopping) else None
        self._train(X, T, epochs, callbacks=[stop] if stop else [])
        if stop is not None and stop.best_params is not None:
            self.net_.params = stop.best_params  # as scikit-learn's MLP: the best validation epoch's weights
        return self

    def _train(self, X, T, epochs, callbacks=()):
        n = len(X)
        batch = None if self.method != "minibatch" else min(self.batch_size, n)
        if self.state_.fixed is not None and len(self.state_.fixed) != n:
            self.state_.fixed = None  # partial_fit with a batch of another size: draw a new fixed order
        self.history_ = fit(self.net_, X, T, method=self.method, batch_size=batch, lr=self.lr, epochs=epochs,
                            sampling=self.sampling, momentum=self.momentum, nesterov=self.nesterov,
                            weight_decay=self.weight_decay, state=self.state_, callbacks=list(callbacks))
        self.loss_curve_ = [r.get("mean_batch_cost") for r in self.history_.epochs[1:]]
        self.n_iter_ = self.state_.epoch
        self.t_ = self.state_.step
        return self

    def _check(self, X):
        check_is_fitted(self, "net_")
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))


class GDClassifier(ClassifierMixin, _GDEstimator):
    """A feedforward network classifier trained by batch, stochastic or mini-batch gradient descent.

    Softmax outputs with the categorical cross-entropy cost, so ``predict_proba`` gives probabilities.
    ``partial_fit`` trains one more epoch on the data it is given; the learning-rate schedule's
    step count, the momentum buffers and the sampling stream carry across calls.
    Attributes: ``classes_``, ``n_features_in_``, ``net_`` (the Network), ``history_``,
    ``loss_curve_`` (per epoch, the mean over its updates of the cost of each batch before its
    update, weighted by batch size: scikit-learn's meaning; the record's ``mean_batch_cost``),
    ``best_loss_`` (its minimum, when ``tol`` watches it), ``n_iter_`` (epochs), ``t_`` (updates).
    ``history_`` holds the exact training cost after epoch 0 and the last epoch of each call
    (``fit``'s default).

    Stopping, with scikit-learn's (MLPClassifier's) meanings: ``epochs`` is the most epochs;
    training stops earlier when for ``n_iter_no_change`` epochs in a row the loss of
    ``loss_curve_`` has not fallen by ``tol`` (``tol=None``: never); with ``early_stopping=True``,
    when the accuracy on a held-out, stratified ``validation_fraction`` of the data has not risen
    by ``tol``, and the best validation epoch's weights are kept (``validation_scores_``,
    ``best_validation_score_``).
    ``partial_fit`` trains one epoch and does not stop early.
    """

    def _network(self, n_features, n_outputs, seed):
        return Network([n_features, *self.hidden, n_outputs], activation=self.activation, output_activation="softmax",
                       cost="cross_entropy", init=self.init, seed=seed, dtype=self.dtype)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._start(X, max(len(self.classes_), 2))
        return self._fit_stopping(X, codes, self.epochs, y)

    def partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(classes)
            self._start(X, max(len(self.classes_), 2))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first call, {self.classes_!r}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y has labels {unknown!r} not in classes {self.classes_!r}")
        return self._train(X, np.searchsorted(self.classes_, y), self.state_.epoch + 1)

    def predict_proba(self, X):
        X = self._check(X)
        p = np.asarray(self.net_.predict(X), dtype=np.float64)
        return p[:, : len(self.classes_)] if len(self.classes_) > 1 else p[:, :1] * 0 + 1.0

    def predict(self, X):
        proba = self.predict_proba(X)  # checks that the model is fitted first
        return self.classes_[np.argmax(proba, axis=1)]


class GDRegressor(RegressorMixin, _GDEstimator):
    """A feedforward network regressor trained by batch, stochastic or mini-batch gradient descent.

    Identity outputs with the quadratic cost C = 1/(2n) sum ||y - a||^2; y may be 1-D or 2-D
    (several outputs). Attributes and stopping as ``GDClassifier``, without ``classes_``; with
    ``early_stopping`` the validation score is R^2 (a random, not stratified, split).
    """

    def __init__(self, hidden=(30,), activation="tanh", method="minibatch", batch_size=10, lr=0.01, epochs=50,
                 sampling="reshuffle", momentum=0.0, nesterov=False, weight_decay=0.0, init="glorot", dtype="float64",
                 random_state=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4):
        super().__init__(hidden=hidden, activation=activation, method=method, batch_size=batch_size, lr=lr,
                         epochs=epochs, sampling=sampling, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, init=init, dtype=dtype, random_state=random_state,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol)

    def _network(self, n_features, n_outputs, seed):
        return Network([n_features, *self.hidden, n_outputs], activation=self.activation, output_activation="identity",
                       cost="quadratic", init=self.init, seed=seed, dtype=self.dtype)

    def _targets(self, y):
        y = np.asarray(y, dtype=np.float64)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True)
        self._1d = y.ndim == 1
        T = self._targets(y)
        self._start(X, T.shape[1])
        return self._fit_stopping(X, T, self.epochs, y)

    def partial_fit(self, X, y):
        first = not hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True, reset=first)
        T = self._targets(y)
        if first:
            self._1d = y.ndim == 1
            self._start(X, T.shape[1])
        return self._train(X, T, self.state_.epoch + 1)

    def predict(self, X):
        X = self._check(X)
        a = np.asarray(self.net_.predict(X), dtype=np.float64)
        return a[:, 0] if self._1d else a

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, k) trains k identity outputs
        return tags
