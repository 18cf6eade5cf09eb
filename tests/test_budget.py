"""Adaptive ranking (GP warm start) and the budget protocol, on synthetic histories."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.budget import regret_curve, run_protocol, summarize, within
from features.history_frame import synthetic_history
from recommender.adaptive import AdaptiveRanker


def _two_groups(n_datasets=8, seed=0):
    """Models a0..a4 rise and fall together, b0..b4 together; datasets favour one group or the other."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_datasets):
        swing = 0.1 if d % 2 else -0.1
        for g, sign in (("a", 1), ("b", -1)):
            for i in range(5):
                rows.append({"model": f"{g}{i}", "dataset": f"d{d}",
                             "value": 0.7 + sign * swing + 0.01 * i + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


def test_observations_move_the_correlated_models():
    targets = _two_groups()
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
    targets = _two_groups()
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
    assert {"static", "adaptive", "model-mean", "random", "hybrid"} <= set(s.index)
    assert (s["datasets"] == 5).all()
    curves = s[[f"regret@{b}" for b in range(1, 5)]].to_numpy()
    assert (np.diff(curves, axis=1) <= 1e-9).all() and (curves >= 0).all()
    # every strategy starts from something better than chance at one fine-tune
    assert s.loc["static", "regret@1"] < s.loc["random", "regret@1"]
