"""Pooled lifts over benchmarks and the report's headline tables, on real evaluations of synthetic histories."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.evaluate import evaluate
from experiments.headline import best_model_ranks, default_rows, pooled_rows, targets_rows
from experiments.pooled import paired_units, pooled_lift
from features.history_frame import synthetic_history
from recommender import metrics as M
from recommender.defaults import DEFAULT_LABEL


@pytest.fixture(scope="module")
def results():
    out = {}
    for name, seed, n_ds in (("bench-a", 0, 4), ("bench-b", 1, 6)):
        hist = synthetic_history(n_models=12, n_datasets=n_ds, seed=seed)
        out[name] = evaluate(hist, protocol="lodo", recommenders="blend", feature_sets=["d,m"],
                             baselines="model-mean,model-additive", progress=False)
    return out


def test_pooled_lift_pairs_every_dataset_and_stratifies(results):
    u = paired_units(results, DEFAULT_LABEL, "model-mean", "weighted_tau")
    assert sorted(u["benchmark"].value_counts().to_dict().items()) == [("bench-a", 4), ("bench-b", 6)]
    pl = pooled_lift(results, DEFAULT_LABEL, "model-mean", ("weighted_tau",)).iloc[0]
    assert pl["n"] == 10 and pl["benchmarks"] == 2
    d = M.improvement(u["value"], u["reference"], "weighted_tau")
    assert pl["mean"] == pytest.approx(d.mean())
    lo, hi = M.bootstrap_ci(d, strata=u["benchmark"].to_numpy())
    assert (pl["ci_low"], pl["ci_high"]) == pytest.approx((lo, hi))


def test_headline_tables_have_a_row_per_benchmark_and_pool(results):
    rows = default_rows(results)
    assert [r[0] for r in rows] == ["bench-a", "bench-b"] and rows[0][1] == "4"
    pooled, raw = pooled_rows(results, {"bench-a": "dev", "bench-b": "test"})
    assert [r[0].split(" (")[0] for r in pooled] == ["all benchmarks", "dev benchmarks", "test benchmarks"]
    assert set(raw) == {"model-mean", "model-additive"} and raw["model-mean"]["weighted_tau"]["n"] == 10
    targets = targets_rows(results, raw)
    assert all(r[2] in ("met", "NOT met") for r in targets)
    # 2 benchmarks < the 9 the target asks for: never "met", whatever the lift
    assert targets[0][2] == "NOT met"


def test_best_model_ranks_name_the_best_model(results):
    res = results["bench-a"]
    ranks = best_model_ranks(res)
    p = res.predictions[res.predictions["method"] == DEFAULT_LABEL]
    assert len(ranks) == p["dataset"].nunique()
    for r in ranks.to_dict("records"):
        g = p[p["dataset"] == r["dataset"]]
        assert r["best model"] == g.loc[g["real"].idxmax(), "model"]
        assert 1 <= r["rank"] <= len(g)
        assert r["rank"] == 1 + int((g["predicted_raw"] > g.loc[g["real"].idxmax(), "predicted_raw"]).sum())
    assert np.isfinite(ranks["best acc"]).all()
