"""`train` / `predict` / `demo` end to end: real SQLite history store, real MLflow SQLite store.

A migrated, empty MLflow database is built once per session and copied into each test's
home (MLflow's schema migrations take ~6 s, the copy milliseconds).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.defaults import DEFAULT_FEATURES
from recommender.registry import RECOMMENDERS, list_recommenders
from recommender.training import build_history
from tests.helpers import make_synthetic_store, mlflow_template_db

ADD_DATASET_HINT = "python -m recommender history add-dataset {} --num-samples N --num-classes C"


# ----------------------------------------------------------------------------- helpers
def folder_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture()
def mlflow_template() -> Path:
    return mlflow_template_db()


@pytest.fixture()
def ml_home(home, mlflow_template) -> Path:
    shutil.copy(mlflow_template, home / "mlflow.db")
    return home


@pytest.fixture()
def synth(store):
    make_synthetic_store(store)
    return store


# ----------------------------------------------------------------------------- train + predict
def test_train_logs_saves_and_predict_formats_agree(synth, ml_home, cli):
    rc, out, err = cli("train", "-r", "lr", "--cv-folds", "2")
    assert rc == 0, err
    assert "registered recommender-lr version 1" in out
    assert "30 (model, dataset) targets" in out and "4 datasets x 8 models" in out
    folder = ml_home / "models" / "lr"
    info = json.loads((folder / "training.json").read_text())
    assert info["store"].endswith("history.db") and info["features"] == DEFAULT_FEATURES == "d,m"
    assert info["counts"]["datasets"] == 4 and info["mlflow"]["model_version"] == 1
    assert {"train_rmse", "train_pearson", "cv_pearson"} <= set(info["metrics"])
    assert "lr" in json.loads((ml_home / "models" / "index.json").read_text())
    assert not [p for p in (ml_home / "models").iterdir() if p.name.startswith(".")]

    # ds3 has jobs for m0..m5: by default only m6, m7 are ranked
    rc, out, err = cli("predict", "--dataset", "ds3", "--format", "json")
    assert rc == 0, err
    res = json.loads(out)
    assert [r["model"] for r in res["ranking"]] != [] and {r["model"] for r in res["ranking"]} == {"m6", "m7"}
    assert res["excluded_finetuned"] == 6 and all(r["real"] is None for r in res["ranking"])

    rc, out, _ = cli("predict", "--dataset", "ds3", "--include-finetuned", "--format", "json", "--top", "0")
    rows = json.loads(out)["ranking"]
    rc_csv, out_csv, _ = cli("predict", "--dataset", "ds3", "--include-finetuned", "--format", "csv", "--top", "0")
    rc_tab, out_tab, _ = cli("predict", "--dataset", "ds3", "--include-finetuned", "--top", "3")
    assert rc == rc_csv == rc_tab == 0
    csv = pd.read_csv(io.StringIO(out_csv))
    assert list(csv.columns) == ["rank", "model", "predicted", "std", "real", "guess", "prior", "measured", "elsewhere"]
    assert list(csv["model"]) == [r["model"] for r in rows] and len(rows) == 8
    assert list(csv["rank"]) == list(range(1, 9))
    pred = [r["predicted"] for r in rows]
    assert pred == sorted(pred, reverse=True)
    np.testing.assert_allclose(csv["predicted"], pred, rtol=1e-5)
    # real accuracies are the stored targets of ds3; models without a job have none
    t = synth.targets().query("dataset == 'ds3'").set_index("model")["value"]
    for r in rows:
        assert (r["real"] is None) == (r["model"] not in t.index)
        if r["real"] is not None:
            assert r["real"] == pytest.approx(t[r["model"]])
    lines = out_tab.splitlines()
    assert lines[1].startswith("context: ")  # which source and regime the numbers refer to
    assert lines[2].split() == ["rank", "model", "predicted", "real"]
    assert [ln.split()[1] for ln in lines[4:7]] == [r["model"] for r in rows[:3]]


def test_new_dataset_is_predictable_and_uses_new_scores(synth, home, cli):
    rc, _, err = cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")
    assert rc == 0, err
    synth.add_dataset("brand_new", num_samples=1500, num_classes=12, modality="image")
    rc, out, err = cli("predict", "--dataset", "brand_new", "--format", "json", "--top", "0")
    assert rc == 0, err
    before = {r["model"]: r["predicted"] for r in json.loads(out)["ranking"]}
    assert set(before) == {f"m{i}" for i in range(8)} and all(np.isfinite(list(before.values())))
    # MS scores stored after training change the cold-start prediction (reversed quality)
    synth.commit(scores=[{"model": f"m{i}", "dataset": "brand_new", "method": "logme", "value": 1.0 - i / 7,
                          "source": "synthetic"} for i in range(8)])
    rc, out, _ = cli("predict", "--dataset", "brand_new", "--format", "json", "--top", "0")
    after = {r["model"]: r["predicted"] for r in json.loads(out)["ranking"]}
    assert rc == 0 and set(after) == set(before)
    assert max(abs(after[m] - before[m]) for m in before) > 1e-6


# ----------------------------------------------------------------------------- bad input
def test_unknown_dataset_suggests_names_and_add_dataset_command(synth, cli):
    assert cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")[0] == 0
    rc, out, err = cli("predict", "--dataset", "ds_1")
    assert rc == 2 and out == ""
    assert "Did you mean" in err and "ds1" in err
    assert ADD_DATASET_HINT.format("ds_1") in err


def test_predict_before_train_says_to_train(synth, cli):
    rc, _, err = cli("predict", "--dataset", "ds1")
    assert rc == 2
    assert "python -m recommender train" in err


@pytest.mark.parametrize("command", [["train", "--no-mlflow"], ["predict", "--dataset", "ds1"]])
def test_unknown_recommender_lists_valid_names(synth, cli, command):
    rc, _, err = cli(*command, "--recommender", "lgmb")
    assert rc == 2
    assert "'lgmb'" in err
    for name in list_recommenders():
        assert name in err


def test_corrupt_saved_model_is_reported_and_left_alone(synth, home, cli):
    assert cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")[0] == 0
    folder = home / "models" / "lr"
    (folder / "meta.json").write_text("{ not json")
    before = folder_digest(folder)
    rc, out, err = cli("predict", "--dataset", "ds1", "-r", "lr")
    assert rc == 2 and out == ""
    assert "cannot be loaded" in err and str(folder) in err
    assert "python -m recommender train --recommender lr" in err
    assert folder_digest(folder) == before


def test_fewer_than_two_datasets_refuses_to_train(store, home, cli):
    store.commit(jobs=[{"model": f"m{i}", "dataset": "only", "value": 0.5 + i / 10, "source": "s"} for i in range(4)])
    rc, out, err = cli("train", "--no-mlflow")
    assert rc == 2
    assert "needs at least 2" in err and "1 dataset(s)" in err
    assert "history pull" in err
    models = home / "models"
    assert not models.exists() or not any(models.iterdir())


def test_several_regimes_are_not_pooled_full_is_the_default(synth, home, cli):
    synth.commit(jobs=[{"model": "m0", "dataset": "ds0", "value": 0.3, "regime": "vtab1k", "source": "synthetic"}])
    rc, _, err = cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")
    assert rc == 0, err
    assert "--regime" in err and "'full'" in err and "vtab1k" in err  # says what it chose and how to change it
    info = json.loads((home / "models" / "lr" / "training.json").read_text())
    assert info["regime"] == "full"

    with pytest.raises(Exception, match="--regime"):  # asked explicitly to pool: refused
        build_history(synth)
    rc, out, err = cli("train", "-r", "lr", "--no-mlflow", "--regime", "vtab1k", "--cv-folds", "0")
    assert rc == 2 and "dataset" in err  # one dataset in that regime: refused, not pooled


def test_models_of_another_modality_are_not_candidates(synth, cli):
    synth.commit(models=[{"name": "bert", "modality": "text"}, {"name": "mystery"}],
                 datasets=[{"name": "sst", "modality": "text", "num_samples": 100, "num_classes": 2}],
                 jobs=[{"model": "bert", "dataset": "sst", "value": 0.9, "source": "synthetic"},
                       {"model": "mystery", "dataset": "ds1", "value": 0.6, "source": "synthetic"}])
    assert cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")[0] == 0
    rc, out, err = cli("predict", "--dataset", "ds3", "--format", "json", "--top", "50")
    assert rc == 0, err
    ranked = [r["model"] for r in json.loads(out)["ranking"]] if isinstance(json.loads(out), dict) else \
        [r["model"] for r in json.loads(out)]
    assert "bert" not in ranked and "mystery" in ranked  # unknown modality is kept
    rc, out, _ = cli("predict", "--dataset", "ds3")
    assert "1 models of another modality" in out


def test_failed_save_keeps_previous_model(synth, home, cli, monkeypatch):
    assert cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")[0] == 0
    folder = home / "models" / "lr"
    before = folder_digest(folder)
    cls = RECOMMENDERS["lr"].cls
    real_save = cls.save

    def failing_save(self, path):
        real_save(self, path)  # files written ...
        raise OSError(28, "No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(cls, "save", failing_save)
    synth.commit(jobs=[{"model": "m6", "dataset": "ds3", "value": 0.9, "source": "synthetic"}])
    rc, _, err = cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")
    assert rc == 2
    assert "could not save" in err and "left unchanged" in err
    assert folder_digest(folder) == before
    assert [p.name for p in (home / "models").iterdir() if p.name.startswith(".")] == []


def test_mlflow_failure_still_saves_model(synth, home, cli):
    rc, out, err = cli("--tracking-uri", "nosuch://tracking", "train", "-r", "lr", "--cv-folds", "0")
    assert rc == 3  # documented: saved, but not logged
    assert "warning: MLflow logging failed for lr" in err and "nosuch://tracking" in err
    assert (home / "models" / "lr" / "meta.json").is_file()
    info = json.loads((home / "models" / "lr" / "training.json").read_text())
    assert info["mlflow"]["ok"] is False and info["mlflow"]["error"]
    rc, out, err = cli("predict", "--dataset", "ds3")
    assert rc == 0 and "m6" in out


def test_mlflow_unreachable_server_still_saves_model(synth, home, cli, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    rc, _, err = cli("--tracking-uri", "http://127.0.0.1:9", "train", "-r", "lr", "--cv-folds", "0")
    assert rc == 3 and "MLflow logging failed" in err
    assert (home / "models" / "lr" / "meta.json").is_file()


# ----------------------------------------------------------------------------- real history + demo
@pytest.mark.slow
def test_demo_on_transfergraph_is_idempotent_and_predict_shows_real_accuracy(shared_data, store, home, cli):
    rc, out, err = cli("demo", "--from", shared_data, "-r", "lr", "--no-mlflow")
    assert rc == 0, err
    assert re.search(r"[1-9][\d,]* jobs added", out)
    top = [ln for ln in out.splitlines() if re.fullmatch(r"\s+\d+\s+\S+\s+[\d.]+%\s+[\d.]+%\s+\d+", ln)]
    assert len(top) == 5, out  # top-5 rows for the held-out dataset: rank, model, predicted, real, real rank
    rc, out2, err = cli("demo", "--from", shared_data, "-r", "lr", "--no-mlflow")
    assert rc == 0, err
    assert " 0 jobs added" in out2 and "[4/4]" in out2

    # predict ranks real TransferGraph models; its real accuracies are the best test_accuracy
    rc, out, err = cli("predict", "--dataset", "pets", "--include-finetuned", "--format", "csv", "--top", "0")
    assert rc == 0, err
    ranked = pd.read_csv(io.StringIO(out))
    rec = pd.read_csv(shared_data / "transfergraph-image" / "records.csv")
    truth = rec[rec["finetuned_dataset"] == "pets"].groupby("model")["test_accuracy"].max()
    got = ranked.dropna(subset=["real"]).set_index("model")["real"]
    assert len(got) >= 170
    common = got.index.intersection(truth.index)
    assert len(common) >= 170
    np.testing.assert_allclose(got[common], truth[common], rtol=1e-6)
    assert ranked["predicted"].is_monotonic_decreasing


def test_demo_bad_data_folder(home, cli, tmp_path):
    rc, _, err = cli("demo", "--from", tmp_path, "--no-mlflow")
    assert rc == 2 and "transfergraph-image" in err and "--from" in err


def test_models_known_only_by_score_are_marked_as_guesses(synth, cli):
    """A model with no jobs and no meta-features (as `score` adds one) is ranked, marked as a guess."""
    assert cli("train", "-r", "lr", "--no-mlflow", "--cv-folds", "0")[0] == 0
    synth.commit(models=[{"name": "scored_only", "feature_dim": 16}],
                 scores=[{"model": "scored_only", "dataset": "ds3", "method": "logme", "value": 0.5,
                          "source": "score-cli"}])
    rc, out, _ = cli("predict", "--dataset", "ds3", "--top", "0")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if " scored_only " in ln)
    assert line.rstrip().endswith("?")
    assert "1 models have no fine-tuning history and no meta-features" in out
    assert sum(ln.rstrip().endswith("?") for ln in out.splitlines()) == 1  # m6/m7 (meta, no ds3 job) are not
    rc, out, _ = cli("predict", "--dataset", "ds3", "--format", "json")
    rows = {r["model"]: r for r in json.loads(out)["ranking"]}
    assert rows["scored_only"]["guess"] is True and rows["m6"]["guess"] is False
