"""Real processes against one SQLite store: concurrent imports and an import killed half-way.

Each import runs as ``python -m recommender history import`` in its own process. The
generic importer's test hook (``RECOMMENDER_TEST_IMPORT_PAUSE``, see
``history/importers/generic.py``) makes an import signal once every row is written inside
its still-open transaction and then wait, so overlaps and kills happen at a known point.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from history.importers import get_importer
from history.store import HistoryStore

REPO = Path(__file__).resolve().parents[2]


def _csv(path: Path, n: int, prefix: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame({
        "model": [f"{prefix}m{i % 97}" for i in range(n)],
        "dataset": [f"{prefix}d{i // 97}" for i in range(n)],
        "accuracy": rng.random(n).round(8),
        "lr": 0.01,
        "seed": [i % 5 for i in range(n)],
    }).to_csv(path, index=False)
    return path


def _start(url, path, *, pause_flag=None, pause_s=None):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RECOMMENDER_TEST_IMPORT_PAUSE", None)
    if pause_flag:
        env["RECOMMENDER_TEST_IMPORT_PAUSE"] = str(pause_flag)
        env["RECOMMENDER_TEST_IMPORT_PAUSE_S"] = str(pause_s)
    return subprocess.Popen(
        [sys.executable, "-m", "recommender", "--store", url, "history", "import", str(path),
         "--format", "generic", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(p, timeout=120) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return json.loads(out)


def _wait_for(flag: Path, proc, timeout=90):
    t0 = time.monotonic()
    while not flag.exists():
        if proc.poll() is not None:
            pytest.fail(f"import exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("import never reached its transaction")
        time.sleep(0.05)


def _counts(url) -> dict:
    s = HistoryStore(url)
    try:
        t = s.stats()["totals"]
        jobs = s.jobs_frame()
        return {"jobs": t["jobs"], "models": t["models"], "datasets": t["datasets"],
                "imports": len(s.imports_frame()),
                "distinct": jobs[["model", "dataset", "value"]].drop_duplicates().shape[0],
                "sum": round(float(jobs["value"].sum()), 6) if len(jobs) else 0.0}
    finally:
        s.dispose()


@pytest.mark.slow
def test_two_imports_of_different_files_into_a_fresh_store(tmp_path):
    """Both processes start at once on a store that does not exist yet (schema creation races too)."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    a, b = _csv(tmp_path / "a.csv", 3000, "a", 1), _csv(tmp_path / "b.csv", 2000, "b", 2)
    pa, pb = _start(url, a), _start(url, b)
    ra, rb = _finish(pa), _finish(pb)
    assert (ra["jobs_added"], rb["jobs_added"]) == (3000, 2000)
    c = _counts(url)
    assert (c["jobs"], c["distinct"], c["imports"]) == (5000, 5000, 2)
    assert c["models"] == 2 * 97


@pytest.mark.slow
def test_two_imports_of_the_same_file_overlapping(tmp_path):
    """The second import waits for the first one's transaction, then finds every row present."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    HistoryStore(url).dispose()
    f = _csv(tmp_path / "same.csv", 3000, "s")
    flag = tmp_path / "first-is-writing"
    first = _start(url, f, pause_flag=flag, pause_s=2)
    _wait_for(flag, first)  # first holds the write transaction, not committed yet
    second = _start(url, f)
    r1, r2 = _finish(first), _finish(second)
    assert (r1["jobs_added"], r2["jobs_added"], r2["jobs_existing"]) == (3000, 0, 3000)
    c = _counts(url)
    assert (c["jobs"], c["distinct"], c["imports"]) == (3000, 3000, 2)


@pytest.mark.slow
def test_import_killed_halfway_leaves_store_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"

    s = HistoryStore(url)
    get_importer("generic").run(s, _csv(tmp_path / "before.csv", 500, "pre"), progress=False)
    s.dispose()
    before = _counts(url)
    assert before["jobs"] == 500
    big = _csv(tmp_path / "big.csv", 25_000, "big", 3)
    flag = tmp_path / "writing"
    proc = _start(url, big, pause_flag=flag, pause_s=120)
    _wait_for(flag, proc)  # every row of the big file is written inside the open transaction
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert _counts(url) == before  # nothing of the killed import is visible
    s = HistoryStore(url)
    try:
        with s.read() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        s.dispose()
    # the store is not left locked: the next import goes through
    s = HistoryStore(url)
    r = get_importer("generic").run(s, _csv(tmp_path / "after.csv", 100, "post"), progress=False)
    s.dispose()
    assert r.jobs_added == 100
    assert _counts(url)["jobs"] == before["jobs"] + 100
