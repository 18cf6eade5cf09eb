"""features.scores._mixture: the batched EM is scikit-learn's ``GaussianMixture`` (full
covariances, k-means init, defaults): the same posteriors ``predict_proba(X)`` (to 1e-8), the
same ``n_iter_`` / ``converged_`` / ``lower_bound_``, weights and means, on the shapes nleep
meets (one-hot posteriors: 50 components of ~10 samples in 43 dims; overlapping components;
dead units; one dimension; a stop at max_iter), and its ill-defined-covariance error where
scikit-learn raises its ValueError.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

import features.scores._mixture as mixture_module
from experiments.bench_scores import make_inputs
from features.scores._mixture import IllDefinedCovariance, gaussian_mixture_posteriors

pytestmark = pytest.mark.timeout(300)


def _bench_pca(n=500, seed=0):
    """nleep's mixture input at the bench shape: the 80%-variance PCA of d = 64, C = 10 features."""
    X, y, _, _ = make_inputs(n, 64, 10, 1000, seed=seed)
    return PCA(n_components=0.8).fit_transform(X.astype(np.float64)), 50


def _blobs(seed, n=1500, d=6, K=12, spread=1.5):
    rng = np.random.default_rng(seed)
    centers = spread * rng.standard_normal((K, d))
    return centers[rng.integers(0, K, n)] + rng.standard_normal((n, d)), K


def _dead_units(seed, n=600, d=12, K=15):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, d)) + rng.standard_normal((6, d))[rng.integers(0, 6, n)], 0.0)
    X[:, :4] = 0.0  # dead (all-zero) units: covariances are reg_covar there
    return X, K


CASES = {
    "one-hot, n=500, K=50 (bench)": (lambda seed: _bench_pca(seed=seed), {}),
    "overlapping, n=1500, K=12": (_blobs, {}),
    "dead units": (_dead_units, {}),
    "d=1": (lambda seed: _blobs(seed, n=400, d=1, K=5), {}),
    "stopped at max_iter=2": (_blobs, {"max_iter": 2}),
    "tol=1e-6": (lambda seed: _blobs(seed, n=800, d=4, K=6, spread=1.0), {"tol": 1e-6}),
}


def _sklearn(X, K, seed, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        g = GaussianMixture(n_components=K, random_state=seed, **kw).fit(X)
        return g, g.predict_proba(X)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_em_is_sklearns_gaussian_mixture(case, seed):
    make, kw = CASES[case]
    X, K = make(seed)
    g, want = _sklearn(X, K, seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = gaussian_mixture_posteriors(X, K, random_state=seed, **kw)
    assert (got.n_iter, got.converged) == (g.n_iter_, g.converged_)
    assert got.resp.shape == want.shape
    np.testing.assert_allclose(got.resp, want, rtol=0, atol=1e-8)
    assert got.lower_bound == pytest.approx(g.lower_bound_, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(got.weights, g.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.means, g.means_, rtol=1e-8, atol=1e-8 * np.abs(X).max())
    if case.startswith("stopped"):
        assert got.n_iter == 2 and not got.converged


def test_gathered_components_in_several_chunks_are_the_same(monkeypatch):
    """The sparse covariances are gathered a chunk of components at a time: tiny chunks, same numbers."""
    X, K = _bench_pca(seed=3)
    whole = gaussian_mixture_posteriors(X, K, random_state=0)
    monkeypatch.setattr(mixture_module, "_GATHER", 16)
    chunks = gaussian_mixture_posteriors(X, K, random_state=0)
    assert chunks.n_iter == whole.n_iter
    np.testing.assert_allclose(chunks.resp, whole.resp, rtol=0, atol=1e-12)


def test_dense_and_sparse_covariances_are_the_same(monkeypatch):
    """Summing every row (zeros included) or only the rows with r_ik > 0: the same mixture."""
    X, K = _bench_pca(seed=4)
    sparse = gaussian_mixture_posteriors(X, K, random_state=1)
    monkeypatch.setattr(mixture_module, "_SPARSE", 0.0)  # no component is "few": all dense
    dense = gaussian_mixture_posteriors(X, K, random_state=1)
    assert dense.n_iter == sparse.n_iter
    np.testing.assert_allclose(dense.resp, sparse.resp, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1e6, 1e9])
def test_ill_defined_covariance_where_sklearn_raises(scale):
    """Features so large that reg_covar=1e-6 is lost in rounding: scikit-learn raises its
    ValueError ("ill-defined empirical covariance"), ours IllDefinedCovariance (a ValueError)."""
    X, K = _bench_pca(seed=0)
    X = X * scale
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        _sklearn(X, K, 0)
    with pytest.raises(IllDefinedCovariance, match="not positive definite"):
        gaussian_mixture_posteriors(X, K, random_state=0)
