"""Degenerate MS scores end to end: flag at compute time, store, warn, export/import, featurizer."""
from __future__ import annotations

import json

import numpy as np

from features.data import save_features_npz
from features.featurizer import Featurizer
from features.history_frame import HistoryFrame
from history.export import export_history
from history.importers import get_importer
from history.store import HistoryStore
from recommender.cli import main


def _run(*argv):
    return main([str(a) for a in argv])


def test_store_keeps_flag_and_params_and_replaces_on_change(store):
    row = {"model": "m1", "dataset": "d1", "method": "hscore", "value": 2.0, "flag": "saturated",
           "params": {"pca_dim": 32, "seed": 0}}
    r = store.commit(scores=[row])
    assert r.scores_added == 1
    s = store.scores_frame()
    assert s["flag"].tolist() == ["saturated"] and s["params"].tolist() == [{"pca_dim": 32, "seed": 0}]
    assert store.commit(scores=[row]).scores_unchanged == 1
    r = store.commit(scores=[dict(row, flag=None)])  # same value, flag gone: replaced
    assert r.scores_replaced == 1
    s = store.scores_frame()
    assert s["flag"].isna().all() and s["params"].tolist() == [{"pca_dim": 32, "seed": 0}]
    store.commit(scores=[{"model": "m2", "dataset": "d1", "method": "logme", "value": 1.0}])
    assert store.scores_frame().set_index("model").loc["m2", "params"] is None


def _npz(tmp_path, n, d, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    feats = {f"m{k}": rng.normal(size=(len(y), d)) + (k + 1) * np.eye(3)[y] @ rng.normal(size=(3, d))
             for k in range(3)}
    return save_features_npz(tmp_path / "f.npz", y, feats)


def test_score_cli_flags_warns_and_stores(tmp_path, home, capsys):
    path = _npz(tmp_path, n=30, d=40)  # n <= d: the H-score is C - 1 = 2 for every model
    db = home / "f.db"
    rc = _run("score", "--store", db, "--dataset", "toy", "--features-file", path, "--methods", "hscore,lfc,parc",
              "--probe-size", 30, "--format", "json")
    cap = capsys.readouterr()
    assert rc == 0
    assert "warning: hscore is degenerate for 3 of 3 model(s)" in cap.err
    assert "n <= d" in cap.err
    assert "lfc is degenerate" not in cap.err and "parc is degenerate" not in cap.err
    out = json.loads(cap.out)
    flags = {(r["model"], r["method"]): r["flag"] for r in out["scores"]}
    assert flags[("m0", "hscore")] and flags[("m0", "lfc")] is None
    s = HistoryStore(f"sqlite:///{db}").scores_frame()
    h = s[s["method"] == "hscore"]
    assert len(h) == 3 and h["flag"].str.contains("n <= d").all()
    assert s[s["method"] == "lfc"]["flag"].isna().all()
    p = s[s["method"] == "parc"]["params"].iloc[0]
    assert p["pca_dim"] == 32 and p["seed"] == 0

    # history -> frame: flagged scores are missing, the rest stays

    hf = HistoryFrame.from_store(HistoryStore(f"sqlite:///{db}"))
    assert set(hf.scores["method"]) == {"lfc", "parc"}


def test_export_import_round_trips_flag_and_params(store, tmp_path):
    store.commit(scores=[
        {"model": "m1", "dataset": "d1", "method": "hscore", "value": 2.0, "flag": "saturates at C - 1",
         "params": {}, "source": "s"},
        {"model": "m2", "dataset": "d1", "method": "parc", "value": 0.3, "params": {"pca_dim": 32, "seed": 0},
         "source": "s"},
    ])
    path = tmp_path / "h.csv"
    export_history(store, path)
    fresh = HistoryStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        get_importer("generic").run(fresh, path)
        a = store.scores_frame().set_index(["model", "method"])
        b = fresh.scores_frame().set_index(["model", "method"])
        assert b.loc[("m1", "hscore"), "flag"] == "saturates at C - 1"
        assert b.loc[("m2", "parc"), "params"] == {"pca_dim": 32, "seed": 0}
        assert b.loc[("m2", "parc"), "flag"] is None or np.isnan(b.loc[("m2", "parc"), "flag"])
        assert a.loc[("m2", "parc"), "params"] == b.loc[("m2", "parc"), "params"]
    finally:
        fresh.dispose()


def test_featurizer_treats_constant_and_flagged_scores_as_missing():
    import pandas as pd

    models = ["a", "b", "c"]
    targets = pd.DataFrame({"model": models * 2, "dataset": ["d1"] * 3 + ["d2"] * 3,
                            "value": [0.5, 0.6, 0.7, 0.4, 0.8, 0.6]})
    scores = pd.DataFrame({
        "model": models * 4, "dataset": ["d1"] * 6 + ["d2"] * 6,
        "method": (["hscore"] * 3 + ["logme"] * 3) * 2,
        # hscore constant on d1 (no information), varying on d2; logme varying, one flagged on d2
        "value": [2.0, 2.0, 2.0, 0.1, 0.2, 0.3, 1.0, 1.5, 1.2, 0.3, 0.1, 0.2],
        "flag": [None] * 11 + ["degenerate"],
    })
    hf = HistoryFrame(targets=targets, models=pd.DataFrame({"name": models}),
                      datasets=pd.DataFrame({"name": ["d1", "d2"]}), scores=scores)
    assert len(hf.scores) == 11  # the flagged row is dropped
    f = Featurizer(groups="s")
    X = f.fit_transform(hf).toarray()
    col = {n: X[:, f.feature_names_.index(n)] for n in ("s:missing:hscore", "s:missing:logme")}
    # rows: (a,d1) (b,d1) (c,d1) (a,d2) (b,d2) (c,d2); columns are standardized, so compare
    h, lg = col["s:missing:hscore"], col["s:missing:logme"]
    assert h[0] == h[1] == h[2] and h[3] == h[4] == h[5] and h[0] > h[3]  # constant on d1: missing
    assert lg[5] > lg[0] and len(set(lg[:5].tolist())) == 1  # flagged (c, d2): missing
