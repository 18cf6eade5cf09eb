"""Shared estimator checks over the recommender registry (like sklearn's check_estimator)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from features.history_frame import HistoryFrame, synthetic_history
from history.errors import NotFoundError, RecommenderError, SchemaMismatchError
from recommender.base import BaseRecommender, NotFittedError
from recommender.io import load_recommender
from recommender.registry import RECOMMENDERS, create_recommender, list_recommenders

FAST = {"fm": {"n_iter": 60, "n_kept_samples": 20, "rank": 4},
        "lgbm": {"n_estimators": 60}, "lgbm-rank": {"n_estimators": 60}}
NAMES = list(RECOMMENDERS)


def make(name, **kw):
    # speed-ups only for the parameters the estimator has (fm's are being reworked)
    fast = {k: v for k, v in FAST.get(name, {}).items() if k in RECOMMENDERS[name].cls._param_names()}
    return create_recommender(name, **{**fast, **kw})


@pytest.fixture(scope="module")
def hist():
    return synthetic_history(n_models=40, n_datasets=6, seed=0)


@pytest.fixture(scope="module")
def fitted(hist):
    return {n: make(n).fit(hist) for n in NAMES}


def test_registry_names_and_unknown():
    assert {"lr", "fm", "lgbm", "lgbm-rank"} <= set(list_recommenders())
    with pytest.raises(NotFoundError, match="Valid recommenders: .*lgbm"):
        create_recommender("lgbn")
    with pytest.raises(RecommenderError, match="invalid parameter"):
        create_recommender("lr", nonsense=1)


@pytest.mark.parametrize("name", NAMES)
def test_entry_metadata(name):
    e = RECOMMENDERS[name]
    assert e.name == name and issubclass(e.cls, BaseRecommender) and e.summary
    assert e.has_uncertainty == e.cls.has_uncertainty


@pytest.mark.parametrize("name", NAMES)
def test_params_only_in_init_and_clone(name):
    rec = make(name, features="d,m", random_state=3)
    params = rec.get_params()
    assert params["features"] == "d,m" and params["random_state"] == 3
    assert not [k for k in vars(rec) if k.endswith("_")]  # nothing fitted in __init__
    c = rec.clone()
    assert c is not rec and c.get_params() == params
    rec.set_params(random_state=5)
    assert rec.get_params()["random_state"] == 5
    with pytest.raises(NotFittedError):
        rec.check_is_fitted()
    with pytest.raises(NotFittedError):
        rec.predict(pd.DataFrame({"model": ["a"], "dataset": ["b"]}))


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_predicts(name, hist, fitted):
    rec = make(name)
    assert rec.fit(hist) is rec
    fitted_attrs = [k for k in vars(rec) if not k.startswith("_") and k not in rec.get_params()]
    assert fitted_attrs and all(k.endswith("_") for k in fitted_attrs)
    pairs = hist.targets[["model", "dataset"]]
    p = rec.predict(pairs)
    assert p.shape == (len(pairs),) and np.isfinite(p).all()
    std = rec.predict_std(pairs)
    if RECOMMENDERS[name].has_uncertainty:
        assert std.shape == p.shape and (std >= 0).all() and std.max() > 0
    else:
        assert std is None


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, hist, fitted):
    pairs = hist.targets[["model", "dataset"]]
    a = fitted[name].predict(pairs)
    b = make(name).fit(hist).predict(pairs)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_identical(name, hist, fitted, tmp_path):
    rec = fitted[name]
    pairs = pd.concat([hist.targets[["model", "dataset"]],
                       pd.DataFrame({"model": ["model_00001", "unknown"], "dataset": ["new_ds", "dataset_000"]})])
    rec.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["recommender"] == name and meta["feature_schema"]["feature_names"] == rec.featurizer_.feature_names_
    assert not list((tmp_path / "m").glob("*.pkl")) and not list((tmp_path / "m").glob("*.pickle"))
    back = load_recommender(tmp_path / "m")
    assert type(back) is type(rec) and back.get_params() == rec.get_params()
    np.testing.assert_array_equal(back.predict(pairs), rec.predict(pairs))
    assert back.recommend("dataset_000", k=3)["model"].tolist() == rec.recommend("dataset_000", k=3)["model"].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_recommend_ranked_and_cold_start(name, hist, fitted):
    rec = fitted[name]
    top = rec.recommend("dataset_001", k=5)
    assert list(top.columns[:3]) == ["rank", "model", "predicted"] and len(top) == 5
    assert top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert top["predicted"].is_monotonic_decreasing
    # a dataset that had no targets in training (cold start), described by its meta
    new = HistoryFrame(hist.targets, hist.models,
                       pd.concat([hist.datasets, pd.DataFrame({"name": ["brand_new"], "num_samples": [5000],
                                                               "num_classes": [20]})]), hist.scores)
    cold = rec.recommend("brand_new", k=None, history=new)
    assert len(cold) == len(hist.model_names()) and np.isfinite(cold["predicted"]).all()
    ex = rec.recommend("dataset_001", k=None, exclude=[top["model"].iloc[0]])
    assert top["model"].iloc[0] not in set(ex["model"])


@pytest.mark.parametrize("name", NAMES)
def test_single_dataset_predicts_unseen_models_from_meta(name):
    """Setting 1 on a one-dataset history: fit on 80% of the models of a single dataset,
    predict the other 20% (no targets of theirs anywhere) from their meta-features only.
    In the synthetic history ``params`` and ``source_accuracy`` reflect model quality, so
    the ranking must be clearly better than random (random Spearman ~ 0 +- 0.2 with 24
    held-out models; with those two columns permuted across models every recommender
    measured between -0.15 and 0.15)."""
    h = synthetic_history(n_models=120, n_datasets=2, seed=7, noise=0.005, with_scores=False)
    one = h.keep_targets(datasets=["dataset_000"])
    test_models = h.model_names()[::5]
    train = one.drop_targets(models=test_models)
    assert train.target_datasets() == ["dataset_000"]
    rec = make(name, features="d,m").fit(train)
    truth = one.targets[one.targets["model"].isin(test_models)]
    pred = rec.predict(truth[["model", "dataset"]], history=one)
    assert np.isfinite(pred).all()
    assert spearmanr(pred, truth["value"])[0] > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_refuses_empty_history_and_wrong_type(name, hist):
    empty = hist.keep_targets(datasets=["no_such_dataset"])
    with pytest.raises(RecommenderError, match="no fine-tuning targets"):
        make(name).fit(empty)
    with pytest.raises(RecommenderError, match="HistoryFrame"):
        make(name).fit(hist.targets)


@pytest.mark.parametrize("name", NAMES)
def test_beats_random_ranking_on_structured_history(name):
    """Leave one dataset out of a latent-factor history: the ranking must be clearly better
    than random (random Spearman ~ 0 +- 0.16 with 40 models)."""
    h = synthetic_history(n_models=40, n_datasets=8, seed=11, noise=0.005)
    rhos = []
    for d in ["dataset_000", "dataset_003", "dataset_006"]:
        truth = h.targets[h.targets["dataset"] == d]
        rec = make(name).fit(h.drop_targets(datasets=[d]))
        rhos.append(spearmanr(rec.predict(truth[["model", "dataset"]], history=h), truth["value"])[0])
    assert np.mean(rhos) > 0.5, rhos


def test_invalid_params_are_reported(hist):
    with pytest.raises(RecommenderError, match="invalid feature groups"):
        make("lr", features="d,q").fit(hist)
    with pytest.raises(RecommenderError, match="target_norm"):
        make("lr", target_norm="zz").fit(hist)


def test_load_errors(hist, fitted, tmp_path):
    with pytest.raises(NotFoundError):
        load_recommender(tmp_path / "nope")
    src = tmp_path / "m"
    fitted["lr"].save(src)
    # schema version mismatch
    bad = tmp_path / "v"
    shutil.copytree(src, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["feature_schema_version"] = 999
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaMismatchError, match="schema version 999"):
        load_recommender(bad)
    # feature names that do not match
    bad = tmp_path / "n"
    shutil.copytree(src, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["feature_schema"]["feature_names"] = meta["feature_schema"]["feature_names"][:-1]
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaMismatchError, match="feature names"):
        load_recommender(bad)
    # corrupt / missing files name the file
    bad = tmp_path / "c"
    shutil.copytree(src, bad)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(RecommenderError, match="meta.json"):
        load_recommender(bad)
    bad = tmp_path / "r"
    shutil.copytree(src, bad)
    (bad / "ridge.npz").unlink()
    with pytest.raises(RecommenderError, match="ridge.npz"):
        load_recommender(bad)
    bad = tmp_path / "p"
    shutil.copytree(src, bad)
    (bad / "train_z.parquet").write_bytes(b"garbage")
    with pytest.raises(RecommenderError, match="train_z.parquet"):
        load_recommender(bad)
