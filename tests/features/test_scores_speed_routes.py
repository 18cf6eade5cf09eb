"""The faster routes of the n = 500 speed work give the values of the plain formulas.

Each test compares a shortcut (unsigned PCA for GBC, the in-place tridiagonalization, sparse
class sums, ranks from one sort of packed keys, in-place row normalization) with the direct
computation it replaces; tolerances are far below anything a ranking of models could see.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from features.scores import compute_score
from features.scores._linalg import (_sort_order, class_gram_blocks, class_rows, corr_matrix, gram_spectrum_projections,
                                     one_hot, pca, ranks)
from features.scores.geometry import gbc, gbc_diag
from features.scores.probabilistic import adaptive_shrinkage, iterative_a_gram, lda_posteriors_gram


def _mixture(seed, n, d, C, quality=1.0):
    """Gaussian-mixture features like the benchmark's (class centers scaled by ``quality``)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rng.shuffle(y)
    X = quality * rng.standard_normal((C, d))[y] + 2.0 * rng.standard_normal((n, d))
    return X, y


@pytest.mark.parametrize("shape,k", [((120, 400), 16), ((60, 300), 40), ((200, 30), 6), ((300, 100), 20)])
def test_unsigned_pca_equals_signed_up_to_column_signs(shape, k):
    X, _ = _mixture(0, *shape, 5)
    signed, unsigned = pca(X, k), pca(X, k, signed=False)
    assert signed.shape == unsigned.shape
    flip = np.sign(np.sum(signed * unsigned, axis=0))
    assert np.all(flip != 0)
    np.testing.assert_allclose(unsigned * flip, signed, rtol=0, atol=1e-9 * np.abs(signed).max())


@pytest.mark.parametrize("seed,n,d,C", [(1, 200, 600, 10), (2, 150, 400, 30), (3, 300, 80, 6)])
@pytest.mark.parametrize("fn", [gbc, gbc_diag])
def test_gbc_values_do_not_depend_on_component_signs(seed, n, d, C, fn):
    """GBC on the unsigned PCA (its default route) equals GBC on the sign-fixed PCA scores."""
    X, y = _mixture(seed, n, d, C, quality=0.6)
    if fn is gbc:  # the official pipeline: scikit-learn's exact PCA, output in float32
        from sklearn.decomposition import PCA

        Z = PCA(64, svd_solver="full").fit_transform(X).astype(np.float32).astype(np.float64)
        ref = fn(Z, y, pca_dim=None)
        assert fn(X, y) == pytest.approx(ref, rel=1e-6, abs=1e-300)  # float32 rounding of both PCAs
        return
    ref = fn(pca(X, 64), y, pca_dim=None)
    assert fn(X, y) == pytest.approx(ref, rel=1e-9, abs=1e-300)
    assert compute_score(fn.__name__, X, y) == pytest.approx(ref, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("shape", [(40, 200), (25, 25), (2, 9)])
def test_gram_spectrum_projections_in_place_equals_copy(shape):
    rng = np.random.default_rng(5)
    X = rng.standard_normal(shape) + 0.3
    Y = one_hot(np.arange(shape[0]) % 3, 3)
    G = X @ X.T
    lam, proj = gram_spectrum_projections(G, Y)
    lam2, proj2 = gram_spectrum_projections(G.copy(), Y, overwrite=True)
    np.testing.assert_allclose(lam2, lam, rtol=1e-12, atol=1e-12 * lam[0])
    np.testing.assert_allclose(np.abs(proj2), np.abs(proj), rtol=0, atol=1e-10)
    ref, U = np.linalg.eigh(G)
    np.testing.assert_allclose(np.sort(lam2), np.sort(ref[ref > 1e-10 * ref[-1]]), rtol=1e-10)


def test_gram_spectrum_projections_leaves_the_input_alone_unless_asked():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 50))
    Y = one_hot(np.arange(30) % 4, 4)
    G = X @ X.T
    keep = G.copy()
    gram_spectrum_projections(G, Y)
    np.testing.assert_array_equal(G, keep)
    F = np.asfortranarray(G)  # not C-ordered: never overwritten
    gram_spectrum_projections(F, Y, overwrite=True)
    np.testing.assert_array_equal(F, keep)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_rows_equal_dense_one_hot_products(seed):
    rng = np.random.default_rng(seed)
    n, C = 70, 9
    y = rng.integers(0, C, n)
    w = rng.random(n)
    M = rng.standard_normal((n, 13))
    dense = np.zeros((C, n))
    dense[y, np.arange(n)] = w
    W = class_rows(y, w, C)
    np.testing.assert_allclose(W @ M, dense @ M, rtol=1e-13, atol=1e-13)
    N = rng.standard_normal((11, n))
    np.testing.assert_allclose(N @ W.T, N @ dense.T, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("seed,n,d,C", [(0, 60, 90, 7), (1, 90, 20, 12)])
def test_class_gram_blocks_match_dense_formulas(seed, n, d, C):
    """The sparse class sums reproduce ``Gc A``-based blocks computed with dense one-hot products."""
    X, y = _mixture(seed, n, d, C)
    Xc = X - X.mean(0)
    Gc = Xc @ Xc.T
    Y = one_hot(y, C)
    A = Y / Y.sum(0)
    GA = Gc @ A
    Gmm = A.T @ GA
    Gww = Gc - GA[:, y] - GA[:, y].T + Gmm[y][:, y]
    counts, _, Gww2, Gwm2, Gmm2 = class_gram_blocks(Gc, y, C)
    scale = np.abs(Gc).max()
    np.testing.assert_allclose(Gww2, Gww, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(Gwm2, GA - Gmm[y], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(Gmm2, Gmm, rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(Gww2, Gww2.T)
    np.testing.assert_array_equal(counts, Y.sum(0))


def _near_ties(rng, N):
    a = rng.standard_normal(N)
    a[1::7] = np.nextafter(a[::7][: a[1::7].size], np.inf)  # neighbours one ulp apart
    return a


@pytest.mark.parametrize("make", [
    lambda rng: rng.standard_normal(5000),
    lambda rng: np.concatenate([rng.standard_normal(300), [0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324]]),
    lambda rng: np.round(rng.standard_normal(2000), 2),  # exact ties
    lambda rng: -np.abs(rng.standard_normal(1000)),  # only negatives
    lambda rng: rng.standard_normal(3) * 1e-300,
    lambda rng: _near_ties(rng, 4000),
    lambda rng: np.array([2.0, 1.0]),
])
def test_ranks_from_packed_sort_equal_rankdata(make):
    a = make(np.random.default_rng(9))
    np.testing.assert_array_equal(ranks(a), scipy.stats.rankdata(a))
    order = _sort_order(a)
    if order is not None:  # certified: exactly numpy's argsort (the values are then distinct)
        np.testing.assert_array_equal(a[order], np.sort(a))
        assert np.unique(a).size == a.size


def test_sort_order_declines_ties_and_near_ties():
    rng = np.random.default_rng(10)
    assert _sort_order(np.array([1.0, 3.0, 1.0])) is None
    assert _sort_order(np.array([0.0, -0.0, 1.0])) is None  # -0.0 == 0.0
    assert _sort_order(_near_ties(rng, 4000)) is None  # equal keys once the position bits are cut
    assert _sort_order(rng.standard_normal(10).astype(np.float32)) is None


def test_corr_matrix_in_place_equals_corrcoef_with_constant_rows():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((12, 30)) * 3.0 + 1.0
    X[4] = 2.5  # zero variance across its entries: correlation 0 with every other row
    keep = X.copy()
    R = corr_matrix(X)
    np.testing.assert_array_equal(X, keep)  # the caller's array is not touched
    ok = np.arange(12) != 4
    np.testing.assert_allclose(R[np.ix_(ok, ok)], np.corrcoef(X[ok]), rtol=0, atol=1e-13)
    assert np.all(R[4, ok] == 0.0) and np.all(R[ok, 4] == 0.0) and R[4, 4] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sfda_sparse_confmix_matches_dense_algebra(seed):
    """sfda (sparse class sums) equals the same algebra with dense one-hot products."""
    X, y = _mixture(seed, 80, 120, 6, quality=0.4)
    n, d = X.shape
    C = 6
    Xc = X - X.mean(0)
    counts, Y, Gww, Gwm, Gmm = class_gram_blocks(Xc @ Xc.T, y, C)

    Xw = Xc - (Y.T @ Xc / counts[:, None])[y]
    lam = max(np.exp(-5 * iterative_a_gram(Gww, Xw.sum(1), 1 / n)), 1e-10)
    P = lda_posteriors_gram(Gww, Gwm, Gmm, y, counts, d, lam)
    soft = np.exp(P)
    soft /= soft.sum(1, keepdims=True)
    p = soft[np.arange(n), y]
    h = (1 - p) / (C - 1)
    A = (p - h)[:, None] * Y + h[:, None]  # Xm = diag(p) Xw + A M (official ConfMix)
    Abar = (Y.T @ A) / counts[:, None]
    # the ConfMix features in the basis [Xw; M]: Xm = L [Xw; M], Gram blocks from the full Gram
    Wp = (Y * p[:, None]).T / counts[:, None]
    L = np.hstack([np.diag(p) - Wp[y], A - Abar[y]])
    Lm = np.hstack([Wp, Abar])  # class means of Xm
    Gfull = np.block([[Gww, Gwm], [Gwm.T, Gmm]])
    Gm = Lm @ Gfull
    Gww2, Gwm2, Gmm2 = L @ Gfull @ L.T, L @ Gfull @ Lm.T, Gm @ Lm.T
    P2 = lda_posteriors_gram(0.5 * (Gww2 + Gww2.T), Gwm2, 0.5 * (Gmm2 + Gmm2.T), y, counts, d, lam)
    ref = float(np.mean(P2[np.arange(n), y]))
    assert compute_score("sfda", X, y) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("scale", [0.05, 1.0])
def test_adaptive_shrinkage_scale_equals_scaled_matrix(scale):
    """``scale=1/n`` on ``Xw Xw^T`` gives the shrinkage of ``Xw Xw^T / n`` (floor not reached)."""
    rng = np.random.default_rng(12)
    Xw = scale * rng.standard_normal((50, 80))
    G = Xw @ Xw.T
    ref = adaptive_shrinkage(G / 50, 1e-12)
    assert ref > 1e-12  # the exp(-5 lambda) branch, not the floor
    assert adaptive_shrinkage(G, 1e-12, scale=1 / 50) == pytest.approx(ref, rel=1e-9)
    assert adaptive_shrinkage(G, 1e-4, scale=1 / 50) == pytest.approx(adaptive_shrinkage(G / 50, 1e-4), rel=1e-9)


def test_lda_posteriors_read_only_the_lower_triangle():
    X, y = _mixture(13, 40, 60, 4)
    Xc = X - X.mean(0)
    counts, _, Gww, Gwm, Gmm = class_gram_blocks(Xc @ Xc.T, y, 4)
    ref = lda_posteriors_gram(Gww, Gwm, Gmm, y, counts, 60, 0.1)
    noisy = Gww + np.triu(np.random.default_rng(14).standard_normal(Gww.shape), k=1)
    np.testing.assert_array_equal(lda_posteriors_gram(noisy, Gwm, Gmm, y, counts, 60, 0.1), ref)
