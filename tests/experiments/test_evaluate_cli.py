"""``python -m recommender evaluate``: bad inputs, MLflow failure, and a small real run."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.budget import run_protocol
from experiments.histories import load_history
from recommender.cli import main


def _run(capsys, store, *args):
    rc = main(["evaluate", "--store", store.url, "--no-progress", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args, expected", [
    (["--source", "parc-controlled", "--protocol", "loso"], "Valid protocols: lodo, setting1, coldstart, setting2"),
    (["--source", "parc-controled"], "Valid sources: parc, parc-controlled"),
    (["--source", "parc-controlled", "--recommender", "lr,xgb"], "Valid recommenders: blend, lr, fm, lgbm, lgbm-rank"),
    (["--source", "parc-controlled", "--baselines", "oracle"], "Valid baselines: all, none, ms:<method>"),
    (["--source", "parc-controlled", "--regime", "vtab-1k"], "Valid regimes of 'parc-controlled': full"),
    (["--source", "parc-controlled", "--features", "d,q"], "unknown feature group 'q'"),
])
def test_bad_inputs_list_valid_choices(capsys, parc_store, args, expected):
    rc, out, err = _run(capsys, parc_store, "--no-mlflow", *args)
    assert rc == 2
    assert "error: " in err and expected in err


def test_store_with_several_sources_needs_source(capsys, parc_store):
    rc, _, err = _run(capsys, parc_store, "--no-mlflow")
    assert rc == 2 and "choose one with --source: parc, parc-controlled" in err


def test_real_parc_controlled_lodo_json(capsys, parc_store, tmp_path):
    out_json = tmp_path / "res.json"
    rc, out, err = _run(capsys, parc_store, "--source", "parc-controlled", "--protocol", "lodo", "--recommender",
                        "lr", "--features", "d,m", "--baselines", "model-mean,parc-heuristic",
                        "--no-mlflow", "--json-out", str(out_json))
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    targets = parc_store.targets(source="parc-controlled")
    acc = targets[targets["metric"] == "accuracy"]
    expected_ds = sorted(acc["dataset"].unique())
    assert res["config"]["protocol"] == "lodo" and res["config"]["source"] == "parc-controlled"
    assert res["config"]["datasets"] == expected_ds
    rows = pd.DataFrame(res["results"])
    assert set(rows["method"]) == {"lr[d,m]", "model-mean", "parc-heuristic"}
    for ds, n in acc.groupby("dataset")["model"].nunique().items():
        assert (rows.loc[rows["dataset"] == ds, "n_test"] == n).all()
    assert rows["pearson"].between(-1, 1).all()
    assert (rows["regret@1"] >= 0).all() and (rows["regret@3"] <= rows["regret@1"]).all()
    # the table per held-out dataset and the summary are printed; voc2007 (mAP) is announced, not silently dropped
    assert "held-out dataset caltech101" in out and "summary: parc-controlled" in out
    assert "voc2007" in err and "metric map" in err
    assert {s["method"] for s in res["summary"]} == {"lr[d,m]", "model-mean", "parc-heuristic"}


def test_mlflow_unreachable_still_prints_and_fails(capsys, parc_store, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, parc_store, "--source", "parc-controlled", "--recommender", "none",
                        "--baselines", "model-mean", "--tracking-uri", f"sqlite:///{blocker}/mlflow.db",
                        "--json-out", str(out_json))
    assert rc != 0
    assert "summary: parc-controlled" in out and "model-mean" in out
    assert "MLflow logging failed" in err
    assert out_json.exists()


@pytest.mark.slow
def test_mlflow_parent_and_child_runs(capsys, parc_store, home):
    rc, out, err = _run(capsys, parc_store, "--source", "parc-controlled", "--recommender", "lr",
                        "--features", "d,m", "--baselines", "model-mean", "--datasets", "cub200,stanford_dogs",
                        "--home", str(home))
    assert rc == 0, err
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("evaluate/parc-controlled")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags.get("mlflow.runName"): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parent) == 1 and set(children) == {"lr[d,m]", "model-mean"}
    m = children["lr[d,m]"].data.metrics
    assert {"pearson__cub200", "pearson__stanford_dogs", "pearson_mean"} <= set(m)
    arts = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {"results.csv", "summary.md", "methods.png"} <= arts
    child_arts = {a.path for a in client.list_artifacts(children["lr[d,m]"].info.run_id, "plots")}
    assert any(p.endswith(".png") and "scatter" in p for p in child_arts)


def test_budget_protocol_through_evaluate(capsys, parc_store, tmp_path):
    """``evaluate --protocol budget`` replays the real PARC history and matches experiments.budget."""
    out_json = tmp_path / "budget.json"
    rc, out, err = _run(capsys, parc_store, "--source", "parc-controlled", "--protocol", "budget", "--budget", "3",
                        "--recommender", "lr", "--features", "d,m", "--json-out", str(out_json))
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert res["config"]["protocol"] == "budget" and res["config"]["candidates"] == "viable"
    summary = pd.DataFrame(res["summary"]).set_index("strategy")
    assert {"default", "static", "adaptive", "popularity-static", "random"} <= set(summary.index)
    assert {r["chosen"] for r in res["strategy_per_dataset"]} == {res["default_strategy"]}
    assert "regret@3" in out and "adaptive" in out
    hist, *_ = load_history(parc_store, source="parc-controlled")
    direct = run_protocol(hist, budget=3, recommender="lr", features="d,m", progress=False)
    per = pd.DataFrame(res["per_dataset"])
    pd.testing.assert_frame_equal(per.reset_index(drop=True), direct.reset_index(drop=True), check_dtype=False)


def test_budget_protocol_bad_budget(capsys, parc_store):
    rc, _, err = _run(capsys, parc_store, "--source", "parc-controlled", "--protocol", "budget", "--budget", "0")
    assert rc == 2 and "--budget must be >= 1" in err


@pytest.mark.slow
def test_pooled_sources_hold_out_only_the_first_sources_datasets(capsys, parc_store, tmp_path, home):
    """--source a,b: the first source's datasets are held out (with their twins from b), b only trains;
    train accepts the same pooled sources."""
    out_json = tmp_path / "pooled.json"
    rc, out, err = _run(capsys, parc_store, "--source", "parc-controlled,parc", "--protocol", "lodo",
                        "--recommender", "lr", "--features", "d,m,k", "--baselines", "model-mean",
                        "--no-mlflow", "--json-out", str(out_json), "--quiet-datasets")
    assert rc == 0, err
    assert "pooled: parc (regime full) adds training targets under '<dataset>@parc'" in err
    res = json.loads(out_json.read_text())
    primary = set(parc_store.targets(source="parc-controlled")["dataset"])
    held = set(res["config"]["datasets"])
    assert held and held <= primary and not any("@" in d for d in held)
    rc = main(["train", "--store", parc_store.url, "--source", "parc-controlled,parc", "--recommender", "lr",
               "--features", "d,m,k", "--no-mlflow", "--cv-folds", "0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "pooled training history: parc-controlled:" in err and "parc:" in err
    rc = main(["train", "--store", parc_store.url, "--source", "parc-controlled,parcc", "--no-mlflow"])
    assert rc == 2 and "unknown source 'parcc'" in capsys.readouterr().err
