"""``python -m recommender history ...`` and the MLflow-runs importer (against a real MLflow store)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from history.errors import HistoryImportError
from history.importers import get_importer
from history.store import HistoryStore
from recommender.cli import main

REPO = Path(__file__).resolve().parents[2]
ACTIONS = ["pull", "import", "export", "stats", "list-models", "list-datasets", "show", "add-dataset", "enrich"]


def cli(store_url, *argv):
    return main(["--store", store_url, "history", *map(str, argv)])


@pytest.fixture()
def url(home):
    return f"sqlite:///{home / 'history.db'}"


@pytest.fixture()
def runs_csv(tmp_path):
    f = tmp_path / "runs.csv"
    f.write_text(
        "model,dataset,accuracy,lr,model_family,dataset_num_samples,dataset_num_classes,score_logme\n"
        "vit,pets,0.91,0.01,vit,3680,37,2.5\n"
        "vit,pets,0.89,0.1,vit,3680,37,2.5\n"
        "resnet,pets,0.85,0.01,cnn,3680,37,1.0\n"
        "resnet,dtd,0.70,0.01,cnn,,,\n"
    )
    return f


@pytest.mark.parametrize("action", [None] + ACTIONS)
def test_help(action, capsys):
    argv = ["history"] + ([action] if action else []) + ["--help"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m recommender history") and "--store" in out


def test_import_stats_list_show(url, runs_csv, capsys):
    assert cli(url, "import", runs_csv, "--input-format", "generic") == 0
    out = capsys.readouterr().out
    assert "jobs: 4 parsed, 4 added" in out and "scores: 2 parsed, 2 added" in out

    assert cli(url, "import", runs_csv, "--input-format", "generic", "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["jobs_added"], rep["jobs_existing"], rep["source"]) == (0, 4, "runs")

    assert cli(url, "stats", "--json") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["totals"]["jobs"] == 4 and st["by_source"]["runs"]["models"] == 2
    assert cli(url, "stats") == 0
    out = capsys.readouterr().out
    assert "jobs by source" in out and "runs" in out and "logme" in out

    assert cli(url, "list-models", "--format", "csv") == 0
    df = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert df.set_index("name")["jobs"].to_dict() == {"resnet": 2, "vit": 2}
    assert cli(url, "list-datasets", "--format", "json") == 0
    ds = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert ds["pets"]["num_classes"] == 37 and ds["dtd"]["num_classes"] is None and ds["dtd"]["jobs"] == 1
    assert cli(url, "list-models") == 0
    out = capsys.readouterr().out
    assert "resnet" in out and "cnn" in out

    assert cli(url, "show", "dataset", "pets", "--top", "2") == 0
    out = capsys.readouterr().out
    assert "jobs: 3" in out and "num_classes" in out
    best = [line for line in out.splitlines() if "0.9100" in line or "0.8900" in line or "0.8500" in line]
    assert len(best) == 2 and "0.9100" in best[0]  # best first, --top respected
    assert cli(url, "show", "model", "vit") == 0
    assert "scores: 1" in capsys.readouterr().out


def test_list_source_filter(url, runs_csv, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("model,dataset,accuracy\nbert,sst2,0.9\n")
    cli(url, "import", runs_csv, "--input-format", "generic")
    cli(url, "import", other, "--input-format", "generic")
    capsys.readouterr()
    assert cli(url, "list-models", "--source", "other", "--format", "json") == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["bert"]
    assert cli(url, "list-models", "--source", "nope") == 2
    assert "sources: other, runs" in capsys.readouterr().err


def test_export_then_import_via_cli(url, runs_csv, tmp_path, capsys):
    cli(url, "import", runs_csv, "--input-format", "generic")
    out_file = tmp_path / "out" / "h.parquet"
    assert cli(url, "export", out_file) == 0
    assert "exported 4 jobs, 2 scores, 2 models and 2 datasets" in capsys.readouterr().out
    url2 = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert cli(url2, "import", out_file, "--input-format", "generic", "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["jobs_added"], rep["scores_added"], rep["rows_dropped"]) == (4, 2, 0)


def test_percent_flag(url, tmp_path, capsys):
    f = tmp_path / "pct.csv"
    f.write_text("model,dataset,accuracy\na,d,91.5\n")
    assert cli(url, "import", f, "--input-format", "generic") == 2
    assert "--unit percent" in capsys.readouterr().err
    assert cli(url, "import", f, "--input-format", "generic", "--unit", "percent", "--json") == 0
    assert json.loads(capsys.readouterr().out)["jobs_added"] == 1


def test_unknown_format(url, runs_csv, capsys):
    assert cli(url, "import", runs_csv, "--input-format", "excel") == 2
    err = capsys.readouterr().err
    assert "unknown import format 'excel'" in err and "generic" in err and "mlflow" in err


def test_add_dataset(url, capsys):
    assert cli(url, "add-dataset", "leaves", "--num-samples", 4000, "--num-classes", 38, "--domain", "plants") == 0
    assert "added dataset leaves" in capsys.readouterr().out
    assert cli(url, "add-dataset", "leaves", "--num-samples", 10, "--num-classes", 2) == 2
    assert "pass --update" in capsys.readouterr().err
    assert cli(url, "add-dataset", "leaves", "--num-samples", 10, "--num-classes", 2, "--update") == 0
    capsys.readouterr()
    assert cli(url, "list-datasets", "--format", "json") == 0
    (d,) = json.loads(capsys.readouterr().out)
    assert (d["num_samples"], d["num_classes"], d["modality"], d["domain"]) == (10, 2, "image", "plants")
    assert cli(url, "add-dataset", "bad", "--num-samples", 0, "--num-classes", 2) == 2


def test_show_unknown_suggests(url, runs_csv, capsys):
    cli(url, "import", runs_csv, "--input-format", "generic")
    capsys.readouterr()
    assert cli(url, "show", "model", "vitt") == 2
    assert "Did you mean: vit" in capsys.readouterr().err


def test_empty_store_stats(url, capsys):
    HistoryStore(url).dispose()  # an explicit --store must exist for read commands
    assert cli(url, "stats") == 0
    assert "store is empty" in capsys.readouterr().out


def _run_cli(*argv, env=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "recommender", *map(str, argv)], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=120)


def test_unopenable_store_is_a_clear_error(home):
    """A real process: exit code 2, one 'error:' line naming the store, no traceback."""
    r = _run_cli("--store", "sqlite:////dev/null/nowhere/history.db", "history", "stats")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "sqlite:////dev/null/nowhere/history.db" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("bad_url", ["postgresql+psycopg://nobody@127.0.0.1:1/none", "nodialect://x"])
def test_unopenable_store_urls(bad_url, home, capsys):
    assert main(["--store", bad_url, "history", "list-models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot") and "history store" in err


# ---------------------------------------------------------------------- pull
def test_pull_list_and_unknown(url, capsys):
    pull = pytest.importorskip("history.pull")
    assert cli(url, "pull", "--list") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in pull.PUBLIC_HISTORIES)
    assert cli(url, "pull", "parcc") == 2
    assert "parc" in capsys.readouterr().err


@pytest.mark.slow
def test_pull_from_local_folder(url, shared_data, capsys):
    pull = pytest.importorskip("history.pull")
    if "parc" not in pull.PUBLIC_HISTORIES:
        pytest.skip("no 'parc' entry in PUBLIC_HISTORIES yet")
    assert cli(url, "pull", "parc", "--from", shared_data / "parc") == 0
    out = capsys.readouterr().out
    assert "jobs:" in out and "added" in out
    assert cli(url, "pull", "parc", "--from", shared_data / "parc", "--json") == 0
    assert json.loads(capsys.readouterr().out)["jobs_added"] == 0


# ---------------------------------------------------------------------- MLflow
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A real MLflow SQLite tracking store with a few fine-tuning runs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("finetune", artifact_location=str(d / "artifacts"))
    client.create_experiment("other", artifact_location=str(d / "artifacts2"))
    t0 = int(time.time() * 1000)

    def run(params, metrics=None, status="FINISHED", pct=False):
        r = client.create_run(exp, start_time=t0)
        for k, v in params.items():
            client.log_param(r.info.run_id, k, v)
        for k, v in (metrics or {}).items():
            client.log_metric(r.info.run_id, k, v)
        if status != "RUNNING":
            client.set_terminated(r.info.run_id, status=status)
        return r.info.run_id

    ids = {
        "vit": run({"model": "vit", "dataset": "pets", "lr": "0.01", "epochs": "30", "optimizer": "sgd",
                    "model_family": "vit", "dataset_num_classes": "37"},
                   {"accuracy": 0.91, "loss": 0.3, "acc_pct": 91.0, "steps": 500}),
        "resnet": run({"model": "resnet", "dataset": "pets", "lr": "0.1", "epochs": "30"}, {"accuracy": 0.85}),
        "failed": run({"model": "resnet", "dataset": "dtd", "lr": "1.0"}, {}, status="FAILED"),
        "nomodel": run({"dataset": "pets", "lr": "0.01"}, {"accuracy": 0.5}),
        "nometric": run({"model": "vit", "dataset": "dtd"}, {"loss": 0.9}),
        "running": run({"model": "vit", "dataset": "cars"}, {"accuracy": 0.2}, status="RUNNING"),
    }
    return {"uri": uri, "experiment_id": exp, "ids": ids}


@pytest.mark.slow
def test_mlflow_import(store, mlflow_store):
    rep = get_importer("mlflow").run(store, mlflow_store["uri"], experiment="finetune", progress=False)
    assert (rep.rows_read, rep.jobs_added) == (6, 3)
    assert rep.dropped == {
        "run has no 'model' or no 'dataset' param": 1,
        "finished run without metric 'accuracy'": 1,
        "run not finished (MLflow status RUNNING)": 1,
    }
    jobs = store.jobs_frame(include_failed=True).set_index("provenance")
    exp, ids = mlflow_store["experiment_id"], mlflow_store["ids"]
    vit = jobs.loc[f"mlflow:{exp}/{ids['vit']}"]
    assert (vit["model"], vit["dataset"], vit["value"], vit["status"]) == ("vit", "pets", 0.91, "completed")
    assert vit["hparams"] == {"lr": 0.01, "epochs": 30, "optimizer": "sgd"}
    assert vit["source"] == "mlflow:finetune"
    failed = jobs.loc[f"mlflow:{exp}/{ids['failed']}"]
    assert failed["status"] == "failed" and pd.isna(failed["value"])
    assert store.get_model("vit")["family"] == "vit" and store.get_dataset("pets")["num_classes"] == 37
    # idempotent
    again = get_importer("mlflow").run(store, mlflow_store["uri"], experiment=exp, progress=False)
    assert (again.jobs_added, again.jobs_existing) == (0, 3)
    assert len(store.jobs_frame(include_failed=True)) == 3


@pytest.mark.slow
def test_mlflow_import_cli_metric_and_percent(url, mlflow_store, capsys):
    assert cli(url, "import", mlflow_store["uri"], "--input-format", "mlflow", "--experiment", "finetune",
               "--metric", "loss", "--source", "ml-loss", "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["source"] == "ml-loss" and rep["jobs_added"] == 3  # vit/pets, failed, vit/dtd (loss 0.9)
    imp = get_importer("mlflow")
    with pytest.raises(HistoryImportError, match=r"metric 'acc_pct' is 91.0, outside \[0, 1\].*--unit percent"):
        imp.read(mlflow_store["uri"], experiment="finetune", metric="acc_pct")
    batch = imp.read(mlflow_store["uri"], experiment="finetune", metric="acc_pct", unit="percent")
    assert [j["value"] for j in batch.jobs if j["status"] == "completed"] == [pytest.approx(0.91)]
    with pytest.raises(HistoryImportError, match=r"outside \[0, 100\]"):
        imp.read(mlflow_store["uri"], experiment="finetune", unit="percent", metric="steps")
    # the tracking URI defaults to --tracking-uri
    assert main(["--store", url, "--tracking-uri", mlflow_store["uri"], "history", "import", "--input-format",
                 "mlflow", "--experiment", "finetune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs_added"] == 3


@pytest.mark.slow
def test_mlflow_bad_inputs(mlflow_store, tmp_path):
    imp = get_importer("mlflow")
    with pytest.raises(HistoryImportError, match="--experiment"):
        imp.read(mlflow_store["uri"])
    with pytest.raises(HistoryImportError, match="no MLflow experiment 'finetun'.*did you mean: finetune"):
        imp.read(mlflow_store["uri"], experiment="finetun")
    missing = tmp_path / "nope" / "mlflow.db"
    with pytest.raises(HistoryImportError, match="does not exist"):
        imp.read(f"sqlite:///{missing}", experiment="finetune")
    assert not missing.exists()  # no MLflow store created as a side effect
