"""Additive schema migration: a store written before a nullable column existed gains it on open."""
import sqlite3

from history.store import HistoryStore


def test_old_store_gains_new_columns_and_keeps_data(tmp_path):
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    s = HistoryStore(url)
    s.commit(jobs=[{"model": "m1", "dataset": "d1", "value": 0.5, "source": "x"}],
             scores=[{"model": "m1", "dataset": "d1", "method": "logme", "value": 1.0}])
    s.dispose()
    # Make it look like a store written by an older version: drop columns added later.
    con = sqlite3.connect(db)
    for table, col in [("jobs", "extra"), ("jobs", "duration_s"), ("scores", "flag"),
                       ("models", "degenerate")]:
        con.execute(f'ALTER TABLE {table} DROP COLUMN "{col}"')
    con.commit()
    assert "extra" not in {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
    con.close()

    s = HistoryStore(url)
    con = sqlite3.connect(db)
    assert {"extra", "duration_s"} <= {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
    assert "flag" in {r[1] for r in con.execute("PRAGMA table_info(scores)")}
    assert "degenerate" in {r[1] for r in con.execute("PRAGMA table_info(models)")}
    con.close()
    assert s.jobs_frame()["value"].tolist() == [0.5]
    assert s.scores_frame()["value"].tolist() == [1.0]
    # Opening again is a no-op.
    HistoryStore(url).dispose()
    s.dispose()
