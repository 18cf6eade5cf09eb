"""Featurizer, HistoryFrame and model meta (params / GMACs) tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.featurizer import FEATURE_SCHEMA_VERSION, Featurizer, parse_groups
from features.history_frame import HistoryFrame, synthetic_history
from features.model_meta import count_gmacs, count_params, fill_model_meta
from history.errors import RecommenderError, SchemaMismatchError


@pytest.fixture(scope="module")
def hist():
    return synthetic_history(n_models=30, n_datasets=5, seed=1)


def test_history_frame_from_store(store):
    store.commit(
        models=[{"name": "a", "params": 1e6}, {"name": "b"}],
        datasets=[{"name": "x", "num_samples": 100, "num_classes": 10}, {"name": "y"}],
        jobs=[{"model": "a", "dataset": "x", "value": 0.5, "source": "s1"},
              {"model": "a", "dataset": "x", "value": 0.7, "source": "s1", "hparams": {"lr": 0.1}},
              {"model": "b", "dataset": "y", "value": 0.6, "source": "s2"}],
        scores=[{"model": "a", "dataset": "x", "method": "logme", "value": 1.0, "seed": 0},
                {"model": "a", "dataset": "x", "method": "logme", "value": 3.0, "seed": 1}])
    hf = HistoryFrame.from_store(store)
    t = hf.targets.set_index(["model", "dataset"])
    assert t.loc[("a", "x"), "value"] == pytest.approx(0.7)  # rule "best"
    assert t.loc[("a", "x"), "n_jobs"] == 2
    assert hf.scores["value"].tolist() == [2.0]  # mean over seeds
    assert HistoryFrame.from_store(store, rule="mean").targets.set_index(["model", "dataset"]) \
        .loc[("a", "x"), "value"] == pytest.approx(0.6)
    one = HistoryFrame.from_store(store, source="s2")
    assert one.model_names() == ["b"] and len(one.targets) == 1


def test_drop_and_keep_targets_keep_meta(hist):
    d0 = hist.target_datasets()[0]
    dropped = hist.drop_targets(datasets=[d0])
    assert d0 not in set(dropped.targets["dataset"])
    assert len(dropped.scores) == len(hist.scores)  # MS scores are not targets
    assert dropped.dataset_names() == hist.dataset_names()
    kept = hist.keep_targets(datasets=[d0])
    assert set(kept.targets["dataset"]) == {d0}
    pair = hist.targets.iloc[[0]][["model", "dataset"]]
    assert len(hist.drop_targets(pairs=pair).targets) == len(hist.targets) - 1
    assert len(hist.targets) == 150  # the original is untouched


def test_parse_groups():
    assert parse_groups("s,d") == ("d", "s")
    with pytest.raises(RecommenderError, match="invalid feature groups"):
        parse_groups("d,q")


@pytest.mark.parametrize("groups", ["d", "m", "s", "d,m", "d,m,s"])
def test_transform_shape_names_and_groups(hist, groups):
    fz = Featurizer(groups).fit(hist)
    X = fz.transform(hist.targets[["model", "dataset"]], hist)
    assert sp.issparse(X) and X.dtype == np.float32
    assert X.shape == (len(hist.targets), len(fz.feature_names_))
    assert len(set(fz.feature_names_)) == len(fz.feature_names_)
    prefixes = {n.split(":")[0] for n in fz.feature_names_}
    assert prefixes == set(parse_groups(groups))
    assert np.isfinite(X.toarray()).all()
    assert fz.schema()["version"] == FEATURE_SCHEMA_VERSION


def test_unknown_dataset_and_model_are_all_zero_onehots(hist):
    fz = Featurizer("d,m,s", model_ids=True).fit(hist)
    pairs = pd.DataFrame({"model": ["model_00000", "brand_new"], "dataset": ["unseen", "dataset_000"]})
    X = fz.transform(pairs).toarray()
    names = np.array(fz.feature_names_)
    did = np.char.startswith(names.astype(str), "d:id=")
    mid = np.char.startswith(names.astype(str), "m:id=")
    assert X[0, did].sum() == 0 and X[0, mid].sum() == 1
    assert X[1, did].sum() == 1 and X[1, mid].sum() == 0
    # the new model has no meta: missing indicators are on, never a silent zero
    j = fz.feature_names_.index("m:log_params:missing")
    assert X[1, j] == 1 and X[0, j] == 0
    assert X[1, fz.feature_names_.index("m:collab:missing")] == 1


def test_missing_meta_imputed_with_train_median(hist):
    fz = Featurizer("m").fit(hist)
    train_models = hist.models[hist.models["name"].isin(hist.target_models())]
    med = np.nanmedian(train_models["source_accuracy"].astype(float))
    assert fz.model_medians_["source_accuracy"] == pytest.approx(med)


def test_score_z_per_dataset(hist):
    """Scores are standardized within each dataset: shifting one dataset's scores changes nothing."""
    fz = Featurizer("s").fit(hist)
    pairs = hist.targets[["model", "dataset"]]
    X1 = fz.transform(pairs, hist).toarray()
    s2 = hist.scores.copy()
    s2.loc[s2["dataset"] == "dataset_001", "value"] = s2.loc[s2["dataset"] == "dataset_001", "value"] * 7 + 100
    X2 = fz.transform(pairs, HistoryFrame(hist.targets, hist.models, hist.datasets, s2)).toarray()
    np.testing.assert_allclose(X1, X2, atol=1e-4)
    j = fz.feature_names_.index("s:z:proxy")
    for d, g in pd.DataFrame({"d": pairs["dataset"].values, "z": X1[:, j]}).groupby("d"):
        assert abs(g["z"].mean()) < 0.2, d


def test_collab_never_uses_the_rows_own_target(hist):
    """Changing one target must not change that row's own collaborative features."""
    pairs = hist.targets[["model", "dataset"]]
    fz1 = Featurizer("m").fit(hist)
    t2 = hist.targets.copy()
    t2.loc[0, "value"] = 0.0 if t2.loc[0, "value"] > 0.5 else 1.0
    h2 = HistoryFrame(t2, hist.models, hist.datasets, hist.scores)
    fz2 = Featurizer("m").fit(h2)
    cols = [fz1.feature_names_.index(c) for c in ("m:collab_mean", "m:collab_acc")]
    a = fz1.transform(pairs.iloc[[0]]).toarray()[0, cols] * np.asarray(fz1.scale_std_)[cols]
    b = fz2.transform(pairs.iloc[[0]]).toarray()[0, cols] * np.asarray(fz2.scale_std_)[cols]
    # un-standardize: the raw LOO statistics of row 0 only depend on the other datasets
    a += np.asarray(fz1.scale_mean_)[cols]
    b += np.asarray(fz2.scale_mean_)[cols]
    assert a[1] == pytest.approx(b[1], abs=1e-6)  # raw accuracy mean over other datasets


def test_held_out_dataset_targets_do_not_leak(hist):
    """Features of a held-out dataset do not depend on its targets."""
    d = "dataset_002"
    pairs = hist.targets.loc[hist.targets["dataset"] == d, ["model", "dataset"]]
    train = hist.drop_targets(datasets=[d])
    X1 = Featurizer("d,m,s").fit(train).transform(pairs, hist).toarray()
    t2 = hist.targets.copy()
    t2.loc[t2["dataset"] == d, "value"] = 1 - t2.loc[t2["dataset"] == d, "value"]
    h2 = HistoryFrame(t2, hist.models, hist.datasets, hist.scores)
    X2 = Featurizer("d,m,s").fit(h2.drop_targets(datasets=[d])).transform(pairs, h2).toarray()
    np.testing.assert_array_equal(X1, X2)


def test_state_roundtrip(hist, tmp_path):
    fz = Featurizer("d,m,s").fit(hist)
    state, tables = fz.get_state()
    import json

    state = json.loads(json.dumps(state))
    for k, df in tables.items():
        df.to_parquet(tmp_path / f"{k}.parquet")
    tables = {k: pd.read_parquet(tmp_path / f"{k}.parquet") for k in tables}
    fz2 = Featurizer.from_state(state, tables)
    pairs = hist.targets[["model", "dataset"]]
    np.testing.assert_array_equal(fz.transform(pairs).toarray(), fz2.transform(pairs).toarray())
    state["schema_version"] = FEATURE_SCHEMA_VERSION + 1
    with pytest.raises(SchemaMismatchError, match="schema version"):
        Featurizer.from_state(state, tables)


def test_bad_pairs_and_unfitted(hist):
    with pytest.raises(RecommenderError, match="not fitted"):
        Featurizer().transform(hist.targets)
    fz = Featurizer().fit(hist)
    with pytest.raises(RecommenderError, match="'model' and 'dataset'"):
        fz.transform(pd.DataFrame({"model": ["a"]}))


def test_vectorized_on_many_models():
    import time

    h = synthetic_history(n_models=3000, n_datasets=20, seed=2, with_scores=False)
    fz = Featurizer("d,m", model_ids=True).fit(h)
    t0 = time.perf_counter()
    X = fz.transform(h.targets[["model", "dataset"]])
    assert X.shape[0] == 60000 and X.shape[1] > 3000
    assert time.perf_counter() - t0 < 20  # generous: a per-row Python loop would take minutes


# ---------------------------------------------------------------- model meta
def test_gmacs_of_a_tiny_convnet_match_hand_count(store):
    torch = pytest.importorskip("torch")

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False),  # 8x8 output map
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10, bias=False),
    )
    macs = 3 * 8 * 3 * 3 * 8 * 8 + 8 * 8 * 8 * 10
    assert count_gmacs(net, 8) == pytest.approx(macs / 1e9)
    assert count_params(net) == 3 * 8 * 9 + 512 * 10
    store.commit(models=[{"name": "tiny", "input_size": 8}])
    out = fill_model_meta(store, "tiny", module=net)
    row = store.get_model("tiny")
    assert row["gmacs"] == pytest.approx(macs / 1e9) and row["params"] == 3 * 8 * 9 + 5120
    assert set(out) == {"params", "gmacs"}
    assert fill_model_meta(store, "tiny", module=net) == {}  # already known: nothing rewritten


def test_model_meta_clear_error_on_bad_input(store):
    torch = pytest.importorskip("torch")

    with pytest.raises(RecommenderError, match="cannot run"):
        count_gmacs(torch.nn.Linear(5, 2), 8)


def test_interactions_off_by_default_and_centered_products(hist):
    plain = Featurizer("d,m").fit(hist)
    assert not [n for n in plain.feature_names_ if n.startswith("x:")]
    fz = Featurizer("d,m", interactions=True).fit(hist)
    names = fz.feature_names_
    assert "x:input_size*log_num_classes" in names and "x:log_params*log_samples_per_class" in names
    assert not [n for n in Featurizer("m", interactions=True).fit(hist).feature_names_ if n.startswith("x:")]
    pairs = hist.targets[["model", "dataset"]].iloc[:20]
    _, dense, _ = fz._dense_block(pairs.reset_index(drop=True), None, fitting=False)
    col = dict(zip(fz.dense_names_, dense.T))
    expect = (col["m:input_size"] - fz.model_medians_["input_size"]) * \
             (col["d:log_num_classes"] - fz.dataset_medians_["log_num_classes"])
    np.testing.assert_allclose(col["x:input_size*log_num_classes"], expect)
    assert np.abs(expect).max() > 0  # not a constant column on this history


def test_single_dataset_history_collab_missing(hist):
    one = hist.keep_targets(datasets=[hist.target_datasets()[0]])
    fz = Featurizer("d,m").fit(one)
    X = fz.transform(one.targets[["model", "dataset"]], one).toarray()
    miss = X[:, fz.feature_names_.index("m:collab:missing")]
    assert (miss == 1).all()  # leave-own-dataset-out: no other dataset to learn from
    assert np.isfinite(X).all()
