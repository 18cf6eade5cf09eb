"""Scores built on (pseudo) class posteriors: LEEP, NCE, N-LEEP, split logistic regression, SFDA."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

from ._linalg import class_gram_blocks, class_rows
from ._logistic import fit_logistic, predict_codes, stops_at_start
from ._mixture import IllDefinedCovariance, gaussian_mixture_posteriors
from .registry import ScoreInputError, register_score


def _leep_from_probs(theta: np.ndarray, labels: np.ndarray) -> float:
    n = theta.shape[0]
    theta = np.asarray(theta, dtype=np.float64)  # probs come validated but uncast
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
                reference="dbolya/parc@b05d062 methods.py LEEP.forward (src='probs')",
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
                summary="negative conditional entropy of target labels given the source argmax label",
                reference="Tran et al. 2019 formula; dbolya/parc@b05d062 methods.py NegativeCrossEntropy "
                          "with eps=0",
                deviation="dbolya/parc adds eps=1e-5 to each of the C x Z joint cells, which with 1,000 "
                          "source classes outweighs the data (Spearman -0.5 against the formula); not "
                          "reproduced")
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


NLEEP_REF = "TencentARC/SFDA@eb1eee0 metrics.py NLEEP (component_ratio=5)"


@register_score("nleep", iterative=True,
                paper="Li et al. 2021, 'Ranking neural checkpoints', CVPR",
                summary="mean P(y|x) through a Gaussian mixture (5 components per class, full "
                        "covariance) fitted on the 80%-variance PCA of the features; the mixture is "
                        "scikit-learn's GaussianMixture EM, batched over components",
                reference=NLEEP_REF,
                deviation="GaussianMixture gets random_state=seed (official: None, a different fit "
                          "each run)")
def nleep(features, labels, *, probs=None, reference=None, component_ratio=5, variance=0.8,
          seed=0):
    """N-LEEP (Li et al. 2021) as TencentARC/SFDA ``metrics.NLEEP`` computes it.

    ``PCA(n_components=0.8)`` (scikit-learn, exact: the fewest components explaining more
    than 80% of the variance), a Gaussian mixture with ``component_ratio * C`` components
    fitted as ``GaussianMixture(n_components, random_state=seed)`` fits it (scikit-learn
    defaults: full covariances, k-means init, ``reg_covar=1e-6``, ``tol=1e-3``,
    ``max_iter=100``) and its posteriors ``P(k | x_i)`` in place of source-class
    probabilities:

        P(y, k) = 1/n sum_{i: y_i = y} P(k | x_i),  P(y | k) = P(y, k) / P(k),
        NLEEP = 1/n sum_i sum_k P(y_i | k) P(k | x_i)      (no log, as the official code).

    The mixture is :func:`features.scores._mixture.gaussian_mixture_posteriors`: the same EM
    as scikit-learn's ``GaussianMixture`` (its own ``KMeans`` labels as the start, the same
    M-step, precision Cholesky factors, lower-bound test and final E-step), batched over the
    components (one centered copy per component serves the covariance and the next E-step;
    BLAS ``syrk``/``trmm``, LAPACK ``potrf``/``trtri``), without scikit-learn's per-call
    validation and with the final E-step's posteriors reused where ``fit(Z).predict_proba(Z)``
    repeats it. Equal to the official function at the same seed up to rounding (1e-6 asserted
    in tests/features/test_scores_official.py; <= 6e-14 measured on the bench sets at n = 500
    and 5000, with dead units and on the digit CNN's features). float32 features are cast to
    float64 first, as :func:`compute_score` does (scikit-learn would fit float32 and often
    fail). A covariance that is not positive definite (collapsed samples, or features so
    large that ``reg_covar`` is lost in rounding; scikit-learn raises ValueError) raises
    :class:`ScoreInputError`. ``seed`` is the mixture's ``random_state`` (the official call
    leaves it None). At least ``component_ratio * C`` samples are needed. Iterative (EM).
    Invariant to label permutation.
    """
    from sklearn.decomposition import PCA

    if not 0 < float(variance) < 1:
        raise ScoreInputError(f"nleep: variance must be in (0, 1); got {variance!r}.")
    features = np.asarray(features, dtype=np.float64)  # as compute_score: float32 in, float64 mixture
    n = features.shape[0]
    C = int(labels.max()) + 1
    K = int(component_ratio) * C
    if not 1 <= K <= n:
        raise ScoreInputError(f"nleep: the mixture has component_ratio * C = {K} components, but there are "
                              f"{n} samples; it needs 1 <= components <= samples (lower component_ratio).")
    Z = PCA(n_components=float(variance)).fit(features).transform(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KMeans' warnings (e.g. fewer distinct points), as the official call's
        try:
            prob = gaussian_mixture_posteriors(Z, K, random_state=int(seed)).resp
        except IllDefinedCovariance as exc:
            raise ScoreInputError(
                f"nleep: the Gaussian mixture cannot be fitted: {exc} (too few distinct samples per component, "
                f"or features so large that reg_covar=1e-6 is lost in rounding; scikit-learn fails here too); "
                f"lower component_ratio (now {component_ratio}) or scale the features down.") from None
    order = np.argsort(labels, kind="stable")
    b = np.searchsorted(labels[order], np.arange(C + 1))
    ps = prob[order]
    pyz = np.stack([ps[b[c]:b[c + 1]].sum(axis=0) for c in range(C)]) / n
    py_z = pyz / pyz.sum(axis=0)
    return float(np.sum(np.einsum("ik,ik->i", prob, py_z[labels])) / n)


def _split_halves(features, labels, train_fraction, seed):
    """split_lr's train/test halves: the first ``n - floor(train_fraction n)`` samples train
    (after a seeded permutation when ``seed`` is an int)."""
    if not 0 < float(train_fraction) < 1:
        raise ScoreInputError(f"split_lr: train_fraction must be in (0, 1); got {train_fraction!r}.")
    n = labels.shape[0]
    cut = n - int(float(train_fraction) * n)
    if cut >= n or cut <= 0:
        raise ScoreInputError(f"split_lr: {n} samples cannot be split into non-empty train and test halves "
                              f"with train_fraction={train_fraction}.")
    if seed is None:  # contiguous slices: no copies
        return features[:cut], features[cut:], labels[:cut], labels[cut:]
    order = np.random.default_rng(int(seed)).permutation(n)
    tr, te = order[:cut], order[cut:]
    return features[tr], features[te], labels[tr], labels[te]


def _split_lr_degenerate(X, y, value, *, C=1.0, max_iter=20, tol=0.1, train_fraction=0.5, seed=0):
    Xtr, _, ytr, _ = _split_halves(X, y, train_fraction, seed)
    classes, codes = np.unique(ytr, return_inverse=True)
    if classes.size < 2:
        return ("split_lr's training half holds one class, so every prediction is that class; "
                "the value cannot rank models")
    if stops_at_start(Xtr, codes, classes.size, tol=tol):
        return (f"split_lr's logistic regression stopped at its zero start (initial gradient <= tol={tol}: "
                "scikit-learn >= 1.4 averages the loss over samples), so every prediction is the first "
                "class; the value is that class's share of the test half and cannot rank models")
    return None


@register_score("split_lr", iterative=True,
                paper="split logistic-regression baseline of Bolya et al. 2021, NeurIPS (PARC), "
                      "with its protocol",
                summary="accuracy of a logistic regression trained on the first half of the "
                        "samples and tested on the second (PARC's SplitLogistic)",
                reference="dbolya/parc@b05d062 methods.py SplitLogistic.forward (percent_train=0.5)",
                deviation="seed=0 (default) first puts the samples in a seeded random order: PARC's "
                          "probe sets come shuffled, ours are in dataset order, which can be sorted by "
                          "class (then the halves share no class); seed=None is the official call",
                degenerate=_split_lr_degenerate)
def split_lr(features, labels, *, probs=None, reference=None, C=1.0, max_iter=20, tol=0.1,
             train_fraction=0.5, seed=0):
    """Split logistic regression, PARC's ``SplitLogistic.forward``.

    The first ``n - floor(train_fraction n)`` samples train and the rest test (PARC's
    ``split_data``, not stratified); the raw features (no scaling) fit an L2 logistic
    regression with PARC's scikit-learn settings (lbfgs, ``C=1``, ``max_iter=20``,
    ``tol=0.1``) and the score is the test accuracy (PARC prints x100). ``seed``: an int
    puts the samples in that seeded random order first (default 0; PARC's probe sets come
    shuffled, ours keep the dataset's order, which may be sorted by class); None splits in
    the given order, exactly the official call. The fit is
    :func:`features.scores._logistic.fit_logistic`: scikit-learn's objective, start and
    L-BFGS-B options handed to scipy directly (same predictions as
    ``LogisticRegression``; cheaper: no validation, and the first evaluation at zero in
    O(n d)). A training half with a single class predicts that class. With two classes
    scikit-learn >= 1.8 fits a binary logistic regression (PARC's code asked for a
    two-class softmax, whose penalty is half as strong). Flagged as degenerate when the
    fit stops at its zero start (every prediction the first class). Iterative (lbfgs).
    *Not* invariant to scaling or duplication.
    """
    Xtr, Xte, ytr, yte = _split_halves(features, labels, train_fraction, seed)
    classes, codes = np.unique(ytr, return_inverse=True)
    if classes.size < 2:
        pred = np.full(yte.size, ytr[0])
    else:
        coef, intercept = fit_logistic(Xtr, codes, classes.size, C=float(C), max_iter=int(max_iter),
                                       tol=float(tol))
        pred = classes[predict_codes(Xte, coef, intercept)]
    return float(np.mean(pred == yte))


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


def iterative_a_gram(Gw: np.ndarray, r: np.ndarray, scale: float, max_iterations: int = 3) -> float:
    """SFDA's ``iterative_A(S_w, 3)`` (TencentARC/SFDA utils.py) for ``S_w = scale Xw^T Xw``
    from ``Gw = Xw Xw^T`` and ``r = Xw 1`` (the row sums), without the d x d matrix.

    The official iteration starts at ``x = S_w 1``, alternates ``y = S_w x / ||S_w x||``,
    ``x = S_w y / ||S_w y||`` three times and returns ``x^T S_w y``. Every iterate lies in the
    row space of ``Xw``, ``x = Xw^T c``, so with ``S_w Xw^T c = Xw^T (scale Gw c)`` and
    ``||Xw^T c||^2 = c^T Gw c`` the same numbers come from n-vectors. Returns NaN where the
    official code divides by zero (``S_w 1 = 0``).
    """
    c = scale * r  # x = S_w 1 = Xw^T (scale Xw 1)
    Gc = Gw @ c
    for _ in range(max_iterations):
        t = scale * Gc  # temp = S_w x
        Gt = Gw @ t
        nt = np.sqrt(max(float(t @ Gt), 0.0))
        Gcy = Gt / nt  # y = t / nt enters only through its Gram product Gw y
        t = scale * Gcy  # temp = S_w y
        Gt = Gw @ t
        nt = np.sqrt(max(float(t @ Gt), 0.0))
        c, Gc = t / nt, Gt / nt  # x
    return float(scale * (Gc @ Gcy))  # x^T S_w y = scale (Gw c) . (Gw c_y)


SFDA_REF = "TencentARC/SFDA@eb1eee0 metrics.py SFDA_Score (class SFDA, utils.iterative_A)"


def _sfda_degenerate(X, y, value, **options):
    if value >= 1.0 - 1e-12:
        n, d = X.shape
        why = (f"n <= d ({n} samples, {d} dims): the nearly unregularized LDA separates any labels"
               if n <= d else "the shrunk LDA separates the training samples perfectly")
        return f"sfda is at its bound 1.0: {why}; the value cannot rank models"
    return None


@register_score("sfda",
                paper="Shao et al. 2022, 'Not all models are equal: predicting model "
                      "transferability in a self-challenging Fisher space', ECCV",
                summary="mean correct-class probability of regularized LDA after confusion mixing",
                reference=SFDA_REF, degenerate=_sfda_degenerate)
def sfda(features, labels, *, probs=None, reference=None, min_shrinkage=1e-10):
    """Self-challenging Fisher Discriminant Analysis (Shao et al. 2022), as TencentARC/SFDA's
    ``SFDA_Score`` computes it.

    1. Regularized FDA: the within-class covariance ``S_w`` (class covariances weighted by
       the priors) shrunk to ``(1-l) S_w + l tr(S_w)/d I`` with ``l = max(exp(-5 lambda),
       min_shrinkage)``, ``lambda`` from the official 3-step power iteration
       (:func:`iterative_a_gram`, the same numbers as ``iterative_A``), floor 1e-10 as in the
       official code. Its generalized eigenbasis is complete, so the official
       ``coef_ = means V V^T`` is ``means S^-1``: the LDA posteriors ``p(c | x)``.
    2. ConfMix: ``p_i = softmax(p(. | x_i))_{y_i}``, ``x_i <- p_i x_i + (1 - p_i) mu_{-y_i}``
       with ``mu_{-c}`` the mean of the *other class means* (official ``_class_means``).
    3. ``SFDA = 1/n sum_i p'(y_i | x_i)`` with the LDA refit (same ``l``) on the mixed features.

    Both LDAs are evaluated from Gram matrices (:func:`lda_posteriors_gram`): the features
    enter through one n x n Gram matrix of the centered features; the mixed features are
    linear combinations of the within-class residuals and class means, so their Gram
    blocks follow in O(n^2 C). Cost O(n^2 d + n^3/3). With n <= d and the 1e-10 floor the
    LDA separates the training samples and SFDA is 1.0, its bound: flagged as degenerate.
    Invariant to label permutation and translation; not to scaling (``lambda_max`` is
    scale-dependent).
    """
    if not 0 < float(min_shrinkage) <= 1:
        raise ScoreInputError(f"sfda: min_shrinkage must be in (0, 1]; got {min_shrinkage!r}.")
    n, d = features.shape
    C = int(labels.max()) + 1
    m = features.mean(axis=0)
    Xc = features - m
    counts, Y, Gww, Gwm, Gmm = class_gram_blocks(Xc @ Xc.T, labels, C)
    rc = Xc.sum(axis=1)  # Xc 1; the residual row sums Xw 1 = Xc 1 - (M 1)[y]
    rw = rc - (np.bincount(labels, weights=rc, minlength=C) / counts)[labels]
    lam_max = iterative_a_gram(Gww, rw, 1.0 / n)
    if not np.isfinite(lam_max):
        return float("nan")  # the official code divides by zero here (no within-class variance)
    lam = max(float(np.exp(-5.0 * lam_max)), float(min_shrinkage))
    P = lda_posteriors_gram(Gww, Gwm, Gmm, labels, counts, d, lam)
    soft = np.exp(P)
    soft /= soft.sum(axis=1, keepdims=True)
    p = soft[np.arange(n), labels]
    # ConfMix in the basis [Xw; M] (M: centered class means). With Msum = sum_c M_c,
    # mu_{-c} - m = (Msum - M_c) / (C - 1), so the mixed (centered) features are
    # Xm_i = p_i Xw_i + g_i M_{y_i} + h_i Msum, g = p - (1 - p)/(C - 1), h = (1 - p)/(C - 1):
    # Xm = diag(p) Xw + A M with A = g e_y^T + h 1^T.
    h = (1.0 - p) / (C - 1)
    g = p - h
    gbar = np.bincount(labels, weights=g, minlength=C) / counts
    hbar = np.bincount(labels, weights=h, minlength=C) / counts
    Abar = np.diag(gbar) + hbar[:, None]  # class means of A: Mm = Wp Xw + Abar M
    dlt = g - gbar[labels]  # residual coefficients D = A - Abar[y] = dlt e_y^T + hd 1^T
    hd = h - hbar[labels]
    Wp = class_rows(labels, p / counts[labels], C)  # (C, n), sparse: W_p[c, i] = p_i [y_i = c] / n_c
    WpGww = Wp @ Gww  # (C, n)
    WpGwm = Wp @ Gwm  # (C, C)
    gsum = Gwm.sum(axis=1)  # Xw Msum^T
    # R1 = Xmw Xw^T = diag(p) Gww - (Wp Gww)[y] + D Gwm^T, in place
    R1 = p[:, None] * Gww
    R1 -= WpGww[labels]
    GwmTy = Gwm.T[labels]
    GwmTy *= dlt[:, None]
    R1 += GwmTy
    R1 += hd[:, None] * gsum[None, :]
    # R2 = Xmw M^T = diag(p) Gwm - (Wp Gwm)[y] + D Gmm
    R2 = p[:, None] * Gwm - WpGwm[labels] + dlt[:, None] * Gmm[labels] + hd[:, None] * Gmm.sum(axis=0)[None, :]
    R1Wp = R1 @ Wp.T  # (n, C)
    # Gww2 = Xmw Xmw^T = R1 diag(p) - (R1 Wp^T)[:, y] + R2 D^T, in place
    Gww2 = R1 * p[None, :]
    Gww2 -= R1Wp[:, labels]
    R2y = R2[:, labels]
    R2y *= dlt[None, :]
    Gww2 += R2y
    Gww2 += R2.sum(axis=1)[:, None] * hd[None, :]
    # Gww2 is symmetric up to rounding; lda_posteriors_gram reads only its lower triangle
    Gwm2 = R1Wp + R2 @ Abar.T
    S1 = WpGww + Abar @ Gwm.T  # Mm Xw^T (C, n)
    S2 = WpGwm + Abar @ Gmm  # Mm M^T (C, C)
    Gmm2 = S1 @ Wp.T + S2 @ Abar.T
    Gmm2 = 0.5 * (Gmm2 + Gmm2.T)
    P2 = lda_posteriors_gram(Gww2, Gwm2, Gmm2, labels, counts, d, lam)
    return float(np.mean(P2[np.arange(n), labels]))
