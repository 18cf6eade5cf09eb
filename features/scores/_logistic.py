"""L2 logistic regression fitted the way scikit-learn's ``lbfgs`` solver fits it, without the
estimator around it (the fit behind ``split_lr``).

scikit-learn's ``LogisticRegression(solver="lbfgs")`` minimizes, with ``n`` training rows,

    multinomial (K > 2 classes):  1/n sum_i [logsumexp(r_i) - r_iy_i] + 1/(2 C n) ||W||^2,
    binary (K = 2):               1/n sum_i [log(1 + e^r_i) - y_i r_i] + 1/(2 C n) ||w||^2,

``r = X W^T + b`` (the intercept is not penalized), with scipy's L-BFGS-B from zero
(``maxls=50``, ``gtol=tol``, ``ftol=64 eps``), parameters laid out as ``(K, d + 1)`` in Fortran
order. This module hands scipy the same objective, gradient, layout, start and options, so
scipy takes the same steps; the objective's values differ from scikit-learn's compiled loss
only by floating-point rounding. Two things make it cheaper than the estimator: no input
validation, and the first evaluation, at ``W = 0, b = 0``, is computed in O(n d) from
column and class sums (the raw predictions are all zero there) instead of two O(n d K)
products. With PARC's ``tol=0.1`` and scikit-learn's per-sample-averaged objective, L-BFGS-B
often stops at that first point (projected gradient <= 0.1): every logit is 0 and every
prediction is the first class, as scikit-learn predicts.
"""
from __future__ import annotations

import numpy as np


def _class_sums(X: np.ndarray, codes: np.ndarray, K: int) -> np.ndarray:
    """Row sums of ``X`` per class code 0..K-1: (K, d), in O(n d) (a sparse indicator product)."""
    import scipy.sparse as sps

    n = X.shape[0]
    return sps.csr_array((np.ones(n), (codes, np.arange(n))), shape=(K, n)) @ X


def _start(X: np.ndarray, codes: np.ndarray, K: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Objective, coefficient gradient and intercept gradient at the zero start, O(n d).

    Multinomial: softmax(0) = 1/K, objective log K, gradient ``(1/K - onehot)^T X / n``;
    binary: sigmoid(0) = 1/2, objective log 2, gradient ``X^T (1/2 - y) / n``.
    """
    n = X.shape[0]
    sums = _class_sums(X, codes, K)
    counts = np.bincount(codes, minlength=K).astype(np.float64)
    colsum = X.sum(axis=0)
    if K == 2:
        return float(np.log(2.0)), (0.5 * colsum - sums[1]) / n, np.array([(0.5 * n - counts[1]) / n])
    return float(np.log(K)), (colsum[None, :] / K - sums) / n, (n / K - counts) / n


def stops_at_start(X: np.ndarray, codes: np.ndarray, K: int, *, tol: float) -> bool:
    """Whether :func:`fit_logistic` (and scikit-learn's lbfgs) stops at the zero start: the
    gradient there has inf-norm <= ``tol``, so every logit is 0 and every prediction is the
    first class. The objective is averaged over the ``n`` samples (scikit-learn >= 1.4), so
    the gradient shrinks like 1/n and a ``tol`` chosen for the summed loss is often met."""
    return _start_norm(_start(X, codes, K)) <= float(tol)


def _start_norm(start: tuple[float, np.ndarray, np.ndarray]) -> float:
    return max(float(np.max(np.abs(start[1]))), float(np.max(np.abs(start[2]))))


def _multinomial(w, X, codes, onehot, l2, first):
    n, d = X.shape
    K = onehot.shape[1]
    coef = w.reshape(K, d + 1, order="F")
    grad = np.empty((K, d + 1), order="F")
    if not w.any():  # W = 0, b = 0 (the start): raw predictions all zero, ``first`` has the values
        loss, gX, gb = first
        grad[:, :d] = gX
        grad[:, d] = gb
        return loss, grad.ravel(order="F")
    weights = coef[:, :d]
    raw = X @ weights.T
    raw += coef[:, d]
    top = raw.max(axis=1, keepdims=True)
    raw -= top
    e = np.exp(raw)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(s[:, 0]) - raw[np.arange(n), codes]) / n)
    loss += 0.5 * l2 * float(np.sum(weights * weights))
    e /= s
    e -= onehot
    e /= n
    grad[:, :d] = e.T @ X + l2 * weights
    grad[:, d] = e.sum(axis=0)
    return loss, grad.ravel(order="F")


def _binary(w, X, y01, l2, first):
    n, d = X.shape
    if not w.any():
        loss, gX, gb = first
        return loss, np.concatenate([gX, gb])
    raw = X @ w[:d] + w[d]
    loss = float(np.sum(np.logaddexp(0.0, raw) - y01 * raw) / n)
    loss += 0.5 * l2 * float(w[:d] @ w[:d])
    g = (1.0 / (1.0 + np.exp(-raw)) - y01) / n
    grad = np.empty(d + 1)
    grad[:d] = X.T @ g + l2 * w[:d]
    grad[d] = g.sum()
    return loss, grad


def fit_logistic(X: np.ndarray, codes: np.ndarray, K: int, *, C: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Fit L2 logistic regression on float64 ``X`` (n, d) and class codes 0..K-1 (every code
    present, K >= 2) as scikit-learn's ``LogisticRegression(C, max_iter, tol)`` does with
    ``lbfgs``. Returns ``(coef, intercept)``: (K, d) and (K,) for K > 2, (1, d) and (1,) for
    K = 2 (scikit-learn's ``coef_`` / ``intercept_`` shapes)."""
    from scipy.optimize import minimize

    n, d = X.shape
    l2 = 1.0 / (float(C) * n)
    first = _start(X, codes, K)
    if _start_norm(first) <= float(tol):
        # L-BFGS-B's first test (projected gradient inf-norm <= gtol; no bounds, so the
        # projection is the identity) stops before any step: the fit is the zero start
        res_x = np.zeros(K * (d + 1) if K > 2 else d + 1)
    else:
        if K == 2:
            y01 = codes.astype(np.float64)

            def fun(w):
                return _binary(w, X, y01, l2, first)
            w0 = np.zeros(d + 1)
        else:
            onehot = np.zeros((n, K))
            onehot[np.arange(n), codes] = 1.0

            def fun(w):
                return _multinomial(w, X, codes, onehot, l2, first)
            w0 = np.zeros(K * (d + 1))
        res_x = minimize(fun, w0, method="L-BFGS-B", jac=True,
                         options={"maxiter": int(max_iter), "maxls": 50, "gtol": float(tol),
                                  "ftol": 64 * np.finfo(float).eps}).x
    if K == 2:
        return res_x[None, :d], res_x[d:]
    coef = res_x.reshape(K, d + 1, order="F")
    return coef[:, :d], coef[:, d]


def predict_codes(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Class codes predicted by a fit of :func:`fit_logistic` (scikit-learn's rule: argmax,
    first on ties; binary: code 1 where the decision value is > 0)."""
    if not coef.any() and not intercept.any():  # the zero fit: every score 0, code 0 for all
        return np.zeros(X.shape[0], dtype=np.intp)
    scores = X @ coef.T + intercept
    if coef.shape[0] == 1:
        return (scores[:, 0] > 0).astype(np.intp)
    return np.argmax(scores, axis=1)
