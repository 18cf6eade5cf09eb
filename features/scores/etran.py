"""ETran (Gholami et al. 2023): energy score + LDA classification score + SVD regression score."""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._linalg import RANK_TOL, class_gram_blocks, class_rows, gram_spectrum_projections, one_hot
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


ETRAN_REPO = "mgholamikn/ETran@a63361e"


@register_score("etran_v", paper=ETRAN_PAPER,
                summary="this project's single-model ETran: energy (logsumexp of features) + "
                        "shrunk-LDA correct-class posterior + truncated-SVD least-squares fit",
                reference="",
                deviation="own variant, no official counterpart: the official ETran (mgholamikn/ETran "
                          "tw.py) is not a per-model score (it min-max scales etran_energy and "
                          "etran_lda across the models of a dataset, see etran_combine); this one "
                          "adds the paper's regression term and a true LDA and needs no model set")
def etran_v(features, labels, *, probs=None, reference=None, energy_fraction=1.0, variance=0.8,
            min_shrinkage=1e-4):
    """ETran as a single-model score, this project's variant (``etran_v``): ``T = S_en + S_cls + S_reg``.

    Why a variant: the official ETran (mgholamikn/ETran ``tw.py``) combines two per-model
    scores, :func:`etran_energy` and :func:`etran_lda`, by min-max scaling each across the
    models of one dataset (:func:`etran_combine`), so it has no value for one model alone;
    its "LDA" reduces to a nearest-class-mean rule and it has no regression term. This
    variant is one number per model with the paper's three terms:

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
        raise ScoreInputError(f"etran_v: energy_fraction must be in (0, 1]; got {energy_fraction!r}.")
    if not 0 < float(variance) <= 1:
        raise ScoreInputError(f"etran_v: variance must be in (0, 1]; got {variance!r}.")
    if not 0 < float(min_shrinkage) <= 1:
        raise ScoreInputError(f"etran_v: min_shrinkage must be in (0, 1]; got {min_shrinkage!r}.")
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


@register_score("etran_energy", paper=ETRAN_PAPER,
                summary="ETran's energy score: mean logsumexp of the features over the 0.5% "
                        "lowest-energy samples (official Energy_Score)",
                reference=f"{ETRAN_REPO} metrics.py Energy_Score(X, 0.5, 'bot') (evaluate_metric.py)")
def etran_energy(features, labels, *, probs=None, reference=None, percent=0.5):
    """ETran's energy term as the official ``Energy_Score(X, percent=0.5, tail='bot')``.

    ``e_i = logsumexp_k x_ik`` (minus the free energy of the features read as logits); the
    score is the mean of the ``int(10 percent) * n // 1000`` lowest ``e_i`` (the lowest 0.5%:
    2 samples at n = 500, 25 at n = 5,000). The official code averages an empty set, NaN,
    when that count is 0 (n < 200 at the default): raised here as an input error. Labels are
    not used. Not scale-invariant.
    """
    if not 0 < float(percent) <= 100:
        raise ScoreInputError(f"etran_energy: percent must be in (0, 100]; got {percent!r}.")
    n = features.shape[0]
    k = int(float(percent) * 10) * n // 1000
    if k < 1:
        raise ScoreInputError(
            f"etran_energy: the official Energy_Score averages the lowest int(10 * percent) * n // 1000 = "
            f"{k} samples at n = {n}, percent = {percent} (NaN); it needs n >= "
            f"{-(-1000 // max(int(float(percent) * 10), 1))} at this percent.")
    mx = features.max(axis=1)
    E = features - mx[:, None]
    np.exp(E, out=E)
    lse = mx + np.log(E.sum(axis=1))
    return float(np.partition(lse, k - 1)[:k].mean())


def _etran_lda_degenerate(X, y, value, **options):
    C = int(y.max()) + 1
    counts = np.bincount(y, minlength=C).astype(float)
    M = (one_hot(y, C).T @ X) / counts[:, None]
    if float(np.sum((X - M[y]) ** 2)) <= 1e-24 * max(float(np.sum(X * X)), 1e-300):
        return ("etran_lda: the classes have no within-class variance; the official LDA_Score "
                "inverts a singular matrix there (it raises)")
    return None


@register_score("etran_lda", paper=ETRAN_PAPER,
                summary="ETran's classification score as the official LDA_Score: mean "
                        "correct-class softmax of a nearest-class-mean rule",
                reference=f"{ETRAN_REPO} metrics.py LDA_Score (class LDA)",
                degenerate=_etran_lda_degenerate)
def etran_lda(features, labels, *, probs=None, reference=None):
    """ETran's classification term exactly as the official ``LDA_Score`` evaluates it.

    The official ``LDA._solve_eigen`` takes ``np.linalg.eigh(inv(S_w') @ S_b)`` of a
    *non-symmetric* matrix: ``eigh`` reads one triangle and returns an orthonormal basis
    ``V``, so ``coef_ = means V V^T = means`` and the shrinkage cancels. The posteriors are
    those of a nearest-class-mean rule with Euclidean distance and class priors,

        p(c | x_i) = softmax_c(x_i . mu_c - ||mu_c||^2 / 2 + log n_c/n),

    and the score is ``1/n sum_i p(y_i | x_i)``. Computed directly in O(n d C) instead of the
    official O(d^3) inverse and eigendecomposition (same value to rounding). Translation
    invariant; not scale-invariant.
    """
    n, d = features.shape
    C = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=C).astype(float)
    m = features.mean(axis=0)
    Xc = features - m  # logits change by a per-sample constant: same posteriors
    M = class_rows(labels, 1.0 / counts[labels], C) @ Xc
    logits = Xc @ M.T
    logits -= 0.5 * np.sum(M * M, axis=1)
    logits += np.log(counts / n)
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(axis=1, keepdims=True)
    return float(np.mean(P[np.arange(n), labels]))


def etran_combine(energy, lda, *, energy_weight: float = 0.15) -> dict:
    """The official ETran score of a *set* of models (mgholamikn/ETran tw.py, ``-me etran``).

    ``energy``, ``lda``: dicts model -> :func:`etran_energy` / :func:`etran_lda` value on one
    dataset. Each is min-max scaled across the models, then
    ``ETran = 0.15 * energy + 0.85 * lda``. Needs the whole candidate set (a model's value
    depends on the others), so it is a helper, not a registered per-model score (like
    :func:`features.scores.parc_ensemble`). A score equal for every model has no range; the
    official code divides by zero there, raised here.
    """
    if set(energy) != set(lda):
        raise ScoreInputError("etran_combine: energy and lda must score the same models; "
                              f"differ in {sorted(set(energy) ^ set(lda))[:5]}.")

    def scale(score, what):
        v = {k: float(x) for k, x in score.items()}
        lo, hi = min(v.values()), max(v.values())
        if not hi > lo:
            raise ScoreInputError(f"etran_combine: {what} is the same for every model (no range to scale).")
        return {k: (x - lo) / (hi - lo) for k, x in v.items()}

    if not energy:
        return {}
    e, c = scale(energy, "etran_energy"), scale(lda, "etran_lda")
    w = float(energy_weight)
    return {k: e[k] * w + c[k] * (1.0 - w) for k in e}
