"""Shared numerical helpers for the MS scores (all float64, vectorized)."""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

#: eigenvalues of a Gram matrix below ``RANK_TOL * max`` are treated as exact zeros
RANK_TOL = 1e-10


def one_hot(y: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(n, C) float one-hot matrix of integer labels 0..C-1."""
    C = int(y.max()) + 1 if n_classes is None else n_classes
    Y = np.zeros((y.shape[0], C))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def thin_svd(X: np.ndarray, tol: float = RANK_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors ``U`` (n, r) and singular values ``s`` (r,) of ``X`` (numerical rank r).

    Computed from the eigen-decomposition of the smaller Gram matrix (``X X^T`` if n <= d,
    else ``X^T X``): O(n d min(n, d)), several times faster than a LAPACK SVD of a wide
    matrix. Directions with ``s^2 <= tol * s_max^2`` are dropped.
    """
    n, d = X.shape
    if n <= d:
        lam, U = np.linalg.eigh(X @ X.T)
    else:
        lam, V = np.linalg.eigh(X.T @ X)
    lam = lam[::-1]
    top = lam[0] if lam.size else 0.0
    keep = lam > max(top, 0.0) * tol if top > 0 else np.zeros_like(lam, dtype=bool)
    lam = lam[keep]
    s = np.sqrt(lam)
    if n <= d:
        U = U[:, ::-1][:, keep]
    else:
        U = (X @ V[:, ::-1][:, keep]) / s
    return U, s


def sq_frobenius_gram(X: np.ndarray) -> float:
    """``||X X^T||_F^2 = ||X^T X||_F^2`` through the smaller of the two Gram matrices."""
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    return float(np.sum(G * G))


def pca(X: np.ndarray, dim: int, signed: bool = True) -> np.ndarray:
    """Scores of the top ``dim`` principal components of ``X`` (n, min(dim, rank)).

    Deterministic sign: each component's loading vector has its largest-|.| entry positive
    (so the result does not depend on the eigen-solver); ``signed=False`` skips that step
    (for callers whose value does not depend on the sign of a component, e.g. GBC: it saves
    the ``d x k`` loadings product when n <= d). When ``4 dim <= min(n, d)`` the top
    eigenvectors of the Gram matrix come from seeded subspace iteration (8 power steps, 10
    extra columns; Halko et al. 2011; for n > d through products with ``Xc`` and ``Xc^T``,
    never forming the d x d matrix), else from LAPACK (exact).
    """
    Xc = X - X.mean(axis=0)
    n, d = Xc.shape
    k = min(dim, n, d)
    if n > d and 4 * k <= d:  # subspace iteration on Xc'Xc without forming it (2 n d (k+10) a step)
        Q = np.random.default_rng(0).standard_normal((d, k + 10))
        for step in range(8):
            Q = _orthonormal(Xc.T @ (Xc @ Q), final=step == 7)
        B = Xc @ Q
        lam, W = np.linalg.eigh(B.T @ B)
        lam, W = lam[::-1][:k], W[:, ::-1][:, :k]
        keep = lam > max(lam[0], 0.0) * RANK_TOL
        W = W[:, keep]
        return _signed_scores(Q @ W, B @ W, n)
    if n <= d and 4 * k <= n:
        G = Xc @ Xc.T
        Q = np.random.default_rng(0).standard_normal((n, k + 10))
        for step in range(8):
            Q = _orthonormal(G @ Q, final=step == 7)
        GQ = G @ Q  # Rayleigh-Ritz, and the scores G U = (G Q) W
        lam, W = np.linalg.eigh(Q.T @ GQ)
        W = W[:, ::-1][:, :k]
        lam = lam[::-1][:k]
        keep = lam > max(lam[0], 0.0) * RANK_TOL
        lam, W = lam[keep], W[:, keep]
        s = np.sqrt(lam)
        scores = (GQ @ W) / s
        if not signed:
            return scores if scores.shape[1] else np.zeros((n, 1))
        V = (Xc.T @ (Q @ W)) / s
        return _signed_scores(V, scores, n)
    elif n <= d:
        G = Xc @ Xc.T
        lam, U = sla.eigh(G, subset_by_index=[n - k, n - 1])
        lam, U = lam[::-1], U[:, ::-1]
        keep = lam > max(lam[0], 0.0) * RANK_TOL
        lam, U = lam[keep], U[:, keep]
        s = np.sqrt(lam)
        V = (Xc.T @ U) / s  # loadings (d, k)
        return _signed_scores(V, (G @ U) / s, n)
    else:  # n > d
        lam, V = sla.eigh(Xc.T @ Xc, subset_by_index=[d - k, d - 1])
        lam, V = lam[::-1], V[:, ::-1]
        keep = lam > max(lam[0], 0.0) * RANK_TOL
        V = V[:, keep]
    return _signed_scores(V, Xc @ V, n)


def sklearn_randomized_pca(X: np.ndarray, k: int, random_state: int, n_iter: int = 1,
                           n_oversamples: int = 10) -> np.ndarray:
    """``PCA(n_components=k, svd_solver="randomized", iterated_power=n_iter,
    random_state=random_state).fit_transform(X)`` of scikit-learn (1.x), the same operations
    on the same array layouts, so the same floats, without the estimator's input validation
    (the callers validate once) and its explained-variance passes (two more passes over ``X``).

    Steps (``sklearn.decomposition.PCA._fit_truncated`` and ``utils.extmath._randomized_svd``,
    ``_randomized_range_finder``, ``svd_flip``): center by the column mean; work on
    ``M = Xc^T`` when n < d; a ``RandomState(random_state).normal`` test matrix of
    ``k + n_oversamples`` columns; ``n_iter`` power steps ``M (M^T (M Q))`` normalized by
    nothing when ``n_iter <= 2``, else by LU (scikit-learn's "auto"); a Householder QR
    (scipy, economic) of the last product; the SVD (``gesdd``) of ``B = Q^T M``; signs fixed
    so that the largest-|.| entry of each component (loading vector) is positive (0 when that
    entry is 0, as ``np.sign``); scores ``U s``.
    ``X`` must be float64 or float32, 2-D, finite, with ``1 <= k <= min(n, d)``.
    """
    n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k={k} must be between 1 and min(n_samples, n_features)={min(n, d)}")
    rs = np.random.RandomState(random_state)
    Xc = X - np.mean(X, axis=0)
    transpose = n < d
    M = Xc.T if transpose else Xc
    Q = rs.normal(size=(M.shape[1], k + n_oversamples))
    if X.dtype == np.float32:
        Q = Q.astype(np.float32, copy=False)
    if n_iter <= 2:
        def normalize(A):
            return A
    else:
        def normalize(A):
            return sla.lu(A, permute_l=True, check_finite=False)[0]
    for _ in range(n_iter):
        Q = normalize(M @ Q)
        Q = normalize(M.T @ Q)
    Q = sla.qr(M @ Q, mode="economic", check_finite=False)[0]
    Uhat, s, Vt = sla.svd(Q.T @ M, full_matrices=False, lapack_driver="gesdd")
    U = Q @ Uhat
    if transpose:  # scores: rows of Vt; components: columns of U
        scores, comps = Vt[:k].T, U[:, :k].T
    else:
        scores, comps = U[:, :k], Vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    scores *= signs[np.newaxis, :]
    scores *= s[:k]
    return scores


def _orthonormal(B: np.ndarray, final: bool) -> np.ndarray:
    """An orthonormal basis of the columns of ``B`` (n, m), n >= m, for subspace iteration.

    Intermediate steps only need a well-conditioned basis of the same span: Cholesky QR
    (``B R^-1`` with ``R^T R = B^T B``: two thin products instead of Householder QR) when
    ``B^T B`` is safely positive definite, Householder QR otherwise and on the ``final`` step
    (whose basis enters the Rayleigh-Ritz step and must be orthonormal to rounding).
    """
    if not final:
        S = B.T @ B
        dmax = float(np.max(np.diag(S))) if S.size else 0.0
        try:
            R = sla.cholesky(S, lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            R = None
        if R is not None and float(np.min(np.abs(np.diag(R)))) ** 2 > 1e-8 * dmax:
            return sla.solve_triangular(R, B.T, trans="T", lower=False, check_finite=False).T
    return np.linalg.qr(B)[0]


def _signed_scores(V: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """PC ``scores`` (= Xc V) with each column's sign fixed by its loading vector in ``V``.

    When n <= d the scores come as ``G U / s`` (``G = Xc Xc^T``), which equals ``Xc V``
    for ``V = Xc^T U / s`` but costs n^2 k instead of n d k.
    """
    if V.shape[1] == 0:
        return np.zeros((n, 1))
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return scores * signs


def standardize(X: np.ndarray) -> np.ndarray:
    """Columns z-scored; constant columns become 0 (like sklearn's StandardScaler)."""
    Xc = X - X.mean(axis=0)
    sd = np.sqrt(np.einsum("ij,ij->j", Xc, Xc) / X.shape[0])  # one pass, no n x d temporary
    sd[sd <= 1e-12 * max(float(sd.max(initial=0.0)), 1e-300)] = 1.0
    Xc *= 1.0 / sd
    return Xc


def corr_matrix(X: np.ndarray) -> np.ndarray:
    """Correlations between the rows of ``X`` (n, n), ``np.corrcoef(X)`` with a unit diagonal.

    A row with zero variance across its entries gets correlation 0 with every other row
    instead of NaN. Values may exceed [-1, 1] by rounding.
    """
    Z = X - X.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(Z * Z, axis=1))
    ok = norm > 1e-12 * max(float(norm.max(initial=0.0)), 1e-300)
    Z /= np.where(ok, norm, 1.0)[:, None]  # in place: Z is ours
    if not ok.all():
        Z[~ok] = 0.0
    R = Z @ Z.T
    np.fill_diagonal(R, 1.0)
    return R


def corr_rdm(X: np.ndarray) -> np.ndarray:
    """Representational dissimilarity matrix ``1 - corrcoef(rows of X)`` (n, n); see :func:`corr_matrix`."""
    R = corr_matrix(X)
    np.clip(R, -1.0, 1.0, out=R)
    np.subtract(1.0, R, out=R)
    return R


def upper(M: np.ndarray) -> np.ndarray:
    """Strict upper triangle of a square matrix as a vector."""
    i, j = np.triu_indices(M.shape[0], k=1)
    return M[i, j]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either vector is constant (no information)."""
    a = a - a.mean()
    b = b - b.mean()
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    if na <= 0 or nb <= 0:
        return 0.0
    return float(np.clip((a @ b) / (na * nb), -1.0, 1.0))


def ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (as ``scipy.stats.rankdata``) with one argsort when there are no ties.

    Without ties every sorting algorithm yields the same permutation, so the (several times
    faster) unstable introsort is used; ties fall back to ``rankdata``.
    """
    N = a.shape[0]
    r = np.empty(N)
    order = _sort_order(a)
    if order is None:  # possible ties: the exact argsort
        order = np.argsort(a)
        srt = a[order]
        if srt.size > 1 and np.any(srt[1:] == srt[:-1]):
            from scipy.stats import rankdata  # scipy.stats takes most of a second to import: only on ties

            return rankdata(a)
    r[order] = np.arange(1, N + 1)
    return r


def _sort_order(a: np.ndarray) -> np.ndarray | None:
    """``np.argsort(a)`` of a float64 vector through one (vectorized) ``np.sort`` of packed keys,
    or None when that cannot be certified (then the caller runs ``np.argsort``).

    Each value becomes its order-preserving signed 64-bit key (the IEEE bits as an integer,
    with the 63 value bits flipped for negatives; ``-0.0`` counts as ``0.0``) with the low
    ``b`` bits (``2^b >= N``) replaced by the position. The truncated keys are monotone in
    the values, so when no two of them are equal the sorted packed keys list the positions
    in exactly the order of the values (which are then distinct); otherwise (near or exact
    ties) None. Only for N <= 2^17 (the n x n triangle of up to 512 samples): the keys then
    keep 47 bits, and values that close are rare; for larger N near-ties at the cut
    precision become likely, and the attempt would mostly be wasted.
    """
    N = a.shape[0]
    if N < 2 or N > 1 << 17 or a.dtype != np.float64:
        return None
    b = max(int(N - 1).bit_length(), 1)
    bits = (a + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0; a fresh array
    key = bits >> 63  # -1 for negatives, 0 otherwise
    key &= np.int64(0x7FFFFFFFFFFFFFFF)
    key ^= bits
    key &= np.int64(~((1 << b) - 1))
    key |= np.arange(N, dtype=np.int64)
    key.sort()
    bits = key >> b  # reuse of the name: the truncated keys in sorted order
    if np.any(bits[1:] == bits[:-1]):
        return None
    key &= np.int64((1 << b) - 1)
    return key


def spearman_binary(a: np.ndarray, group: np.ndarray) -> float:
    """Spearman correlation of ``a`` with a two-valued variable (``group``: bool, True = high).

    Equals ``pearson(rankdata(a), group)`` (average ranks for ties), from one ``np.sort`` of
    ``a`` instead of an argsort: the ranks enter only through the rank sum of the smaller
    group (two binary searches per member, keys sorted) and their variance
    ``(N^2 - 1)/12 - sum_t (t^3 - t) / (12 N)`` over the tie groups ``t`` of the sorted values.
    """
    N = a.shape[0]
    m = int(np.count_nonzero(group))
    sign = 1.0
    if 2 * m > N:  # rank the smaller group: corr(r, 1 - g) = -corr(r, g)
        group, m, sign = ~group, N - m, -1.0
    if m == 0 or N < 2:
        return 0.0
    s = np.sort(a)
    xs = np.sort(a[group])
    rank_sum = 0.5 * float(np.sum(np.searchsorted(s, xs, "left") + np.searchsorted(s, xs, "right") + 1,
                                  dtype=np.float64))
    eq = s[1:] == s[:-1]
    var_r = (N * N - 1.0) / 12.0
    if eq.any():  # tie groups: runs of equal neighbours
        edges = np.flatnonzero(np.diff(np.concatenate(([0], eq.view(np.int8), [0]))))
        t = (edges[1::2] - edges[0::2] + 1).astype(np.float64)
        var_r -= float(np.sum(t**3 - t)) / (12.0 * N)
    p = m / N
    cov = rank_sum / N - 0.5 * (N + 1) * p
    den = np.sqrt(max(var_r, 0.0) * p * (1.0 - p))
    return float(np.clip(sign * cov / den, -1.0, 1.0)) if den > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    return pearson(ranks(a), ranks(b))


def class_counts_means(X: np.ndarray, y: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Class sizes (C,) and class means (C, d)."""
    counts = np.bincount(y, minlength=C).astype(float)
    sums = one_hot(y, C).T @ X
    return counts, sums / np.maximum(counts, 1.0)[:, None]


def gram_spectrum_projections(G: np.ndarray, Y: np.ndarray, tol: float = RANK_TOL, overwrite: bool = False):
    """Eigenvalues ``lam`` (descending, those above ``tol * lam_max``) of a PSD matrix ``G``
    (n, n) and the projections ``U^T Y`` (r, C) of ``Y`` (n, C) on their eigenvectors ``U``,
    without forming ``U``.

    ``G = Q T Q^T`` (Householder tridiagonalization, LAPACK ``sytrd``) and ``T = W diag(lam) W^T``
    (``stevd`` on the tridiagonal matrix) give ``U = Q W``, so ``U^T Y = W^T (Q^T Y)``: the
    reflectors are applied to the C columns of ``Y`` (``ormqr``) instead of to n eigenvectors.
    Same result as ``np.linalg.eigh`` (which runs ``sytrd`` and a tridiagonal solver too), about
    half the work when C << n. ``overwrite``: ``G`` (C-contiguous) may be destroyed (saves a copy).
    """
    n = G.shape[0]
    if n == 1:
        lam, P = np.array([float(G[0, 0])]), Y[:1].astype(float)
    else:
        lwork, info = sla.lapack.dsytrd_lwork(n, lower=1)
        # G is symmetric, so its C-ordered buffer is also the Fortran-ordered G: no transpose copy
        Gf = G.T if overwrite and G.flags.c_contiguous and G.dtype == np.float64 else G
        c, d, e, tau, info = sla.lapack.dsytrd(Gf, lower=1, lwork=max(int(lwork), 64 * n),
                                               overwrite_a=int(Gf is not G))
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise np.linalg.LinAlgError(f"dsytrd failed (info={info})")
        QtY = np.array(Y, dtype=float, order="F")
        if n > 1:  # reflector i lives in c[i+2:, i] with a unit at row i+1: QR storage of c[1:, :-1]
            QtY[1:], _, info = sla.lapack.dormqr("L", "T", c[1:, :-1], tau, QtY[1:],
                                                 lwork=max(1, 64 * Y.shape[1]))
            if info != 0:  # pragma: no cover
                raise np.linalg.LinAlgError(f"dormqr failed (info={info})")
        lam, W, info = sla.lapack.dstevd(d, e, compute_v=1)  # what eigh_tridiagonal("stevd") calls
        if info != 0:  # pragma: no cover - no convergence
            raise np.linalg.LinAlgError(f"dstevd failed (info={info})")
        P = W.T @ QtY
    lam, P = lam[::-1], P[::-1]
    top = lam[0] if lam.size else 0.0
    keep = lam > max(top, 0.0) * tol if top > 0 else np.zeros(lam.shape, dtype=bool)
    return lam[keep], P[keep]


def class_rows(y: np.ndarray, weights: np.ndarray, C: int):
    """Sparse (C, n) matrix ``W`` with ``W[y_i, i] = weights_i``: ``W @ M`` sums the rows of ``M``
    by class (weighted) in O(n m) for an (n, m) ``M``, where the dense one-hot product costs
    O(n m C); ``M @ W.T`` sums its columns."""
    import scipy.sparse as sp

    n = y.shape[0]
    return sp.csr_matrix((np.asarray(weights, dtype=float), (y, np.arange(n))), shape=(C, n))


def class_gram_blocks(Gc: np.ndarray, y: np.ndarray, C: int):
    """Counts (C,), one-hot ``Y`` (n, C) and the Gram blocks of ``[Xw; M]`` from ``Gc = Xc Xc^T``
    (``Xc``: the globally centered features).

    ``M``: class means of ``Xc`` (C, d); ``Xw = Xc - M[y]``: the within-class residuals. With
    ``A = Y diag(1/n_c)`` (so ``M = A^T Xc``):

        Gww = Xw Xw^T = (I - Y A^T) Gc (I - A Y^T),   Gwm = Xw M^T = (I - Y A^T) Gc A,
        Gmm = M M^T = A^T Gc A,

    all from ``Gc A`` (n, C): O(n^2 C), no product with the d feature columns. Classes whose
    samples coincide (``tr(Gww) <= 1e-12 tr(Gc)``, rounding of the subtraction) get exactly
    zero residuals (the nearest-class-mean case of the LDAs).
    """
    Y = one_hot(y, C)
    counts = Y.sum(axis=0)
    At = class_rows(y, 1.0 / np.maximum(counts, 1.0)[y], C)  # A^T, sparse
    GA = (At @ Gc).T  # Gc A (n, C): Gc is symmetric
    Gmm = At @ GA  # (C, C)
    Gmm = 0.5 * (Gmm + Gmm.T)
    Gwm = GA - Gmm[y]
    # Gww_ij = Gc_ij - GA_{i,y_j} - GA_{j,y_i} + Gmm_{y_i,y_j} = Gc_ij - S_ij - S_ji with
    # S = H[:, y], H = GA - Gmm[y] / 2 (Gmm is symmetric): one n x n gather instead of three
    H = GA - 0.5 * Gmm[y]
    S = H[:, y]
    Gww = S + S.T  # exactly symmetric, as Gc is: no symmetrizing pass
    np.subtract(Gc, Gww, out=Gww)
    if float(np.trace(Gww)) <= 1e-12 * float(np.trace(Gc)):
        Gww = np.zeros_like(Gww)
        Gwm = np.zeros_like(Gwm)
    return counts, Y, Gww, Gwm, Gmm


def value_groups(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, sizes)``: ``codes[i]`` the index of ``b[i]`` among the distinct values of
    ``b`` in ascending order, ``sizes`` their counts; ``np.unique(b, return_inverse=True,
    return_counts=True)`` without its sort when ``b`` takes a few values that are multiples
    of 2^-53 within a few million ulps of each other (a label dissimilarity and its rounding
    noise), else through ``np.unique``.
    """
    q = b * 2.0**53
    qi = np.rint(q)
    if b.size and np.all(qi == q) and np.all(np.abs(qi) < 2.0**62):
        qi = qi.astype(np.int64)
        # cluster the values around their few modes: offsets from the minimum of each cluster
        lo, hi = int(qi.min()), int(qi.max())
        if hi - lo < 1 << 22:  # one small range: a bincount
            cnt = np.bincount(qi - lo)
            used = np.flatnonzero(cnt)
            remap = np.zeros(cnt.size, dtype=np.int64)
            remap[used] = np.arange(used.size)
            return remap[qi - lo], cnt[used]
        mid = (lo + hi) // 2  # two clusters (e.g. same class ~ 0, different class ~ 1 + 1/(C-1))
        upper = qi > mid
        lo1 = int(qi[upper].min())
        hi0 = int(qi[~upper].max()) if (~upper).any() else lo
        if hi0 - lo < 1 << 22 and hi - lo1 < 1 << 22:
            c0 = np.bincount(qi[~upper] - lo) if (~upper).any() else np.zeros(0, dtype=np.int64)
            c1 = np.bincount(qi[upper] - lo1)
            u0, u1 = np.flatnonzero(c0), np.flatnonzero(c1)
            r0 = np.zeros(c0.size, dtype=np.int64)
            r0[u0] = np.arange(u0.size)
            r1 = np.zeros(c1.size, dtype=np.int64)
            r1[u1] = np.arange(u0.size, u0.size + u1.size)
            codes = np.empty(b.size, dtype=np.int64)
            codes[~upper] = r0[qi[~upper] - lo]
            codes[upper] = r1[qi[upper] - lo1]
            return codes, np.concatenate([c0[u0], c1[u1]])
    _, codes, sizes = np.unique(b, return_inverse=True, return_counts=True)
    return codes.reshape(-1), sizes


def spearman_grouped(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of ``a`` with ``b`` (average ranks for ties on both sides, as
    ``scipy.stats.spearmanr``) when ``b`` takes few distinct values (:func:`value_groups`).

    From one ``np.sort`` of ``a``: the rank sum of ``a`` over each value group of ``b`` but the
    largest (two binary searches per member), the largest's by difference, and the
    tie-corrected rank variances of both sides. NaN when either side is constant.
    """
    N = a.shape[0]
    codes, sizes = value_groups(b)
    G = sizes.size
    if N < 2 or G < 2:
        return float("nan")
    s = np.sort(a)
    eq = s[1:] == s[:-1]
    var_a = (N * N - 1.0) / 12.0
    if eq.any():
        edges = np.flatnonzero(np.diff(np.concatenate(([0], eq.view(np.int8), [0]))))
        t = (edges[1::2] - edges[0::2] + 1).astype(np.float64)
        var_a -= float(np.sum(t**3 - t)) / (12.0 * N)
    big = int(np.argmax(sizes))
    sums = np.zeros(G)
    for g in range(G):
        if g == big:
            continue
        xs = np.sort(a[codes == g])
        sums[g] = 0.5 * float(np.sum(np.searchsorted(s, xs, "left") + np.searchsorted(s, xs, "right") + 1,
                                     dtype=np.float64))
    sums[big] = N * (N + 1) / 2.0 - (sums.sum() - sums[big])
    t = sizes.astype(np.float64)
    rb = np.cumsum(t) - t + (t + 1.0) / 2.0  # average rank of each value group of b
    var_b = (N * N - 1.0) / 12.0 - float(np.sum(t**3 - t)) / (12.0 * N)
    cov = float(rb @ sums) / N - ((N + 1) / 2.0) ** 2
    den = np.sqrt(max(var_a, 0.0) * max(var_b, 0.0))
    return float(cov / den) if den > 0 else float("nan")
