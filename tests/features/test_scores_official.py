"""Every score with an official function reproduces it (tests/features/score_references.py:
line-for-line ports, repository, commit and function named there).

Inputs: Gaussian class mixtures (n <= d and n > d), the same with dead units (all-zero
feature columns, as ReLU networks produce), and real features: the penultimate layer of a
tiny CNN trained on scikit-learn's ``load_digits``. Tolerance 1e-6 relative (the official
GBC runs in float32: 1e-6 there too); NLEEP's official mixture is unseeded, compared at
the same ``random_state``.
"""
from __future__ import annotations


import numpy as np
import pytest
from sklearn.decomposition import PCA

from experiments.bench_scores import make_inputs
from features.scores import ScoreInputError, compute_score, etran_combine, get_score, score_with_flag
from features.scores._linalg import sklearn_randomized_pca
from features.scores.probabilistic import nleep
from tests.features import score_references as R

pytestmark = pytest.mark.timeout(300)


def _mixture(seed, n, d, C, quality=0.8, dead=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rng.shuffle(y)
    X = quality * rng.standard_normal((C, d))[y] + 2.0 * rng.standard_normal((n, d))
    if dead:
        X[:, :dead] = 0.0
    return X, y


@pytest.fixture(scope="module")
def cnn_features():
    """Penultimate ReLU features (64 units, some dead) of a tiny CNN trained 3 epochs on half of
    load_digits, on 400 samples of the other half."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = load_digits()
        x = torch.as_tensor((d.images / 16.0).astype(np.float32)[:, None])
        y = d.target.astype(np.int64)
        perm = np.random.default_rng(0).permutation(len(y))
        src, tgt = perm[:900], perm[900:1300]
        torch.manual_seed(0)
        body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(128, 64), nn.ReLU())
        model = nn.Sequential(body, nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        yt = torch.as_tensor(y)
        for _ in range(3):
            for b in torch.randperm(len(src), generator=torch.Generator().manual_seed(1)).split(32):
                idx = torch.as_tensor(src)[b]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), yt[idx]).backward()
                opt.step()
        with torch.no_grad():
            F = body(x[tgt]).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(threads)
    return F, y[tgt]


def _check(name, X, y, rel=1e-6, **kw):
    ref_fn = R.REFERENCES[name][1]
    want = ref_fn(X, y, None, None, **kw.pop("ref_kw", {}))
    got = compute_score(name, X, y, **kw)
    assert got == pytest.approx(want, rel=rel, abs=1e-12), (name, got, want)


CASES = {"n<d": (0, 150, 300, 10, 0), "n>d": (1, 400, 100, 10, 0), "dead": (2, 300, 120, 8, 50)}
OFFICIAL = ["parc", "gbc", "sfda", "etran_energy", "etran_lda", "reg_hscore", "nleep", "hscore", "knn1",
            "transrate"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", OFFICIAL)
def test_official_agreement_on_mixtures(name, case):
    seed, n, d, C, dead = CASES[case]
    X, y = _mixture(seed, n, d, C, dead=dead)
    if name == "etran_energy":
        X = 0.3 * X  # logits of a sensible size
    if name == "gbc" and min(n, d) < 64:
        pytest.skip("the official PCA needs n, d >= 64")
    if name == "etran_energy" and n < 200:
        pytest.skip("the official energy averages no sample below n = 200 (NaN)")
    if name == "nleep":
        _check(name, X, y, component_ratio=2, ref_kw={"component_ratio": 2})
        return
    _check(name, X, y)


@pytest.mark.parametrize("name", OFFICIAL + ["split_lr"])
def test_official_agreement_on_cnn_features(cnn_features, name):
    X, y = cnn_features
    assert (X.max(axis=0) == 0).any()  # some ReLU units are dead on the probe
    if name == "split_lr":
        _check(name, X, y, seed=None)
        return
    if name == "nleep":
        _check(name, X, y, component_ratio=1, ref_kw={"component_ratio": 1})
        return
    _check(name, X, y)


@pytest.mark.parametrize("component_ratio", [2, 5])
def test_nleep_equals_official_on_cnn_features_at_more_components(cnn_features, component_ratio):
    """The digit CNN's features (3 PCA dims) with 20 and 50 components (the official ratio 5),
    at two seeds: the batched EM (features.scores._mixture) against scikit-learn's."""
    X, y = cnn_features
    for seed in (0, 1):
        _check("nleep", X, y, component_ratio=component_ratio, seed=seed,
               ref_kw={"component_ratio": component_ratio, "random_state": seed})


#: experiments.bench_scores' nleep sets (d = 64, C = 10, float32): its main set and agreement
#: qualities (n, seed, quality); n = 5000 is the n > d shape the bench also times
BENCH_SETS = [(500, 0, 1.0), (500, 1, 0.1), (500, 3, 0.55), (500, 5, 1.0), (5000, 0, 1.0), (5000, 2, 0.55)]


@pytest.mark.parametrize("n, seed, quality", BENCH_SETS)
def test_nleep_equals_official_on_the_bench_sets(n, seed, quality):
    X, y, _, _ = make_inputs(n, 64, 10, 1000, seed=seed, quality=quality)
    want = R.nleep_official(X.astype(np.float64), y)
    assert compute_score("nleep", X, y) == pytest.approx(want, rel=1e-6, abs=1e-12)
    # called directly on the float32 features: cast to float64 as compute_score does (scikit-learn
    # would fit float32, and fail: ill-defined covariances)
    assert nleep(X, y) == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_nleep_ill_defined_covariance_is_one_actionable_line():
    """Where the official mixture raises scikit-learn's ValueError (features so large that
    reg_covar is lost), nleep raises ScoreInputError: one line naming the fixes."""
    X, y, _, _ = make_inputs(500, 64, 10, 1000)
    X = X.astype(np.float64) * 1e8
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        R.nleep_official(X, y)
    for call in (lambda: compute_score("nleep", X, y), lambda: nleep(X, y)):
        with pytest.raises(ScoreInputError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "not positive definite" in msg
        assert "component_ratio" in msg and "scale the features down" in msg


def test_logme_equals_thuml_where_n_exceeds_d(cnn_features):
    """n > D: the official fixed point stops at a 1e-3 tolerance after <= 11 steps; ours runs
    to convergence. Same evidence to 1e-4."""
    X, y = cnn_features
    assert compute_score("logme", X, y) == pytest.approx(R.logme_thuml(X, y), rel=1e-4)


def test_logme_differs_from_thuml_where_n_below_d_by_the_dropped_term():
    """n <= D: thuml drops (D - k) log alpha; adding it back to the official alpha gives ours."""
    X, y = _mixture(3, 60, 200, 4)
    ours, theirs = compute_score("logme", X, y), R.logme_thuml(X, y)
    assert abs(ours - theirs) > 0.1 * abs(theirs)


def test_etran_combine_is_the_official_tw_combination():
    e = {"a": 5.0, "b": 7.5, "c": 6.0}
    c = {"a": 0.9, "b": 0.6, "c": 0.7}
    assert etran_combine(e, c) == pytest.approx(R.etran_combine_official(e, c))


def test_sfda_is_flagged_at_its_bound():
    X, y = _mixture(4, 100, 300, 5)
    r = score_with_flag("sfda", X, y)
    assert r.value == 1.0 and r.flag and "bound 1.0" in r.flag
    noise = np.random.default_rng(5).standard_normal((100, 300))
    r = score_with_flag("sfda", noise, y)  # pure noise: 1.0 too when n <= d
    assert r.value == 1.0 and r.flag


def test_one_sample_per_class_is_flagged_for_every_score():
    X, _ = _mixture(6, 12, 40, 3)
    y = np.arange(12)
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(5), 12)
    for name in ["hscore", "reg_hscore", "logme", "lfc", "leep", "nce", "transrate"]:
        spec = get_score(name)
        r = score_with_flag(name, X, y, probs=P if spec.needs_probs else None)
        assert r.flag and "C = n" in r.flag, name


def test_hscore_at_rank_bound_is_flagged():
    X, y = _mixture(8, 200, 3, 10, quality=5.0)  # d = 3 < C - 1: H <= d, reached
    r = score_with_flag("hscore", X, y)
    if r.value >= 3 * (1 - 1e-9):
        assert r.flag and "bound d = 3" in r.flag
    X = np.random.default_rng(9).standard_normal((30, 4))
    r = score_with_flag("hscore", X, np.arange(30) % 15)
    assert r.flag is None or "bound" in r.flag


def test_near_constant_features_are_flagged():
    X, y = _mixture(10, 60, 20, 3)
    for name in ["logme", "sfda", "etran_v", "gbc_diag", "lfc"]:
        r = score_with_flag(name, 1.0 + 1e-9 * X, y)
        assert r.flag and "constant" in r.flag, name
        assert score_with_flag(name, X, y).flag is None or name == "sfda", name


@pytest.mark.parametrize("n, d, dead, iterated_power", [(150, 300, 0, 1), (150, 300, 100, 1), (400, 100, 30, 1),
                                                        (40, 35, 5, 1), (64, 64, 0, 1), (300, 120, 50, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_randomized_pca_is_sklearns_pca(n, d, dead, iterated_power, dtype):
    """parc's PCA (features.scores._linalg.sklearn_randomized_pca) repeats scikit-learn's
    ``PCA(svd_solver="randomized")`` operation for operation: the same floats at a fixed seed,
    with dead (all-zero) units, n < d (transposed route), n > d, n = d, k + 10 > min(n, d),
    and the LU-normalized power iteration (iterated_power > 2)."""
    X, _ = _mixture(n + d, n, d, 10, dead=dead)
    X = np.maximum(X, 0.0).astype(dtype)  # ReLU-like, with the dead units all zero
    k = min(32, n)
    want = PCA(n_components=k, svd_solver="randomized", random_state=1919,
               iterated_power=iterated_power).fit_transform(X)
    got = sklearn_randomized_pca(X, k, 1919, n_iter=iterated_power)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_fast_randomized_pca_is_sklearns_pca_on_cnn_features(cnn_features):
    X, _ = cnn_features
    want = PCA(n_components=32, svd_solver="randomized", random_state=1919, iterated_power=1).fit_transform(X)
    np.testing.assert_array_equal(sklearn_randomized_pca(X, 32, 1919), want)
