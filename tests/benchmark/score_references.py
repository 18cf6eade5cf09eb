"""Slow reference implementations of the MS scores, ported from the official code.

Used by ``python -m experiments.bench_scores`` (when this file exists; never a runtime
dependency) to print the agreement and the speed ratio of each score against the code it
was compared with. The official repositories are not installable here (TensorFlow,
numba, CUDA data loaders), so each function below re-states the official algorithm in
numpy/scikit-learn, step by step and with its constants, and says where it comes from.
Scores without official code are compared with a direct formula ("paper formula").

Each entry of :data:`REFERENCES` maps a score name to ``(label, fn)`` with
``fn(X, y, P, R) -> float`` on float64 features ``X``, labels ``y`` in 0..C-1, source
probabilities ``P`` and reference features ``R``, returned on this project's scale
(the PARC code prints x100; divided back here).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats


# --------------------------------------------------------------- dbolya/parc methods.py
def _feature_reduce(X, f):
    from sklearn.decomposition import PCA

    if f is None:
        return X
    f = min(f, X.shape[0])
    return PCA(n_components=f, svd_solver="randomized", random_state=1919, iterated_power=1).fit_transform(X)


def parc_official(X, y, P=None, R=None, n_dims=32):
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(_feature_reduce(X, n_dims))
    labels = np.eye(int(y.max()) + 1)[y]
    tri = np.triu_indices(len(y), 1)
    rdm1 = (1 - np.corrcoef(Z))[tri]
    rdm2 = (1 - np.corrcoef(labels))[tri]
    return scipy.stats.spearmanr(rdm1, rdm2)[0]


def rsa_official(X, y, P=None, R=None):
    from sklearn.preprocessing import StandardScaler

    a = StandardScaler().fit_transform(X)
    b = StandardScaler().fit_transform(R)
    tri = np.triu_indices(len(y), 1)
    return scipy.stats.spearmanr((1 - np.corrcoef(a))[tri], (1 - np.corrcoef(b))[tri])[0]


def _center_gram_unbiased(gram):
    gram = gram.copy()
    n = gram.shape[0]
    np.fill_diagonal(gram, 0)
    means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
    means -= np.sum(means) / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0)
    return gram


def dds_official(X, y, P=None, R=None):
    from sklearn.metrics.pairwise import cosine_similarity
    from sklearn.preprocessing import StandardScaler

    gx = _center_gram_unbiased(1 - cosine_similarity(StandardScaler().fit_transform(X)))
    gy = _center_gram_unbiased(1 - cosine_similarity(StandardScaler().fit_transform(R)))
    return gx.ravel().dot(gy.ravel()) / (np.linalg.norm(gx) * np.linalg.norm(gy))


def knn1_official(X, y, P=None, R=None):
    from sklearn.metrics import pairwise_distances

    dist = pairwise_distances(X, metric="l2")
    idx = np.argsort(dist, axis=-1)[:, 1:2]  # the first index is the sample itself
    return float((y[idx[:, 0]] == y).mean())


def split_lr_official(X, y, P=None, R=None, seed=0):
    """SplitLogistic on the sample order split_lr uses (seeded permutation), so both split alike."""
    from sklearn.linear_model import LogisticRegression

    perm = np.random.default_rng(seed).permutation(len(y))
    X, y = X[perm], y[perm]
    split = X.shape[0] - int(0.5 * X.shape[0])
    clf = LogisticRegression(random_state=0, solver="lbfgs", max_iter=20, tol=1e-1).fit(X[:split], y[:split])
    return float((clf.predict(X[split:]) == y[split:]).mean())


def hscore_official(X, y, P=None, R=None):
    """HScore.get_hscore_fast after StandardScaler (n_dims=None)."""
    from sklearn.preprocessing import StandardScaler

    f = StandardScaler().fit_transform(X)

    def cov(A):
        Am = A - A.mean(axis=0, keepdims=True)
        return Am.T @ Am / (len(A) - 1)

    onehot = np.eye(int(y.max()) + 1)[y]
    means = (onehot.T @ f) / (onehot.sum(axis=0)[:, None] + 1e-8)
    g = onehot @ means
    return float(np.trace(np.linalg.pinv(cov(f), rcond=1e-15) @ cov(g)))


def leep_official(X, y, P, R=None):
    onehot = np.eye(int(y.max()) + 1)[y]
    joint = onehot.T @ P
    cond = joint / P.sum(axis=0)[None, :]
    return float(np.log((cond[y] * P).sum(axis=-1)).sum() / len(y))


def nce_official(X, y, P, R=None, eps=1e-5):
    z = P.argmax(axis=-1)
    n, nz = len(y), P.shape[1]
    joint = (np.eye(int(y.max()) + 1)[y].T @ np.eye(nz)[z]) / n + eps
    marg = np.eye(nz)[z].sum(axis=0) / n + eps
    return float((joint * np.log(joint / marg[None, :])).sum())


def nce_formula(X, y, P, R=None):
    """The NCE of Tran et al. 2019 as dbolya/parc computes it, without the 1e-5 smoothing of
    every (target, source) cell (with 1000 source classes that smoothing outweighs the data)."""
    z = P.argmax(axis=-1)
    n, nz = len(y), P.shape[1]
    joint = (np.eye(int(y.max()) + 1)[y].T @ np.eye(nz)[z]) / n
    marg = np.broadcast_to(np.eye(nz)[z].sum(axis=0)[None, :] / n, joint.shape)
    nzm = joint > 0
    return float((joint[nzm] * np.log(joint[nzm] / marg[nzm])).sum())


# ------------------------------------------------------------------- thuml/LogME LogME.py
def logme_thuml(X, y, P=None, R=None):
    """LogME._fit_fixed_point: 11 iterations at most, stop at |dt|/t <= 1e-3, 1e-5 guards,
    and ``-1/2 sum_k log(alpha + beta sigma_k)`` over the k = rank singular values only."""
    N, D = X.shape
    if N > D:
        u_, s2, vh = np.linalg.svd(X.T @ X)
        s = np.sqrt(s2)
        k = int(np.sum(s > 1e-10))
        u = (X @ vh.T)[:, :k] / s[:k][None, :]
        s = s[:k]
    else:
        u, s, vh = np.linalg.svd(X, full_matrices=False)
    sigma = (s**2).reshape(-1, 1)
    ev = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64).reshape(-1, 1)
        x = u.T @ y_
        x2 = x**2
        res_x2 = (y_**2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (N - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        e = (D / 2.0 * np.log(alpha) + N / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
             - beta / 2.0 * res2 - alpha / 2.0 * m2 - N / 2.0 * np.log(2 * np.pi))
        ev.append(e / N)
    return float(np.mean(ev))


def logme_tllib(X, y, P=None, R=None):
    """LogME._fit_icml / tllib's log_maximum_evidence: SVD of F'F (D x D), per class at most 11
    MacKay steps, stop when |dlambda|/lambda < 0.01, full ``sum_D log(alpha + beta s)``."""
    fh = X
    f = X.T
    D, N = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    ev = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64)
        eps = 1e-5
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        tmp = vh @ (f @ y_)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + eps)
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (N - gamma) / (beta_de + eps)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        e = (D / 2.0 * np.log(alpha) + N / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
             - beta / 2.0 * (beta_de + eps) - alpha / 2.0 * (alpha_de + eps) - N / 2.0 * np.log(2 * np.pi))
        ev.append(e / N)
    return float(np.mean(ev))


# ------------------------------------------------- google-research stable_transfer gbc.py
def gbc_official(X, y, P=None, R=None, pca_dim=64, gaussian="spherical"):
    """get_gbc_score after sklearn PCA(64) (config pca_reduction=64, gaussian_type spherical)."""
    from sklearn.decomposition import PCA

    Z = PCA(n_components=min(pca_dim, *X.shape)).fit_transform(X)
    return gbc_pairs(Z, y, gaussian)


def gbc_pairs(Z, y, gaussian="spherical", floor=1e-4):
    """The official GBC class-pair loop on already reduced features (one pair at a time)."""
    stats = {}
    for c in np.unique(y):
        Zc = Z[y == c]
        stats[c] = (Zc.mean(axis=0), np.maximum(Zc.var(axis=0), floor))
    total = 0.0
    for c1 in stats:
        for c2 in stats:
            if c1 == c2:
                continue
            (m1, v1), (m2, v2) = stats[c1], stats[c2]
            if gaussian == "spherical":
                v1, v2 = np.mean(v1), np.mean(v2)
            avg = (v1 + v2) / 2
            db = np.sum((m1 - m2) ** 2 / avg) / 8 + 0.5 * (
                np.sum(np.log(avg)) - 0.5 * np.sum(np.log(v1)) - 0.5 * np.sum(np.log(v2)))
            total -= np.exp(-db)
    return float(total)


# ------------------------------------------------------------- TransRate (Huang et al.)
def transrate_official(X, y, P=None, R=None, eps=1e-4):
    """The authors' transrate(): d x d slogdet of the coding rate, per class."""
    def coding_rate(Z):
        n, d = Z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + 1 / (n * eps) * Z.T @ Z)[1]

    Z = X - X.mean(axis=0, keepdims=True)
    K = int(y.max()) + 1
    return float(coding_rate(Z) - sum(coding_rate(Z[y == i]) for i in range(K)) / K)


# ---------------------------------------------- Ibrahim et al. 2022, shrinkage H-score
def reg_hscore_reference(X, y, P=None, R=None):
    """``tr(pinv(LW covariance) (1 - a) cov(g))`` with sklearn's LedoitWolf (d x d): the
    formula of the paper and its code."""
    from sklearn.covariance import LedoitWolf

    f = X - X.mean(axis=0)
    lw = LedoitWolf(assume_centered=False).fit(f)
    onehot = np.eye(int(y.max()) + 1)[y]
    g = onehot @ ((onehot.T @ f) / onehot.sum(axis=0)[:, None])
    covg = np.cov(g, rowvar=False, bias=True)
    return float(np.trace(np.linalg.pinv(lw.covariance_, rcond=1e-15) @ ((1 - lw.shrinkage_) * covg)))


# ------------------------------------------------------------------ TencentARC/SFDA
def sfda_official(X, y, P=None, R=None):
    """SFDA_Score: shrinkage max(exp(-5 lambda), 1e-10) with lambda from 3 power steps,
    LDA by the generalized eigenproblem (Sb, shrunk Sw), ConfMix toward the mean of the other
    class means, LDA refit with the same shrinkage, mean correct-class probability."""
    X = X.copy()
    C = int(y.max()) + 1
    n, d = X.shape

    def fit(X, shrink=None):
        priors = np.bincount(y) / n
        means = np.stack([X[y == c].mean(axis=0) for c in range(C)])
        Sw = np.zeros((d, d))
        for c in range(C):
            Xg = X[y == c]
            Sw += priors[c] * np.cov(Xg.T, bias=1)
        if shrink is None:
            v = np.ones(d) / np.sqrt(d)
            for _ in range(3):
                w = Sw @ v
                lam = np.linalg.norm(w)
                v = w / lam
            shrink = max(np.exp(-5 * float(v @ Sw @ v)), 1e-10)
        St = np.cov(X.T, bias=1)
        mu = np.trace(St) / d
        St = (1 - shrink) * St
        St.flat[:: d + 1] += shrink * mu
        mu_w = np.trace(Sw) / d
        sSw = (1 - shrink) * Sw
        sSw.flat[:: d + 1] += shrink * mu_w
        evals, evecs = scipy.linalg.eigh(St - sSw, sSw)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        s = X @ coef.T + intercept
        s = np.exp(s - s.max(axis=1, keepdims=True))
        return s / s.sum(axis=1, keepdims=True), shrink, means

    prob, shrink, means = fit(X)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means_ = (means.sum(axis=0)[None, :] - means) / (C - 1)
    for c in range(C):
        idx = np.where(y == c)[0]
        p = prob[idx, c][:, None]
        X[idx] = p * X[idx] + (1 - p) * means_[c]
    prob, _, _ = fit(X, shrink)
    return float(np.sum(prob[np.arange(n), y]) / n)


# ------------------------------------------------------------------- paper formulas
def lfc_formula(X, y, P=None, R=None):
    """CKA of the explicit n x n feature kernel with the +-1 label kernel."""
    n = len(y)
    H = np.eye(n) - 1.0 / n
    K = H @ (X @ X.T) @ H
    L = H @ np.where(y[:, None] == y[None, :], 1.0, -1.0) @ H
    return float(np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L)))


def etran_formula(X, y, P=None, R=None, floor=1e-4):
    """The three ETran terms as this project defines them (see docs/scores.md, the authors'
    code differs on purpose): logsumexp energy, d x d shrunk LDA, full SVD regression."""
    import scipy.special

    n, d = X.shape
    C = int(y.max()) + 1
    s_en = float(np.mean(scipy.special.logsumexp(X, axis=1)))
    Xc = X - X.mean(axis=0)
    M = np.stack([Xc[y == c].mean(axis=0) for c in range(C)])
    Xw = Xc - M[y]
    Sw = Xw.T @ Xw / n
    lam = max(np.exp(-5 * np.linalg.eigvalsh(Sw).max()), floor)
    S = (1 - lam) * Sw + lam * np.trace(Sw) / d * np.eye(d)
    Q = np.linalg.solve(S, M.T)
    logits = Xc @ Q - 0.5 * np.diag(M @ Q) + np.log(np.bincount(y) / n)
    s_cls = float(np.mean(scipy.special.softmax(logits, axis=1)[np.arange(n), y]))
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= 0.8)) + 1
    Y = np.eye(C)[y]
    fit = U[:, :k] @ (U[:, :k].T @ Y)
    return s_en + s_cls - float(np.sum((Y - fit) ** 2)) / (n * C)


#: score name -> (what it is, fn)
REFERENCES = {
    "parc": ("dbolya/parc methods.PARC(n_dims=32)", parc_official),
    "rsa": ("dbolya/parc methods.RSA", rsa_official),
    "dds": ("dbolya/parc methods.DDS", dds_official),
    "knn1": ("dbolya/parc methods.kNN(k=1)", knn1_official),
    "split_lr": ("dbolya/parc methods.SplitLogistic (same sample order)", split_lr_official),
    "hscore": ("dbolya/parc methods.HScore (fast)", hscore_official),
    "leep": ("dbolya/parc methods.LEEP", leep_official),
    "nce": ("Tran et al. formula (dbolya/parc NCE without eps)", nce_formula),
    "logme": ("thuml/LogME fixed point", logme_thuml),
    "gbc": ("google-research stable_transfer gbc (PCA 64, spherical)", gbc_official),
    "transrate": ("TransRate authors' code", transrate_official),
    "reg_hscore": ("Ibrahim et al. formula, sklearn LedoitWolf", reg_hscore_reference),
    "sfda": ("TencentARC/SFDA SFDA_Score", sfda_official),
    "lfc": ("paper formula, explicit n x n kernels", lfc_formula),
    "etran": ("paper formula (this project's variant), d x d", etran_formula),
}
#: further references of one score (printed as extra rows)
EXTRA_REFERENCES = {
    "logme": [("tllib / LogME._fit_icml (1% tolerance)", logme_tllib)],
    "nce": [("dbolya/parc methods.NegativeCrossEntropy (eps 1e-5)", nce_official)],
}
