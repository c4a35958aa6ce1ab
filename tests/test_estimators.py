import pickle

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import sgdlab
from sgdlab.estimators import GDClassifier, GDRegressor


def expected_failed_checks(estimator):
    """Checks that cannot apply, each with its reason (none at present: every check runs and passes)."""
    return {}


@parametrize_with_checks([GDClassifier(), GDRegressor(), GDClassifier(method="batch", lr=2.0, epochs=100),
                          GDRegressor(momentum=0.9, sampling="replacement"),
                          GDClassifier(early_stopping=True, n_iter_no_change=3, epochs=30),
                          GDRegressor(early_stopping=True, validation_fraction=0.2, tol=None)],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_and_grid_search():
    X, y = load_iris(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), GDClassifier(epochs=20, random_state=0))
    grid = GridSearchCV(pipe, {"gdclassifier__lr": [0.05, 0.5], "gdclassifier__batch_size": [5, 20]}, cv=3)
    grid.fit(X_tr, y_tr)
    assert set(grid.best_params_) == {"gdclassifier__lr", "gdclassifier__batch_size"}
    assert grid.score(X_te, y_te) > 0.85
    proba = grid.predict_proba(X_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


def test_regressor_learns_and_supports_several_outputs():
    X, y = make_regression(n_samples=300, n_features=5, n_targets=2, noise=1.0, random_state=0)
    model = make_pipeline(StandardScaler(), GDRegressor(epochs=60, random_state=0))
    from sklearn.compose import TransformedTargetRegressor

    reg = TransformedTargetRegressor(model, transformer=StandardScaler()).fit(X, y)
    assert reg.predict(X).shape == (300, 2)
    assert reg.score(X, y) > 0.95


def test_fit_is_the_sgdlab_training_and_results_are_reproducible():
    X, y = load_iris(return_X_y=True)
    a = GDClassifier(epochs=5, random_state=3).fit(X, y)
    b = GDClassifier(epochs=5, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert len(a.loss_curve_) == 5 and a.n_iter_ == 5 and a.t_ == 5 * 15
    assert isinstance(a.net_, sgdlab.Network) and a.n_features_in_ == 4
    assert list(a.classes_) == [0, 1, 2]
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.predict_proba(X), a.predict_proba(X))


def test_partial_fit_carries_schedule_step_and_momentum_across_calls():
    X, y = load_iris(return_X_y=True)
    lr = sgdlab.schedules.inverse_time(0.5, 0.01)
    whole = GDClassifier(epochs=3, lr=lr, momentum=0.9, random_state=1).fit(X, y)
    inc = GDClassifier(epochs=3, lr=lr, momentum=0.9, random_state=1)
    for _ in range(3):
        inc.partial_fit(X, y, classes=[0, 1, 2])
    assert inc.t_ == whole.t_ == 3 * 15 and inc.n_iter_ == 3
    assert len(inc.loss_curve_) == 3 and inc.loss_curve_ == pytest.approx(whole.loss_curve_, rel=1e-12)
    np.testing.assert_array_equal(inc.predict_proba(X), whole.predict_proba(X))  # three epochs either way
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        GDClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="not in classes"):
        GDClassifier().partial_fit(X, y, classes=[0, 1])


def test_early_stopping_and_n_iter_no_change_have_scikit_learns_meanings():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    # tol=None: every epoch runs; a huge tol: no epoch counts as an improvement, so n_iter_no_change + 1 epochs run
    assert GDClassifier(epochs=25, tol=None, random_state=0).fit(X, y).n_iter_ == 25
    assert GDClassifier(epochs=25, tol=1e6, n_iter_no_change=4, random_state=0).fit(X, y).n_iter_ == 5
    es = GDClassifier(epochs=200, early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, random_state=0).fit(
        X, y
    )
    scores = es.validation_scores_
    assert es.n_iter_ == len(scores) < 200
    best = int(np.argmax(scores))  # the first best; every later epoch is < best + tol, the last 5 of them
    assert es.best_validation_score_ == scores[best] == max(scores)
    assert all(v < scores[best] + es.tol for v in scores[best + 1:]) and len(scores) - 1 - best >= 5
    # the best epoch's weights are kept: refitting for exactly best + 1 epochs without stopping gives the same net
    same = GDClassifier(epochs=best + 1, early_stopping=True, validation_fraction=0.2, n_iter_no_change=10 ** 6,
                        tol=None, random_state=0).fit(X, y)
    np.testing.assert_allclose(es.predict_proba(X), same.predict_proba(X), rtol=1e-12)
    assert GDClassifier(epochs=5).fit(X, y).validation_scores_ is None
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        GDClassifier(early_stopping=True, validation_fraction=1.0).fit(X, y)
    with pytest.raises(ValueError, match="n_iter_no_change must be an int >= 1"):
        GDClassifier(n_iter_no_change=0).fit(X, y)


def test_loss_curve_is_scikit_learns_mean_of_the_epochs_batch_losses():
    """loss_curve_[k] is epoch k+1's mean over its updates of the batch cost before each update (scikit-learn's
    accumulated_loss / n); for batch GD that is the exact cost before the epoch's one update."""
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    est = GDClassifier(epochs=6, tol=None, random_state=0).fit(X, y)
    assert est.loss_curve_ == [r["mean_batch_cost"] for r in est.history_.epochs[1:]] and len(est.loss_curve_) == 6
    b = GDClassifier(method="batch", lr=0.5, epochs=3, tol=None, random_state=0).fit(X, y)
    start = GDClassifier(method="batch", lr=0.5, epochs=3, tol=None, random_state=0)
    start._start(X, 3)  # the same initial weights, untrained
    assert b.loss_curve_[0] == pytest.approx(float(start.net_.cost(X, y)), rel=1e-12)
    assert b.loss_curve_[0] == pytest.approx(b.history_.epochs[0]["train_cost"], rel=1e-12)


def test_tol_and_n_iter_no_change_read_the_loss_curve():
    """The stopping epoch predicted from an unstopped run's loss_curve_ by scikit-learn's rule (no improvement:
    loss > best - tol; n_iter_no_change of them in a row stop) is where the stopped run ends."""
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    kw = {"lr": 0.5, "random_state": 0}
    curve = GDClassifier(epochs=300, tol=None, **kw).fit(X, y).loss_curve_
    tol, patience = 1e-3, 3
    best, count, stop = None, 0, None
    for k, loss in enumerate(curve):
        worse = best is not None and loss > best - tol
        best = loss if best is None or loss < best else best
        count = count + 1 if worse else 0
        if count >= patience:
            stop = k + 1
            break
    assert stop is not None and 5 < stop < 300
    est = GDClassifier(epochs=300, tol=tol, n_iter_no_change=patience, **kw).fit(X, y)
    assert est.n_iter_ == stop and est.loss_curve_ == curve[:stop] and est.best_loss_ == min(curve[:stop])

