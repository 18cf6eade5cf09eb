"""The torch factorization machine behind ``fm``: a real pairwise term, determinism, uncertainty."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.history_frame import synthetic_history
from history.errors import RecommenderError
from recommender.estimators.fm import FMRecommender, MyFMRecommender, fm_score
from recommender.estimators.fm_torch import TorchFM


def _pairwise_problem(n=600, p=6, seed=0):
    """Target = z_0 * z_1 exactly: zero linear signal, pure second-order interaction."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    return sp.csr_matrix(Z), Z[:, 0] * Z[:, 1]


def _r2(pred, y):
    return 1 - np.mean((pred - y) ** 2) / np.var(y)


def test_fm_learns_a_pure_pairwise_interaction_a_linear_model_cannot():
    X, y = _pairwise_problem()
    Xt, yt = _pairwise_problem(seed=1)  # fresh rows: generalization, not memorization
    fm = TorchFM(rank=2, n_iter=100, l2_linear=1e-5, l2_factors=1e-5, random_state=0).fit(X, y)
    assert _r2(fm.predict(Xt), yt) > 0.95
    # the best linear model (least squares with intercept) explains ~nothing
    A = np.column_stack([np.ones(X.shape[0]), X.toarray()])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    assert _r2(np.column_stack([np.ones(Xt.shape[0]), Xt.toarray()]) @ coef, yt) < 0.1
    # the learned interaction is the (0, 1) pair: <v_0, v_1> ~ 1, other pairs ~ 0
    V = fm.V_[0]
    inter = V @ V.T
    assert inter[0, 1] == pytest.approx(1.0, abs=0.1)
    off = inter[np.triu_indices(6, 1)]
    assert np.abs(np.delete(off, 0)).max() < 0.1


def test_fm_score_matches_the_pairwise_definition():
    rng = np.random.default_rng(3)
    X = sp.random(20, 7, density=0.5, random_state=3, format="csr")
    w0, w, V = rng.normal(size=2), rng.normal(size=(2, 7)), rng.normal(size=(2, 7, 3))
    got = fm_score(X, w0, w, V)
    D = X.toarray()
    for s in range(2):
        ref = w0[s] + D @ w[s] + sum(D[:, i] * D[:, j] * (V[s, i] @ V[s, j])
                                     for i in range(7) for j in range(i + 1, 7))
        np.testing.assert_allclose(got[:, s], ref, rtol=1e-10, atol=1e-10)


def test_torch_fm_deterministic_with_seed_and_seed_matters():
    X, y = _pairwise_problem(n=200)
    a = TorchFM(rank=3, n_iter=30, n_members=2, random_state=5).fit(X, y).predict_members(X)
    b = TorchFM(rank=3, n_iter=30, n_members=2, random_state=5).fit(X, y).predict_members(X)
    c = TorchFM(rank=3, n_iter=30, n_members=2, random_state=6).fit(X, y).predict_members(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_torch_fm_rejects_bad_input():
    X, y = _pairwise_problem(n=20)
    with pytest.raises(ValueError, match="rows"):
        TorchFM().fit(X, y[:10])
    with pytest.raises(ValueError, match="optimizer"):
        TorchFM(optimizer="sgd").fit(X, y)
    with pytest.raises(ValueError, match="rank"):
        TorchFM(rank=0).fit(X, y)


def test_minibatch_adam_path_also_learns_the_interaction():
    X, y = _pairwise_problem(n=3000)
    Xt, yt = _pairwise_problem(seed=1)
    fm = TorchFM(rank=2, l2_linear=1e-5, l2_factors=1e-5, full_batch_max_rows=1000, batch_size=256,
                 n_epochs=30, learning_rate=0.02, random_state=0).fit(X, y)
    assert not fm.full_batch_ and _r2(fm.predict(Xt), yt) > 0.9


def test_fm_recommender_uncertainty_shape_and_members():
    h = synthetic_history(n_models=20, n_datasets=4, seed=2)
    pairs = pd.DataFrame({"model": h.model_names(), "dataset": "dataset_001"})
    rec = FMRecommender(rank=2, n_iter=20, n_members=3, features="d,m").fit(h)
    std = rec.predict_std(pairs)
    assert rec.V_.shape[0] == 3 and std.shape == (len(pairs),)
    assert np.isfinite(std).all() and (std >= 0).all() and std.max() > 0
    # std is the spread of the members, mapped to the accuracy scale
    one = FMRecommender(rank=2, n_iter=20, n_members=1, features="d,m").fit(h)
    assert np.all(one.predict_std(pairs) == 0)


def test_myfm_is_optional_with_a_clear_error(monkeypatch):
    """myfm is an extra (fm-compare), not a core dependency; without it MyFMRecommender says so."""
    import sys
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("myfm") for d in meta["dependencies"])
    assert any(d.startswith("myfm") for d in meta["optional-dependencies"]["fm-compare"])
    monkeypatch.setitem(sys.modules, "myfm", None)  # import myfm now fails as if not installed
    with pytest.raises(RecommenderError, match=r"finetune-recommender\[fm-compare\]"):
        MyFMRecommender(features="d,m", n_iter=5).fit(synthetic_history(seed=0))
