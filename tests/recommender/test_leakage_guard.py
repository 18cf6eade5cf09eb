"""Leakage guard: changing the held-out targets of a fold must not change any prediction of
that fold, for every recommender x feature set x protocol and every baseline."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import evaluate as E
from features.history_frame import HistoryFrame, synthetic_history
from recommender.protocols import make_folds

PROTOCOLS = ["lodo", "setting1", "setting2", "coldstart", "kfold"]


@pytest.fixture(scope="module")
def history():
    return synthetic_history(12, 4, seed=11)


def _perturbed(h: HistoryFrame, test) -> HistoryFrame:
    """``h`` with the targets of ``test``'s (model, dataset) pairs reversed in order and shifted."""
    t = h.targets.copy()
    key = set(zip(test["model"], test["dataset"]))
    m = np.array([(a, b) in key for a, b in zip(t["model"], t["dataset"])])
    t.loc[m, "value"] = 1.0 - t.loc[m, "value"].to_numpy()[::-1]
    return HistoryFrame(t, h.models, h.datasets, h.scores)


def _methods(h):
    return [m for m in E.build_methods(h, recommenders="lr,fm,lgbm,lgbm-rank",
                                       feature_sets=["d,m", "d,m,s", "d,m,s,t,k,x"], baselines="all")
            if not m.unavailable]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_held_out_targets_never_reach_a_prediction(history, protocol):
    kw = dict(seeds=1, k=2, min_models=3)
    plan = make_folds(history, protocol, **kw)
    fold = plan.folds[0]
    other = make_folds(_perturbed(history, fold.test), protocol, **kw)
    fold2 = next(f for f in other.folds if f.fold_id == fold.fold_id)
    assert fold2.test[["model", "dataset"]].equals(fold.test[["model", "dataset"]])
    assert not np.allclose(fold2.test["value"], fold.test["value"])  # the perturbation is real
    methods = _methods(history)
    assert {m.kind for m in methods} == {"recommender", "baseline"} and len(methods) >= 12
    for spec in methods:
        try:
            a, _ = E._predict(spec, fold, 0)
        except (E.BaselineUnavailable, E.RecommenderError):
            continue  # cannot run on this fold at all (e.g. model-mean for cold-start models)
        b, _ = E._predict(spec, fold2, 0)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True,
                                   err_msg=f"{spec.label} on {fold.fold_id} read held-out targets")
