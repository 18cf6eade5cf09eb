"""features.scores._logistic (the fit behind split_lr) against scikit-learn's LogisticRegression,
and split_lr's degeneracy flag when that fit stops at its zero start."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from features.scores import compute_score, score_with_flag
from features.scores._logistic import fit_logistic, predict_codes, stops_at_start


def _gaussian(seed, n, d, K, scale):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    rng.shuffle(y)
    X = scale * (rng.standard_normal((K, d))[y] + 2.0 * rng.standard_normal((n, d)))
    return X, y


def _digits(K):
    X, y = load_digits(return_X_y=True)
    keep = y < K
    return X[keep][:400].astype(np.float64), y[keep][:400]


def _sklearn(X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached
        return LogisticRegression(random_state=0, **kw).fit(X, y)


CASES = [("gauss", 0, 120, 30, 3, 1.0), ("gauss", 1, 200, 50, 10, 0.1), ("gauss", 2, 90, 300, 2, 1.0),
         ("gauss", 3, 150, 40, 2, 0.05), ("gauss", 4, 300, 20, 5, 5.0), ("digits", 0, 0, 0, 10, 1.0),
         ("digits", 0, 0, 0, 2, 1.0), ("digits", 0, 0, 0, 3, 0.01)]


@pytest.mark.parametrize("tol,max_iter", [(0.1, 20), (1e-4, 100)])
@pytest.mark.parametrize("kind,seed,n,d,K,scale", CASES)
def test_fit_logistic_equals_scikit_learn(kind, seed, n, d, K, scale, tol, max_iter):
    X, y = _digits(K) if kind == "digits" else _gaussian(seed, n, d, K, scale)
    X = X * scale if kind == "digits" else X
    cut = X.shape[0] // 2
    clf = _sklearn(X[:cut], y[:cut], tol=tol, max_iter=max_iter)
    classes, codes = np.unique(y[:cut], return_inverse=True)
    coef, intercept = fit_logistic(X[:cut], codes, classes.size, tol=tol, max_iter=max_iter)
    assert coef.shape == clf.coef_.shape and intercept.shape == clf.intercept_.shape
    # same objective up to rounding: the paths agree to ~1e-11 over PARC's <= 20 steps; 100
    # steps on an ill-conditioned problem grow the rounding to ~1e-7 (predictions still equal)
    rel = 1e-9 if max_iter == 20 else 1e-5
    size = max(np.abs(clf.coef_).max(), np.abs(clf.intercept_).max(), 1e-300)
    assert np.abs(coef - clf.coef_).max() <= rel * size
    assert np.abs(intercept - clf.intercept_).max() <= rel * size
    assert np.array_equal(classes[predict_codes(X[cut:], coef, intercept)], clf.predict(X[cut:]))
    assert stops_at_start(X[:cut], codes, classes.size, tol=tol) == (int(clf.n_iter_[0]) == 0)


def test_cases_cover_both_stopping_regimes():
    """The parametrized cases above include fits that stop at the zero start and fits that step."""
    stops = []
    for kind, seed, n, d, K, scale in CASES:
        X, y = _digits(K) if kind == "digits" else _gaussian(seed, n, d, K, scale)
        X = X * scale if kind == "digits" else X
        cut = X.shape[0] // 2
        classes, codes = np.unique(y[:cut], return_inverse=True)
        stops.append(stops_at_start(X[:cut], codes, classes.size, tol=0.1))
    assert any(stops) and not all(stops)


def test_split_lr_flags_a_fit_that_never_left_zero():
    X, y = _gaussian(1, 200, 50, 10, 0.1)  # small features: the averaged gradient is < 0.1
    res = score_with_flag("split_lr", X, y, seed=None)
    cut = 100
    assert res.value == pytest.approx(np.mean(y[cut:] == y[:cut].min()))  # all the first class
    assert res.flag is not None and "zero start" in res.flag
    assert compute_score("split_lr", X, y, seed=None) == res.value  # still computed, as the official


def test_split_lr_unflagged_when_the_fit_steps():
    X, y = _digits(10)
    res = score_with_flag("split_lr", X, y)
    assert res.flag is None and res.value > 0.8


def test_split_lr_flags_a_single_class_training_half():
    X, y = _gaussian(0, 40, 5, 2, 1.0)
    y = np.sort(y)  # the first half is all class 0 when split in order
    res = score_with_flag("split_lr", X, y, seed=None)
    assert res.value == 0.0 and res.flag is not None and "one class" in res.flag
