"""Numerical robustness and input validation of the MS score library."""
from __future__ import annotations

import numpy as np
import pytest

from features.scores import SCORES, ScoreInputError, compute_score, get_score, score_with_flag
from history.errors import NotFoundError

ALL = sorted(SCORES)


def problem(n=40, d=8, C=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    X = rng.standard_normal((n, d))
    X[:, :C] += 2.0 * np.eye(C)[y]
    return X, y


def extras(X, y, seed=1):
    rng = np.random.default_rng(seed)
    logits = (X - X.mean(0)) @ rng.standard_normal((X.shape[1], 6))
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    R = np.eye(int(y.max()) + 1)[y] + 0.3 * rng.standard_normal((len(y), int(y.max()) + 1))
    return P, R


#: the official configurations need d >= 32 (parc's PCA), n, d >= 64 (gbc's PCA) and
#: n >= 200 (etran_energy's lowest 0.5%); these small problems use them without
SMALL = {"gbc": {"pca_dim": None}, "parc": {"pca_dim": None}, "etran_energy": {"percent": 100}}


def run(name, X, y, P=None, R=None, **kw):
    if P is None:
        P, R = extras(np.asarray(X, dtype=float), np.asarray(y))
    spec = get_score(name)
    kw = {**SMALL.get(name, {}), **kw}
    return compute_score(name, X, y, probs=P if spec.needs_probs else None,
                         reference=R if spec.needs_reference else None, **kw)


@pytest.mark.parametrize("name,kw,match", [
    ("gbc", {}, "gbc: the official configuration reduces to pca_dim = 64"),
    ("parc", {}, "parc: the official PCA to 32 dims needs at least 32 feature dims"),
    ("etran_energy", {}, "etran_energy: the official Energy_Score averages the lowest"),
])
def test_official_configurations_refuse_inputs_they_cannot_score(name, kw, match):
    """Where the official code raises or returns NaN (PCA beyond min(n, d), an empty energy
    average) the input error says so and names the option that works."""
    X, y = problem(n=40, d=13)
    with pytest.raises(ScoreInputError, match=match):
        compute_score(name, X, y, **kw)


def finite(v):
    return isinstance(v, float) and np.isfinite(v)


@pytest.mark.parametrize("name", ALL)
def test_n_smaller_than_d(name):
    X, y = problem(n=20, d=100)
    assert finite(run(name, X, y))


@pytest.mark.parametrize("name", ALL)
def test_constant_and_duplicated_columns(name):
    X, y = problem()
    X = np.hstack([X, X[:, :3], np.full((X.shape[0], 2), 7.0)])
    assert finite(run(name, X, y))


@pytest.mark.parametrize("name", ALL)
def test_all_features_constant(name):
    """Constant features: a finite value flagged as degenerate (treated as missing downstream),
    or an input error where the official code gives NaN (sfda)."""
    X, y = problem()
    X = np.ones_like(X)
    P, R = extras(X, y)
    spec = get_score(name)
    try:
        r = score_with_flag(name, X, y, probs=P if spec.needs_probs else None,
                            reference=R if spec.needs_reference else None, **SMALL.get(name, {}))
    except ScoreInputError as exc:
        assert name in ("sfda",) and "not finite" in str(exc)
        return
    assert finite(r.value)
    if spec.uses_features:
        assert r.flag and "constant" in r.flag


@pytest.mark.parametrize("name", ALL)
def test_single_class_is_a_clear_error(name):
    X, _ = problem()
    with pytest.raises(ScoreInputError, match=rf"{name}: needs at least 2 classes"):
        run(name, X, np.zeros(X.shape[0], dtype=int))


@pytest.mark.parametrize("name", ALL)
def test_classes_with_one_sample(name):
    X, y = problem(n=30, C=3)
    y = y.copy()
    y[0], y[1] = 3, 4  # two singleton classes
    assert finite(run(name, X, y))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_features_are_named(name, bad, word):
    X, y = problem()
    P, R = extras(X, y)
    X[5, 2] = bad
    X[7, 1] = bad
    if not get_score(name).uses_features:  # LEEP, NCE never read the features: not checked
        assert finite(run(name, X, y, P, R))
        return
    with pytest.raises(ScoreInputError) as e:
        run(name, X, y, P, R)
    msg = str(e.value)
    assert msg.startswith(f"{name}: features contain 2 {word} values") and "row 5, column 2" in msg


@pytest.mark.parametrize("name", ALL)
def test_float32_close_to_float64(name):
    X, y = problem(n=50, d=12)
    X32 = X.astype(np.float32)
    P, R = extras(X, y)
    a = run(name, X32.astype(np.float64), y, P, R)
    b = run(name, X32, y, P.astype(np.float32), R.astype(np.float32))
    assert b == pytest.approx(a, rel=1e-6, abs=1e-9)  # float32 input is computed in float64
    c = run(name, X, y, P, R)
    assert b == pytest.approx(c, rel=2e-3, abs=2e-3)


@pytest.mark.parametrize("name", ALL)
def test_huge_dimension(name):
    X, y = problem(n=40, d=4096, C=4, seed=3)
    assert finite(run(name, X, y))


# ------------------------------------------------------------------------ input validation
def test_one_dimensional_features_rejected():
    X, y = problem()
    with pytest.raises(ScoreInputError, match=r"logme: features must be a 2-D array .*x\[:, None\]"):
        compute_score("logme", X[:, 0], y)


def test_row_count_mismatch_rejected():
    X, y = problem()
    with pytest.raises(ScoreInputError, match="hscore: features has 39 rows but there are 40 labels"):
        compute_score("hscore", X[:-1], y)


def test_missing_probs_and_reference():
    X, y = problem()
    with pytest.raises(ScoreInputError, match="leep: needs probs"):
        compute_score("leep", X, y)
    with pytest.raises(ScoreInputError, match="rsa: needs reference"):
        compute_score("rsa", X, y)


def test_logits_instead_of_probs_rejected():
    X, y = problem()
    logits = np.random.default_rng(0).standard_normal((len(y), 5))
    with pytest.raises(ScoreInputError, match=r"nce: probs must be source-class probabilities"):
        compute_score("nce", X, y, probs=logits)
    with pytest.raises(ScoreInputError, match=r"leep: each row of probs must sum to 1"):
        compute_score("leep", X, y, probs=np.abs(logits))


def test_unknown_option_and_unknown_score():
    X, y = problem()
    with pytest.raises(ScoreInputError, match="parc: unknown option.*pca_dims.*valid options: pca_dim"):
        compute_score("parc", X, y, pca_dims=3)
    with pytest.raises(NotFoundError, match="Did you mean 'hscore'"):
        compute_score("hscor", X, y)


def test_nan_labels_and_onehot_labels_rejected():
    X, y = problem()
    with pytest.raises(ScoreInputError, match="labels contain 1 NaN"):
        compute_score("lfc", X, np.where(np.arange(len(y)) == 3, np.nan, y.astype(float)))
    with pytest.raises(ScoreInputError, match="not one-hot"):
        compute_score("lfc", X, np.eye(3)[y])


def test_inputs_not_modified():
    X, y = problem()
    P, R = extras(X, y)
    copies = [a.copy() for a in (X, y, P, R)]
    for name in ALL:
        run(name, X, y, P, R)
    for a, b in zip((X, y, P, R), copies):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------------- real features
@pytest.fixture(scope="module")
def digits_representations():
    """load_digits (500 samples): PCA-32 of the pixels (good) vs a random 2-D projection (bad)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:500]
    X, y = X[idx], y[idx]
    good = PCA(32, random_state=0).fit_transform(X)
    bad = X @ np.random.default_rng(1).standard_normal((64, 2))
    reference = LinearDiscriminantAnalysis(n_components=9).fit_transform(X, y)  # "target model"

    def source_probs(F):  # an unsupervised 30-class "source head" on the representation
        km = KMeans(30, n_init=3, random_state=0).fit(F)
        d2 = km.transform(F) ** 2
        logits = -d2 / d2.mean()
        P = np.exp(logits - logits.max(1, keepdims=True) ) ** 8
        return P / P.sum(1, keepdims=True)

    return y, reference, (good, source_probs(good)), (bad, source_probs(bad))


@pytest.mark.parametrize("name", ALL)
def test_real_features_rank_better_representation_higher(name, digits_representations):
    y, R, (good, Pg), (bad, Pb) = digits_representations
    g = run(name, good, y, Pg, R)
    b = run(name, bad, y, Pb, R)
    assert (g > b) if SCORES[name].higher_is_better else (g < b)
