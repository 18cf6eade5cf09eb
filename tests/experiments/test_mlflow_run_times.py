"""MLflow run times reflect the work: a training run spans its fit, an evaluation's child run
lasts its method's fit + predict time (read back from a real SQLite MLflow store)."""
from __future__ import annotations

import json
import shutil
import time

import pytest

import recommender.registry as registry
import recommender.training as training
from recommender.cli import main
from tests.helpers import make_synthetic_store, mlflow_template_db


def _client(home):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def test_train_run_spans_the_fit(store, home, capsys, monkeypatch):
    make_synthetic_store(store)
    shutil.copy(mlflow_template_db(), home / "mlflow.db")

    fits = []
    real = registry.create_recommender

    def create(name, **kw):
        rec = real(name, **kw)
        fit = rec.fit

        def timed(*a, **k):
            t0 = time.time()
            out = fit(*a, **k)
            fits.append((t0, time.time()))
            return out

        rec.fit = timed
        return rec

    monkeypatch.setattr(training, "create_recommender", create)  # where train_recommenders looks it up
    rc = main(["--home", str(home), "--store", store.url, "train", "-r", "lr"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((home / "models" / "lr" / "training.json").read_text())
    run = _client(home).get_run(info["mlflow"]["run_id"]).info
    start, end = fits[0]  # the first fit is the model's (later ones, if any, are cross-validation)
    assert run.start_time <= int(start * 1000) and run.end_time >= int(end * 1000)
    assert run.end_time - run.start_time >= 1000 * info["metrics"]["fit_seconds"] - 1


def test_evaluation_child_runs_last_their_methods_time(request, home, capsys, tmp_path):
    parc = request.getfixturevalue("parc_store")  # tests/experiments/conftest.py
    before = int(time.time() * 1000)
    out_json = tmp_path / "res.json"
    rc = main(["evaluate", "--store", parc.url, "--no-progress", "--source", "parc-controlled",
               "--recommenders", "lr", "--features", "d,m", "--baselines", "model-mean",
               "--datasets", "cub200,stanford_dogs", "--home", str(home), "--no-plots", "--json", str(out_json)])
    assert rc == 0, capsys.readouterr().err
    timings = json.loads(out_json.read_text())["timings_s"]
    client = _client(home)
    runs = client.search_runs([client.get_experiment_by_name("evaluate/parc-controlled").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags).info
    children = {r.data.tags["mlflow.runName"]: r.info for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(children) == set(timings) == {"lr[d,m]", "model-mean"}
    assert before <= parent.start_time
    for name, run in children.items():
        assert run.end_time - run.start_time == pytest.approx(1000 * timings[name], abs=5)
        assert parent.start_time <= run.start_time and run.end_time <= parent.end_time
