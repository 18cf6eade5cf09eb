"""What run_trials does to cut its overhead, checked for not changing what a trial does.

A call decodes the images and fingerprints the data once, loads the next trial's model on a
thread while the current one trains, seeds the CPU generator directly, and creates each
trial's MLflow run when the trial starts (only its end is left for after training). These
tests compare against the plain path (one :func:`run_trial` at a time, nothing shared or
done ahead) on a small zoo: same curves, same weights, same MLflow run contents, and a
killed or interrupted trial's MLflow run is ended, not left RUNNING.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from experiments.tinyzoo import build_zoo, write_image_folder
from features.extract import load_adapter
from history.store import HistoryStore
from recommender.executor import LocalExecutor
from recommender.finetune import (TrialConfig, load_task, prepare_trial, run_trial, run_trials, split_indices, train,
                                  wait_background)
from recommender.finetune.runner import _BOOKKEEPER, _Preloader
from recommender.finetune.tracking import _mlflow_start
from recommender.finetune.train import _seed, _state_numpy

pytestmark = pytest.mark.timeout(300)

FULL = TrialConfig(lr=3e-3, epochs=2, mode="full", patience=2)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("zoo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        specs = build_zoo(root / "zoo", models=["cnn-stripes", "cnn-textures"])
    finally:
        torch.set_num_threads(threads)
    write_image_folder(root / "task", "stripes-fine", 90, seed=3)
    return {"specs": specs, "task": root / "task"}


@pytest.fixture()
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _client(home):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def _weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------------ data
def test_snapshot_fingerprints_once_and_memoizes_splits(zoo):
    data = load_task(zoo["task"])
    snap = data.snapshot()
    assert snap.fingerprint() == data.fingerprint() and snap is not data
    tr, va = snap.split(0.2, 0)
    want = split_indices(data.labels, 0.2, 0)
    assert np.array_equal(tr, want[0]) and np.array_equal(va, want[1])
    tr[:] = -1  # a caller's change does not reach the memo
    assert np.array_equal(snap.split(0.2, 0)[0], want[0])
    assert not np.array_equal(snap.split(0.3, 1)[1], va)
    # the snapshot's identity is fixed for its call; the data itself still sees a changed file
    victim = data.inputs[0]
    with open(victim, "ab") as fh:
        fh.write(b"\0")
    assert data.fingerprint() != snap.fingerprint()
    assert data.snapshot().fingerprint() == data.fingerprint()
    again = snap.snapshot()  # search's snapshot, passed to each run_trials call: nothing recomputed
    assert again.fingerprint() == snap.fingerprint() and again._memo is not snap._memo
    assert np.array_equal(again.split(0.2, 0)[0], want[0])


def test_cached_decoding_gives_the_same_tensors(zoo):
    import torch

    data = load_task(zoo["task"]).snapshot()
    a = load_adapter(zoo["specs"]["cnn-stripes"])
    train._prepare(a, "images", torch.device("cpu"))
    train._DECODED.clear()
    first = train._Inputs(a, data).x
    assert len(train._DECODED) == 1
    again = train._Inputs(a, data).x  # from the cache
    direct = a.collate(data.inputs, "images")
    assert torch.equal(first, direct) and torch.equal(again, direct)
    # a trial sees its batches, which are copies: it cannot change what the next trial gets
    inputs = train._Inputs(a, data)
    inputs.batch(np.arange(len(data))).add_(1.0)
    inputs.batch(np.array([0, 2])).mul_(0.0)
    assert torch.equal(train._Inputs(a, data).x, direct)


def test_seeding_the_cpu_generator_is_torch_manual_seed():
    import torch

    torch.manual_seed(7)
    np.random.seed(7)
    want = torch.rand(5), np.random.rand(3)
    torch.rand(3), np.random.rand(2)
    _seed(7, torch.device("cpu"))
    assert torch.equal(torch.rand(5), want[0]) and np.array_equal(np.random.rand(3), want[1])


# ------------------------------------------------------------------------------ models
def test_preloader_loads_each_model_once_and_lets_it_go(zoo):
    a, b = zoo["specs"]["cnn-stripes"], zoo["specs"]["cnn-textures"]
    pre = _Preloader([a, a, b], "images")
    try:
        m0, later0, s0 = pre.adapter(0)
        assert later0 and b in pre._loads and s0 > 0  # the next model loads meanwhile
        m1, later1, s1 = pre.adapter(1)
        assert m1 is m0 and not later1 and a not in pre._loads and s1 == 0
        m2, later2, s2 = pre.adapter(2)
        assert m2 is not m0 and not later2 and not pre._loads and s2 > 0
        assert next(m2.module.parameters()).device.type == "cpu"
    finally:
        pre.close()


def test_trials_sharing_a_model_start_from_its_pretrained_weights(zoo, tmp_path, one_thread):
    """[A, B, A]: the second A trial gets A's pretrained weights back, not the first's fine-tune;
    every trial equals the same trial run alone."""
    a, b = zoo["specs"]["cnn-stripes"], zoo["specs"]["cnn-textures"]
    cfg2 = TrialConfig(lr=1e-2, epochs=2, mode="full", patience=2)
    data = load_task(zoo["task"])
    store = HistoryStore(f"sqlite:///{tmp_path / 'a.db'}")
    together = run_trials(store, LocalExecutor(), [(a, FULL), (b, FULL), (a, cfg2)], "t", data,
                          home=tmp_path / "ha", mlflow=False)
    store.dispose()
    for spec, cfg, r in zip([a, b, a], [FULL, FULL, cfg2], together):
        alone_store = HistoryStore(f"sqlite:///{tmp_path / f'{r.job_id}.db'}")
        alone = run_trial(alone_store, spec, "t", data, cfg, home=tmp_path / f"h{r.job_id}", mlflow=False)
        alone_store.dispose()
        assert r.status == alone.status == "completed"
        assert r.curve == pytest.approx(alone.curve, abs=1e-12)
        w1, w2 = _weights(r.weights), _weights(alone.weights)
        assert w1.keys() == w2.keys() and any(k.startswith("backbone/") for k in w1)
        for k in w1:
            np.testing.assert_allclose(w1[k], w2[k], rtol=0, atol=1e-6, err_msg=k)


def test_best_epoch_state_is_a_copy():
    import torch
    from torch import nn

    m = nn.Linear(3, 2)
    snap = _state_numpy(m)
    with torch.no_grad():
        m.weight.add_(1.0)
    assert not np.allclose(snap["weight"], m.weight.detach().numpy())


def test_saved_weights_are_the_fine_tuned_best_epoch(zoo, tmp_path, one_thread):
    """The saved backbone + head reproduce the trial's best validation accuracy, and the backbone
    is the fine-tuned one (not the pretrained weights put back after training)."""
    import torch
    from torch import nn

    spec = zoo["specs"]["cnn-textures"]
    cfg = TrialConfig(lr=3e-3, epochs=3, mode="full", patience=3)
    data = load_task(zoo["task"])
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    [r] = run_trials(store, LocalExecutor(), [(spec, cfg)], "t", data, home=tmp_path / "home", mlflow=False)
    store.dispose()
    w = _weights(r.weights)
    adapter = load_adapter(spec)
    backbone = train._prepare(adapter, "images", torch.device("cpu"))
    pretrained = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.load_state_dict({k.split("/", 1)[1]: torch.as_tensor(v) for k, v in w.items()
                              if k.startswith("backbone/")})
    assert any(not torch.equal(pretrained[k], v) for k, v in backbone.state_dict().items())
    head = nn.Linear(w["head/weight"].shape[1], data.num_classes)
    head.load_state_dict({k.split("/", 1)[1]: torch.as_tensor(v) for k, v in w.items() if k.startswith("head/")})
    _, va = split_indices(data.labels, cfg.val_fraction, cfg.seed)
    backbone.eval()
    with torch.no_grad():
        pred = head(train._features(adapter, train._Inputs(adapter, data).batch(va))).argmax(1).numpy()
    assert float(np.mean(pred == data.labels[va])) == pytest.approx(r.value)


def test_a_model_that_cannot_load_fails_its_trial_only(zoo, tmp_path):
    data = load_task(zoo["task"])
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    ghost = f"ghost=torchscript:{tmp_path / 'missing.pt'}"
    lin = TrialConfig(lr=3e-2, epochs=1, mode="linear")
    res = run_trials(store, LocalExecutor(), [(ghost, lin), (zoo["specs"]["cnn-stripes"], lin)], "t", data,
                     home=tmp_path / "home", mlflow=False)
    assert [r.status for r in res] == ["failed", "completed"]
    assert "does not exist" in res[0].error
    assert list(store.runs_frame().sort_values("job_id")["status"]) == ["failed", "completed"]
    store.dispose()


# ------------------------------------------------------------------------------ MLflow
def _contents(client, run_id):
    run = client.get_run(run_id)
    metrics = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
               for k in run.data.metrics}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != "job_id"}
    return run.info, run.data.params, tags, metrics


def test_mlflow_run_started_with_the_trial_has_the_same_contents(zoo, tmp_path, one_thread):
    spec = zoo["specs"]["cnn-stripes"]
    data = load_task(zoo["task"])
    s1 = HistoryStore(f"sqlite:///{tmp_path / 'one.db'}")
    alone = run_trial(s1, spec, "t", data, FULL, home=tmp_path / "h1", mlflow=True)  # created at the end
    s1.dispose()
    s2 = HistoryStore(f"sqlite:///{tmp_path / 'two.db'}")
    t0 = time.time()
    [r] = run_trials(s2, LocalExecutor(), [(spec, FULL)], "t", data, home=tmp_path / "h2", mlflow=True)
    runs = s2.runs_frame().set_index("job_id")
    s2.dispose()
    info1, params1, tags1, metrics1 = _contents(_client(tmp_path / "h1"), alone.mlflow_run)
    info2, params2, tags2, metrics2 = _contents(_client(tmp_path / "h2"), r.mlflow_run)
    assert params1 == params2 and params2["model"] == "cnn-stripes" and params2["lr"] == str(FULL.lr)
    assert tags1 == tags2 == {"status": "completed", "trial": runs.loc[r.job_id, "extra"]["trial"]}
    assert _client(tmp_path / "h2").get_run(r.mlflow_run).data.tags["job_id"] == str(r.job_id)
    assert metrics1.keys() == metrics2.keys() == {"val_accuracy", "train_loss", "best_val_accuracy"}
    assert [v for _, v in metrics2["val_accuracy"]] == pytest.approx(r.curve)
    assert metrics1 == metrics2  # same seeded trial, same numbers
    assert info1.status == info2.status == "FINISHED"
    # the run starts when the trial starts and lasts until it is recorded
    assert t0 * 1000 - 5 <= info2.start_time
    assert info2.end_time - info2.start_time >= 1000 * (r.duration_s - r.timings["mlflow_s"]) - 5
    assert runs.loc[r.job_id, "extra"]["mlflow_run"] == r.mlflow_run


def test_a_killed_trials_mlflow_run_is_ended_by_the_rerun(zoo, tmp_path):
    """A process killed mid-trial leaves its job running and its MLflow run RUNNING; the next
    call marks the job failed, ends that run as FAILED, and redoes the trial."""
    spec = zoo["specs"]["cnn-stripes"]
    lin = TrialConfig(lr=3e-2, epochs=1, mode="linear")
    data = load_task(zoo["task"])
    home = tmp_path / "home"
    home.mkdir()
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    p = prepare_trial(store, spec, "t", data, lin)  # as the killed process left it: job running ...
    left = _mlflow_start(None, home, p, data, int(time.time() * 1000))  # ... and its run RUNNING
    client = _client(home)
    assert left.run_id and client.get_run(left.run_id).info.status == "RUNNING"
    # this process's pid counts as gone for its own leftovers (see process_alive)
    assert store.runs_frame().iloc[0]["extra"]["pid"] == os.getpid()
    [r] = run_trials(store, LocalExecutor(), [(spec, lin)], "t", data, home=home, mlflow=True)
    assert r.status == "completed" and r.job_id != p.job_id and r.mlflow_run != left.run_id
    old = client.get_run(left.run_id)
    assert old.info.status == "FAILED" and old.data.tags["status"] == "failed"
    assert client.get_run(r.mlflow_run).info.status == "FINISHED"
    runs = store.runs_frame().set_index("job_id")
    assert runs.loc[p.job_id, "status"] == "failed" and "stale" in runs.loc[p.job_id, "extra"]["error"]
    store.dispose()


def test_an_interrupted_call_ends_the_started_mlflow_run(zoo, tmp_path):
    spec = zoo["specs"]["cnn-stripes"]
    lin = TrialConfig(lr=3e-2, epochs=3, mode="linear", patience=3)
    data = load_task(zoo["task"])
    home = tmp_path / "home"
    home.mkdir()
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")

    def stop(_spec, epoch, _acc):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trials(store, LocalExecutor(), [(spec, lin)], "t", data, home=home, mlflow=True, progress=stop)
    runs = store.runs_frame()
    assert list(runs["status"]) == ["failed"] and "interrupted" in runs["extra"].iloc[0]["error"]
    client = _client(home)
    exp = client.get_experiment_by_name("recommender-finetune")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["status"] == "failed"
    assert run.data.tags["job_id"] == str(int(runs["job_id"].iloc[0]))
    store.dispose()


def test_a_call_leaves_its_recordings_to_the_caller_and_the_next_call_keeps_them(zoo, tmp_path):
    """With ``background``, run_trials returns before its last trial is recorded (search, finetune);
    the next call must not take that job, still running in the store, for a leftover."""
    import threading

    a, b = zoo["specs"]["cnn-stripes"], zoo["specs"]["cnn-textures"]
    lin = TrialConfig(lr=3e-2, epochs=1, mode="linear")
    data = load_task(zoo["task"])
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    gate = threading.Event()
    recording = [_BOOKKEEPER.submit(gate.wait, 60)]  # the bookkeeping thread is busy until the gate opens
    try:
        [r1] = run_trials(store, LocalExecutor(), [(a, lin)], "t", data, home=tmp_path / "home", mlflow=False,
                          background=recording)
        assert list(store.runs_frame()["status"]) == ["running"] and r1.weights is None
        [r2] = run_trials(store, LocalExecutor(), [(b, lin)], "t", data, home=tmp_path / "home", mlflow=False,
                          background=recording)
    finally:
        gate.set()
    wait_background(recording)
    runs = store.runs_frame().set_index("job_id")
    assert list(runs["status"]) == ["completed", "completed"]
    assert runs.loc[r1.job_id, "value"] == r1.value and r1.weights and os.path.isfile(r1.weights)
    store.dispose()
