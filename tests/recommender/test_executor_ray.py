"""``score`` and ``search`` through a real local Ray cluster: a head and a second worker node,
both on 127.0.0.1 with one CPU each, started with ``ray start`` in a private temp dir and
stopped by PID. The stored results must equal those of the local executor; a worker killed
in the middle of a trial is retried; a driver killed mid-run is resumed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from experiments.tinyzoo import build_bed, fill_history
from history.store import HistoryStore
from recommender.cli import main
from recommender.finetune import PID_DIR_ENV, SLOW_ENV, TrialConfig
from tests.helpers import free_port

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
METHODS = "logme,hscore,leep,knn1"
SEARCH_ARGS = ["--mode", "linear", "--lrs", "3e-2", "--epochs", "8", "--patience", "3", "--no-mlflow"]
HISTORY_TASKS = ["digits-lo", "stripes-fine", "textures-faint"]


def _ray_pids(tmp: str) -> list[int]:
    """PIDs of the processes of our cluster (their command lines name its temp dir)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if tmp.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("raytest")
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray puts unix sockets under it
    port = free_port()
    flag, piddir = root / "slow", root / "pids"
    piddir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", SLOW_ENV: str(flag),
           PID_DIR_ENV: str(piddir), "OMP_NUM_THREADS": "1"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "80000000",
              "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", tmp,
                        *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", *common], env=env, check=True,
                       capture_output=True, timeout=120)
        yield {"address": f"127.0.0.1:{port}", "flag": flag, "piddir": piddir, "tmp": tmp, "env": env}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for pid in _ray_pids(tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """The tiny zoo (6 CNNs), a target task and a history of real linear-probe fine-tunes."""
    return build_bed(tmp_path_factory.mktemp("bed"), HISTORY_TASKS, TrialConfig(lr=3e-2, epochs=8, mode="linear",
                                                                                   patience=3),
                     images=60, new_images=100)


@pytest.fixture(scope="module")
def pg_template(bed, request):
    """A PostgreSQL database holding the bed's history (copied per test with CREATE DATABASE ... TEMPLATE)."""
    import psycopg

    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute('CREATE DATABASE "bed"')
    bed_url = url.rsplit("/", 1)[0] + "/bed"
    store = HistoryStore(bed_url)
    fill_history(store, bed["root"], bed["specs"], HISTORY_TASKS, TrialConfig(lr=3e-2, epochs=8, mode="linear",
                                                                               patience=3), bed["root"] / "home")
    store.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request):
    return request.param


class Ctx:
    """A fresh home and history store (a copy of the bed's history) for one run of a command."""

    def __init__(self, bed, tmp_path, name, backend="sqlite", request=None):
        self.home = tmp_path / name
        self.home.mkdir()
        if backend == "postgres":
            import psycopg

            url = request.getfixturevalue("pg_template")
            db = f"{request.node.name}-{name}".replace("[", "_").replace("]", "")[-60:]
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{db}" TEMPLATE "bed"')
            self.url = url.rsplit("/", 1)[0] + "/" + db
        else:
            shutil.copy(bed["root"] / "history.db", self.home / "history.db")
            self.url = f"sqlite:///{self.home / 'history.db'}"

    def store(self):
        return HistoryStore(self.url)


def _cli(ctx, capsys, *args):
    rc = main(["--home", str(ctx.home), "--store", ctx.url, *map(str, args)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _scores(ctx):
    s = ctx.store()
    df = s.scores_frame()
    s.dispose()
    return {(r.model, r.dataset, r.method): r.value for r in df.itertuples()}


def _jobs(ctx, dataset):
    s = ctx.store()
    runs = s.runs_frame(dataset=dataset)
    s.dispose()
    return runs


def test_score_on_ray_equals_local(bed, cluster, tmp_path, capsys, backend, request):
    args = ["score", "--dataset", "digits-new", "--data", bed["root"] / "data" / "digits-new", "--models",
            ",".join(bed["specs"].values()), "--methods", METHODS, "--probe-size", 60, "--no-progress", "--no-cache",
            "--format", "json"]
    assert len(bed["specs"]) >= 6
    local, remote = Ctx(bed, tmp_path, "local", backend, request), Ctx(bed, tmp_path, "ray", backend, request)
    _cli(local, capsys, *args)
    out = json.loads(_cli(remote, capsys, *args, "--executor", "ray", "--address", cluster["address"]))
    assert out["failed"] == []
    a, b = _scores(local), _scores(remote)
    assert len(a) == 6 * len(METHODS.split(","))
    assert a.keys() == b.keys()
    assert b == pytest.approx(a, rel=1e-6, abs=1e-9)


def _train(home, capsys):
    _cli(home, capsys, "train", "--recommender", "lr", "--features", "d,m", "--no-mlflow", "--cv-folds", "0")


def _search_args(bed, budget=3):
    return ["search", "--dataset", "digits-new", "--data", bed["root"] / "data" / "digits-new", "--models",
            ",".join(bed["specs"].values()), "--budget", budget, *SEARCH_ARGS, "--format", "json"]


def _trials(ctx):
    runs = _jobs(ctx, "digits-new")
    return sorted((r.model, r.status, round(float(r.value), 9), r.extra["trial"]) for r in runs.itertuples())


def test_search_on_ray_equals_local(bed, cluster, tmp_path, capsys, backend, request):
    local, remote = Ctx(bed, tmp_path, "local", backend, request), Ctx(bed, tmp_path, "ray", backend, request)
    _train(local, capsys)
    _train(remote, capsys)
    a = json.loads(_cli(local, capsys, *_search_args(bed)))
    b = json.loads(_cli(remote, capsys, *_search_args(bed), "--executor", "ray", "--address", cluster["address"]))
    assert a["new_trials"] == b["new_trials"] == 3
    assert [p["model"] for p in a["picks"]] == [p["model"] for p in b["picks"]]
    assert _trials(local) == _trials(remote)
    assert len(_trials(remote)) == 3


def test_static_search_runs_its_trials_in_parallel_with_the_same_results(bed, cluster, tmp_path, capsys):
    """static on Ray submits the whole budget (3 models x 2 learning rates) at once."""
    local, remote = Ctx(bed, tmp_path, "local"), Ctx(bed, tmp_path, "ray")
    args = [*_search_args(bed), "--strategy", "static", "--lrs", "1e-2,3e-2"]
    for c in (local, remote):
        _train(c, capsys)
    a = json.loads(_cli(local, capsys, *args))
    b = json.loads(_cli(remote, capsys, *args, "--executor", "ray", "--address", cluster["address"]))
    assert a["new_trials"] == b["new_trials"] == 6
    assert [p["model"] for p in a["picks"]] == [p["model"] for p in b["picks"]]
    assert _trials(local) == _trials(remote)


def _wait(cond, timeout=180, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_test_setup(bed, cluster, tmp_path, capsys, name):
    """A fresh trained home, and the cluster's trial-start folder emptied: (home, that folder, the slow flag)."""
    home = Ctx(bed, tmp_path, name)
    _train(home, capsys)
    for f in cluster["piddir"].iterdir():
        f.unlink()
    return home, cluster["piddir"], cluster["flag"]


def test_a_killed_worker_is_retried_and_the_store_holds_one_job_per_trial(bed, cluster, tmp_path, capsys):
    home, piddir, flag = _kill_test_setup(bed, cluster, tmp_path, capsys, "kill-worker")
    flag.write_text("30")  # every epoch sleeps: the first trial is still running when we kill its worker
    killed = []

    def kill_first():
        pids = sorted(piddir.iterdir())
        if pids and not killed:
            pid = int(pids[0].name.split("-")[0])
            flag.unlink()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return killed

    import threading

    th = threading.Thread(target=lambda: _wait(kill_first, what="a task to start"), daemon=True)
    th.start()
    res = json.loads(_cli(home, capsys, *_search_args(bed), "--executor", "ray", "--address", cluster["address"]))
    th.join(timeout=5)
    assert killed, "no task was killed"
    assert res["new_trials"] == 3 and all(p["status"] == "completed" for p in res["picks"])
    runs = _jobs(home, "digits-new")
    assert len(runs) == 3 and (runs["status"] == "completed").all()
    assert runs["extra"].map(lambda e: e["trial"]).nunique() == 3
    # the killed task ran again in another worker process
    first_trial = sorted(piddir.iterdir())[0].name.split("-", 1)[1]
    attempts = [f for f in piddir.iterdir() if f.name.split("-", 1)[1] == first_trial]
    assert len(attempts) == 2 and killed[0] in [int(f.name.split("-")[0]) for f in attempts]


def test_a_killed_driver_is_resumed_without_duplicates(bed, cluster, tmp_path, capsys):
    home, piddir, flag = _kill_test_setup(bed, cluster, tmp_path, capsys, "kill-driver")
    env = {**cluster["env"], "RECOMMENDER_HOME": str(home.home)}
    argv = [sys.executable, "-m", "recommender", *map(str, _search_args(bed)), "--executor", "ray", "--address",
            cluster["address"]]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # let the first trial finish, then stop the driver while the second one runs
        _wait(lambda: len(list(piddir.iterdir())) >= 2 or proc.poll() is not None, what="the second trial")
        flag.write_text("30")
        done = (_jobs(home, "digits-new")["status"] == "completed").sum()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    flag.unlink()
    before = _jobs(home, "digits-new")
    finished = set(before.loc[before["status"] == "completed", "extra"].map(lambda e: e["trial"]))
    assert len(finished) >= done >= 1
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["fine_tunes"] == 3 and res["new_trials"] == 3 - len(finished)
    after = _jobs(home, "digits-new")
    completed = after[after["status"] == "completed"]
    assert completed["extra"].map(lambda e: e["trial"]).nunique() == len(completed) == 3
    assert finished <= set(completed["extra"].map(lambda e: e["trial"]))
