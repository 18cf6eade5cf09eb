"""Scores built on second-order statistics of the features: LFC, LGC, H-score, regularized H-score."""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._linalg import RANK_TOL, one_hot, sq_frobenius_gram, thin_svd
from .registry import ScoreInputError, register_score

DESHPANDE = ("Deshpande et al. 2021, 'A linearized framework and a new benchmark for model "
             "selection for fine-tuning', arXiv:2102.00084")


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


@register_score("lfc", paper=DESHPANDE,
                summary="centered kernel alignment of the feature Gram matrix with the label Gram matrix",
                reference="no official code; the paper's formula (explicit n x n kernels in the tests)")
def lfc(features, labels, *, probs=None, reference=None):
    """Label-Feature Correlation (Deshpande et al. 2021).

    With centered features ``Xc = HX`` and label kernel ``L_ij = +1`` (same class) / ``-1``
    (else), whose centered form is ``H L H = 2 Yc Yc^T`` (Yc: centered one-hot), the score is
    the centered kernel alignment

        LFC = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),   K = X X^T,
            = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),

    computed with d x C and C x C products (plus the smaller Gram for ``||Xc^T Xc||_F``),
    never the n x n kernels. Range [0, 1]. Invariant to label permutation, isotropic
    scaling, translation, orthogonal rotation of the features and sample duplication.
    """
    Xc = features - features.mean(axis=0)
    Y = one_hot(labels)
    Yc = Y - Y.mean(axis=0)
    num = float(np.sum((Xc.T @ Yc) ** 2))
    den = np.sqrt(sq_frobenius_gram(Xc)) * np.sqrt(float(np.sum((Yc.T @ Yc) ** 2)))
    return _safe_ratio(num, den)


@register_score("lgc", paper=DESHPANDE,
                summary="alignment of the gradient kernel of a zero-initialized linear softmax head "
                        "with the label kernel")
def lgc(features, labels, *, probs=None, reference=None):
    """Label-Gradient Correlation (Deshpande et al. 2021), linear-head approximation.

    The paper correlates the label kernel with the kernel of the network's gradients at
    initialization. With only features available we take the gradient of the softmax
    cross-entropy of a linear head ``W`` (C x d) at ``W = 0`` on centered features:
    ``g_i = vec((1/C - e_{y_i}) x_i^T)``, whose kernel is

        G_ij = <g_i, g_j> = (x_i . x_j) ([y_i = y_j] - 1/C) = (K o S - K / C)_ij.

    LGC = <HGH, HLH>_F / (||HGH||_F ||HLH||_F) with the +-1 label kernel ``L``. All terms are
    evaluated exactly from class sums ``s_c`` and per-class Gram matrices (no n x n matrix):
    <G, Yc Yc^T> = sum_c ||s_c||^2 (1 - 2 p_c + ||p||^2) - sum_c ||s_c||^2 / C,
    ||HGH||^2 = (1 - 2/C) sum_c ||X_c X_c^T||^2 + ||K||^2 / C^2 - 2/n ||G 1||^2 + (1'G1)^2 / n^2,
    (G 1)_i = x_i . s_{y_i}. Invariant to label permutation, isotropic scaling, translation,
    orthogonal rotation and sample duplication.
    """
    X = features - features.mean(axis=0)
    n = X.shape[0]
    C = int(labels.max()) + 1
    Y = one_hot(labels, C)
    counts = Y.sum(axis=0)
    p = counts / n
    S = Y.T @ X  # class sums (C, d)
    s2 = np.sum(S * S, axis=1)
    num = float(np.sum(s2 * (1.0 - 2.0 * p + p @ p)) - s2.sum() / C)
    within = sum(sq_frobenius_gram(X[labels == c]) for c in range(C) if counts[c] > 0)
    g_norm2 = (1.0 - 2.0 / C) * within + sq_frobenius_gram(X) / C**2
    G1 = np.sum(X * S[labels], axis=1)
    hgh2 = g_norm2 - 2.0 / n * float(G1 @ G1) + float(G1.sum()) ** 2 / n**2
    Yc = Y - p
    hlh = np.sqrt(float(np.sum((Yc.T @ Yc) ** 2)))
    return _safe_ratio(num, np.sqrt(max(hgh2, 0.0)) * hlh)


def _hscore_saturated(X, y, value) -> str | None:
    """H-score at its bound: C - 1 (the centered features span every class indicator) or the
    feature rank d (every feature direction is explained by the class means)."""
    n, d = X.shape
    C = int(y.max()) + 1
    if n > d and d < C - 1 and value >= d * (1.0 - 1e-9):
        return (f"hscore is at its bound d = {d} (fewer feature dims than C - 1 = {C - 1}, every one "
                "explained by the class means); the value cannot rank models")
    if value < (C - 1) * (1.0 - 1e-9):
        return None
    why = (f"n <= d ({n} samples, {d} dims), so any features of full rank give it"
           if n <= d else "the classes have no within-class variance in the feature span, so it is")
    return f"hscore saturates at C - 1 = {C - 1}: {why}; the value cannot rank models (use reg_hscore)"


@register_score("hscore",
                paper="Bao et al. 2019, 'An information-theoretic approach to transferability "
                      "in task transfer learning', ICIP",
                summary="tr(cov(f)^+ cov(E[f|y])): class-mean variance relative to feature covariance",
                degenerate=_hscore_saturated,
                reference="dbolya/parc@b05d062 methods.py HScore.get_hscore_fast (n_dims=None)",
                deviation="the official pinv(rcond=1e-15) keeps directions of relative size 1e-15 "
                          "that ours (1e-10) treats as rank deficiency: equal to 1e-9 on full-rank input")
def hscore(features, labels, *, probs=None, reference=None):
    """H-score (Bao et al. 2019): ``H = tr(cov(f)^+ cov(E[f|y]))``.

    With the thin SVD of the centered features ``Xc = U S V^T`` (numerical rank r) this is
    exactly ``H = sum_c ||U^T y_c||^2 / n_c`` (``y_c``: class indicator), i.e. the fraction of
    each class indicator explained by a linear map of the features. Range [0, C - 1]; it
    saturates at C - 1 whenever n <= d (use ``reg_hscore`` there); such a value is flagged
    as degenerate (:func:`features.scores.score_with_flag`). Invariant to label
    permutation, any invertible linear map of the features (so isotropic scaling),
    translation and sample duplication. Cost O(n d min(n, d)).
    """
    Xc = features - features.mean(axis=0)
    n, d = Xc.shape
    G = Xc @ Xc.T if n <= d else Xc.T @ Xc
    lam = np.linalg.eigvalsh(G)  # values only: the numerical rank decides the route
    if lam[-1] <= 0:
        return 0.0
    r = int(np.sum(lam > lam[-1] * RANK_TOL))
    Y = one_hot(labels)
    counts = Y.sum(axis=0)
    if n <= d and r == n - 1:  # U spans every centered vector: sum_c (n_c - n_c^2/n) / n_c
        return float(np.sum(1.0 - counts / n))
    if n > d and r == d:  # full column rank: sum_c m_c' (Xc'Xc)^-1 m_c / n_c, m_c = Xc' y_c
        M = Xc.T @ Y
        Q = sla.cho_solve(sla.cho_factor(G, lower=True, check_finite=False), M, check_finite=False)
        return float(np.sum(M * Q / counts))
    U, _ = thin_svd(Xc)
    return float(np.sum((U.T @ Y) ** 2 / counts))


def ledoit_wolf_shrinkage(X: np.ndarray, sq_gram: float | None = None) -> float:
    """Ledoit-Wolf (2004) optimal shrinkage intensity of the covariance of ``X`` (n, d).

    Same estimator as ``sklearn.covariance.ledoit_wolf_shrinkage`` (features centered),
    evaluated in O(n d min(n, d)) with ``sum_ab (X2'X2)_ab = sum_i ||x_i||^4`` and the
    smaller Gram matrix for ``||X'X||_F^2`` (or ``sq_gram`` when the caller has it).
    """
    Xc = X - X.mean(axis=0)
    n, d = Xc.shape
    row2 = np.sum(Xc * Xc, axis=1)
    trace_s = row2.sum() / n  # tr(S)
    mu = trace_s / d
    delta_ = (sq_frobenius_gram(Xc) if sq_gram is None else sq_gram) / n**2  # ||S||_F^2
    beta_ = float(row2 @ row2)
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace_s + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)


@register_score("reg_hscore",
                paper="Ibrahim et al. 2022, 'Newer is not always better: rethinking "
                      "transferability metrics, their peculiarities, stability and performance', ECML-PKDD",
                summary="H-score with a Ledoit-Wolf shrunk feature covariance",
                reference="thuml/Transfer-Learning-Library@b0d863f tllib/ranking/hscore.py "
                          "regularized_h_score")
def reg_hscore(features, labels, *, probs=None, reference=None, shrinkage=None):
    """Shrinkage-regularized H-score (Ibrahim et al. 2022).

    ``H_a = (1 - a) tr(S_a^{-1} cov(E[f|y]))`` with ``S_a = (1 - a) S + a mu I``, ``S`` the
    feature covariance (1/n, Ledoit-Wolf's), ``cov(E[f|y])`` with 1/(n - 1) (``np.cov``'s
    default, as the official tllib ``regularized_h_score``: so ``shrinkage=0`` gives
    ``n/(n-1)`` times the H-score), ``mu = tr(S)/d`` and ``a`` the Ledoit-Wolf shrinkage
    (:func:`ledoit_wolf_shrinkage`, or the ``shrinkage`` option in [0, 1]). With
    ``Xc = U diag(s) V^T``:

        H_a = (1 - a) sum_c sum_k s_k^2 (u_k' y_c)^2 / (n n_c ((1 - a) s_k^2 / n + a mu)).

    (times ``n/(n-1)``). For ``a > 0`` it is evaluated without an eigendecomposition:
    ``K = (1 - a)/n G + a mu I`` on the smaller Gram matrix ``G`` is positive definite, and
    ``Xc S_a^-1 Xc^T = G K^-1`` (n <= d) or ``S_a = K`` (n > d), so one Cholesky solve gives
    the trace. Invariant to label permutation, isotropic scaling,
    translation, rotation and (up to the shrinkage estimate) duplication.
    """
    Xc = features - features.mean(axis=0)
    n, d = Xc.shape
    G = Xc @ Xc.T if n <= d else Xc.T @ Xc  # the smaller Gram matrix
    if shrinkage is None:
        a = ledoit_wolf_shrinkage(Xc, sq_gram=float(np.sum(G * G)))
    else:
        a = float(shrinkage)
    if not 0.0 <= a <= 1.0:
        raise ScoreInputError(f"reg_hscore: shrinkage must be in [0, 1]; got {shrinkage!r}.")
    mu = float(np.trace(G)) / (n * d)
    if mu <= 0 or a >= 1.0:
        return 0.0
    Y = one_hot(labels)
    counts = Y.sum(axis=0)
    if a > 0:  # K = (1-a)/n G + a mu I is positive definite: one Cholesky, no eigendecomposition
        K = ((1.0 - a) / n) * G
        K[np.diag_indices(K.shape[0])] += a * mu
        cho = sla.cho_factor(K, lower=True, check_finite=False)
        if n <= d:  # Xc S_a^-1 Xc' = G K^-1 (push-through identity)
            F = G @ sla.cho_solve(cho, Y, check_finite=False)
            return float((1.0 - a) * np.sum(Y * F / counts) / (n - 1))
        M = Xc.T @ Y
        return float((1.0 - a) * np.sum(M * sla.cho_solve(cho, M, check_finite=False) / counts) / (n - 1))
    U, s = thin_svd(Xc)
    if U.shape[1] == 0:
        return 0.0
    proj2 = (U.T @ Y) ** 2  # (r, C)
    return float(np.sum(proj2 / counts) * n / (n - 1))  # a = 0: the H-score, times n / (n - 1)
