"""Nested LODO: the configuration is chosen on inner folds that never contain the held-out dataset."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import nested_lodo as N
from features.history_frame import synthetic_history


@pytest.fixture(scope="module")
def history():
    return synthetic_history(n_models=15, n_datasets=4, seed=3)


CANDS = [N.Candidate("lr[d,m]", "lr", "d,m"), N.Candidate("model-mean", "model-mean", ""),
         N.Candidate("lr[d,m]+0.5*z(proxy)", "lr", "d,m", blend=("proxy", 0.5))]


@pytest.fixture(scope="module")
def result(history):
    calls = []
    original = N._Fits.predict

    def spy(self, base, excluded, dataset):
        calls.append((excluded, dataset))
        return original(self, base, excluded, dataset)

    mp = pytest.MonkeyPatch()
    mp.setattr(N._Fits, "predict", spy)
    try:
        res = N.nested_lodo(history, CANDS, progress=False)
    finally:
        mp.undo()
    res["calls"] = calls
    return res


def test_never_predicts_a_dataset_it_was_trained_on(result, history):
    assert result["calls"], "no predictions were made"
    for excluded, dataset in result["calls"]:
        assert dataset in excluded
    # every inner split leaves out two datasets, every outer split one
    sizes = {len(e) for e, _ in result["calls"]}
    assert sizes == {1, 2}
    # blends share the fits of their base: 6 pairs + 4 singles, one fitted base (lr)
    assert result["n_fits"] == 6 + 4


def test_choice_is_the_inner_argmin_and_reports_its_outer_metrics(result, history):
    inner, outer, choices = result["inner"], result["outer"], result["choices"]
    assert sorted(choices["dataset"]) == sorted(history.target_datasets())
    for _, row in choices.iterrows():
        mine = inner[inner["outer"] == row["dataset"]]
        assert set(mine["candidate"]) == {c.label for c in CANDS}
        assert row["inner_regret@1"] == pytest.approx(mine["regret@1"].min())
        chosen = mine[mine["candidate"] == row["chosen"]].iloc[0]
        assert chosen["regret@1"] == pytest.approx(mine["regret@1"].min())
        got = outer[(outer["dataset"] == row["dataset"]) & (outer["candidate"] == row["chosen"])].iloc[0]
        assert row["regret@1"] == pytest.approx(got["regret@1"])
        assert row["pearson"] == pytest.approx(got["pearson"])


def test_summary_oracle_bounds_every_choice(result):
    s = N.summarize(result).set_index("method")
    oracle = s.loc["per-dataset oracle (optimistic)", "regret@1"]
    nested = s.loc["nested (honest)", "regret@1"]
    fixed = s.loc[[m for m in s.index if m.startswith("best-fixed")][0], "regret@1"]
    assert oracle <= nested + 1e-12 and oracle <= fixed + 1e-12
    per_candidate = s.loc[[m for m in s.index if m.startswith("  ")], "regret@1"]
    assert fixed == pytest.approx(per_candidate.min())
    assert np.isfinite(s["pearson"]).all()


def test_blend_uses_the_score_and_treats_missing_as_the_mean():
    import pandas as pd

    from types import SimpleNamespace

    frame = pd.DataFrame({"model": ["a", "b", "c"], "dataset": "x", "pred": [1.0, 2.0, 3.0],
                          "value": [0.1, 0.2, 0.3]})
    scores = pd.DataFrame({"model": ["a", "b"], "dataset": ["x", "x"], "method": ["proxy", "proxy"],
                           "value": [10.0, 0.0]})
    got = N._final_scores(N.Candidate("b", "lr", blend=("proxy", 1.0)), frame, SimpleNamespace(scores=scores))
    zp = (frame["pred"] - 2.0) / np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(got, zp + np.array([1.0, -1.0, 0.0]))


def test_refuses_too_few_datasets_and_duplicate_labels(history):
    two = history.drop_targets(datasets=history.target_datasets()[2:])
    with pytest.raises(ValueError, match="at least 3"):
        N.nested_lodo(two, CANDS, progress=False)
    with pytest.raises(ValueError, match="unique"):
        N.nested_lodo(history, CANDS + CANDS[:1], progress=False)


def test_regret_chart_is_written(result, tmp_path):
    path = N.regret_chart(result, tmp_path / "nested.png")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
