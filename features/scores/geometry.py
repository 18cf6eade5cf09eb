"""Scores based on sample geometry: PARC, RSA, DDS, 1-NN, GBC, TransRate."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import scipy.linalg as sla

from ._linalg import (class_counts_means, corr_matrix, corr_rdm, one_hot, pca, sklearn_randomized_pca, spearman,
                      spearman_grouped, sq_frobenius_gram, standardize)
from .registry import ScoreInputError, register_score

PARC_PAPER = ("Bolya et al. 2021, 'Scalable diverse model selection for accessible transfer "
              "learning', NeurIPS")


def _subsample(n: int, max_samples, seed: int, name: str) -> np.ndarray | None:
    """Seeded label-independent subset of row indices when n > max_samples (None: keep all)."""
    if max_samples is None or n <= int(max_samples):
        return None
    if int(max_samples) < 3:
        raise ScoreInputError(f"{name}: max_samples must be >= 3; got {max_samples}.")
    return np.sort(np.random.default_rng(seed).choice(n, int(max_samples), replace=False))


def _reduce(X: np.ndarray, pca_dim, name: str, signed: bool = True) -> np.ndarray:
    if pca_dim is None:
        return X
    if int(pca_dim) < 1:
        raise ScoreInputError(f"{name}: pca_dim must be a positive integer or None; got {pca_dim!r}.")
    return pca(X, int(pca_dim), signed=signed)


PARC_REF = "dbolya/parc@b05d062 methods.py PARC.forward (n_dims=32; feature_reduce)"


def _parc_reduce(X: np.ndarray, pca_dim, random_state: int) -> np.ndarray:
    """dbolya/parc ``feature_reduce``: scikit-learn's randomized PCA (``iterated_power=1``,
    ``random_state=1919``) to ``min(pca_dim, n)`` dims, computed by
    :func:`sklearn_randomized_pca` (the same operations, so the same output, without the
    estimator's validation and explained-variance passes)."""
    if pca_dim is None:
        return X
    if int(pca_dim) < 1:
        raise ScoreInputError(f"parc: pca_dim must be a positive integer or None; got {pca_dim!r}.")
    f = min(int(pca_dim), X.shape[0])
    if f > X.shape[1]:
        raise ScoreInputError(
            f"parc: the official PCA to {f} dims needs at least {f} feature dims; the features have "
            f"{X.shape[1]} (scikit-learn raises). Pass pca_dim=None (no PCA) or pca_dim <= {X.shape[1]}.")
    return sklearn_randomized_pca(X, f, int(random_state), n_iter=1)


def _standard_scale(Z: np.ndarray) -> np.ndarray:
    """scikit-learn's ``StandardScaler().fit_transform`` (same constant-column rule)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(Z)


@register_score("parc", paper=PARC_PAPER,
                summary="Spearman correlation of feature and label dissimilarity matrices "
                        "(official randomized PCA to 32 dims)",
                reference=PARC_REF)
def parc(features, labels, *, probs=None, reference=None, pca_dim=32, max_samples=None, seed=0,
         pca_random_state=1919):
    """Pairwise Annotation Representation Comparison (Bolya et al. 2021), as dbolya/parc's
    ``PARC(n_dims=32).forward`` computes it.

        PARC = spearman( triu(1 - corrcoef(Z)), triu(1 - corrcoef(onehot(y))) ),

    where ``Z`` is the features reduced by the official ``feature_reduce`` (scikit-learn's
    randomized PCA with one power iteration, ``random_state=1919``, to ``min(pca_dim, n)``
    dims; None: no PCA; directions without variance are kept, as there) and z-scored by
    scikit-learn's ``StandardScaler``, and ``corrcoef`` correlates *samples* (rows). The
    label dissimilarity takes two values, so the Spearman correlation equals the Pearson
    correlation of the ranked feature dissimilarities with the "different class" indicator
    (one sort instead of two ``rankdata`` calls: :func:`spearman_binary`). Returned in
    [-1, 1] (the paper prints x100). ``max_samples`` (default None: all) scores a seeded
    (``seed``), label-independent subset instead, which changes the value. The official
    PCA needs ``d >= min(pca_dim, n)`` (else an input error). Invariant to label
    permutation; cost O(n d f + n^2 (f + log n)).
    """
    sub = _subsample(features.shape[0], max_samples, seed, "parc")
    if sub is not None:
        features, labels = features[sub], labels[sub]
    Z = _standard_scale(_parc_reduce(features, pca_dim, pca_random_state))
    n = Z.shape[0]
    tri = np.triu(np.ones((n, n), dtype=bool), k=1)
    # both dissimilarities exactly as the official code rounds them: np.corrcoef of the
    # one-hot labels gives same-class pairs 0 or a few ulps, and the official Spearman
    # ranks those as distinct values
    rdm1 = np.corrcoef(Z)
    np.subtract(1.0, rdm1, out=rdm1)
    rdm2 = np.corrcoef(one_hot(labels))
    np.subtract(1.0, rdm2, out=rdm2)
    return spearman_grouped(rdm1[tri], rdm2[tri])


def parc_ensemble(parc_scores: Mapping[str, float], depths: Mapping[str, float],
                  lam: float = 1.0) -> dict[str, float]:
    """PARC's depth heuristic over a *set* of models (Bolya et al. 2021, Sec. 6).

        score(m) = z(PARC)_m + lam * depth_m / max_m' depth_m'

    ``z`` standardizes the PARC scores across the given models (mean 0, std 1; all equal:
    0). Deeper networks fine-tune better on average, and the heuristic adds that prior.
    Not a per-model score (it needs the depths of the whole candidate set), so it is not
    registered; ``lam`` weighs the prior (1.0 by default, tune it on a validation history).
    """
    missing = sorted(set(parc_scores) - set(depths))
    if missing:
        raise ScoreInputError(f"parc_ensemble: no depth for models {', '.join(map(str, missing[:5]))}"
                              f"{' ...' if len(missing) > 5 else ''}; pass depths for every model.")
    names = list(parc_scores)
    if not names:
        return {}
    s = np.array([float(parc_scores[m]) for m in names])
    d = np.array([float(depths[m]) for m in names])
    if not (np.isfinite(s).all() and np.isfinite(d).all()) or (d <= 0).any():
        raise ScoreInputError("parc_ensemble: scores must be finite and depths positive numbers.")
    sd = s.std()
    z = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    out = z + float(lam) * d / d.max()
    return dict(zip(names, out.tolist()))


@register_score("rsa", needs_reference=True,
                paper="Dwivedi & Roig 2019, 'Representation similarity analysis for efficient "
                      "task taxonomy & transfer learning', CVPR",
                summary="Spearman correlation of the model's and a reference model's dissimilarity matrices",
                reference="dbolya/parc@b05d062 methods.py RSA.get_rsa_correlation (n_dims=None)")
def rsa(features, labels, *, probs=None, reference=None, pca_dim=None, max_samples=None, seed=0):
    """Representation Similarity Analysis score (Dwivedi & Roig 2019).

        RSA = spearman( triu(1 - corrcoef(z(F))), triu(1 - corrcoef(z(R))) )

    with ``F`` the candidate's features, ``R`` the reference features of the same samples
    (e.g. a small model trained on the target task), ``z`` column standardization and
    optional PCA to ``pca_dim`` for both. Labels are not used. Invariant to isotropic
    scaling of either input and to label permutation. Cost O(n^2 (d + log n)).
    """
    sub = _subsample(features.shape[0], max_samples, seed, "rsa")
    if sub is not None:
        features, reference = features[sub], reference[sub]
    n = features.shape[0]
    tri = np.triu(np.ones((n, n), dtype=bool), k=1)
    # 1 - corr ranks both sides in reverse, which leaves the Spearman correlation unchanged
    a = np.clip(corr_matrix(standardize(_reduce(features, pca_dim, "rsa")))[tri], -1.0, 1.0)
    b = np.clip(corr_matrix(standardize(_reduce(reference, pca_dim, "rsa")))[tri], -1.0, 1.0)
    return spearman(a, b)


def _cosine_rdm(X: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.sum(X * X, axis=1))
    ok = norm > 0
    Z = np.where(ok[:, None], X / np.where(ok, norm, 1.0)[:, None], 0.0)
    return 1.0 - Z @ Z.T


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so ``A A^T`` is the cosine similarity."""
    norm = np.sqrt(np.sum(X * X, axis=1))
    ok = norm > 0
    return np.where(ok[:, None], X / np.where(ok, norm, 1.0)[:, None], 0.0)


def _unit_centered_rows(X: np.ndarray) -> np.ndarray:
    """Rows centered and scaled to unit length, as in :func:`corr_matrix` (``A A^T`` = row correlations)."""
    Z = X - X.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(Z * Z, axis=1))
    ok = norm > 1e-12 * max(float(norm.max(initial=0.0)), 1e-300)
    return np.where(ok[:, None], Z / np.where(ok, norm, 1.0)[:, None], 0.0)


def _unit_gram(S: np.ndarray) -> np.ndarray:
    """``A A^T`` for ``A`` = the rows of ``S`` scaled to unit length (zero rows stay zero), from
    one symmetric product ``S S^T``, whose diagonal holds the squared row norms."""
    G = S @ S.T
    norm = np.sqrt(np.maximum(G.diagonal(), 0.0))
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    G *= inv[:, None]
    G *= inv[None, :]
    return G


def _debiased_linear_cka(A: np.ndarray, B: np.ndarray, gram_a: bool = False) -> float:
    """CKA of the U-centered Gram matrices ``K = A A^T`` and ``L = B B^T`` without forming them.

    With ``K~ = K - diag(K)`` the U-centered inner product is proportional to (Song et al. 2012)
    ``tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1``, and every term follows from
    ``||A^T B||_F^2``, the row norms and ``A^T 1``; ``||K~||`` likewise. Equals centering
    ``1 - K`` and ``1 - L`` with :func:`_center_gram` (``debiased=True``): U-centering removes
    the constant and the sign cancels in the ratio. ``gram_a``: ``A`` is already ``K``
    (n x n, cheaper when n is below A's width); then ``tr(K L) = sum((K B) * B)``.
    """
    n = A.shape[0]

    def parts(X, gram=False):
        if gram:
            kd = X.diagonal().copy()
            return kd, X.sum(axis=1) - kd, float(np.sum(X * X))
        kd = np.sum(X * X, axis=1)  # diag(K)
        return kd, X @ X.sum(axis=0) - kd, sq_frobenius_gram(X)  # K~ 1, ||K||^2

    def hsic(tr, s1, s2, v12):
        return tr + s1 * s2 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * v12

    ad, a1, af = parts(A, gram_a)
    bd, b1, bf = parts(B)
    as_, bs = float(a1.sum()), float(b1.sum())
    if gram_a:
        cross = float(np.sum((A @ B) * B))
    else:
        AB = A.T @ B
        cross = float(np.sum(AB * AB))
    hab = hsic(cross - float(ad @ bd), as_, bs, float(a1 @ b1))
    haa = hsic(af - float(ad @ ad), as_, as_, float(a1 @ a1))
    hbb = hsic(bf - float(bd @ bd), bs, bs, float(b1 @ b1))
    return float(hab / np.sqrt(haa * hbb)) if haa > 0 and hbb > 0 else 0.0


def _center_gram(K: np.ndarray, debiased: bool) -> np.ndarray:
    """Centered Gram matrix; ``debiased``: U-centering (Szekely & Rizzo 2014), zero diagonal."""
    K = K.copy()
    n = K.shape[0]
    if debiased:
        np.fill_diagonal(K, 0.0)
        row = K.sum(axis=0) / (n - 2)
        K -= row[:, None] + row[None, :] - K.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(K, 0.0)
    else:
        m = K.mean(axis=0)
        K -= m[:, None] + m[None, :] - m.mean()
    return K


@register_score("dds", needs_reference=True,
                paper="Dwivedi et al. 2020, 'DUality Diagram Similarity: a generic framework for "
                      "initialization selection in task transfer learning', ECCV",
                summary="CKA between cosine dissimilarity matrices of z-scored model and reference features",
                reference="dbolya/parc@b05d062 methods.py DDS.get_similarity_from_rdms (cosine, debiased)")
def dds(features, labels, *, probs=None, reference=None, distance="cosine", debiased=True,
        pca_dim=None, max_samples=None, seed=0):
    """Duality Diagram Similarity (Dwivedi et al. 2020).

    Both inputs are z-scored per column (the duality-diagram weighting), turned into
    dissimilarity matrices ``D = 1 - cos(x_i, x_j)`` (``distance="cosine"``, the paper's
    best) or ``1 - corr`` (``"pearson"``), and compared with centered kernel alignment

        DDS = <HDH, HD'H> / (||HDH|| ||HD'H||)

    using U-centering when ``debiased`` (needs n >= 4). U-centering removes constants and
    ignores the diagonal, so with ``D = 1 - A A^T`` (``A``: unit rows) the debiased DDS is the
    debiased linear CKA of ``A`` and ``A'``, evaluated from ``A^T A'``, the smaller Gram
    matrices and row sums (:func:`_debiased_linear_cka`): no n x n matrix. Labels are not
    used. Invariant to isotropic scaling and label permutation. Cost O(n d min(n, d) + n d d')
    debiased, O(n^2 d) otherwise.
    """
    if distance not in ("cosine", "pearson"):
        raise ScoreInputError(f"dds: distance must be 'cosine' or 'pearson'; got {distance!r}.")
    sub = _subsample(features.shape[0], max_samples, seed, "dds")
    if sub is not None:
        features, reference = features[sub], reference[sub]
    if debiased and features.shape[0] < 4:
        raise ScoreInputError("dds: the debiased estimator needs at least 4 samples; pass debiased=False.")
    if debiased:  # U-centering ignores the diagonal: the linear-kernel form, no n x n matrix
        unit = _unit_rows if distance == "cosine" else _unit_centered_rows
        S, Sr = standardize(_reduce(features, pca_dim, "dds")), standardize(_reduce(reference, pca_dim, "dds"))
        if Sr.shape[1] > S.shape[1]:
            S, Sr = Sr, S  # symmetric: the wider side first
        if distance == "cosine" and S.shape[0] <= S.shape[1]:  # n <= width: its n x n Gram is cheaper
            return _debiased_linear_cka(_unit_gram(S), unit(Sr), gram_a=True)
        return _debiased_linear_cka(unit(S), unit(Sr))
    rdm = _cosine_rdm if distance == "cosine" else corr_rdm
    a = _center_gram(rdm(standardize(_reduce(features, pca_dim, "dds"))), debiased)
    b = _center_gram(rdm(standardize(_reduce(reference, pca_dim, "dds"))), debiased)
    na, nb = np.sqrt(np.sum(a * a)), np.sqrt(np.sum(b * b))
    return float(np.sum(a * b) / (na * nb)) if na > 0 and nb > 0 else 0.0


@register_score("knn1", paper="1-nearest-neighbour baseline, as benchmarked in " + PARC_PAPER,
                summary="leave-one-out 1-nearest-neighbour accuracy (Euclidean)",
                reference="dbolya/parc@b05d062 methods.py kNN(k=1, metric='l2')")
def knn1(features, labels, *, probs=None, reference=None, metric="euclidean", block=8192):
    """Leave-one-out 1-NN accuracy: ``mean_i [y_{nn(i)} = y_i]``, ``nn(i) = argmin_{j != i} dist``.

    ``metric``: "euclidean" or "cosine". Ties go to the lowest index. Distances are
    computed in row blocks of ``block`` (memory O(block n); up to 8192 samples in one
    symmetric product). Invariant to label
    permutation, isotropic scaling, translation and rotation (euclidean); *not* to sample
    duplication (a duplicate is its own nearest neighbour). Cost O(n^2 d).
    """
    if metric not in ("euclidean", "cosine"):
        raise ScoreInputError(f"knn1: metric must be 'euclidean' or 'cosine'; got {metric!r}.")
    X = features
    mean = X.mean(axis=0)
    center = metric == "cosine"  # cosine is about the centered rows
    if not center:  # a common offset over 10x the spread would cost digits in |x|^2 + |y|^2 - 2 x.y
        sq = np.einsum("ij,ij->i", X, X)
        offset = float(mean @ mean)
        center = offset > 100.0 * max(float(sq.mean()) - offset, 0.0)
    if center:  # a copy
        X = X - mean
        if metric == "cosine":
            norm = np.sqrt(np.einsum("ij,ij->i", X, X))
            X = X / np.where(norm > 0, norm, 1.0)[:, None]
        sq = np.einsum("ij,ij->i", X, X)
    n = X.shape[0]
    hits = 0
    for start in range(0, n, int(block)):
        stop = min(n, start + int(block))
        G = X @ X.T if (start, stop) == (0, n) else X[start:stop] @ X.T  # X X^T: one symmetric product
        D = sq[start:stop, None] + sq[None, :] - 2.0 * G
        D[np.arange(stop - start), np.arange(start, stop)] = np.inf
        hits += int(np.sum(labels[np.argmin(D, axis=1)] == labels[start:stop]))
    return hits / n


GBC_PAPER = ("Pandy et al. 2022, 'Transferability estimation using Bhattacharyya class "
             "separability', CVPR")


def _pair_sum(C: int, dist) -> float:
    """``-sum_{i != j} exp(-D_B(i, j))`` with ``dist(i, j)`` evaluated once per unordered pair."""
    i, j = np.triu_indices(C, k=1)  # D_B is symmetric: each unordered pair once, counted twice
    return -2.0 * float(np.exp(-dist(i, j)).sum())


GBC_REF = ("google-research/google-research@1d4d2f1 stable_transfer/transferability/gbc.py "
           "get_gbc_score(gaussian_type='spherical') after features_targets_utils.pca_reduction(64)")


def exact_pca_all(X: np.ndarray, k: int) -> np.ndarray:
    """Scores of the top ``k`` principal components (n, k), exact, *including* directions
    without variance (zero columns), as scikit-learn's ``PCA(k, svd_solver='full')``
    returns them. Column signs are arbitrary (callers whose value does not depend on them)."""
    Xc = X - X.mean(axis=0)
    n, d = Xc.shape
    if n <= d:
        lam, U = sla.eigh(Xc @ Xc.T, subset_by_index=[n - k, n - 1])
        return U[:, ::-1] * np.sqrt(np.maximum(lam[::-1], 0.0))
    lam, V = sla.eigh(Xc.T @ Xc, subset_by_index=[d - k, d - 1])
    return Xc @ V[:, ::-1]


@register_score("gbc", paper=GBC_PAPER,
                summary="minus the summed Bhattacharyya coefficients between per-class spherical "
                        "Gaussians (official configuration: exact PCA to 64 dims in float32)",
                reference=GBC_REF,
                deviation="the official TF code sums in float32; ours sums the same float32 PCA "
                          "output in float64 (differences ~1e-7 relative)")
def gbc(features, labels, *, probs=None, reference=None, pca_dim=64, gaussian="spherical",
        variance_floor=1e-4):
    """Gaussian Bhattacharyya Coefficient (Pandy et al. 2022), the official configuration.

    Features are reduced by the official ``pca_reduction``: exact PCA to ``pca_dim`` (64)
    dims, *every* component kept (directions without variance, e.g. from dead units, are
    zero columns whose variance the 1e-4 floor sets), output rounded to float32 as there;
    ``pca_dim`` must not exceed ``min(n, d)`` (scikit-learn raises; an input error here;
    None: no PCA). Each class gets its mean ``mu_c`` and per-dimension population variance
    ``v_ck = max(var_k(class c), variance_floor)`` (floor 1e-4). ``gaussian="spherical"``
    (the official default) replaces ``v_c`` by its mean ``s_c = mean_k v_ck`` and, with
    ``s = (s_i + s_j) / 2``,

        D_B(i, j) = 1/8 sum_k (mu_ik - mu_jk)^2 / s + 1/2 (log s - 1/2 log s_i - 1/2 log s_j),

    exactly as the official code evaluates it (the log term is that of one dimension).
    ``gaussian="diagonal"``: with ``v = (v_i + v_j)/2``,
    ``D_B = 1/8 sum_k (mu_ik - mu_jk)^2 / v_k + 1/2 sum_k log(v_k / sqrt(v_ik v_jk))``. Then

        GBC = - sum_{i != j} exp(-D_B(i, j))  in [-C(C-1), 0].

    Invariant to label permutation, translation and rotation; *not* to scaling (the
    variance floor is absolute). Cost O(n d min(n, d) + C^2 f).
    """
    if gaussian not in ("diagonal", "spherical"):
        raise ScoreInputError(f"gbc: gaussian must be 'diagonal' or 'spherical'; got {gaussian!r}.")
    if not float(variance_floor) > 0:
        raise ScoreInputError(f"gbc: variance_floor must be > 0; got {variance_floor!r}.")
    if pca_dim is None:
        Z = features
    else:
        k = int(pca_dim)
        if not 1 <= k <= min(features.shape):
            raise ScoreInputError(
                f"gbc: the official configuration reduces to pca_dim = {pca_dim} PCA dims, which needs "
                f"at least that many samples and feature dims (n = {features.shape[0]}, d = "
                f"{features.shape[1]}; scikit-learn raises). Pass pca_dim=None or pca_dim <= "
                f"{min(features.shape)}.")
        Z = exact_pca_all(features, k).astype(np.float32).astype(np.float64)  # official: float32 output
    C = int(labels.max()) + 1
    counts, mu = class_counts_means(Z, labels, C)
    resid = Z - mu[labels]
    var = np.maximum(one_hot(labels, C).T @ (resid * resid) / counts[:, None], float(variance_floor))
    if gaussian == "spherical":
        s = var.mean(axis=1)

        def dist(i, j):
            avg = 0.5 * (s[i] + s[j])
            diff = mu[i] - mu[j]
            return (0.125 * np.einsum("pk,pk->p", diff, diff) / avg
                    + 0.5 * (np.log(avg) - 0.5 * (np.log(s[i]) + np.log(s[j]))))
    else:
        dist = _diagonal_bhattacharyya(mu, var)
    return _pair_sum(C, dist)


def _diagonal_bhattacharyya(mu: np.ndarray, var: np.ndarray):
    """``dist(i, j)``: Bhattacharyya distances between diagonal Gaussians ``N(mu_c, diag(var_c))``
    for index arrays ``i``, ``j`` of class pairs."""
    logv = np.log(var).sum(axis=1)

    def dist(i, j):
        avg = 0.5 * (var[i] + var[j])
        diff = mu[i] - mu[j]
        return (0.125 * np.einsum("pk,pk->p", diff, diff / avg)
                + 0.5 * (np.log(avg).sum(axis=1) - 0.5 * (logv[i] + logv[j])))
    return dist


@register_score("gbc_diag", paper=GBC_PAPER,
                summary="GBC with per-class diagonal Gaussians shrunk toward the pooled variance "
                        "(this project's variant)",
                deviation="own variant of gbc: scale-free variance prior instead of the absolute 1e-4 "
                          "floor, diagonal log term over every dimension")
def gbc_diag(features, labels, *, probs=None, reference=None, pca_dim=64):
    """GBC with diagonal class Gaussians and a scale-free variance prior (this project's variant).

    Each class is ``N(mu_c, diag(v_c))`` in the PCA-``pca_dim`` space, with the class
    variances given a one-sample prior toward the pooled within-class variance,
    ``v_c <- (n_c v_c + v_pool) / (n_c + 1)`` (so classes with one sample are defined, and
    no absolute floor is needed); with ``v = (v_i + v_j)/2``

        D_B(i, j) = 1/8 sum_k (mu_ik - mu_jk)^2 / v_k + 1/2 sum_k log(v_k / sqrt(v_ik v_jk)),
        GBC_diag = - sum_{i != j} exp(-D_B(i, j)).

    It differs from :func:`gbc` (official spherical, 1e-4 floor) when classes have few
    samples (the prior dominates) or unequal spreads per dimension (the diagonal log term
    counts every dimension). Invariant to label permutation, isotropic scaling and
    translation. Cost O(n d f + C^2 f).
    """
    Z = _reduce(features, pca_dim, "gbc_diag", signed=False)  # D_B does not see component signs
    C = int(labels.max()) + 1
    counts, mu = class_counts_means(Z, labels, C)
    resid = Z - mu[labels]
    var = one_hot(labels, C).T @ (resid * resid) / counts[:, None]
    pooled = (resid * resid).mean(axis=0)
    floor = 1e-12 * max(float(Z.var(axis=0).mean()), 1e-300)
    pooled = np.maximum(pooled, floor)
    var = (counts[:, None] * var + pooled) / (counts[:, None] + 1.0)
    var = np.maximum(var, floor)
    return _pair_sum(C, _diagonal_bhattacharyya(mu, var))


def _coding_rate(Z: np.ndarray, eps: float) -> float:
    """R(Z) = 1/2 log det(I + Z^T Z / (n eps)) = 1/2 sum_k log1p(s_k^2 / (n eps))."""
    n, d = Z.shape
    lam = np.linalg.eigvalsh(Z @ Z.T if n <= d else Z.T @ Z)
    return 0.5 * float(np.sum(np.log1p(np.maximum(lam, 0.0) / (n * eps))))


@register_score("transrate",
                paper="Huang et al. 2022, 'Frustratingly easy transferability estimation', ICML",
                summary="coding rate of all features minus the mean coding rate within classes",
                reference="thuml/Transfer-Learning-Library@efe6e33 tllib/ranking/transrate.py transrate")
def transrate(features, labels, *, probs=None, reference=None, eps=1e-4):
    """TransRate (Huang et al. 2022), as in the authors' code.

        TrR = R(Z) - 1/C sum_c R(Z_c),   R(Z) = 1/2 log det(I + Z^T Z / (n eps)),

    with ``Z`` the globally centered features and ``Z_c`` its rows of class c (``n``: rows
    of the argument). Evaluated from the eigenvalues of the smaller Gram matrix. Invariant
    to label permutation, translation, rotation and sample duplication; *not* to scaling
    (``eps`` is absolute, so feature scale matters). Cost O(n d min(n, d)).
    """
    if not eps > 0:
        raise ScoreInputError(f"transrate: eps must be > 0; got {eps!r}.")
    Z = features - features.mean(axis=0)
    C = int(labels.max()) + 1
    rz = _coding_rate(Z, eps)
    rzy = sum(_coding_rate(Z[labels == c], eps) for c in range(C))
    return rz - rzy / C
