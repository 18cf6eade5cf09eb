"""Faults around opening and writing a store: lock waits, read-only stores, typos in --store.

Each case is one ``error:`` line with rc 2 and no traceback, and the store is left intact.
Read-only cases run the CLI as root without the capability that lets root ignore
permission bits (``setpriv --bounding-set=-dac_override``), so file modes really apply.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from history.errors import StoreError
from history.store import HistoryStore
from recommender.cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli(*argv, env=None, prefix=(), timeout=120):
    e = {k: v for k, v in os.environ.items() if k != "RECOMMENDER_TEST_IMPORT_PAUSE"}
    e.update({"MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})
    return subprocess.run([*prefix, sys.executable, "-m", "recommender", *map(str, argv)], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(r):
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return errors[0]


def _csv(path: Path, rows) -> Path:
    path.write_text("model,dataset,accuracy\n" + "".join(f"{m},{d},{a}\n" for m, d, a in rows))
    return path


# ---------------------------------------------------------------------- 1. lock waits
def test_lock_wait_says_so_then_one_error_line(tmp_path):
    db = tmp_path / "h.db"
    url = f"sqlite:///{db}"
    a = _csv(tmp_path / "a.csv", [("m1", "d1", 0.5)])
    b = _csv(tmp_path / "b.csv", [("m2", "d2", 0.6)])
    HistoryStore(url).dispose()
    flag = tmp_path / "flag"
    env = {**os.environ, "RECOMMENDER_TEST_IMPORT_PAUSE": str(flag), "RECOMMENDER_TEST_IMPORT_PAUSE_S": "60"}
    holder = subprocess.Popen([sys.executable, "-m", "recommender", "--store", url, "history", "import", str(a),
                               "--format", "generic"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not flag.exists():
            assert holder.poll() is None, holder.stderr.read()
            assert time.monotonic() - t0 < 90, "the first import never took the lock"
            time.sleep(0.05)
        r = _cli("--store", url, "--lock-timeout", "1", "history", "import", b, "--input-format", "generic")
    finally:
        holder.kill()
        holder.communicate()
    line = _one_error_line(r)
    assert "waiting for another writer" in r.stderr
    assert "--lock-timeout" in line and "nothing was written" in line
    s = HistoryStore(url)
    try:
        assert s.stats()["totals"]["jobs"] == 0  # the killed holder rolled back, the waiter wrote nothing
    finally:
        s.dispose()


def test_lock_timeout_must_be_a_number(tmp_path):
    r = _cli("--store", tmp_path / "h.db", "--lock-timeout", "soon", "history", "stats")
    assert r.returncode == 2 and "--lock-timeout" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------- 2. read-only stores
SETPRIV = shutil.which("setpriv")
needs_setpriv = pytest.mark.skipif(
    SETPRIV is None or os.geteuid() != 0,
    reason="needs root and setpriv to drop CAP_DAC_OVERRIDE (as another user, chmod alone works)")
UNPRIV = (SETPRIV, "--bounding-set=-dac_override,-dac_read_search") if SETPRIV else ()


@pytest.fixture()
def filled(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'history.db'}"
    csv = _csv(tmp_path / "a.csv", [("m1", "d1", 0.5), ("m2", "d1", 0.7)])
    assert main(["--store", url, "history", "import", str(csv),
                 "--format", "generic"]) == 0
    yield folder, url
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)


@needs_setpriv
@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_store_reads_work_writes_say_read_only(filled, tmp_path, what):
    folder, url = filled
    db = folder / "history.db"
    before = db.read_bytes()
    db.chmod(0o444)
    if what == "folder":
        folder.chmod(0o555)
    r = _cli("--store", url, "history", "stats", prefix=UNPRIV)
    assert r.returncode == 0, r.stderr
    assert "2" in r.stdout and "error" not in r.stderr
    r = _cli("--store", url, "history", "list-models", "--format", "csv", prefix=UNPRIV)
    assert r.returncode == 0 and "m1" in r.stdout and "m2" in r.stdout, r.stderr
    for argv in (["history", "import", _csv(tmp_path / "b.csv", [("m3", "d2", 0.1)]), "--input-format", "generic"],
                 ["history", "add-dataset", "new", "--num-samples", "10", "--num-classes", "2"]):
        line = _one_error_line(_cli("--store", url, *argv, prefix=UNPRIV))
        assert "read-only" in line, line
    assert db.read_bytes() == before


@needs_setpriv
def test_read_only_home_folder_default_store(filled):
    folder, _ = filled
    for f in folder.iterdir():
        f.chmod(0o444)
    folder.chmod(0o555)
    env = {"RECOMMENDER_HOME": str(folder)}
    env_store = {k: v for k, v in os.environ.items() if k != "RECOMMENDER_STORE"}
    r = subprocess.run([*UNPRIV, sys.executable, "-m", "recommender", "history", "stats", "--json"], cwd=REPO,
                       env={**env_store, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"jobs": 2' in r.stdout


def test_write_on_read_only_store_object_is_one_line(filled, monkeypatch):
    """The library API too: a store opened read-only refuses writes with StoreError."""
    folder, url = filled
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw))
    s = HistoryStore(url)
    try:
        assert s.read_only and len(s.jobs_frame()) == 2
        with pytest.raises(StoreError, match="read-only"):
            s.commit(jobs=[{"model": "x", "dataset": "y", "value": 0.3}])
    finally:
        s.dispose()


# ---------------------------------------------------------------------- 8. typos in --store
@pytest.mark.parametrize("cmd", [["history", "stats"], ["history", "list-models"], ["history", "show", "model", "x"],
                                 ["history", "export", "out.csv"]])
def test_missing_store_file_is_refused_for_reads(tmp_path, cmd):
    typo = tmp_path / "histroy.db"
    r = _cli("--store", typo, *cmd)
    line = _one_error_line(r)
    assert "does not exist" in line and str(typo) in line
    assert not typo.exists()


def test_missing_store_via_env_is_refused_for_reads(tmp_path):
    typo = tmp_path / "nope.db"
    r = _cli("history", "stats", env={"RECOMMENDER_STORE": f"sqlite:///{typo}"})
    assert "does not exist" in _one_error_line(r) and not typo.exists()


def test_store_under_missing_folder_is_not_created(tmp_path):
    target = tmp_path / "no" / "such" / "history.db"
    a = _csv(tmp_path / "a.csv", [("m1", "d1", 0.5)])
    r = _cli("--store", f"sqlite:///{target}", "history", "import", a, "--input-format", "generic")
    line = _one_error_line(r)
    assert "does not exist" in line and "no/such" in line
    assert not (tmp_path / "no").exists()


def test_write_command_creates_a_new_store_in_an_existing_folder(tmp_path):
    target = tmp_path / "new.db"
    a = _csv(tmp_path / "a.csv", [("m1", "d1", 0.5)])
    r = _cli("--store", target, "history", "import", a, "--input-format", "generic")
    assert r.returncode == 0, r.stderr
    assert target.exists()


def test_default_home_store_is_not_created_by_a_read(home, capsys):
    """A read of a home without a store is one line naming the file; it creates no empty history.db
    (issue 21: read-only commands never create a store). An existing empty store reads as empty."""
    assert main(["history", "stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no history store at ") and str(home / "history.db") in err
    assert not (home / "history.db").exists()
    HistoryStore(f"sqlite:///{home / 'history.db'}").dispose()
    assert main(["history", "stats"]) == 0
    assert "store is empty" in capsys.readouterr().out
