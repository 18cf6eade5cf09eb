"""The budget protocol's strategies are search's: the default, the portfolio acquisition,
n/a with a reason, counting within the budget only, and the pooled lift (synthetic histories)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import budget
from experiments.budget_protocol import regret_curve, run_protocol, search_picks, summarize, within_budget
from experiments.budget_report import _table, lift, lift_table, per_dataset, pooled_table
from features.history_frame import synthetic_history
from history.store import HistoryStore
from recommender import search
from recommender.acquisition import (DEFAULT_STRATEGY, DEFAULT_STRATEGY_FIXED_ON, STRATEGIES, choose_next,
                                     joint_posterior, portfolio)
from recommender.adaptive import AdaptiveRanker
from tests.helpers import two_groups


def _ranker():
    prior = pd.Series(0.7, index=[f"{g}{i}" for g in "ab" for i in range(5)])
    prior["a4"], prior["a3"] = 0.75, 0.745
    return AdaptiveRanker().fit(prior, two_groups())


def test_the_default_strategy_is_searchs_and_dated():
    import inspect

    assert DEFAULT_STRATEGY in STRATEGIES and DEFAULT_STRATEGY_FIXED_ON == "2026-12-06"
    assert inspect.signature(search.search).parameters["strategy"].default == DEFAULT_STRATEGY
    assert search.DEFAULT_STRATEGY == DEFAULT_STRATEGY


def test_mean_acquisition_is_the_rankers_next_pick():
    r = _ranker()
    for obs in ({}, {"a4": 0.55}, {"a4": 0.85, "b0": 0.6}):
        assert choose_next("mean", r, obs)[0] == r.next_pick(obs)
    with pytest.raises(ValueError, match="acquisition"):
        choose_next("best", r, {})


def test_portfolio_hedges_with_the_anticorrelated_group():
    r = _ranker()
    rows = list(range(len(r.models_)))

    mean, cov = joint_posterior(r, {}, rows)
    two = portfolio(mean, cov, -np.inf, 2)
    names = [r.models_[j] for j in two]
    # the top model first, then a hedge from the other group (not a4's twin a3)
    assert names[0] == "a4" and names[1].startswith("b")
    # with the whole budget ahead, the top model is still fine-tuned first; one left, no observation: the top
    assert choose_next("portfolio", r, {}, remaining=3)[0] == "a4"
    assert choose_next("portfolio", r, {}, remaining=1)[0] == "a4"
    # a4 disappoints: the last pick goes to the other group
    assert choose_next("portfolio", r, {"a4": 0.55}, remaining=1)[0].startswith("b")
    # deterministic
    assert search_picks("portfolio", r, pd.Series(0.7, index=r.models_), 4) == \
        search_picks("portfolio", r, pd.Series(0.7, index=r.models_), 4)


def test_within_counts_only_within_the_budget():
    y = pd.Series({"m1": 0.5, "m2": 0.9, "m3": 0.895, "m4": 0.7})
    assert within_budget(regret_curve(["m1", "m4", "m3", "m2"], y, 3)) == 3
    assert np.isnan(within_budget(regret_curve(["m1", "m4", "m3", "m2"], y, 2)))


def test_protocol_rows_default_na_and_pooled_lift():
    hist = synthetic_history(n_models=20, n_datasets=5, seed=3)
    rows = run_protocol(hist, budget=4, seeds=3, ms_method="logme", progress=False, recommender="lr")
    d = rows[rows["strategy"] == "default"].reset_index(drop=True)
    s = rows[rows["strategy"] == DEFAULT_STRATEGY].reset_index(drop=True)
    cols = [f"regret@{b}" for b in range(1, 5)]
    np.testing.assert_allclose(d[cols].to_numpy(float), s[cols].to_numpy(float))
    assert (d["chosen"] == DEFAULT_STRATEGY).all()
    assert set(per_dataset(rows, 4)["chosen"]) == {DEFAULT_STRATEGY}
    summary = summarize(rows, 4)
    # no logme scores in this history: hybrid is n/a with its reason, never silently gone
    assert summary.at["hybrid", "datasets"] == 0 and "logme" in summary.at["hybrid", "na"]
    table = _table(summary, 4)
    assert "| hybrid | n/a:" in table and "| nested | n/a: off by default" in table
    assert ((summary["reached"].dropna() >= 0) & (summary["reached"].dropna() <= 1)).all()
    lf = lift(rows, "popularity-static")
    assert all(v["mean"] == 0 for v in lf.values())
    two = {"x": rows, "y": rows.assign(dataset=rows["dataset"] + "'")}
    assert "| x | 5 |" in lift_table(two)
    assert "all (2 benchmarks) | default | 10 |" in pooled_table(two, {"all": ["x", "y"]})


def test_budget_cli_caches_and_writes_json(tmp_path, monkeypatch):
    """`python -m experiments.budget` on a store: the strategy used per held-out dataset, in --json."""
    import json

    hist = synthetic_history(n_models=12, n_datasets=5, seed=7)
    monkeypatch.setattr(budget, "run_on_store", lambda *a, **k: (
        (r := run_protocol(hist, budget=3, seeds=2, progress=False, recommender="lr")), summarize(r, 3), "s", None))
    out = tmp_path / "b.json"
    store = tmp_path / "h.db"
    HistoryStore(f"sqlite:///{store}").dispose()
    assert budget.main(["--store", str(store), "--budget", "3", "--json", str(out)]) == 0
    blob = json.loads(out.read_text())
    assert {r["chosen"] for r in blob["per_dataset"]} == {DEFAULT_STRATEGY}
