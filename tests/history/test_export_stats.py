"""`history stats` shows what the last imports dropped; export is lossless (probes, empty store); --wide."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from history.errors import HistoryImportError
from history.export import export_history
from history.importers import get_importer
from history.store import HistoryStore
from recommender.cli import main


@pytest.fixture()
def url(home):
    return f"sqlite:///{home / 'history.db'}"


def _csv(tmp_path, text, name="runs.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


# ---------------------------------------------------------------------- 4. drops in stats
def test_stats_lists_last_imports_with_drops(url, tmp_path, capsys):
    f = _csv(tmp_path, "model,dataset,accuracy\na,d,0.5\na,d,0.5\nb,d,\nc,d,NaN\nc,e,0.7\n")
    assert main(["--store", url, "history", "import", str(f), "--input-format", "generic"]) == 0
    capsys.readouterr()
    assert main(["--store", url, "history", "stats", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    last = st["last_imports"][0]
    assert last["source"] == "runs" and last["rows_read"] == 5 and last["jobs_added"] == 2
    assert last["dropped"] == {"exact duplicate of an earlier row": 1, "empty accuracy on a completed job": 1,
                               "accuracy is NaN (not a number) on a completed job": 1}
    assert main(["--store", url, "history", "stats"]) == 0
    out = capsys.readouterr().out
    assert "last 1 imports" in out and "exact duplicate of an earlier row" in out
    assert "accuracy is NaN (not a number)" in out


# ---------------------------------------------------------------------- 7. lossless export
def test_probes_survive_export_and_import(store, tmp_path):
    store.commit(jobs=[{"model": "m", "dataset": "d", "value": 0.5}])
    store.add_probe("d", size=4, seed=0, indices=[3, 1, 4, 1], num_classes=2, data_ref="folder:/x")
    store.add_probe("d", size=2, seed=1, indices=[5, 9])
    for ext in ("csv", "parquet"):
        out = tmp_path / f"h.{ext}"
        rep = export_history(store, out)
        assert rep.probes == 2 and "2 probes" in rep.summary()
        b = HistoryStore(f"sqlite:///{tmp_path / ('b_' + ext + '.db')}")
        try:
            r = get_importer("generic").run(b, out)
            assert r.probes_added == 2 and r.rows_dropped == 0
            got = b.probes_frame().sort_values("size")
            assert got["indices"].tolist() == [[5, 9], [3, 1, 4, 1]]
            assert got["num_classes"].tolist()[1] == 2 and got["data_ref"].tolist()[1] == "folder:/x"
            assert b.stats()["totals"] == store.stats()["totals"]
        finally:
            b.dispose()


def test_empty_store_exports_a_file_that_imports_back(store, tmp_path, capsys):
    for ext in ("csv", "parquet"):
        out = tmp_path / f"empty.{ext}"
        export_history(store, out)
        b = HistoryStore(f"sqlite:///{tmp_path / ('b_' + ext + '.db')}")
        try:
            r = get_importer("generic").run(b, out)
            assert r.rows_read == 0 and r.jobs_added == 0 and any("no data rows" in n for n in r.notes)
            assert sum(b.stats()["totals"].values()) == 0
        finally:
            b.dispose()


def test_header_only_file_without_record_column_is_still_an_error(store, tmp_path):
    with pytest.raises(HistoryImportError, match="no data rows"):
        get_importer("generic").run(store, _csv(tmp_path, "model,dataset,accuracy\n"))


def test_wide_export(url, tmp_path, capsys):
    f = _csv(tmp_path, "model,dataset,accuracy,lr,score_logme\nvit,pets,0.9,0.1,2.5\nvit,pets,0.8,0.01,2.5\n"
                       "rn,pets,0.7,0.1,1.0\nrn,dtd,0.6,0.1,\n")
    assert main(["--store", url, "history", "import", str(f), "--input-format", "generic"]) == 0
    out = tmp_path / "wide.csv"
    assert main(["--store", url, "history", "export", str(out), "--wide"]) == 0
    assert "wide" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == 3 and not df.duplicated(["model", "dataset"]).any()
    row = df.set_index(["model", "dataset"]).loc[("vit", "pets")]
    assert row["target"] == pytest.approx(0.9) and row["n_jobs"] == 2 and row["score_logme"] == pytest.approx(2.5)
    assert pd.isna(df.set_index(["model", "dataset"]).loc[("rn", "dtd"), "score_logme"])
    assert main(["--store", url, "history", "export", str(out), "--wide", "--target-rule", "mean"]) == 0
    row = pd.read_csv(out).set_index(["model", "dataset"]).loc[("vit", "pets")]
    assert row["target"] == pytest.approx(0.85)
