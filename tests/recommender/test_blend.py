"""The default ``blend`` recommender and the ``model-additive`` popularity it starts from."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.baselines import BASELINES, BaselineUnavailable
from features.history_frame import HistoryFrame, synthetic_history
from features.popularity import additive_effects
from history.errors import RecommenderError
from recommender.io import load_recommender
from recommender.metrics import bootstrap_ci, paired_lift
from recommender.registry import create_recommender


def _targets(cells):
    return pd.DataFrame([{"model": m, "dataset": d, "regime": "full", "metric": "accuracy", "value": v}
                         for m, d, v in cells])


def test_additive_effects_recover_a_two_way_table_with_holes():
    a = {"m1": 0.10, "m2": 0.0, "m3": -0.10}
    b = {"d1": 0.5, "d2": 0.8, "d3": 0.6}
    cells = [(m, d, a[m] + b[d]) for m in a for d in b if (m, d) not in {("m1", "d2"), ("m3", "d1")}]
    eff, deff = additive_effects(_targets(cells), standardize=False)
    assert eff.to_dict() == pytest.approx(a, abs=1e-8)
    assert deff.to_dict() == pytest.approx(b, abs=1e-8)


def test_additive_effect_is_not_biased_by_missing_cells_where_the_mean_is():
    # m1 was only run on the hard dataset d2: its plain mean says it is the worst model,
    # yet it is better than m2 on the one dataset both have.
    cells = [("m1", "d2", 0.55), ("m2", "d1", 0.90), ("m2", "d2", 0.50), ("m3", "d1", 0.85), ("m3", "d2", 0.45)]
    t = _targets(cells)
    means = t.groupby("model")["value"].mean()
    eff, _ = additive_effects(t, standardize=False)
    assert means["m1"] < means["m2"]
    assert eff["m1"] > eff["m2"] > eff["m3"]


def test_model_additive_baseline_ranks_by_the_model_effect():
    hist = synthetic_history(n_models=12, n_datasets=5, seed=3)
    pairs = hist.targets[["model", "dataset"]].head(12)
    scores = BASELINES["model-additive"].fn(hist, pairs, hist)
    eff, _ = additive_effects(hist.targets, standardize=False)
    assert np.allclose(scores, pairs["model"].map(eff).to_numpy())
    cold = pd.DataFrame({"model": ["nobody"], "dataset": [pairs["dataset"].iloc[0]]})
    with pytest.raises(BaselineUnavailable, match="cold-start"):
        BASELINES["model-additive"].fn(hist, cold, hist)


def _popular_history(signal: float, seed: int = 0, n_models: int = 30, n_datasets: int = 8) -> HistoryFrame:
    """Accuracies = a model effect + ``signal`` x (model size x dataset size) + noise."""
    hist = synthetic_history(n_models=n_models, n_datasets=n_datasets, seed=seed)
    rng = np.random.default_rng(seed)
    m = hist.models.set_index("name")
    d = hist.datasets.set_index("name")
    size = np.log(m["params"].astype(float))
    size = (size - size.mean()) / size.std()
    dsz = np.log(d["num_samples"].astype(float))
    dsz = (dsz - dsz.mean()) / dsz.std()
    pop = pd.Series(rng.normal(0, 0.05, len(m)), index=m.index)
    t = hist.targets.copy()
    t["value"] = (0.7 + t["model"].map(pop) + signal * 0.05 * t["model"].map(size) * t["dataset"].map(dsz)
                  + rng.normal(0, 0.002, len(t)))
    return HistoryFrame(targets=t, models=hist.models, datasets=hist.datasets, scores=hist.scores)


def test_blend_weight_follows_the_signal_beyond_popularity():
    # no interaction: the learned residual carries nothing, so w stays near popularity
    flat = create_recommender("blend", features="d,m", interactions=True).fit(_popular_history(0.0))
    # a strong size x dataset interaction that only the features can express: w grows
    inter = create_recommender("blend", features="d,m", interactions=True).fit(_popular_history(3.0))
    assert inter.weight_ > flat.weight_
    assert set(inter.weight_scores_) == {"0.0", "0.25", "0.5", "0.75", "1.0"}


def test_blend_endpoints_are_popularity_and_lr():
    hist = synthetic_history(n_models=15, n_datasets=6, seed=1)
    held = hist.dataset_names()[0]
    train = hist.drop_targets(datasets=[held])
    pairs = hist.targets[hist.targets["dataset"] == held][["model", "dataset"]].reset_index(drop=True)
    pop = create_recommender("blend", features="d,m", weights=(0.0,)).fit(train)
    eff, _ = additive_effects(train.targets)
    p = pop.predict(pairs, history=hist)
    order = np.argsort(-pairs["model"].map(eff).to_numpy(), kind="stable")
    assert list(np.argsort(-p, kind="stable")) == list(order)
    full = create_recommender("blend", features="d,m", weights=(1.0,)).fit(train)
    lr = create_recommender("lr", features="d,m").fit(train)
    assert np.allclose(full.predict(pairs, history=hist), lr.predict(pairs, history=hist))


def test_blend_round_trips_through_save_and_load(tmp_path):
    hist = synthetic_history(n_models=10, n_datasets=5, seed=2)
    rec = create_recommender("blend", features="d,m").fit(hist)
    rec.save(tmp_path / "blend")
    back = load_recommender(tmp_path / "blend")
    pairs = hist.targets[["model", "dataset"]].head(10)
    assert back.weight_ == rec.weight_
    assert np.allclose(back.predict(pairs), rec.predict(pairs))


@pytest.mark.parametrize("bad", [(), (1.5,), (-0.1, 0.5)])
def test_blend_rejects_weights_outside_0_1(bad):
    hist = synthetic_history(n_models=8, n_datasets=4, seed=0)
    with pytest.raises(RecommenderError, match="weights must be numbers in"):
        create_recommender("blend", weights=bad).fit(hist)


def test_stratified_bootstrap_keeps_each_benchmark_share():
    # benchmark A: 3 datasets all +1; benchmark B: 30 datasets all -1. Resampling within each
    # benchmark keeps its share, so the pooled mean (-0.818) has no spread at all.
    d = np.array([1.0] * 3 + [-1.0] * 30)
    strata = ["A"] * 3 + ["B"] * 30
    lo, hi = bootstrap_ci(d, strata=strata)
    assert lo == pytest.approx(d.mean()) and hi == pytest.approx(d.mean())
    lo_u, hi_u = bootstrap_ci(d)  # unstratified: the share of A varies between resamples
    assert hi_u - lo_u > 0.1
    lift = paired_lift(np.r_[d, np.nan], np.zeros(34), "weighted_tau", strata=strata + ["C"])
    assert lift["n"] == 33 and lift["ci_low"] == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="labels"):
        bootstrap_ci(d, strata=["A"])
