"""Reference implementations of the MS scores: line-for-line numpy ports of the official code.

Used by the tests (agreement assertions) and by ``python -m experiments.bench_scores``
(when this file exists; never a runtime dependency). The official repositories are not
installable here (TensorFlow, torch checkpoints, numba), so each function below is a
line-for-line translation of one official function into numpy / scikit-learn: same
statements in the same order, same constants, same library calls where the official code
calls scikit-learn or scipy. Each one names the repository, the commit read and the
function it translates. Differences forced by the translation are stated where they occur
(TensorFlow float32 ops become numpy float32 ops; torch.logsumexp becomes
scipy.special.logsumexp; printing and caching are dropped; the task's ``constants.num_classes``
lookup becomes ``y.max() + 1``). Scores without official code are compared with a direct
formula ("paper formula").

Each entry of :data:`REFERENCES` maps a score name to ``(label, fn)`` with
``fn(X, y, P, R) -> float`` on float64 features ``X``, labels ``y`` in 0..C-1, source
probabilities ``P`` and reference features ``R``, returned on this project's scale
(dbolya/parc prints x100; divided back here).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats

PARC_REPO = "dbolya/parc@b05d06288203905d2a57f19ddb83edddc80c182c"
SFDA_REPO = "TencentARC/SFDA@eb1eee0a7e02883842d2e9fe387edb34345f202d"
ETRAN_REPO = "mgholamikn/ETran@a63361e1cd0e090b9d0462bf6e3bdf4dc547b22d"
GBC_REPO = "google-research/google-research@1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31"
LOGME_REPO = "thuml/LogME@3a0895084badc924dce3eb049580100bf7258f42"
TLLIB_REPO = "thuml/Transfer-Learning-Library"


# ------------------------------------------------ dbolya/parc methods.py (commit b05d062)
def parc_feature_reduce(features, f=None):
    """dbolya/parc methods.py ``feature_reduce`` (verbatim)."""
    import sklearn.decomposition

    if f is None:
        return features
    if f > features.shape[0]:
        f = features.shape[0]
    return sklearn.decomposition.PCA(
        n_components=f,
        svd_solver='randomized',
        random_state=1919,
        iterated_power=1).fit_transform(features)


def parc_official(X, y, P=None, R=None, n_dims=32):
    """dbolya/parc methods.py ``PARC.forward`` + ``get_parc_correlation`` + ``get_lowertri``
    (``PARC(n_dims=32)``, the paper's f; ``num_classes`` from the labels); divided by 100."""
    import sklearn.preprocessing

    features = parc_feature_reduce(X, n_dims)
    num_classes = int(y.max()) + 1
    labels = np.eye(num_classes)[y] if y.ndim == 1 else y
    scaler = sklearn.preprocessing.StandardScaler()
    feats1 = scaler.fit_transform(features)
    rdm1 = 1 - np.corrcoef(feats1)
    rdm2 = 1 - np.corrcoef(labels)
    lt_rdm1 = rdm1[np.triu_indices(rdm1.shape[0], 1)]
    lt_rdm2 = rdm2[np.triu_indices(rdm2.shape[0], 1)]
    return scipy.stats.spearmanr(lt_rdm1, lt_rdm2)[0] * 100 / 100


def split_lr_official(X, y, P=None, R=None):
    """dbolya/parc methods.py ``SplitLogistic.forward`` (percent_train=0.5, n_dims=None) with
    ``split_data``: the first ``n - int(0.5 n)`` samples in the given order train, the rest
    test. ``multi_class='multinomial'`` is dropped: scikit-learn >= 1.7 removed the argument
    and fits the multinomial model for C > 2 anyway. Divided by 100."""
    import sklearn.linear_model

    split = X.shape[0] - int(0.5 * X.shape[0])
    train_x, test_x = X[:split], X[split:]
    train_y, test_y = y[:split], y[split:]
    logistic = sklearn.linear_model.LogisticRegression(random_state=0, solver='lbfgs', max_iter=20,
                                                       tol=1e-1).fit(train_x, train_y)
    return 100 * (logistic.predict(test_x) == test_y).mean() / 100


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



# ------------------------------------------------ dbolya/parc methods.py: HScore, LEEP, NCE
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


# ------------------------------------------- thuml/LogME LogME.py (commit 3a08950)
def _thuml_truncated_svd(x):
    """thuml/LogME LogME.py ``truncated_svd`` (verbatim, without numba)."""
    u, s, vh = np.linalg.svd(x.transpose() @ x)
    s = np.sqrt(s)
    u_times_sigma = x @ vh.transpose()
    k = np.sum((s > 1e-10) * 1)  # rank of f
    s = s.reshape(-1, 1)
    s = s[:k]
    vh = vh[:k]
    u = u_times_sigma[:, :k] / s.reshape(1, -1)
    return u, s, vh


def logme_thuml(X, y, P=None, R=None):
    """thuml/LogME LogME.py ``LogME._fit_fixed_point`` (the default ``_fit``), classification."""
    f = X.astype(np.float64)
    N, D = f.shape
    if N > D:
        u, s, vh = _thuml_truncated_svd(f)
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
    s = s.reshape(-1, 1)
    sigma = (s ** 2)
    evidences = []
    num_dim = int(y.max() + 1)
    for i in range(num_dim):
        y_ = (y == i).astype(np.float64)
        y_ = y_.reshape(-1, 1)
        x = u.T @ y_
        x2 = x ** 2
        res_x2 = (y_ ** 2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (N - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        evidence = D / 2.0 * np.log(alpha) \
            + N / 2.0 * np.log(beta) \
            - 0.5 * np.sum(np.log(alpha + beta * sigma)) \
            - beta / 2.0 * res2 \
            - alpha / 2.0 * m2 \
            - N / 2.0 * np.log(2 * np.pi)
        evidence /= N
        evidences.append(evidence)
    return float(np.mean(evidences))


def logme_tllib(X, y, P=None, R=None):
    """thuml/Transfer-Learning-Library tllib/ranking/logme.py (commit e389504)
    ``log_maximum_evidence`` + ``each_evidence`` (no epsilon; = thuml's ``_fit_icml``
    without its 1e-5 guards), classification."""
    f = X.astype(np.float64)
    fh = f
    f = f.transpose()
    D, N = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    evidences = []
    C = int(y.max() + 1)
    for i in range(C):
        y_ = (y == i).astype(np.float64)
        alpha = 1.0
        beta = 1.0
        lam = alpha / beta
        tmp = (vh @ (f @ y_))
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / alpha_de
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (N - gamma) / beta_de
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = D / 2.0 * np.log(alpha) \
            + N / 2.0 * np.log(beta) \
            - 0.5 * np.sum(np.log(alpha + beta * s)) \
            - beta / 2.0 * beta_de \
            - alpha / 2.0 * alpha_de \
            - N / 2.0 * np.log(2 * np.pi)
        evidences.append(evidence / N)
    return float(np.mean(evidences))


# ------------- google-research stable_transfer (gbc.py 1d4d2f1, features_targets_utils.py 4963f32)
def gbc_pca_reduction(features, n_components=64, svd_solver='full'):
    """stable_transfer/transferability/features_targets_utils.py ``pca_reduction`` (verbatim):
    exact PCA, result cast to float32."""
    from sklearn.decomposition import PCA

    reduced_feature = PCA(n_components=n_components, svd_solver=svd_solver).fit_transform(features)
    return reduced_feature.astype(np.float32)


def _gbc_bhattacharyya_distance(mu1, mu2, sigma1, sigma2):
    """gbc.py ``compute_bhattacharyya_distance``: tf ops as numpy float32 ops."""
    avg_sigma = (sigma1 + sigma2) / np.float32(2)
    first_part = np.sum((mu1 - mu2) ** 2 / avg_sigma, dtype=np.float32) / np.float32(8)
    second_part = np.sum(np.log(avg_sigma), dtype=np.float32)
    second_part -= np.float32(0.5) * (np.sum(np.log(sigma1), dtype=np.float32))
    second_part -= np.float32(0.5) * (np.sum(np.log(sigma2), dtype=np.float32))
    return first_part + np.float32(0.5) * second_part


def gbc_score_official(features, target_labels, gaussian_type='spherical'):
    """gbc.py ``get_gbc_score`` + ``compute_per_class_mean_and_variance`` +
    ``get_bhattacharyya_distance`` in numpy float32 (the tf ops: reduce_mean,
    reduce_variance = population variance, maximum(., 1e-4), exp, reduce_sum). Labels are
    iterated in order of first appearance, as ``tf.unique``."""
    features = np.asarray(features, dtype=np.float32)
    assert gaussian_type in ('diagonal', 'spherical')
    _, first = np.unique(target_labels, return_index=True)
    unique_labels = list(np.asarray(target_labels)[np.sort(first)])
    per_class_stats = {}
    for label in unique_labels:
        label = int(label)
        per_class_stats[label] = {}
        class_features = features[target_labels == label]
        mean = np.mean(class_features, axis=0, dtype=np.float32)
        variance = np.mean((class_features - mean) ** 2, axis=0, dtype=np.float32)
        per_class_stats[label]['mean'] = mean
        per_class_stats[label]['variance'] = np.maximum(variance, np.float32(1e-4))
    per_class_bhattacharyya_distance = []
    for c1 in unique_labels:
        temp_metric = []
        for c2 in unique_labels:
            if c1 != c2:
                s1, s2 = per_class_stats[int(c1)]['variance'], per_class_stats[int(c2)]['variance']
                if gaussian_type == 'spherical':
                    s1, s2 = np.mean(s1, dtype=np.float32), np.mean(s2, dtype=np.float32)
                bd = _gbc_bhattacharyya_distance(per_class_stats[int(c1)]['mean'],
                                                 per_class_stats[int(c2)]['mean'], s1, s2)
                temp_metric.append(np.exp(-bd))
        per_class_bhattacharyya_distance.append(np.sum(np.asarray(temp_metric, dtype=np.float32),
                                                       dtype=np.float32))
    gbc = -np.sum(np.asarray(per_class_bhattacharyya_distance, dtype=np.float32), dtype=np.float32)
    return float(gbc)


def gbc_official(X, y, P=None, R=None, pca_dim=64, gaussian="spherical"):
    """The stable_transfer GBC experiment: ``pca_reduction(features, 64)`` (config
    ``pca_reduction = 64``) then ``get_gbc_score(features, labels, 'spherical')``."""
    Z = X if pca_dim is None else gbc_pca_reduction(X, pca_dim)
    return gbc_score_official(Z, y, gaussian)


def gbc_pairs(Z, y, gaussian="spherical", floor=1e-4):
    """The official GBC class-pair loop in float64 (no float32 rounding): for exact tests."""
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


# --------------------------------------------- TencentARC/SFDA metrics.py, utils.py (eb1eee0)
def _sfda_cov(X, shrinkage=-1):
    """SFDA metrics.py ``_cov`` (verbatim)."""
    emp_cov = np.cov(np.asarray(X).T, bias=1)
    if shrinkage < 0:
        return emp_cov
    n_features = emp_cov.shape[0]
    mu = np.trace(emp_cov) / n_features
    shrunk_cov = (1.0 - shrinkage) * emp_cov
    shrunk_cov.flat[:: n_features + 1] += shrinkage * mu
    return shrunk_cov


def _sfda_softmax(X, copy=True):
    """SFDA metrics.py ``softmax`` (verbatim)."""
    if copy:
        X = np.copy(X)
    max_prob = np.max(X, axis=1).reshape((-1, 1))
    X -= max_prob
    np.exp(X, X)
    sum_prob = np.sum(X, axis=1).reshape((-1, 1))
    X /= sum_prob
    return X


def _sfda_class_means(X, y):
    """SFDA metrics.py ``_class_means`` (verbatim)."""
    classes, y = np.unique(y, return_inverse=True)
    cnt = np.bincount(y)
    means = np.zeros(shape=(len(classes), X.shape[1]))
    np.add.at(means, y, X)
    means /= cnt[:, None]
    means_ = np.zeros(shape=(len(classes), X.shape[1]))
    for i in range(len(classes)):
        means_[i] = (np.sum(means, axis=0) - means[i]) / (len(classes) - 1)
    return means, means_


def sfda_iterative_A(A, max_iterations=3):
    """SFDA utils.py ``iterative_A`` (verbatim): the largest eigenvalue of A."""
    x = A.sum(axis=1)
    for _ in range(max_iterations):
        temp = np.dot(A, x)
        y = temp / np.linalg.norm(temp, 2)
        temp = np.dot(A, y)
        x = temp / np.linalg.norm(temp, 2)
    return np.dot(np.dot(x.T, A), y)


class _SFDA:
    """SFDA metrics.py class ``SFDA`` (``fit``, ``_solve_eigen``, ``predict_proba``; the
    ``print`` of the shrinkage dropped)."""

    def __init__(self, shrinkage=None, priors=None, n_components=None):
        self.shrinkage = shrinkage
        self.priors = priors
        self.n_components = n_components

    def _solve_eigen(self, X, y, shrinkage):
        classes, y = np.unique(y, return_inverse=True)
        cnt = np.bincount(y)
        means = np.zeros(shape=(len(classes), X.shape[1]))
        np.add.at(means, y, X)
        means /= cnt[:, None]
        self.means_ = means
        cov = np.zeros(shape=(X.shape[1], X.shape[1]))
        for idx, group in enumerate(classes):
            Xg = X[y == group, :]
            cov += self.priors_[idx] * np.atleast_2d(_sfda_cov(Xg))
        self.covariance_ = cov
        Sw = self.covariance_  # within scatter
        if self.shrinkage is None:
            largest_evals_w = sfda_iterative_A(Sw, max_iterations=3)
            shrinkage = max(np.exp(-5 * largest_evals_w), 1e-10)
            self.shrinkage = shrinkage
        else:
            shrinkage = self.shrinkage
        St = _sfda_cov(X, shrinkage=self.shrinkage)
        n_features = Sw.shape[0]
        mu = np.trace(Sw) / n_features
        shrunk_Sw = (1.0 - self.shrinkage) * Sw
        shrunk_Sw.flat[:: n_features + 1] += self.shrinkage * mu
        Sb = St - shrunk_Sw  # between scatter
        evals, evecs = scipy.linalg.eigh(Sb, shrunk_Sw)
        evecs = evecs[:, np.argsort(evals)[::-1]]  # sort eigenvectors
        self.scalings_ = evecs
        self.coef_ = np.dot(self.means_, evecs).dot(evecs.T)
        self.intercept_ = -0.5 * np.diag(np.dot(self.means_, self.coef_.T)) + np.log(self.priors_)

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        _, y_t = np.unique(y, return_inverse=True)
        self.priors_ = np.bincount(y_t) / float(len(y))
        self._solve_eigen(X, y, shrinkage=self.shrinkage)
        return self

    def predict_proba(self, X):
        scores = np.dot(X, self.coef_.T) + self.intercept_
        return _sfda_softmax(scores)


def sfda_official(X, y, P=None, R=None):
    """SFDA metrics.py ``SFDA_Score`` (verbatim; X is copied first: the official function
    mixes the caller's array in place)."""
    X = np.array(X, dtype=np.float64, copy=True)
    n = len(y)
    num_classes = len(np.unique(y))
    SFDA_first = _SFDA()
    prob = SFDA_first.fit(X, y).predict_proba(X)  # p(y|x)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means, means_ = _sfda_class_means(X, y)
    for y_ in range(num_classes):
        indices = np.where(y == y_)[0]
        y_prob = np.take(prob, indices, axis=0)
        y_prob = y_prob[:, y_]
        X[indices] = y_prob.reshape(len(y_prob), 1) * X[indices] + \
            (1 - y_prob.reshape(len(y_prob), 1)) * means_[y_]
    SFDA_second = _SFDA(shrinkage=SFDA_first.shrinkage)
    prob = SFDA_second.fit(X, y).predict_proba(X)
    sfda_score = np.sum(prob[np.arange(n), y]) / n
    return float(sfda_score)


def nleep_official(X, y, P=None, R=None, component_ratio=5, random_state=0):
    """SFDA metrics.py ``NLEEP`` (verbatim) with one change: ``GaussianMixture`` gets
    ``random_state`` (the official call leaves it None, i.e. a different value each run)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    n = len(y)
    num_classes = len(np.unique(y))
    pca_80 = PCA(n_components=0.8)
    pca_80.fit(X)
    X_pca_80 = pca_80.transform(X)
    n_components_num = component_ratio * num_classes
    gmm = GaussianMixture(n_components=n_components_num, random_state=random_state).fit(X_pca_80)
    prob = gmm.predict_proba(X_pca_80)  # p(z|x)
    pyz = np.zeros((num_classes, n_components_num))
    for y_ in range(num_classes):
        indices = np.where(y == y_)[0]
        filter_ = np.take(prob, indices, axis=0)
        pyz[y_] = np.sum(filter_, axis=0) / n
    pz = np.sum(pyz, axis=0)
    py_z = pyz / pz
    py_x = np.dot(prob, py_z.T)
    nleep_score = np.sum(py_x[np.arange(n), y]) / n
    return float(nleep_score)


# ------------------------------------------------------- mgholamikn/ETran metrics.py (a63361e)
def etran_energy_official(X, y=None, P=None, R=None, percent=0.5, tail='bot'):
    """ETran metrics.py ``Energy_Score(X, 0.5, 'bot')`` as evaluate_metric.py calls it
    (``torch.logsumexp`` -> ``scipy.special.logsumexp`` in the input's dtype): the mean
    ``logsumexp`` of the ``int(percent * 10) * n // 1000`` lowest samples (NaN when none)."""
    energy_score = scipy.special.logsumexp(X, axis=-1)
    if tail == 'bot':
        chs = list(np.argsort(energy_score)[0:int(percent * 10) * len(energy_score) // 1000])
    else:
        chs = list(np.argsort(energy_score)[-int(percent * 10) * len(energy_score) // 1000:])
    energy_score = energy_score[chs].mean()
    return float(energy_score)


def _etran_iterative_A(A, max_iterations=3):
    """ETran metrics.py ``LDA.iterative_A`` (same as SFDA's)."""
    return sfda_iterative_A(A, max_iterations)


def etran_lda_official(X, y, P=None, R=None):
    """ETran metrics.py ``LDA_Score`` + class ``LDA`` (``fit``, ``_solve_eigen``,
    ``predict_proba``). Note ``np.linalg.eigh`` of the non-symmetric ``inv(shrunk_Sw) @ Sb``:
    eigh reads one triangle and returns an orthonormal basis, so ``coef_ = means``."""
    X = np.asarray(X, dtype=np.float64)
    classes, y_t = np.unique(y, return_inverse=True)
    priors_ = np.bincount(y_t) / float(len(y))
    cnt = np.bincount(y_t)
    means = np.zeros(shape=(len(classes), X.shape[1]))
    np.add.at(means, y_t, X)
    means /= cnt[:, None]
    cov = np.zeros(shape=(X.shape[1], X.shape[1]))
    for idx in range(len(classes)):
        Xg = X[y_t == idx, :]
        cov += priors_[idx] * np.atleast_2d(_sfda_cov(Xg))
    Sw = cov
    largest_evals_w = _etran_iterative_A(Sw, max_iterations=3)
    shrinkage = max(np.exp(-5 * largest_evals_w), 1e-10)
    St = _sfda_cov(X, shrinkage=shrinkage)
    n_features = Sw.shape[0]
    mu = np.trace(Sw) / n_features
    shrunk_Sw = (1.0 - shrinkage) * Sw
    shrunk_Sw.flat[:: n_features + 1] += shrinkage * mu
    Sb = St - shrunk_Sw
    evals, evecs = np.linalg.eigh(np.linalg.inv(shrunk_Sw) @ Sb)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef_ = np.dot(means, evecs).dot(evecs.T)
    intercept_ = -0.5 * np.diag(np.dot(means, coef_.T)) + np.log(priors_)
    logits = np.dot(X, coef_.T) + intercept_
    prob = _sfda_softmax(logits)
    n = len(y)
    return float(np.sum(prob[np.arange(n), y]) / n)


def etran_combine_official(energy, lda):
    """ETran tw.py, ``metric == 'etran'``: min-max ``scale`` each score over the models of a
    dataset, then ``0.15 * energy + 0.85 * lda`` (dicts model -> score)."""
    def scale(score):
        score = dict(score)
        min_score = 10e10
        max_score = -10e10
        for key in score.keys():
            if score[key] < min_score:
                min_score = score[key]
            if score[key] > max_score:
                max_score = score[key]
        for key in score.keys():
            score[key] = (score[key] - min_score) / (max_score - min_score)
        return score

    score = scale(energy)
    score_labeled = scale(lda)
    return {key: score[key] * 0.15 + score_labeled[key] * 0.85 for key in score}


# -------------------- thuml/Transfer-Learning-Library tllib/ranking/hscore.py (commit b0d863f)
def reg_hscore_official(X, y, P=None, R=None):
    """tllib/ranking/hscore.py ``regularized_h_score`` (verbatim)."""
    from sklearn.covariance import LedoitWolf

    f = X.astype('float64')
    f = f - np.mean(f, axis=0, keepdims=True)
    C = int(y.max() + 1)
    g = np.zeros_like(f)
    cov = LedoitWolf(assume_centered=False).fit(f)
    alpha = cov.shrinkage_
    covf_alpha = cov.covariance_
    for i in range(C):
        Ef_i = np.mean(f[y == i, :], axis=0)
        g[y == i] = Ef_i
    covg = np.cov(g, rowvar=False)
    score = np.trace(np.dot(np.linalg.pinv(covf_alpha, rcond=1e-15), (1 - alpha) * covg))
    return float(score)


# ------------------------------------------------------------- TransRate (Huang et al.)
def transrate_official(X, y, P=None, R=None, eps=1e-4):
    """The authors' transrate(): d x d slogdet of the coding rate, per class."""
    def coding_rate(Z):
        n, d = Z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + 1 / (n * eps) * Z.T @ Z)[1]

    Z = X - X.mean(axis=0, keepdims=True)
    K = int(y.max()) + 1
    return float(coding_rate(Z) - sum(coding_rate(Z[y == i]) for i in range(K)) / K)



# ------------------------------------------------------------------- paper formulas
def lfc_formula(X, y, P=None, R=None):
    """CKA of the explicit n x n feature kernel with the +-1 label kernel."""
    n = len(y)
    H = np.eye(n) - 1.0 / n
    K = H @ (X @ X.T) @ H
    L = H @ np.where(y[:, None] == y[None, :], 1.0, -1.0) @ H
    return float(np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L)))



#: score name -> (what it is, fn)
REFERENCES = {
    "parc": ("dbolya/parc methods.py PARC(n_dims=32).forward", parc_official),
    "rsa": ("dbolya/parc methods.py RSA.get_rsa_correlation", rsa_official),
    "dds": ("dbolya/parc methods.py DDS (cosine, debiased)", dds_official),
    "knn1": ("dbolya/parc methods.py kNN(k=1)", knn1_official),
    "split_lr": ("dbolya/parc methods.py SplitLogistic.forward", split_lr_official),
    "hscore": ("dbolya/parc methods.py HScore.get_hscore_fast", hscore_official),
    "leep": ("dbolya/parc methods.py LEEP.forward", leep_official),
    "nce": ("Tran et al. formula (dbolya/parc NCE without eps)", nce_formula),
    "logme": ("thuml/LogME LogME.py LogME._fit_fixed_point", logme_thuml),
    "gbc": ("stable_transfer pca_reduction(64) + gbc.get_gbc_score (float32)", gbc_official),
    "transrate": ("tllib ranking/transrate.py transrate", transrate_official),
    "reg_hscore": ("tllib ranking/hscore.py regularized_h_score", reg_hscore_official),
    "sfda": ("TencentARC/SFDA metrics.py SFDA_Score", sfda_official),
    "nleep": ("TencentARC/SFDA metrics.py NLEEP (GMM random_state=0)", nleep_official),
    "etran_energy": ("mgholamikn/ETran metrics.py Energy_Score(X, 0.5, 'bot')", etran_energy_official),
    "etran_lda": ("mgholamikn/ETran metrics.py LDA_Score", etran_lda_official),
    "lfc": ("paper formula, explicit n x n kernels", lfc_formula),
}
#: further references of one score (printed as extra rows)
EXTRA_REFERENCES = {
    "logme": [("tllib ranking/logme.py log_maximum_evidence", logme_tllib)],
    "nce": [("dbolya/parc methods.py NegativeCrossEntropy (eps 1e-5)", nce_official)],
}
