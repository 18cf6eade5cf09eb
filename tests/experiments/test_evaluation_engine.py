"""The evaluation engine's rules: one metric core, viable candidates, lift over popularity
with confidence intervals, nested selection, target rule, hybrid n/a, setting2 averaging."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from experiments import evaluate as E
from experiments.baselines import hybrid, model_mean, upstream_source_accuracy
from experiments.evaluate import EvaluationResult, evaluate, format_summary, split_labels
from features.history_frame import HistoryFrame, synthetic_history
from history.importers import get_importer
from history.viability import assess
from recommender import metrics as M
from recommender.cli import main
from recommender.protocols import make_folds
from recommender.registry import create_recommender
from recommender.training import grouped_cv
from tests.helpers import make_synthetic_store


# ---------------------------------------------------------------------- lift / CI
def test_paired_lift_hand_computed():
    # method regret@1 per dataset vs model-mean: improvements 1, 0, -2 (lower regret is better)
    r = M.paired_lift([1.0, 2.0, 3.0], [2.0, 2.0, 1.0], "regret@1", n_boot=500)
    assert r["n"] == 3 and r["mean"] == pytest.approx(-1 / 3)
    assert (r["wins"], r["ties"], r["losses"]) == (1, 1, 1)
    assert -2.0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1.0
    # higher-is-better metric: method - reference
    t = M.paired_lift([0.5, 0.7], [0.4, 0.7], "weighted_tau")
    assert t["mean"] == pytest.approx(0.05) and (t["wins"], t["ties"], t["losses"]) == (1, 1, 0)


def test_bootstrap_ci_matches_an_independent_computation():
    d = np.array([1.0, 0.0, -2.0, 0.5, 3.0])
    lo, hi = M.bootstrap_ci(d, n_boot=1000, seed=7)
    rng = np.random.default_rng(7)
    means = [d[rng.integers(0, 5, size=5)].mean() for _ in range(1000)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert M.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)  # no spread, no uncertainty
    assert all(math.isnan(x) for x in M.bootstrap_ci([1.0]))


def test_result_lift_pairs_by_held_out_dataset():
    rows = []
    for ds, a, b in (("d1", 1.0, 2.0), ("d2", 2.0, 2.0), ("d3", 3.0, 1.0)):
        for meth, v in (("lr[d,m]", a), ("model-mean", b)):
            rows.append({"fold": f"lodo:{ds}", "dataset": ds, "seed": None, "method": meth, "kind": "x",
                         "features": None, "n_test": 5, "n_missing": 0, **{m: v for m in M.METRICS}})
    res = EvaluationResult({"unit": "dataset", "candidates": "all"}, pd.DataFrame(rows), pd.DataFrame())
    lf = res.lift().set_index("metric")
    assert lf.loc["regret@1", "mean"] == pytest.approx(-1 / 3)
    assert lf.loc["spearman", "mean"] == pytest.approx(1 / 3)  # higher is better: signs flip
    assert lf.loc["regret@1", ["wins", "ties", "losses"]].tolist() == [1, 1, 1]


# ---------------------------------------------------------------------- viability
def _results(rows):
    return pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"])


def test_viability_rule():
    nc = {f"d{i}": 10 for i in range(5)}  # chance 0.1 -> at chance <= 0.15
    rows = []
    for i in range(5):
        rows.append(("bad", f"d{i}", "accuracy", 0.12 if i < 4 else 0.9))  # 4 of 5 = 80% -> flagged
        rows.append(("meh", f"d{i}", "accuracy", 0.12 if i < 3 else 0.9))  # 3 of 5 -> viable
        rows.append(("good", f"d{i}", "accuracy", 0.8 + 0.01 * i))
    rows.append(("bad", "d0", "accuracy", 0.05))  # repeats: the best one counts
    res = assess(_results(rows), nc).set_index("model")
    assert res.loc["bad", "degenerate"] and "4 of 5" in res.loc["bad", "reason"]
    assert not res.loc["meh", "degenerate"] and not res.loc["good", "degenerate"]
    # metrics that are not accuracies and datasets without a class count are not assessed
    res = assess(_results([("x", "d0", "map", 0.01), ("x", "dz", "accuracy", 0.01)]), nc).set_index("model")
    assert res.loc["x", "n_assessed"] == 0 and not res.loc["x", "degenerate"]


def test_viability_constant_predictor_floor():
    # an imbalanced 10-class dataset: predicting the majority class gives 0.80 >> 1.5 / 10
    rows = [("const_a", "d", "accuracy", 0.800), ("const_b", "d", "accuracy", 0.802),
            ("good", "d", "accuracy", 0.95)]
    res = assess(_results(rows), {"d": 10}).set_index("model")
    assert res.loc["const_a", "degenerate"] and res.loc["const_b", "degenerate"]
    assert not res.loc["good", "degenerate"]
    # a single lowest model is no floor
    res = assess(_results(rows[1:]), {"d": 10}).set_index("model")
    assert not res["degenerate"].any()


def test_store_flags_degenerate_models_on_commit(store):
    store.commit(datasets=[{"name": f"d{i}", "num_classes": 10} for i in range(3)],
                 jobs=[{"model": m, "dataset": f"d{i}", "value": v, "source": "t"}
                       for i in range(3) for m, v in (("dead", 0.1), ("alive", 0.9), ("alive2", 0.85))])
    m = store.models_frame().set_index("name")
    assert bool(m.loc["dead", "degenerate"]) and "3 of 3" in m.loc["dead", "degenerate_reason"]
    assert not bool(m.loc["alive", "degenerate"])
    # a new result changes the flag: "dead" learns on two more datasets -> 3 of 5 = 60%
    res = store.commit(datasets=[{"name": f"e{i}", "num_classes": 10} for i in range(2)],
                       jobs=[{"model": "dead", "dataset": f"e{i}", "value": 0.9, "source": "t"} for i in range(2)])
    assert res.details["viability"] == {"assessed": 3, "degenerate": 0}
    assert not bool(store.models_frame().set_index("name").loc["dead", "degenerate"])


def test_import_summary_counts_degenerate_models(store, shared_data):
    rep = get_importer("transfergraph").run(store, shared_data / "transfergraph-image")
    note = [n for n in rep.notes if n.startswith("viability")]
    assert note and "2 of 180 models" in note[0]
    flagged = set(store.models_frame().query("degenerate == True")["name"])
    assert flagged == {"lysandre/tiny-vit-random", "nateraw/test_model_a"}


# ---------------------------------------------------------------------- target rule
def test_best_rule_averages_repeats_before_taking_the_best(store):
    jobs = [
        # configuration lr=0.1, two seeds: mean 0.70 (one lucky seed at 0.80)
        {"model": "m", "dataset": "d", "value": 0.80, "hparams": {"lr": 0.1, "seed": 0}, "source": "s"},
        {"model": "m", "dataset": "d", "value": 0.60, "hparams": {"lr": 0.1, "seed": 1}, "source": "s"},
        # configuration lr=0.01, one run: 0.75 -> the best configuration
        {"model": "m", "dataset": "d", "value": 0.75, "hparams": {"lr": 0.01}, "source": "s"},
    ]
    store.commit(jobs=jobs)
    t = store.targets("best")
    assert t["value"].tolist() == [pytest.approx(0.75)] and t["n_jobs"].tolist() == [3]
    assert store.targets("mean")["value"].tolist() == [pytest.approx(0.7166666, abs=1e-6)]


# ---------------------------------------------------------------------- baselines / protocols
def _hist(n_models=16, n_datasets=5, seed=0, **kw):
    return synthetic_history(n_models, n_datasets, seed=seed, **kw)


def test_hybrid_is_na_where_the_method_has_no_scores_and_uses_model_mean_when_not_upstream():
    h = _hist()
    d0 = h.target_datasets()[0]
    h2 = HistoryFrame(h.targets, h.models, h.datasets, h.scores[h.scores["dataset"] != d0])
    pairs = h.targets[["model", "dataset"]].reset_index(drop=True)
    train = h2.drop_targets(datasets=[d0])
    pred = hybrid(train, pairs, h2, method="proxy")
    assert np.isnan(pred[pairs["dataset"] == d0]).all()
    assert np.isfinite(pred[pairs["dataset"] != d0]).all()
    # synthetic source accuracies come from two pre-training datasets: not an upstream accuracy
    assert not upstream_source_accuracy(h, h.model_names())
    sub = pairs[pairs["dataset"] != d0].reset_index(drop=True)
    mm = model_mean(train, sub, h2)
    one = sub["dataset"] == sub["dataset"].iloc[0]
    top5_hybrid = set(sub.loc[one].iloc[np.argsort(-pred[pairs["dataset"] != d0][one.to_numpy()])[:5]]["model"])
    top5_mm = set(sub.loc[one].iloc[np.argsort(-mm[one.to_numpy()])[:5]]["model"])
    assert top5_hybrid == top5_mm  # the re-ranked top k is model-mean's top k


def test_setting2_averages_over_held_out_datasets():
    h = _hist(n_models=12, n_datasets=4)
    res = evaluate(h, protocol="setting2", recommenders="none", baselines="model-size", progress=False)
    s = res.summary().set_index("method")
    assert s.loc["model-size", "n"] == 4  # held-out datasets, not (train, test) pairs (12)
    per_ds = res.rows.groupby("dataset")["regret@1"].mean()
    assert s.loc["model-size", "regret@1_mean"] == pytest.approx(per_ds.mean())


def test_ms_rows_report_coverage():
    h = _hist(n_models=12, n_datasets=4)
    sc = h.scores[~((h.scores["model"] == "model_00000") | (h.scores["model"] == "model_00001"))]
    h = HistoryFrame(h.targets, h.models, h.datasets, sc)
    res = evaluate(h, protocol="lodo", recommenders="none", baselines="ms:proxy", progress=False)
    s = res.summary().set_index("method")
    assert s.loc["ms:proxy", "coverage"] == pytest.approx(10 / 12)
    assert "coverage 83%" in format_summary(res)


# ---------------------------------------------------------------------- one engine
def test_train_cv_uses_the_evaluation_engine():
    h = _hist(n_models=14, n_datasets=5, seed=3)
    cv = grouped_cv(lambda: create_recommender("lr", features="d,m"), h, folds=3)
    plan = make_folds(h, "kfold", k=3, min_models=2)
    assert cv["cv_folds"] == 3 == len(plan.folds)
    spec = E.build_methods(h, recommenders="lr", feature_sets=["d,m"], baselines="none")[0]
    rows = []
    for fold in plan.folds:
        pred, _ = E._predict(spec, fold, None)
        rows += E._score_rows(fold, spec, fold.test.reset_index(drop=True), pred, "all")
    df = pd.DataFrame(rows)
    assert cv["cv_regret1"] == pytest.approx(df["regret@1"].mean())
    assert cv["cv_regret3"] == pytest.approx(df["regret@3"].mean())
    assert cv["cv_weighted_tau"] == pytest.approx(df["weighted_tau"].mean())
    assert cv["cv_regret1"] > 1e-3  # accuracy points, not fractions


def test_evaluate_clips_shown_predictions_but_scores_raw_values():
    h = _hist(n_models=12, n_datasets=4)
    res = evaluate(h, protocol="lodo", recommenders="lr", feature_sets=["d,m"], baselines="none",
                   progress=False)
    p = res.predictions
    assert p["predicted"].between(0, 1).all()
    assert (p["predicted"] == p["predicted_raw"].clip(0, 1)).all()


# ---------------------------------------------------------------------- nested selection
def test_nested_selection_never_reads_held_out_targets():
    h = _hist(n_models=12, n_datasets=4, seed=1)
    kw = dict(protocol="lodo", recommenders="lgbm", feature_sets=["d,m", "d,m,s"], baselines="model-mean",
              progress=False, select="nested", inner_folds=2, rec_params={"n_estimators": 20})
    res = evaluate(h, **kw)
    assert len(res.nested) == 4
    cands = {"lgbm[d,m]", "lgbm[d,m,s]", "model-mean"}
    assert all(c["chosen"] in cands and c["inner_n"] == 2 for c in res.nested)
    assert all(set(c["inner_table"]) == cands for c in res.nested)
    # the nested rows of a fold are the chosen method's rows
    r = res.rows
    for c in res.nested:
        a = r[(r["fold"] == c["fold"]) & (r["method"] == "nested")]["regret@1"].to_numpy()
        b = r[(r["fold"] == c["fold"]) & (r["method"] == c["chosen"])]["regret@1"].to_numpy()
        assert np.allclose(a, b)
    # scramble the held-out dataset's targets: its fold's choice must not move
    d0 = h.target_datasets()[0]
    t = h.targets.copy()
    m = t["dataset"] == d0
    t.loc[m, "value"] = np.random.default_rng(5).permutation(t.loc[m, "value"].to_numpy())[::-1]
    res2 = evaluate(HistoryFrame(t, h.models, h.datasets, h.scores), **kw, datasets=[d0])
    c1 = next(c for c in res.nested if c["fold"] == f"lodo:{d0}")
    assert res2.nested[0]["chosen"] == c1["chosen"]
    assert res2.nested[0]["inner_table"] == pytest.approx(c1["inner_table"])


def _commit_syn(store, seed):
    """A synthetic 12-model x 4-dataset history (source ``syn``) committed to ``store``."""
    h = _hist(n_models=12, n_datasets=4, seed=seed)
    store.commit(models=h.models.to_dict("records"), datasets=h.datasets.to_dict("records"),
                 jobs=[{"model": r.model, "dataset": r.dataset, "value": float(r.value), "source": "syn"}
                       for r in h.targets.itertuples()])


def test_evaluate_cli_nested_prints_lift_and_writes_json(capsys, store, tmp_path):
    _commit_syn(store, seed=2)
    out_json = tmp_path / "out.json"
    rc = main(["evaluate", "--store", store.url, "--no-progress", "--no-mlflow", "--source", "syn",
               "--recommenders", "lr", "--features", "d,m", "--baselines", "model-mean,model-size",
               "--select", "nested", "--inner-folds", "2", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "lift over model-mean" in out and "Δregret@1" in out and "[" in out
    assert "configuration chosen per outer fold" in out and "MLflow logging" in out
    res = json.loads(out_json.read_text())
    lift = pd.DataFrame(res["lift"])
    assert set(lift["method"]) == {"lr[d,m]", "model-size", "nested"}
    assert {"ci_low", "ci_high", "wins", "ties", "losses"} <= set(lift.columns)
    assert len(res["nested_choices"]) == 4 and res["candidates"] == "viable"
    assert "all" in res["other_candidates"]


def test_split_labels_keeps_bracketed_feature_sets_whole():
    assert split_labels("lr[d,m],model-mean") == ["lr[d,m]", "model-mean"]
    assert split_labels(" lgbm[d,m,s] , lr[d], ,model-size") == ["lgbm[d,m,s]", "lr[d]", "model-size"]
    assert split_labels("") == []


def test_evaluate_cli_nested_candidates_with_feature_sets(capsys, store, tmp_path):
    _commit_syn(store, seed=3)
    out_json = tmp_path / "out.json"
    rc = main(["evaluate", "--store", store.url, "--no-progress", "--no-mlflow", "--source", "syn",
               "--recommenders", "lr", "--features", "d,m", "--baselines", "model-mean",
               "--select", "nested", "--nested-candidates", "lr[d,m],model-mean", "--inner-folds", "2",
               "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert {c["chosen"] for c in res["nested_choices"]} <= {"lr[d,m]", "model-mean"}


# ---------------------------------------------------------------------- predict
def test_predict_leaves_degenerate_models_out_unless_asked(store, home, capsys):
    make_synthetic_store(store)
    # "dead" sits at chance (<= 1.5 / classes) on ds0..ds2 and has no job on ds3
    store.commit(models=[{"name": "dead", "modality": "image", "params": 1e6}],
                 jobs=[{"model": "dead", "dataset": f"ds{j}", "value": 0.5 / (10 * (j + 1)), "source": "synthetic"}
                       for j in range(3)])
    assert bool(store.models_frame().set_index("name").loc["dead", "degenerate"])

    def cli(*args):
        rc = main(["--home", str(home), *map(str, args)])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    cli("train", "-r", "lr", "--cv-folds", "0", "--no-mlflow")
    res = json.loads(cli("predict", "--dataset", "ds3", "--format", "json"))
    assert {r["model"] for r in res["ranking"]} == {"m6", "m7"} and res["degenerate_excluded"] == 1
    assert "1 degenerate models" in cli("predict", "--dataset", "ds3")
    res = json.loads(cli("predict", "--dataset", "ds3", "--format", "json", "--include-degenerate"))
    assert "dead" in {r["model"] for r in res["ranking"]} and res["degenerate_excluded"] == 0
    assert all(0.0 <= r["predicted"] <= 1.0 for r in res["ranking"])


def test_no_import_cycle_between_cli_and_report():
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "experiments" / "report.py"
    mods = {(n.module or "") for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)}
    assert "cli" not in mods and "experiments.cli" not in mods
