"""Adaptive ranking (GP warm start) and the budget protocol, on synthetic histories."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.budget import prefit, regret_curve, run_protocol, summarize, within
from experiments.budget_protocol import CANDIDATES, _adaptive_order_ex, _Folds, nested_choice
from experiments.budget_report import nested_section
from features.history_frame import synthetic_history
from recommender.adaptive import AdaptiveRanker, ConditionalRanker
from tests.helpers import two_groups


def test_observations_move_the_correlated_models():
    targets = two_groups()
    prior = pd.Series(0.7, index=[f"{g}{i}" for g in "ab" for i in range(5)])
    prior["a4"] = 0.75  # the recommender's top pick
    r = AdaptiveRanker().fit(prior, targets)
    # a4 turns out poor on the new dataset: its group goes down, the other group up
    post = r.posterior({"a4": 0.55})
    assert post["a4"] == pytest.approx(0.55)
    assert post[[f"b{i}" for i in range(5)]].min() > post[[f"a{i}" for i in range(4)]].max()
    assert r.next_pick({"a4": 0.55}).startswith("b")
    # ...and when it turns out good, its group stays on top
    assert r.next_pick({"a4": 0.85}).startswith("a")
    # no observation: the recommender's order
    assert r.next_pick({}) == "a4"
    assert (r.posterior_std({"a4": 0.55})["a4"]) == pytest.approx(0.0, abs=1e-9)


def test_calibration_uses_training_datasets_only():
    targets = two_groups()
    prior = pd.Series(0.7, index=[f"{g}{i}" for g in "ab" for i in range(5)])
    a = AdaptiveRanker().fit(prior, targets, exclude=["d0"])
    changed = targets.copy()
    changed.loc[changed["dataset"] == "d0", "value"] = 0.1  # the held-out dataset's results
    b = AdaptiveRanker().fit(prior, changed, exclude=["d0"])
    assert a.weights_ == b.weights_
    np.testing.assert_allclose(a.cov_, b.cov_)


def test_regret_curve_and_within():
    y = pd.Series({"m1": 0.5, "m2": 0.9, "m3": 0.895, "m4": 0.7})
    np.testing.assert_allclose(regret_curve(["m1", "m4", "m3", "m2"], y, 5), [40, 20, 0.5, 0, 0])
    assert within(["m1", "m4", "m3", "m2"], y) == 3
    assert within(["m2"] + ["m1", "m3", "m4"], y) == 1


def test_budget_protocol_on_a_synthetic_history():
    hist = synthetic_history(n_models=25, n_datasets=5, seed=3)
    rows = run_protocol(hist, budget=4, seeds=5, ms_method="proxy", progress=False)
    s = summarize(rows, 4)
    assert {"default", "static", "adaptive", "portfolio", "popularity-static", "random", "hybrid"} <= set(s.index)
    assert (s.drop("nested")["datasets"] == 5).all() and s.at["nested", "datasets"] == 0
    # one run per strategy, so regret never rises with b (portfolio plans per budget: a run per b)
    curves = s.drop(["nested", "portfolio"])[[f"regret@{b}" for b in range(1, 5)]].to_numpy()
    assert (np.diff(curves, axis=1) <= 1e-9).all() and (curves >= 0).all()
    # every strategy starts from something better than chance at one fine-tune
    assert s.loc["static", "regret@1"] < s.loc["random", "regret@1"]


def test_conditional_ranker_moves_the_correlated_models():
    targets = two_groups()
    prior = pd.Series(0.7, index=[f"{g}{i}" for g in "ab" for i in range(5)])
    prior["a4"] = 0.75
    for acq in ("mean", "ei"):
        r = ConditionalRanker(shrinkage=0.2, acquisition_fn=acq).fit(prior, targets)
        assert r.next_pick({}) == "a4"
        assert r.next_pick({"a4": 0.55}).startswith("b")
        assert r.next_pick({"a4": 0.85}).startswith("a")
    post = ConditionalRanker(shrinkage=0.2).fit(prior, targets).posterior({"a4": 0.55})
    assert post[[f"b{i}" for i in range(5)]].min() > post[[f"a{i}" for i in range(4)]].max()
    # full shrinkage: no covariance between models beyond the shared dataset level, so the
    # other group moves exactly like the observed model's own group
    flat = ConditionalRanker(shrinkage=1.0).fit(prior, targets).posterior({"a4": 0.55})
    assert flat["a0"] == pytest.approx(flat["b0"])
    with pytest.raises(ValueError, match="shrinkage"):
        ConditionalRanker(shrinkage=1.5).fit(prior, targets)
    with pytest.raises(ValueError, match="acquisition"):
        ConditionalRanker(acquisition_fn="best").fit(prior, targets)


def test_ucb_adds_beta_posterior_standard_deviations():
    targets = two_groups()
    prior = pd.Series(0.7, index=[f"{g}{i}" for g in "ab" for i in range(5)] + ["new"])
    prior["a4"] = 0.71  # a little better than the rest, but the unseen model is the most uncertain
    mean = ConditionalRanker(acquisition_fn="mean").fit(prior, targets)
    ucb = ConditionalRanker(acquisition_fn="ucb", beta=3.0).fit(prior, targets)
    assert mean.next_pick({}) == "a4"
    obs = {"a4": 0.6}
    std = ucb.posterior_std(obs)
    assert std["a4"] == pytest.approx(0.0, abs=1e-9) and (std.drop("a4") > 0).all()
    np.testing.assert_allclose(ucb.acquisition(obs), ucb.posterior(obs) + 3.0 * std)


def test_nested_choice_never_reads_the_held_out_dataset():
    hist = synthetic_history(n_models=20, n_datasets=5, seed=4)
    held = hist.target_datasets()[0]
    folds = _Folds(hist, "lr", "d,m", viable_only=True)
    cfg, scores = nested_choice(folds, held, CANDIDATES[:4])
    assert list(scores.index) == [c.label for c in CANDIDATES[:4]] and cfg in CANDIDATES[:4]
    assert scores[cfg.label] == scores.min()
    t = hist.targets.copy()
    t.loc[t["dataset"] == held, "value"] = 1.0 - t.loc[t["dataset"] == held, "value"]  # another held-out truth
    from dataclasses import replace

    cfg2, scores2 = nested_choice(_Folds(replace(hist, targets=t), "lr", "d,m", True), held, CANDIDATES[:4])
    assert cfg2 == cfg
    pd.testing.assert_series_equal(scores, scores2)


def test_budget_protocol_reports_the_nested_choice():
    hist = synthetic_history(n_models=15, n_datasets=4, seed=5)
    cands = (CANDIDATES[0], CANDIDATES[9])
    choices = []
    rows = run_protocol(hist, budget=3, seeds=2, ms_method="proxy", progress=False, candidates=cands,
                        choices=choices, nested=True, recommender="lr")
    assert [c["dataset"] for c in choices] == hist.target_datasets()
    assert {c["choice"] for c in choices} <= {c.label for c in cands}
    folds = _Folds(hist, "lr", "d,m", True)
    for c in choices:  # the nested row is the chosen candidate's own curve
        a = rows[(rows["dataset"] == c["dataset"]) & (rows["strategy"] == "nested")].iloc[0]
        assert a["chosen"] == c["choice"]
        cfg = next(k for k in cands if k.label == c["choice"])
        ex = frozenset({c["dataset"]})
        y = folds.truth(ex, c["dataset"])
        order = _adaptive_order_ex(cfg, folds.prior(ex, c["dataset"], y.index, cfg.base), y, folds, ex, 3)
        np.testing.assert_allclose(a[["regret@1", "regret@2", "regret@3"]].to_numpy(float),
                                   regret_curve(order, y, 3))
    assert all(label in nested_section(rows, choices) for label in {k["choice"] for k in choices})


def test_prefit_shards_fill_the_prior_cache_that_the_protocol_reads(tmp_path):
    hist = synthetic_history(n_models=12, n_datasets=4, seed=6)
    cache = tmp_path / "priors"
    done = [prefit(hist, cache, shard=k, shards=2, progress=False, nested=True) for k in (0, 1)]
    assert sum(done) == 4 + 6 and len(list(cache.glob("*.json"))) == 10  # each held-out dataset, each pair
    assert prefit(hist, cache, progress=False, nested=True) == 0  # nothing left to fit
    kw = dict(budget=3, seeds=2, ms_method="proxy", progress=False, candidates=(CANDIDATES[3],), nested=True)
    cached = run_protocol(hist, prior_cache=cache, **kw)
    pd.testing.assert_frame_equal(cached, run_protocol(hist, **kw))
