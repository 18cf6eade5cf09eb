"""Protocols never leak held-out targets; baselines and the evaluation loop on synthetic histories."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history_frame import HistoryFrame
from history.errors import NotFoundError, RecommenderError
from experiments import baselines as B
from experiments.evaluate import evaluate, parse_feature_sets, score_dataset
from recommender.protocols import PROTOCOLS, make_folds


def synthetic(n_models=10, datasets=("a", "b", "c", "d"), small=None, scores=True, seed=0) -> HistoryFrame:
    """Accuracy = model quality + dataset offset + noise; LogME-like score tracks it."""
    rng = np.random.default_rng(seed)
    models = [f"m{i:02d}" for i in range(n_models)]
    quality = dict(zip(models, rng.uniform(0, 0.2, n_models)))
    rows, srows = [], []
    for j, d in enumerate(datasets):
        ms = models[:2] if d == small else models
        for m in ms:
            v = 0.6 + quality[m] + 0.05 * j + rng.normal(0, 0.01)
            rows.append({"model": m, "dataset": d, "value": v})
            srows.append({"model": m, "dataset": d, "method": "logme", "value": 3 * quality[m] + rng.normal(0, .02)})
    mdf = pd.DataFrame({"name": models, "source_accuracy": [0.7 + quality[m] for m in models],
                        "depth": [18 + 10 * i for i in range(n_models)],
                        "extra": [{"source_num_samples": 1000 * 2 ** i} for i in range(n_models)]})
    mdf.loc[0, "source_accuracy"] = np.nan  # one model lacks it: median fallback
    ddf = pd.DataFrame({"name": list(datasets), "num_samples": [1000 * (j + 1) for j in range(len(datasets))]})
    return HistoryFrame(targets=pd.DataFrame(rows), models=mdf, datasets=ddf,
                        scores=pd.DataFrame(srows) if scores else None)


def _pairs(df):
    return set(zip(df["model"], df["dataset"]))


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_train_frames_never_contain_held_out_targets(protocol):
    h = synthetic()
    plan = make_folds(h, protocol, seeds=2)
    assert plan.folds
    for f in plan.folds:
        assert not (_pairs(f.train.targets) & _pairs(f.test)), f.fold_id
        assert len(f.test) >= 3
        # meta-features and MS scores survive (they are not targets)
        assert len(f.train.scores) == len(h.scores)
        assert len(f.train.models) == len(h.models)


def test_lodo_removes_the_whole_dataset():
    h = synthetic()
    plan = make_folds(h, "lodo")
    assert [f.held_out_datasets for f in plan.folds] == [["a"], ["b"], ["c"], ["d"]]
    for f in plan.folds:
        assert f.held_out_datasets[0] not in set(f.train.targets["dataset"])
        assert set(f.test["model"]) == set(h.model_names())


def test_coldstart_removes_held_out_models_everywhere():
    h = synthetic(n_models=20)
    plan = make_folds(h, "coldstart", seeds=3)
    assert len(plan.folds) == 4 * 3
    for f in plan.folds:
        assert len(f.held_out_models) == 4  # 20% of 20
        assert not set(f.held_out_models) & set(f.train.targets["model"])
        assert f.held_out_datasets[0] not in set(f.train.targets["dataset"])
        assert set(f.test["model"]) == set(f.held_out_models)
    # different seeds draw different model sets
    draws = {tuple(f.held_out_models) for f in plan.folds if f.held_out_datasets == ["a"]}
    assert len(draws) > 1


def test_setting1_keeps_other_models_of_the_dataset_and_is_reproducible():
    h = synthetic(n_models=20, datasets=("imagenet",))
    p1, p2 = make_folds(h, "setting1", seeds=5), make_folds(h, "setting1", seeds=5)
    assert len(p1.folds) == 5
    for f, g in zip(p1.folds, p2.folds):
        assert f.held_out_models == g.held_out_models
        train_models = set(f.train.targets["model"])
        assert len(train_models) == 16 and not train_models & set(f.held_out_models)


def test_setting2_trains_on_one_dataset_only():
    h = synthetic()
    plan = make_folds(h, "setting2")
    assert len(plan.folds) == 4
    for f in plan.folds:
        train_ds = set(f.train.targets["dataset"])
        assert len(train_ds) == 1 and not train_ds & set(f.test["dataset"])
        assert set(f.test["model"]) <= set(f.train.targets["model"])


def test_small_dataset_is_skipped_with_reason_and_counted():
    h = synthetic(small="c")
    plan = make_folds(h, "lodo")
    assert plan.n_skipped == 1
    assert plan.skipped[0]["dataset"] == "c" and "only 2 model(s)" in plan.skipped[0]["reason"]
    assert "c" not in {d for f in plan.folds for d in f.held_out_datasets}


def test_single_dataset_lodo_refused():
    h = synthetic(datasets=("imagenet",))
    with pytest.raises(RecommenderError, match="lodo needs at least 2 datasets.*setting1"):
        make_folds(h, "lodo")


def test_unknown_protocol_and_dataset_and_mixed_regimes():
    h = synthetic()
    with pytest.raises(NotFoundError, match="Valid protocols: .*lodo.*coldstart"):
        make_folds(h, "loo")
    with pytest.raises(NotFoundError, match="datasets with targets: a, b, c, d"):
        make_folds(h, "lodo", datasets=["zz"])
    t = h.targets.copy()
    t.loc[t.index[:5], "regime"] = "vtab-1k"
    mixed = HistoryFrame(targets=t, models=h.models, datasets=h.datasets, scores=h.scores)
    with pytest.raises(RecommenderError, match="--regime"):
        make_folds(mixed, "lodo")


# ---------------------------------------------------------------------- baselines
def test_baseline_resolution_and_errors():
    h = synthetic()
    labels = [b.label for b in B.resolve_baselines("all", h)]
    assert {"ms:logme", "source-accuracy", "model-size", "model-mean", "parc-heuristic", "hybrid:logme",
            "parc-ensemble:logme"} <= set(labels)
    assert B.resolve_baselines("none", h) == []
    with pytest.raises(NotFoundError, match="Valid baselines: .*model-mean"):
        B.resolve_baselines("model-meen", h)
    with pytest.raises(NotFoundError, match="stored methods: logme"):
        B.resolve_baselines("ms:hscore", h)
    no_scores = synthetic(scores=False)
    specs = {b.label: b for b in B.resolve_baselines("all", no_scores)}
    assert specs["ms:*"].unavailable and "no MS scores" in specs["ms:*"].unavailable


def test_baselines_compute_expected_values():
    h = synthetic()
    fold = make_folds(h, "lodo", datasets=["d"]).folds[0]
    pairs = fold.test[["model", "dataset"]]
    mm = B.BASELINES["model-mean"].fn(fold.train, pairs, fold.train)
    expected = h.targets[h.targets["dataset"] != "d"].groupby("model")["value"].mean()
    np.testing.assert_allclose(mm, expected.reindex(pairs["model"]).to_numpy())
    sa = B.BASELINES["source-accuracy"].fn(fold.train, pairs, fold.train)
    known = h.models.set_index("name")["source_accuracy"]
    assert sa[0] == pytest.approx(known.dropna().median())  # m00 imputed with the median
    ph = B.BASELINES["parc-heuristic"].fn(fold.train, pairs, fold.train)
    idx = [int(m[1:]) for m in pairs["model"]]
    np.testing.assert_allclose(ph, [18 + 10 * i + np.log(1000 * 2 ** i) - np.log(4000) for i in idx])
    hy = B.BASELINES["hybrid"].fn(fold.train, pairs.reset_index(drop=True), fold.train, method="logme")
    top5 = np.argsort(-sa, kind="stable")[:5]
    assert set(np.argsort(-hy)[:5]) == set(top5)


def test_parc_heuristic_needs_depth_and_is_reported_na():
    h = synthetic()
    h.models["depth"] = np.nan
    with pytest.raises(B.BaselineUnavailable, match="depth"):
        B.BASELINES["parc-heuristic"].fn(h, h.targets[["model", "dataset"]], h)
    res = evaluate(h, protocol="lodo", recommenders="none", baselines="parc-heuristic,model-mean", progress=False)
    assert "depth" in res.unavailable["parc-heuristic"]
    s = res.summary().set_index("method")
    assert s.loc["parc-heuristic", "note"].startswith("n/a")


# ---------------------------------------------------------------------- evaluation loop (baselines only)
def test_evaluate_baselines_loop_and_missing_predictions():
    h = synthetic()
    res = evaluate(h, protocol="lodo", recommenders="none", baselines="model-mean,ms:logme,parc-heuristic",
                   progress=False)
    s = res.summary().set_index("method")
    assert set(res.rows["dataset"]) == {"a", "b", "c", "d"}
    # the synthetic truth is quality + offset: the model mean recovers it almost perfectly
    assert s.loc["model-mean", "pearson_mean"] > 0.9
    assert s.loc["model-mean", "regret@3_mean"] < 1.0
    assert s.loc["ms:logme", "n"] == 4
    js = res.to_dict()
    assert js["config"]["protocol"] == "lodo" and len(js["results"]) == 12


def test_score_dataset_counts_missing():
    out = score_dataset([0.5, 0.9, 0.7, 0.6], [1.0, np.nan, 3.0, 2.0])
    assert out["n_missing"] == 1
    assert out["regret@1"] == pytest.approx(20.0)  # best model unscored: ranked last
    assert out["pearson"] == pytest.approx(np.corrcoef([0.5, 0.7, 0.6], [1, 3, 2])[0, 1])


def test_parse_feature_sets():
    assert parse_feature_sets(["d,m;d,m,s", "d, m"]) == ["d,m", "d,m,s"]
    assert parse_feature_sets(["d,m,t,k,x"]) == ["d,m,t,k,x"]
    with pytest.raises(RecommenderError, match="unknown feature group 'q'"):
        parse_feature_sets(["d,q"])
