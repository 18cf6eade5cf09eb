"""ETran (Gholami et al. 2023): energy score + LDA classification score + SVD regression score."""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._linalg import RANK_TOL, class_gram_blocks, gram_spectrum_projections, one_hot
from .probabilistic import adaptive_shrinkage, lda_posteriors_gram
from .registry import ScoreInputError, register_score

ETRAN_PAPER = ("Gholami et al. 2023, 'ETran: Energy-based transferability estimation', ICCV "
               "(arXiv:2308.02027)")


def energy_score(X: np.ndarray, fraction: float = 1.0) -> float:
    """``S_en``: mean over samples of ``-E(x) = logsumexp_k x_k`` (free energy, T = 1).

    The features play the role of logits. ``fraction < 1`` averages only the
    ``max(1, floor(fraction n))`` samples of lowest ``logsumexp`` (the authors' code uses
    0.005, the lowest 0.5%).
    """
    mx = X.max(axis=1)
    E = X - mx[:, None]
    np.exp(E, out=E)  # float64: a float32 exp is twice as fast but off by up to 1e-8 (docs/scores.md)
    lse = mx + np.log(E.sum(axis=1))
    if fraction >= 1.0:
        return float(lse.mean())
    m = max(1, int(np.floor(fraction * lse.shape[0])))
    return float(np.partition(lse, m - 1)[:m].mean())


@register_score("etran", paper=ETRAN_PAPER,
                summary="energy (logsumexp of features) + shrunk-LDA correct-class posterior "
                        "+ truncated-SVD least-squares fit of the one-hot labels")
def etran(features, labels, *, probs=None, reference=None, energy_fraction=1.0, variance=0.8,
          min_shrinkage=1e-4):
    """ETran (Gholami et al. 2023) for classification: ``T = S_en + S_cls + S_reg``.

    * Energy score: ``S_en = 1/n sum_i logsumexp_k x_ik`` (minus the free energy of the
      raw features read as logits, T = 1); ``energy_fraction`` < 1 averages only that
      fraction of lowest-energy samples (the authors' code: 0.005).
    * Classification score: ``S_cls = 1/n sum_i p(y_i | x_i)`` with the posteriors of LDA
      on centered features whose within-class covariance is shrunk to
      ``(1-l) S_w + l tr(S_w)/d I``, ``l = max(exp(-5 lambda_max(S_w)), min_shrinkage)``
      (the SFDA shrinkage the authors reuse; their floor is 1e-10, ours keeps the LDA
      well-conditioned when n <= d).
    * Regression score: ``S_reg = -1/(n C) ||Y - F F_k^+ Y||_F^2 = -1/(n C) (||Y||^2 -
      ||U_k^T Y||^2)`` with ``Y`` the one-hot labels, ``F`` the raw features and ``F_k`` their
      truncated SVD keeping the fewest left singular vectors ``U_k`` that hold ``variance``
      (0.8) of ``sum s^2``: the least-squares fit through the truncated pseudo-inverse.

    When n <= d, everything comes from the n x n Gram matrices: the LDA from the Gram
    blocks of the centered features (:func:`class_gram_blocks`, :func:`lda_posteriors_gram`,
    exact, no eigenvectors) and S_reg from the eigenvalues of ``F F^T`` and the projections
    ``U^T Y`` (:func:`gram_spectrum_projections`, no n x n eigenvector matrix); when
    n > d, the eigendecomposition of ``F^T F`` (d x d, built from the within-class scatter
    that the LDA needs anyway) gives ``U_k = F V_k / s_k`` and the LDA is solved in the d
    original coordinates (same value, cheaper matrix). Deviations from the
    authors' code, all deliberate: the LDA uses its posteriors as defined (their
    implementation multiplies by a full orthogonal eigenbasis, which reduces it to a
    nearest-mean rule); ``S_reg`` regresses the one-hot labels (their code regresses the
    integer class id, which depends on the label order) and keeps the fewest components
    *reaching* ``variance`` (theirs keeps those strictly below, possibly none); singular
    directions below 1e-10 of the largest squared one are dropped; the energy averages all
    samples by default. The three terms are added unweighted, as in the paper. Invariant to
    label permutation; *not* to feature scaling (energy and adaptive shrinkage are
    scale-dependent). Cost O(n d min(n, d) + min(n, d)^3).
    """
    if not 0 < float(energy_fraction) <= 1:
        raise ScoreInputError(f"etran: energy_fraction must be in (0, 1]; got {energy_fraction!r}.")
    if not 0 < float(variance) <= 1:
        raise ScoreInputError(f"etran: variance must be in (0, 1]; got {variance!r}.")
    if not 0 < float(min_shrinkage) <= 1:
        raise ScoreInputError(f"etran: min_shrinkage must be in (0, 1]; got {min_shrinkage!r}.")
    X = features
    n, d = X.shape
    route = "samples" if n <= d else "features"
    return _etran_value(X, labels, float(energy_fraction), float(variance), float(min_shrinkage), route)


def _etran_value(X, labels, energy_fraction, variance, min_shrinkage, route):
    """ETran through the ``n x n`` Gram matrix (``route="samples"``) or the ``d x d`` one
    (``"features"``); both give the same value, :func:`etran` picks the smaller matrix."""
    n, d = X.shape
    C = int(labels.max()) + 1
    s_en = energy_score(X, energy_fraction)
    if route == "samples":
        return s_en + _etran_samples(X, labels, C, variance, min_shrinkage)
    Y = one_hot(labels, C)
    counts = Y.sum(axis=0)
    Mraw = (Y.T @ X) / counts[:, None]
    Xw = X - Mraw[labels]
    W = Xw.T @ Xw  # within-class scatter (d, d)
    # X'X = Xw'Xw + sum_c n_c m_c m_c' (the cross terms vanish): no second n x d x d product
    lam, V = np.linalg.eigh(W + (Mraw.T * counts) @ Mraw)
    lam = lam[::-1]
    keep = lam > max(float(lam[0]), 0.0) * RANK_TOL if lam[0] > 0 else np.zeros(lam.size, dtype=bool)
    lam = lam[keep]
    if lam.size == 0:  # all-zero features: the least-squares prediction is 0
        s_reg = -1.0 / C
    else:
        k = _components(lam, variance)
        Vk = V[:, ::-1][:, keep][:, :k]  # U_k = X V_k / s_k
        proj = (Vk.T @ (X.T @ Y)) / np.sqrt(lam[:k])[:, None]
        s_reg = -(n - float(np.sum(proj * proj))) / (n * C)
    s_cls = _lda_accuracy_scatter(X, labels, Y, counts, Mraw, W, min_shrinkage)
    return s_en + s_cls + s_reg


def _components(lam, variance):
    """Fewest leading eigenvalues (descending ``lam``) whose sum reaches ``variance`` of the total."""
    return min(int(np.searchsorted(np.cumsum(lam) / lam.sum(), variance - 1e-12)) + 1, lam.size)


def _etran_samples(X, labels, C, variance, min_shrinkage):
    """``S_reg + S_cls`` from the n x n Gram matrices only (n <= d).

    ``Gc = Xc Xc^T`` of the centered features gives the LDA's Gram blocks
    (:func:`class_gram_blocks`, :func:`lda_posteriors_gram`: exact, no eigenvectors) and the
    raw ``G = X X^T = Gc + (Xc m) 1^T + 1 (Xc m)^T + ||m||^2`` (``m``: feature mean) gives
    ``S_reg`` through its eigenvalues and the projections ``U^T Y``
    (:func:`gram_spectrum_projections`, no n x n eigenvector matrix).
    """
    n, d = X.shape
    m = X.mean(axis=0)
    Xc = X - m
    Gc = Xc @ Xc.T
    u = Xc @ m
    G = Gc + u[:, None]
    G += u[None, :]
    G += float(m @ m)
    counts, Y, Gww, Gwm, Gmm = class_gram_blocks(Gc, labels, C)
    lam, proj = gram_spectrum_projections(G, Y, overwrite=True)
    if lam.size == 0:  # all-zero features: the least-squares prediction is 0
        s_reg = -1.0 / C
    else:
        k = _components(lam, variance)
        s_reg = -(n - float(np.sum(proj[:k] ** 2))) / (n * C)
    shrink = adaptive_shrinkage(Gww, min_shrinkage, scale=1.0 / n) if np.any(Gww) else 1.0
    P = lda_posteriors_gram(Gww, Gwm, Gmm, labels, counts, d, shrink)
    return s_reg + float(np.mean(P[np.arange(n), labels]))


def _lda_accuracy_scatter(X, y, Y, counts, Mraw, W, min_shrinkage):
    """``S_cls``, the mean correct-class posterior of the shrunk LDA (the LDA of
    :func:`features.scores.probabilistic.lda_posteriors_gram`), in the original d
    coordinates from the within-class scatter ``W = Xw' Xw`` (d, d) and the raw class
    means ``Mraw`` (C, d): the n > d route."""
    n, d = X.shape
    m = (counts @ Mraw) / n
    M = Mraw - m
    Sw = W / n
    lam = adaptive_shrinkage(Sw, min_shrinkage)
    mu = float(np.trace(Sw)) / d
    total = (float(np.trace(W)) + float(counts @ np.sum(M * M, axis=1))) / (n * d)
    a, b = 1.0 - lam, lam * mu
    if mu <= 1e-12 * total or b <= 0:
        b = total or 1.0
    S = a * Sw
    S[np.diag_indices(d)] += b
    Q = sla.cho_solve(sla.cho_factor(S, lower=True, check_finite=False), M.T, check_finite=False)
    logits = (X - m) @ Q - 0.5 * np.sum(M * Q.T, axis=1) + np.log(counts / n)
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(axis=1, keepdims=True)
    return float(np.mean(P[np.arange(n), y]))
