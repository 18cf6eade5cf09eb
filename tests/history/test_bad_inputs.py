"""Bad inputs and faults (issue 21, items 4 and 6): one line, rc != 0, the store intact.

* Ctrl-C during an import: ``interrupted: nothing of FILE was imported``, rc 130, no traceback;
* a full disk during an import (SQLite ``max_page_count``, and an ``OSError(ENOSPC)`` from a write);
* a SQLite store with random bytes in the middle: stats, predict, import, export each say it is corrupt;
* a repeated column header; the row numbers of dropped rows; ``score`` checking every model first.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from history.errors import HistoryImportError
from history.importers import generic, get_importer
from history.store import HistoryStore
from recommender.cli import main

REPO = Path(__file__).resolve().parents[2]


def _csv(path: Path, rows: int, prefix: str = "m") -> Path:
    path.write_text("model,dataset,accuracy\n" + "".join(f"{prefix}{i},d{i % 7},{(i % 97) / 100}\n"
                                                          for i in range(rows)))
    return path


def _one_line(capsys, rc, want_rc=2) -> str:
    cap = capsys.readouterr()
    assert rc == want_rc, (cap.out, cap.err)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.err
    return lines[0]


def _jobs(db: Path) -> int:
    s = HistoryStore(f"sqlite:///{db}", create=False)
    try:
        return s.stats()["totals"]["jobs"]
    finally:
        s.dispose()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def filled(tmp_path, capsys) -> Path:
    """A store with 10 jobs."""
    db = tmp_path / "h.db"
    assert main(["--store", str(db), "history", "import", str(_csv(tmp_path / "first.csv", 10, "first"))]) == 0
    capsys.readouterr()
    return db


# ---------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_import_is_one_line_and_imports_nothing(filled, tmp_path):
    big = _csv(tmp_path / "big.csv", 3000)
    flag = tmp_path / "flag"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RECOMMENDER_TEST_IMPORT_PAUSE": str(flag),
           "RECOMMENDER_TEST_IMPORT_PAUSE_S": "60"}
    p = subprocess.Popen([sys.executable, "-m", "recommender", "--store", str(filled), "history", "import", str(big)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not flag.exists():  # every row written, the transaction still open
            assert p.poll() is None, p.communicate()
            assert time.monotonic() - t0 < 90, "the import never got to its pause"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert err == f"interrupted: nothing of {big} was imported\n"
    assert _jobs(filled) == 10


# ---------------------------------------------------------------------- full disk
def test_full_disk_during_import_is_one_line(filled, tmp_path, capsys, monkeypatch):
    """SQLite ``max_page_count`` a few pages above the store's size: the import hits SQLITE_FULL."""
    install = HistoryStore._install_sqlite_hooks

    def capped(self, engine, timeout_ms):
        install(self, engine, timeout_ms)

        @event.listens_for(engine, "connect")
        def _cap(dbapi_conn, _rec):
            cur = dbapi_conn.cursor()
            n = cur.execute("PRAGMA page_count").fetchone()[0]
            cur.execute(f"PRAGMA max_page_count={n + 4}")
            cur.close()

    monkeypatch.setattr(HistoryStore, "_install_sqlite_hooks", capped)
    big = _csv(tmp_path / "big.csv", 5000)
    line = _one_line(capsys, main(["--store", str(filled), "history", "import", str(big)]))
    monkeypatch.undo()
    assert line.startswith("error: no space left on the disk of history store") and str(filled) in line
    assert "nothing was written" in line
    assert _jobs(filled) == 10


def test_enospc_from_a_write_is_one_line(filled, tmp_path, capsys, monkeypatch):
    commit = HistoryStore.commit

    def full(self, *a, **kw):
        if kw.get("jobs"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return commit(self, *a, **kw)

    monkeypatch.setattr(HistoryStore, "commit", full)
    line = _one_line(capsys, main(["--store", str(filled), "history", "import", str(_csv(tmp_path / "b.csv", 50))]))
    monkeypatch.undo()
    assert "no space left" in line and str(filled) in line
    assert _jobs(filled) == 10


def test_enospc_writing_an_export_is_one_line(filled, tmp_path, capsys, monkeypatch):
    import pandas as pd

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    out = tmp_path / "out.csv"
    line = _one_line(capsys, main(["--store", str(filled), "history", "export", str(out)]))
    assert str(out) in line and "No space left" in line
    assert not out.exists()


# ---------------------------------------------------------------------- corrupt store
@pytest.fixture()
def corrupt(tmp_path, home, capsys) -> Path:
    """A store of 3000 jobs (and a recommender trained on it, so that predict gets to read the store)
    with random bytes over the middle third of the file."""
    db = tmp_path / "c.db"
    f = tmp_path / "a.csv"
    f.write_text("model,dataset,accuracy\n" + "".join(f"m{i % 40},d{i % 7},{(i * 37 % 97) / 100}\n"
                                                      for i in range(3000)))
    assert main(["--store", str(db), "history", "import", str(f)]) == 0
    assert main(["--store", str(db), "train", "-r", "lr", "--no-mlflow", "--cv-folds", "0"]) == 0
    capsys.readouterr()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    n = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(n // 3)
        f.write(np.random.default_rng(0).bytes(n // 3))
    return db


@pytest.mark.parametrize("argv", [
    ["history", "stats"],
    ["predict", "--dataset", "d1"],
    ["history", "import", "NEW"],
    ["history", "export", "OUT"],
    ["history", "list-models"],
])
def test_corrupt_store_is_one_line_naming_the_file(corrupt, tmp_path, capsys, argv):
    before = _sha(corrupt)
    new = _csv(tmp_path / "new.csv", 20, "new")
    out = tmp_path / "out.csv"
    argv = [str(new) if a == "NEW" else str(out) if a == "OUT" else a for a in argv]
    line = _one_line(capsys, main(["--store", str(corrupt), *argv]))
    assert line.startswith(f"error: history store SQLite file {corrupt} is corrupt"), line
    assert _sha(corrupt) == before  # nothing written into it
    assert not out.exists()


def test_a_file_that_is_not_sqlite_is_one_line(tmp_path, capsys):
    db = tmp_path / "notes.db"
    db.write_bytes(np.random.default_rng(1).bytes(8192))
    line = _one_line(capsys, main(["--store", str(db), "history", "stats"]))
    assert str(db) in line and "corrupt" in line


# ---------------------------------------------------------------------- generic format: say what was guessed
def test_repeated_column_header_names_the_column(tmp_path, capsys):
    f = tmp_path / "dup.csv"
    f.write_text("model,dataset,accuracy,lr,accuracy\nm1,d1,0.5,0.1,0.7\n")
    db = tmp_path / "h.db"
    line = _one_line(capsys, main(["--store", str(db), "history", "import", str(f)]))
    assert "'accuracy'" in line and "columns 3, 5" in line and "more than once" in line
    assert _jobs(db) == 0


def test_repeated_column_in_parquet_names_the_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "dup.parquet"
    pq.write_table(pa.table([["m"], ["d"], [0.5], [0.7]], names=["model", "dataset", "accuracy", "accuracy"]), f)
    with pytest.raises(HistoryImportError, match="'accuracy' appears more than once"):
        get_importer("generic").read(f)


@pytest.mark.parametrize("fast", [True, False])
def test_first_rows_of_each_drop_reason(tmp_path, capsys, monkeypatch, fast):
    monkeypatch.setattr(generic, "FAST_PATH", fast)
    monkeypatch.setattr(generic.GenericImporter, "CHUNK_ROWS", 4)  # a repeat across chunks too
    f = tmp_path / "drops.csv"
    f.write_text("model,dataset,accuracy,provenance\n"
                 "m1,d1,0.5,a\n"    # row 1
                 "m2,d1,,b\n"       # row 2: empty accuracy
                 "m1,d1,0.5,a\n"    # row 3: exact duplicate
                 "m3,d1,nan,c\n"    # row 4: NaN
                 "m1,d1,0.5, a\n"   # row 5: the same job as row 1 (another chunk)
                 "m4,d1,0.2,d\n"    # row 6
                 "m5,d1,,e\n")      # row 7: empty accuracy
    db = tmp_path / "h.db"
    assert main(["--store", str(db), "history", "import", str(f)]) == 0
    out = capsys.readouterr().out
    assert "2 x empty accuracy on a completed job (rows 2, 7)" in out
    assert "1 x exact duplicate of an earlier row (row 3)" in out
    assert "accuracy is NaN (not a number) on a completed job (row 4)" in out
    assert "(row 5)" in out
    assert main(["--store", str(tmp_path / "h2.db"), "history", "import", str(f), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    first = rep["dropped_first_rows"]
    assert first["empty accuracy on a completed job"] == [2, 7]
    assert first["exact duplicate of an earlier row"] == [3]
    assert first["accuracy is NaN (not a number) on a completed job"] == [4]
    assert [5] in first.values()


# ---------------------------------------------------------------------- score: check first, then write
def test_score_checks_every_model_before_writing(tmp_path, home, capsys):
    from PIL import Image

    for c in range(2):
        (tmp_path / "imgs" / str(c)).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 60 * c + i, np.uint8)).save(tmp_path / "imgs" / str(c) / f"{i}.png")
    db = home / "s.db"
    HistoryStore(f"sqlite:///{db}").dispose()
    before = _sha(db)
    missing = tmp_path / "gone.pt"
    line = _one_line(capsys, main(["--store", str(db), "score", "--dataset", "newdata", "--data",
                                   str(tmp_path / "imgs"), "--models", f"cnn=torchscript:{missing}",
                                   "--methods", "logme"]))
    assert str(missing) in line and "does not exist" in line
    assert _sha(db) == before
    s = HistoryStore(f"sqlite:///{db}")
    try:
        assert not s.has_dataset("newdata") and s.probes_frame().empty
    finally:
        s.dispose()
