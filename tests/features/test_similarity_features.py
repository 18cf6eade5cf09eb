"""The t / k / x feature groups (text similarity, rich collaborative kernel, model x dataset
interactions) and pooled multi-source histories."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.featurizer import Featurizer, parse_groups
from features.history_frame import HistoryFrame, synthetic_history
from features.pooling import pool_histories
from history.datasets_registry import load_registry
from history.errors import RecommenderError
from recommender.protocols import make_folds
from recommender.registry import create_recommender


def test_groups_parse_and_reject():
    assert parse_groups("x,d,m,k,t") == ("d", "m", "t", "k", "x")
    with pytest.raises(RecommenderError, match="t = text similarity"):
        parse_groups("d,q")


def _dense(f, h, pairs):
    X = f.transform(pairs, h).toarray()
    return pd.DataFrame(X, columns=f.feature_names_)


def test_k_and_x_groups_without_text_are_explicitly_missing_and_leave_own_target_out():
    """Synthetic datasets have no description: the text parts are missing (indicators = 1), the
    kernel still works on the numeric facts, and a row's own target never enters its k features."""
    h = synthetic_history(12, 6, seed=4)
    f = Featurizer("d,m,k,x").fit(h)
    names = f.feature_names_
    assert {"k:collab_sim", "k:collab_nn", "k:sim_max", "k:collab:missing", "x:domain_match:missing",
            "x:log_params*t:emb_0"} <= set(names)
    assert not any(n.startswith("t:") for n in names)  # t not selected
    pairs = h.targets[["model", "dataset"]]
    D = _dense(f, h, pairs)
    assert D["k:collab:missing"].eq(0).all() and D["k:collab_sim"].std() > 0
    # the row's own target is left out: changing it changes no k feature of that row
    t2 = h.targets.copy()
    t2.loc[0, "value"] = 1.0 - t2.loc[0, "value"]
    h2 = HistoryFrame(t2, h.models, h.datasets, h.scores)
    D2 = _dense(Featurizer("d,m,k,x").fit(h2), h2, pairs)
    # standardization constants move with the data: compare the raw (unscaled) columns of row 0
    f2 = Featurizer("d,m,k,x").fit(h2)
    raw = lambda fz, hh: fz._dense_block(pairs.iloc[[0]].reset_index(drop=True), hh, fitting=False)[1][0]
    cols = [i for i, n in enumerate(f.dense_names_) if n.startswith("k:")]
    assert np.allclose(raw(f, h)[cols], raw(f2, h2)[cols])
    assert D2.shape == D.shape


def test_k_features_of_a_held_out_dataset_use_training_targets_only():
    h = synthetic_history(12, 6, seed=5)
    held = "dataset_002"
    train = h.drop_targets(datasets=[held])
    pairs = h.targets[h.targets["dataset"] == held][["model", "dataset"]].reset_index(drop=True)
    a = _dense(Featurizer("d,m,k").fit(train), train, pairs)
    t2 = h.targets.copy()
    t2.loc[t2["dataset"] == held, "value"] = 0.5  # the held-out targets change ...
    train2 = HistoryFrame(t2, h.models, h.datasets, h.scores).drop_targets(datasets=[held])
    b = _dense(Featurizer("d,m,k").fit(train2), train2, pairs)
    assert np.allclose(a.to_numpy(), b.to_numpy())  # ... and no feature moves


def test_saved_featurizer_with_new_groups_round_trips():
    h = synthetic_history(10, 5, seed=6)
    f = Featurizer("d,m,k,x").fit(h)
    pairs = h.targets[["model", "dataset"]]
    state, tables = f.get_state()
    g = Featurizer.from_state(state, tables)
    assert np.allclose(g.transform(pairs, h).toarray(), f.transform(pairs, h).toarray())
    # a state saved before the new groups existed still loads
    old = {k: v for k, v in state.items() if not k.startswith("text_") and k not in ("kernel_h2_", "src_sim_fill_")}
    assert Featurizer.from_state(old, tables).feature_names_ == f.feature_names_


def _registry_history():
    """Four registry datasets (with descriptions and class names) and models whose source datasets
    are a registry dataset, a stated pretraining corpus, and an unknown name."""
    reg = load_registry()
    dnames = ["cifar10", "cifar100", "eurosat", "resisc45"]
    recs = [reg.entries[n].store_record() for n in dnames]
    datasets = pd.DataFrame({"name": dnames, "extra": [r["extra"] for r in recs],
                             "num_samples": [r.get("num_samples") for r in recs],
                             "num_classes": [r.get("num_classes") for r in recs],
                             "domain": [r.get("domain") for r in recs]})
    mnames = ["m_cifar10", "m_eurosat", "m_in21k", "m_unknown", "m_none"]
    models = pd.DataFrame({"name": mnames, "params": [1e7, 2e7, 8e7, 3e7, 5e7],
                           "pretrain_dataset": ["cifar10", "eurosat", "imagenet-21k", "zzz-private", None]})
    rng = np.random.default_rng(0)
    rows = [(m, d, float(rng.uniform(0.3, 0.9))) for m in mnames for d in dnames]
    targets = pd.DataFrame(rows, columns=["model", "dataset", "value"])
    return HistoryFrame(targets=targets, models=models, datasets=datasets)


@pytest.mark.slow
def test_text_similarity_between_dataset_and_model_source():
    h = _registry_history()
    f = Featurizer("d,m,t").fit(h)
    pairs = h.targets[["model", "dataset"]].reset_index(drop=True)
    raw = pd.DataFrame(f._dense_block(pairs, h, fitting=False)[1], columns=f.dense_names_)
    raw[["model", "dataset"]] = pairs
    sim = raw.set_index(["model", "dataset"])["t:src_sim"]
    miss = raw.set_index(["model", "dataset"])["t:src_sim:missing"]
    # unknown or absent source dataset: explicitly missing, filled with the training median
    assert miss.loc["m_unknown"].eq(1).all() and miss.loc["m_none"].eq(1).all()
    assert miss.loc["m_cifar10"].eq(0).all() and miss.loc["m_in21k"].eq(0).all()
    assert np.allclose(sim.loc["m_unknown"], f.src_sim_fill_)
    # a model fine-tuned on cifar10 is closest to cifar10, then cifar100; the eurosat one to eurosat / resisc45
    assert sim.loc[("m_cifar10", "cifar10")] == pytest.approx(1.0, abs=1e-5)
    assert sim.loc[("m_cifar10", "cifar100")] > sim.loc[("m_cifar10", "eurosat")]
    assert sim.loc[("m_eurosat", "resisc45")] > sim.loc[("m_eurosat", "cifar100")]
    # a user dataset without description or class names: text components explicitly missing
    h2 = HistoryFrame(targets=h.targets, models=h.models,
                      datasets=pd.concat([h.datasets, pd.DataFrame({"name": ["my_data"]})], ignore_index=True))
    X = _dense(f, h2, pd.DataFrame({"model": ["m_cifar10"], "dataset": ["my_data"]}))
    assert X.loc[0, "t:emb:missing"] == 1 and X.loc[0, "t:src_sim:missing"] == 1


def _source_history(prefix, datasets, scale=1.0, seed=0, metric="accuracy"):
    h = synthetic_history(8, len(datasets), seed=seed)
    ren = dict(zip(h.datasets["name"], datasets))
    t = h.targets.assign(dataset=h.targets["dataset"].map(ren), value=h.targets["value"] * scale, metric=metric)
    t["model"] = prefix + t["model"]
    models = h.models.assign(name=prefix + h.models["name"])
    ds = h.datasets.assign(name=h.datasets["name"].map(ren))
    return HistoryFrame(targets=t, models=models, datasets=ds)


def test_pooled_history_renames_other_sources_and_holds_out_twins():
    a = _source_history("a/", ["cifar100", "dtd", "svhn_cropped"], seed=1)
    # svhn: a twin of svhn_cropped; another metric name (like TransferGraph's test_accuracy) still pools
    b = _source_history("b/", ["cifar100", "svhn", "eurosat"], scale=0.5, seed=2, metric="test_accuracy")
    pooled, counts = pool_histories([("src-a", a), ("src-b", b)])
    assert set(pooled.targets["metric"]) == {"accuracy"} and counts["src-b"]["metric"] == "test_accuracy"
    ds = set(pooled.targets["dataset"])
    assert ds == {"cifar100", "dtd", "svhn_cropped", "cifar100@src-b", "svhn@src-b", "eurosat@src-b"}
    assert counts["src-b"]["targets"] == len(b.targets) and counts["src-a"]["primary"]
    assert pooled.targets["regime"].nunique() == 1
    plan = make_folds(pooled, "lodo", datasets=["cifar100", "dtd", "svhn_cropped"], min_models=3)
    folds = {f.fold_id: f for f in plan.folds}
    assert set(folds) == {"lodo:cifar100", "lodo:dtd", "lodo:svhn_cropped"}  # only the primary is held out
    assert not {"cifar100", "cifar100@src-b"} & set(folds["lodo:cifar100"].train.targets["dataset"])
    assert not {"svhn_cropped", "svhn@src-b"} & set(folds["lodo:svhn_cropped"].train.targets["dataset"])
    assert {"cifar100@src-b", "svhn@src-b", "eurosat@src-b"} <= set(folds["lodo:dtd"].train.targets["dataset"])
    # held-out rows are the primary's own targets, in its own units
    test = folds["lodo:cifar100"].test
    assert set(test["model"]) == set(a.targets["model"])


def test_pooled_training_is_invariant_to_another_source_accuracy_scale():
    """Per-dataset standardized targets and z-scored collaborative features: a pooled source whose
    accuracies are on another scale (x 0.5 here) gives the same held-out ranking."""
    a = _source_history("a/", ["cifar100", "dtd", "svhn_cropped", "eurosat"], seed=1)
    b1 = _source_history("a/", ["caltech101", "sun397", "dmlab"], seed=2)  # the same models, other tasks
    b2 = _source_history("a/", ["caltech101", "sun397", "dmlab"], scale=0.5, seed=2)
    preds = []
    for b in (b1, b2):
        pooled, _ = pool_histories([("src-a", a), ("src-b", b)])
        fold = {f.fold_id: f for f in make_folds(pooled, "lodo", datasets=["dtd"], min_models=3).folds}["lodo:dtd"]
        # d and k are scale-free (k uses per-dataset z-scores); m's collab_acc is in raw units
        rec = create_recommender("lr", features="d,k", alphas=(1.0,))
        rec.fit(fold.train)
        p = rec.predict(fold.test[["model", "dataset"]], fold.train)
        preds.append(pd.Series(p).rank().to_numpy())
    assert np.array_equal(preds[0], preds[1])
