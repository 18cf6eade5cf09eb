"""Scores built on (pseudo) class posteriors: LEEP, NCE, N-LEEP, split logistic regression, SFDA."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

from ._linalg import class_gram_blocks, class_rows, pca
from .registry import ScoreInputError, register_score


def _leep_from_probs(theta: np.ndarray, labels: np.ndarray) -> float:
    n = theta.shape[0]
    order = np.argsort(labels, kind="stable")
    C = int(labels.max()) + 1
    b = np.searchsorted(labels[order], np.arange(C + 1))  # class c: rows b[c]:b[c+1] of ts
    ts = theta[order]  # rows grouped by class: contiguous blocks, no one-hot product
    joint = np.stack([ts[b[c]:b[c + 1]].sum(axis=0) for c in range(C)]) / n  # P(y, z): (C, Z)
    marginal = joint.sum(axis=0)  # P(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    eep = np.concatenate([ts[b[c]:b[c + 1]] @ cond[c] for c in range(C)])  # (sorted order)
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


@register_score("leep", needs_probs=True, uses_features=False,
                paper="Nguyen et al. 2020, 'LEEP: A new measure to evaluate transferability of "
                      "learned representations', ICML",
                summary="log expected empirical prediction of the source head through P(y|z)")
def leep(features, labels, *, probs=None, reference=None):
    """Log Expected Empirical Prediction (Nguyen et al. 2020).

    With source-class probabilities ``theta_i = P(z | x_i)`` (n x Z):

        P(y, z) = 1/n sum_{i: y_i = y} theta_iz,   P(y | z) = P(y, z) / P(z),
        LEEP = 1/n sum_i log sum_z P(y_i | z) theta_iz   (<= 0).

    Features are not used. Invariant to label permutation, sample duplication and any
    transform of the features. Cost O(n Z C).
    """
    return _leep_from_probs(probs, labels)


@register_score("nce", needs_probs=True, uses_features=False,
                paper="Tran et al. 2019, 'Transferability and hardness of supervised "
                      "classification tasks', ICCV",
                summary="negative conditional entropy of target labels given the source argmax label")
def nce(features, labels, *, probs=None, reference=None):
    """Negative Conditional Entropy (Tran et al. 2019).

    ``z_i = argmax_z probs_iz`` (the source model's hard label), empirical joint
    ``P(y, z)``; ``NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)`` (<= 0, empty cells
    contribute 0). Features are not used. Invariant to label permutation and duplication.
    """
    z = np.argmax(probs, axis=1)
    n, Zn = probs.shape
    C = int(labels.max()) + 1
    counts = np.bincount(labels * Zn + z, minlength=C * Zn).reshape(C, Zn).astype(float)
    col = counts.sum(axis=0)
    nz = counts > 0
    return float(np.sum(counts[nz] / n * np.log(counts[nz] / np.broadcast_to(col, counts.shape)[nz])))


@register_score("nleep", iterative=True,
                paper="Li et al. 2021, 'Ranking neural checkpoints', CVPR",
                summary="LEEP with a Gaussian mixture fitted on PCA-reduced features as the source head")
def nleep(features, labels, *, probs=None, reference=None, n_components=None, variance=0.8,
          max_iter=100, seed=0):
    """Gaussian-LEEP / N-LEEP (Li et al. 2021).

    Features are reduced by PCA to the fewest components explaining ``variance`` of the
    variance (0.8 as in the paper), rescaled by one scalar (unit average variance), and a
    diagonal-covariance Gaussian mixture with ``n_components`` (default: number of target
    classes, at most n) is fitted by EM (``seed``); its posteriors ``P(k | x_i)`` replace the
    source-class probabilities in LEEP (:func:`leep`):

        NLEEP = 1/n sum_i log sum_k P(y_i | k) P(k | x_i),  P(y | k) = P(y, k) / P(k).

    Iterative (EM). Invariant to label
    permutation and isotropic scaling.
    """
    from sklearn.mixture import GaussianMixture

    if not 0 < float(variance) <= 1:
        raise ScoreInputError(f"nleep: variance must be in (0, 1]; got {variance!r}.")
    n = features.shape[0]
    C = int(labels.max()) + 1
    K = C if n_components is None else int(n_components)
    if not 1 <= K:
        raise ScoreInputError(f"nleep: n_components must be >= 1; got {n_components!r}.")
    K = min(K, n)
    Z = pca(features, min(features.shape))
    var = Z.var(axis=0)
    total = var.sum()
    if total <= 0:
        return _leep_from_probs(np.full((n, 1), 1.0), labels)
    keep = int(np.searchsorted(np.cumsum(var) / total, float(variance) - 1e-12) + 1)
    Z = Z[:, :keep]
    Z = Z / np.sqrt(Z.var(axis=0).mean())
    gmm = GaussianMixture(n_components=K, covariance_type="diag", max_iter=int(max_iter),
                          random_state=int(seed), reg_covar=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gmm.fit(Z)
    return _leep_from_probs(gmm.predict_proba(Z), labels)


@register_score("split_lr", iterative=True,
                paper="split logistic-regression baseline of Bolya et al. 2021, NeurIPS (PARC), "
                      "with its protocol",
                summary="accuracy of a logistic regression trained on one half of the (shuffled) "
                        "samples and tested on the other (PARC's split-logistic protocol)")
def split_lr(features, labels, *, probs=None, reference=None, C=1.0, max_iter=20, tol=0.1,
             train_fraction=0.5, seed=0):
    """Split logistic regression with the protocol of PARC's ``SplitLogistic`` baseline.

    The samples are put in a seeded random order (``seed``; PARC's probe sets come in
    random order, ours may be sorted by class), the first ``n - floor(train_fraction n)``
    train and the rest test (PARC's split, not stratified); the raw features (no scaling)
    fit scikit-learn's multinomial L2 logistic regression with PARC's solver settings
    (lbfgs, ``C=1``, ``max_iter=20``, ``tol=0.1``, ``random_state=0``), and

        split_lr = 1/|test| sum_{i in test} [argmax_c (W x_i + b)_c = y_i]

    (PARC prints x100). A training half with a single class predicts that class. With two
    classes scikit-learn >= 1.8 fits a binary logistic regression (PARC's code asked for a
    two-class softmax, whose penalty is half as strong). Iterative (lbfgs). Invariant to
    label permutation; *not* to scaling (the stopping rule and penalty see raw scales) or
    duplication.
    """
    from sklearn.linear_model import LogisticRegression

    if not 0 < float(train_fraction) < 1:
        raise ScoreInputError(f"split_lr: train_fraction must be in (0, 1); got {train_fraction!r}.")
    n = labels.shape[0]
    order = np.random.default_rng(int(seed)).permutation(n)
    cut = n - int(float(train_fraction) * n)
    tr, te = order[:cut], order[cut:]
    if te.size == 0 or tr.size == 0:
        raise ScoreInputError(f"split_lr: {n} samples cannot be split into non-empty train and test halves "
                              f"with train_fraction={train_fraction}.")
    if np.unique(labels[tr]).size < 2:
        pred = np.full(te.size, labels[tr][0])
    else:
        clf = LogisticRegression(C=float(C), max_iter=int(max_iter), tol=float(tol), random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(features[tr], labels[tr])
        pred = clf.predict(features[te])
    return float(np.mean(pred == labels[te]))


def _top_eig_gram(G: np.ndarray, iters: int = 200, tol: float = 1e-10,
                  stop_above: float = np.inf) -> float:
    """Largest eigenvalue of a PSD matrix by deterministic power iteration.

    The iterates ``||G v_k||`` never decrease for a PSD ``G``, so a caller that only needs
    to know whether ``lambda_max >= stop_above`` may stop there (``stop_above``).
    """
    v = np.ones(G.shape[0]) / np.sqrt(G.shape[0]) + np.linspace(0, 1e-3, G.shape[0])
    lam = 0.0
    for _ in range(iters):
        w = G @ v
        new = float(np.sqrt(w @ w))
        if new == 0:
            return 0.0
        v = w / new
        if abs(new - lam) <= tol * new or new >= stop_above:
            return new
        lam = new
    return lam


def adaptive_shrinkage(Gw: np.ndarray, min_shrinkage: float, scale: float = 1.0) -> float:
    """SFDA's ``max(exp(-5 lambda_max(S_w)), min_shrinkage)`` from ``scale * Gw = Xw Xw^T / n``
    (``scale``: e.g. ``1/n`` with ``Gw = Xw Xw^T``, which saves scaling an n x n matrix).

    The power iteration stops as soon as ``exp(-5 lambda) <= min_shrinkage`` (the floor then
    wins whatever the exact ``lambda_max``), which gives the same value as running it out.
    """
    stop = -np.log(float(min_shrinkage)) / 5.0 if min_shrinkage > 0 else np.inf
    lam = scale * _top_eig_gram(Gw, stop_above=stop / scale)
    return max(float(np.exp(-5.0 * lam)), float(min_shrinkage))


def lda_posteriors_gram(Gww, Gwm, Gmm, y, counts, d, s):
    """Class posteriors (n, C) of LDA with within-class covariance shrunk to
    ``S = (1 - s) S_w + s tr(S_w)/d I`` (``S_w = Xw^T Xw / n``), from Gram blocks only.

    With ``a = 1 - s``, ``b = s tr(S_w)/d`` and Woodbury,
    ``S^-1 M^T = (M^T - a/n Xw^T K^-1 Xw M^T) / b``, ``K = b I + a/n Xw Xw^T``, so

        logits = X S^-1 M^T - 1/2 diag(M S^-1 M^T) + log(n_c / n)

    needs only ``X Xw^T = Gww + Gwm^T[y]``, ``X M^T = Gwm + Gmm[y]`` and ``M Xw^T``; with
    ``T = K^-1 Xw M^T`` and ``a/n Gww T = Xw M^T - b T`` the logits are
    ``X S^-1 M^T = (Gmm[y] + b T - a/n (Gwm^T T)[y]) / b``: O(n^3/3 + n^2 C), no n x d
    product. No within-class variance at all (``b = 0``): ``b`` becomes the mean squared
    feature (nearest-class-mean rule). Only the lower triangle and the diagonal of ``Gww``
    are read.
    """
    n = Gww.shape[0]
    a = 1.0 - s
    mu = float(np.trace(Gww)) / (n * d)
    b = s * mu
    if b <= 0:  # classes are points
        sq = np.trace(Gww) + 2.0 * np.sum(Gwm[np.arange(n), y]) + np.sum(np.diag(Gmm)[y])
        b = float(sq) / (n * d) or 1.0
    K = (a / n) * Gww
    K[np.diag_indices(n)] += b
    T = sla.cho_solve(sla.cho_factor(K, lower=True, overwrite_a=True, check_finite=False), Gwm,
                      check_finite=False)  # K is ours: factor it in place
    # a/n Gww T = K T - b T = Gwm - b T: no n x n x C product, and no cancellation
    XQ = (Gmm[y] + b * T - (a / n) * (Gwm.T @ T)[y]) / b
    mq = (np.diag(Gmm) - (a / n) * np.sum(Gwm * T, axis=0)) / b
    logits = XQ - 0.5 * mq + np.log(counts / n)
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    return P / P.sum(axis=1, keepdims=True)


@register_score("sfda",
                paper="Shao et al. 2022, 'Not all models are equal: predicting model "
                      "transferability in a self-challenging Fisher space', ECCV",
                summary="mean correct-class probability of regularized LDA after confusion mixing")
def sfda(features, labels, *, probs=None, reference=None, min_shrinkage=1e-4):
    """Self-challenging Fisher Discriminant Analysis (Shao et al. 2022).

    1. Regularized FDA: within-class scatter ``S_w`` shrunk to ``(1-l) S_w + l tr(S_w)/d I``
       with the adaptive ``l = exp(-5 lambda_max(S_w))`` (floored at ``min_shrinkage`` so it
       stays invertible when n <= d); class posteriors ``p(c | x)`` of the resulting LDA.
    2. ConfMix: ``p_i = softmax(p(. | x_i))_{y_i}`` and ``x_i <- p_i x_i + (1 - p_i) mu_out(y_i)``
       (``mu_out(c)``: mean of the samples outside class c): hard samples move toward the
       other classes.
    3. ``SFDA = 1/n sum_i p'(y_i | x_i)`` with the LDA refit (same ``l``) on the mixed features.

    Both LDAs are evaluated exactly from Gram matrices (:func:`lda_posteriors_gram`): the
    features enter through one (n + C) x (n + C) Gram matrix of the within-class residuals
    and class means; the mixed features are linear combinations of those rows, so their
    Gram blocks follow in O(n^2 C). Cost O(n^2 d / 2 + n^2 C + n^3/3). Invariant to label
    permutation and translation; not to scaling (``lambda_max`` is scale-dependent, as in
    the paper).
    """
    if not 0 < float(min_shrinkage) <= 1:
        raise ScoreInputError(f"sfda: min_shrinkage must be in (0, 1]; got {min_shrinkage!r}.")
    n, d = features.shape
    C = int(labels.max()) + 1
    Xc = features - features.mean(axis=0)
    counts, Y, Gww, Gwm, Gmm = class_gram_blocks(Xc @ Xc.T, labels, C)
    lam = adaptive_shrinkage(Gww, float(min_shrinkage), scale=1.0 / n)
    P = lda_posteriors_gram(Gww, Gwm, Gmm, labels, counts, d, lam)
    soft = np.exp(P)
    soft /= soft.sum(axis=1, keepdims=True)
    p = soft[np.arange(n), labels]
    # ConfMix in coefficients of B = [Xw; M]. The centered class means satisfy
    # sum_c n_c M_c = 0, so mu_out(c) = -n_c M_c / (n - n_c) and
    # Xm_i = p_i x_i + (1 - p_i) mu_out(y_i) = p_i Xw_i + g_i M[y_i]:
    g = p - (1.0 - p) * (counts / np.maximum(n - counts, 1.0))[labels]
    gbar = np.bincount(labels, weights=g, minlength=C) / counts  # class means of Xm: Mm = Wp Xw + diag(gbar) M
    dlt = g - gbar[labels]  # residuals: Xmw = diag(p) Xw - Wp[y] Xw + diag(dlt) M[y]
    Wp = class_rows(labels, p / counts[labels], C)  # (C, n), sparse: W_p[c, i] = p_i [y_i = c] / n_c
    WpGww = Wp @ Gww  # (C, n)
    WpGwm = Wp @ Gwm  # (C, C)
    R1 = p[:, None] * Gww  # Xmw Xw^T = diag(p) Gww - (Wp Gww)[y] + diag(dlt) (Gwm^T)[y], in place
    R1 -= WpGww[labels]
    GwmTy = Gwm.T[labels]
    GwmTy *= dlt[:, None]
    R1 += GwmTy
    R2 = p[:, None] * Gwm - WpGwm[labels] + dlt[:, None] * Gmm[labels]  # Xmw M^T
    R1Wp = R1 @ Wp.T  # Xmw Xw^T Wp^T (n, C)
    Gww2 = R1 * p[None, :]  # R1 diag(p) - (R1 Wp^T)[:, y] + R2[:, y] diag(dlt), in place
    Gww2 -= R1Wp[:, labels]
    R2y = R2[:, labels]
    R2y *= dlt[None, :]
    Gww2 += R2y
    # Gww2 is symmetric up to rounding; lda_posteriors_gram reads only its lower triangle
    # (Cholesky with lower=True) and its diagonal, so it is not symmetrized (an n x n transpose)
    Gwm2 = R1Wp + R2 * gbar[None, :]
    S1 = WpGww + gbar[:, None] * Gwm.T  # Mm Xw^T (C, n)
    S2 = WpGwm + gbar[:, None] * Gmm  # Mm M^T (C, C)
    Gmm2 = S1 @ Wp.T + S2 * gbar[None, :]
    Gmm2 = 0.5 * (Gmm2 + Gmm2.T)
    P2 = lda_posteriors_gram(Gww2, Gwm2, Gmm2, labels, counts, d, lam)
    return float(np.mean(P2[np.arange(n), labels]))
