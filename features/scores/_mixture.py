"""Full-covariance Gaussian mixture by EM: scikit-learn's ``GaussianMixture`` arithmetic, batched.

:func:`gaussian_mixture_posteriors` fits the mixture that
``sklearn.mixture.GaussianMixture(n_components=K, random_state=seed)`` fits with its defaults
(``covariance_type="full"``, ``init_params="kmeans"``, ``reg_covar=1e-6``, ``tol=1e-3``,
``max_iter=100``, ``n_init=1``; scikit-learn 1.9.1, ``sklearn/mixture/_base.py`` and
``_gaussian_mixture.py``) and returns the posteriors of its final E-step, i.e.
``predict_proba`` on the training data:

* initialization: the labels of scikit-learn's own ``KMeans(n_clusters=K, n_init=1,
  random_state=check_random_state(seed))`` (the very call of ``_initialize_parameters``, so the
  same labels), one-hot responsibilities, one M-step with ``weights = nk / n``;
* M-step: ``nk = sum_i r_ik + 10 eps``, ``mu_k = sum_i r_ik x_i / nk``, ``Sigma_k = sum_i r_ik
  (x_i - mu_k)(x_i - mu_k)^T / nk + reg_covar I``, ``weights = nk / sum(nk)``; the precision
  Cholesky factor ``P_k = L_k^{-T}`` of ``Sigma_k = L_k L_k^T``; a covariance that is not
  positive definite raises :class:`IllDefinedCovariance` (scikit-learn's ValueError);
* E-step: ``log N(x_i | k) = -1/2 (d log 2 pi + ||(x_i - mu_k) P_k||^2) + sum log diag P_k``,
  ``log p(x_i) = logsumexp_k (log N + log w_k)``, lower bound = mean ``log p(x_i)``;
* loop: E-step, M-step, stop when ``|lower bound - previous| < tol`` (the first change is
  infinite), at most ``max_iter`` times; then one final E-step with the last parameters.

What differs is only how the numbers are computed. Scikit-learn loops over the components
in Python per step (``X @ P_k - mu_k @ P_k``, a full ``(r_k * D_k^T) @ D_k`` product, a
Cholesky and a triangular solve against the identity each) and ``fit(X).predict_proba(X)``
runs the final E-step twice. Here each M-step is fused with the Gaussian part of the next
E-step, which uses the same means: per component one centered copy ``D_k = X - mu_k`` (kept
transposed, so BLAS reads it without copies) serves the covariance, a BLAS ``syrk`` of
``sqrt(r_k) D_k`` (for a component with few rows ``r_ik > 0``, as after the k-means start,
only those rows, gathered for many components at once: the other rows add exact zeros), and
then, in place, the triangular product ``D_k L_k^{-T}`` (``trmm``) whose squared row norms are
the Mahalanobis distances; LAPACK ``potrf``/``trtri`` are called directly, responsibilities
are kept (K, n), nothing is validated, and the final E-step's posteriors are returned once.
The results equal scikit-learn's up to rounding: tests/features/test_mixture.py asserts the
posteriors to 1e-8 and the same ``n_iter_``/``converged_`` (measured: ~1e-10 and equal on
300 random problems). Where the covariances are conditioned near 1 / eps (features of scale
~1e5 with collapsed directions, ``reg_covar`` lost), EM amplifies rounding and scikit-learn
disagrees with itself on ``X (1 + 1e-15)`` as much as with this code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class IllDefinedCovariance(ValueError):
    """A component's covariance is not positive definite (scikit-learn raises ValueError there)."""


@dataclass(frozen=True)
class MixtureFit:
    """A fitted mixture: ``resp`` (n, K) posteriors ``P(k | x_i)`` of the final E-step
    (``predict_proba`` of the training data), ``n_iter`` / ``converged`` / ``lower_bound``
    (scikit-learn's ``n_iter_``, ``converged_``, ``lower_bound_``), ``weights`` (K,) and
    ``means`` (K, d) of the final parameters."""

    resp: np.ndarray
    n_iter: int
    converged: bool
    lower_bound: float
    weights: np.ndarray
    means: np.ndarray


_LOG_2PI = math.log(2 * math.pi)
#: a component whose rows with r_ik > 0 are fewer than this fraction of n is summed over those rows only
_SPARSE = 0.5
#: rows of weighted differences gathered at once for those components (32 MB at d = 64)
_GATHER = 1 << 16


def _sparse_covariances(X: np.ndarray, respT: np.ndarray, means: np.ndarray, comps: np.ndarray,
                        covs: np.ndarray) -> None:
    """``covs[k] = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T`` for the components ``comps``, summed over
    their rows with ``r_ik > 0`` (the others add exact zeros), gathered a chunk of components at once."""
    nnz = np.count_nonzero(respT[comps], axis=1)
    start = 0
    while start < comps.size:
        stop = start + max(1, int(np.searchsorted(np.cumsum(nnz[start:]), _GATHER, side="right")))
        part = comps[start:stop]
        kk, ii = np.nonzero(respT[part])  # grouped by component
        W = X[ii] - means[part[kk]]
        W *= np.sqrt(respT[part[kk], ii])[:, None]
        bounds = np.searchsorted(kk, np.arange(part.size + 1))
        for j, k in enumerate(part):
            Wk = W[bounds[j]:bounds[j + 1]]
            np.matmul(Wk.T, Wk, out=covs[k])  # BLAS syrk (numpy's route for a.T @ a)
        start = stop


def _m_step(X: np.ndarray, XT: np.ndarray, respT: np.ndarray, reg_covar: float, init: bool):
    """scikit-learn's M-step from responsibilities ``respT`` (K, n), fused with the Gaussian part
    of the next E-step. Returns ``(log_prob (K, n), weights (K,), means (K, d))``."""
    from scipy.linalg.blas import dtrmm
    from scipy.linalg.lapack import dpotrf, dtrtri

    K, n = respT.shape
    d = X.shape[1]
    nk = respT.sum(axis=1) + 10 * np.finfo(respT.dtype).eps
    means = (respT @ X) / nk[:, None]
    weights = nk / n if init else nk / nk.sum()  # init: _initialize divides by n_samples
    diag = np.arange(d)
    covs = np.empty((K, d, d))
    few = np.count_nonzero(respT, axis=1) < _SPARSE * n
    if few.any():
        comps = np.flatnonzero(few)
        _sparse_covariances(X, respT, means, comps, covs)
        covs[comps] /= nk[comps, None, None]
        covs[comps[:, None], diag, diag] += reg_covar
    log_prob = np.empty((K, n))
    log_diag = np.empty((K, d))
    DT = np.empty((d, n))  # X - mu_k, transposed: DT.T is Fortran-ordered for BLAS, no copies
    Ws = np.empty((d, n)) if not few.all() else DT  # sqrt(r_k) (X - mu_k), transposed (dense components)
    for k in range(K):
        np.subtract(XT, means[k][:, None], out=DT)
        cov = covs[k]
        if not few[k]:
            np.multiply(DT, np.sqrt(respT[k]), out=Ws)
            np.matmul(Ws, Ws.T, out=cov)  # BLAS syrk
            cov /= nk[k]
            cov[diag, diag] += reg_covar
        # cov is symmetric, so cov.T is the same matrix, Fortran-ordered: factored in place
        L, info = dpotrf(cov.T, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            raise IllDefinedCovariance(f"the empirical covariance of component {k} of {K} is not "
                                       "positive definite")
        Linv, info = dtrtri(L, lower=1, overwrite_c=1)  # L^{-1}; scikit-learn's P_k is its transpose
        log_diag[k] = Linv.diagonal()
        # (X - mu_k) P_k = (X - mu_k) L^{-T}, in place in DT (transposed)
        Y = dtrmm(1.0, Linv, DT.T, side=1, lower=1, trans_a=1, overwrite_b=1)
        if Y.ctypes.data != DT.ctypes.data:  # not in place after all (never seen): take the copy
            DT[...] = Y.T
        np.einsum("ij,ij->j", DT, DT, out=log_prob[k])
    if not (np.isfinite(log_diag).all() and (log_diag > 0).all()):
        raise IllDefinedCovariance("an empirical covariance is not finite")
    log_det = np.log(log_diag).sum(axis=1)  # log det P_k
    log_prob *= -0.5
    log_prob += (log_det - 0.5 * d * _LOG_2PI)[:, None]
    return log_prob, weights, means


def _e_step(log_prob: np.ndarray, weights: np.ndarray):
    """Posteriors ``respT`` (K, n) and ``log p(x_i)`` (n,) from the Gaussian log densities."""
    A = log_prob + np.log(weights)[:, None]
    top = A.max(axis=0)
    A -= top
    np.exp(A, out=A)
    s = A.sum(axis=0)
    A /= s
    return A, top + np.log(s)


def gaussian_mixture_posteriors(X: np.ndarray, n_components: int, *, random_state=0, reg_covar: float = 1e-6,
                                tol: float = 1e-3, max_iter: int = 100) -> MixtureFit:
    """``GaussianMixture(n_components, random_state=random_state, reg_covar=reg_covar, tol=tol,
    max_iter=max_iter).fit(X)`` and its ``predict_proba(X)``, computed as described in the module
    docstring. ``X``: (n, d) float64 with ``n >= n_components`` (not checked). Raises
    :class:`IllDefinedCovariance` where scikit-learn raises its ill-defined-covariance ValueError.
    """
    from sklearn.cluster import KMeans
    from sklearn.utils import check_random_state

    X = np.ascontiguousarray(X, dtype=np.float64)
    n = X.shape[0]
    K = int(n_components)
    rng = check_random_state(random_state)  # as GaussianMixture.fit_predict: KMeans gets this instance
    labels = KMeans(n_clusters=K, n_init=1, random_state=rng).fit(X).labels_
    respT = np.zeros((K, n))
    respT[labels, np.arange(n)] = 1.0
    XT = np.ascontiguousarray(X.T)
    log_prob, weights, means = _m_step(X, XT, respT, reg_covar, init=True)
    lower_bound = -np.inf
    converged = False
    n_iter = 0  # as fit_predict: the iterations run, counting the one that converged
    while n_iter < int(max_iter):
        n_iter += 1
        prev = lower_bound
        respT, log_norm = _e_step(log_prob, weights)
        log_prob, weights, means = _m_step(X, XT, respT, reg_covar, init=False)
        lower_bound = float(np.mean(log_norm))
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    respT, _ = _e_step(log_prob, weights)  # fit_predict's final E-step (= predict_proba)
    return MixtureFit(resp=respT.T, n_iter=n_iter, converged=converged, lower_bound=lower_bound,
                      weights=weights, means=means)
