"""The generic importer streams a file in chunks inside one transaction; --format is inferred."""
from __future__ import annotations

import pytest

from history.errors import HistoryImportError
from history.importers import get_importer
from history.importers.generic import GenericImporter
from recommender.cli import main


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(GenericImporter, "CHUNK_ROWS", 3)


def _write(tmp_path, text, name="runs.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_chunks_give_the_same_result_as_one_batch(store, tmp_path, small_chunks):
    rows = ["m0,d0,0.5,run-1,vit", "m1,d0,0.6,,cnn", "m0,d0,0.5,run-1,vit",  # exact duplicate, 2 chunks apart
            "m2,d1,0.7,,", "m1,d0,0.6,,cnn", "m3,d1,0.1,run-9,", "m0,d2,0.2,,vit", "x,d2,nan,,"]
    f = _write(tmp_path, "model,dataset,accuracy,provenance,model_family\n" + "\n".join(rows) + "\n")
    rep = get_importer("generic").run(store, f)
    one = get_importer("generic").read(f)
    assert rep.rows_read == 8 and rep.jobs_added == len(one.jobs) == 5
    assert rep.dropped == one.report.dropped == {"exact duplicate of an earlier row": 2,
                                                 "accuracy is NaN (not a number) on a completed job": 1}
    models = store.models_frame().set_index("name")
    assert set(models.index) == {"m0", "m1", "m2", "m3"} and models.loc["m0", "family"] == "vit"
    imp = store.imports_frame().iloc[-1]
    assert imp["jobs_added"] == 5 and imp["rows_read"] == 8


def test_error_in_a_later_chunk_rolls_back_everything_and_names_the_file_line(store, tmp_path, small_chunks):
    rows = [f"m{i},d,0.{i}" for i in range(1, 8)] + ["bad,d,oops"]
    f = _write(tmp_path, "model,dataset,accuracy\n" + "\n".join(rows) + "\n")
    with pytest.raises(HistoryImportError, match=r"row 8 \(file line 9\).*'oops'"):
        get_importer("generic").run(store, f)
    assert store.stats()["totals"]["jobs"] == 0 and store.stats()["totals"]["models"] == 0


def test_meta_conflict_across_chunks_names_both_rows(store, tmp_path, small_chunks):
    f = _write(tmp_path,
               "model,dataset,accuracy,model_family\nm,d,0.1,vit\nn,d,0.2,\no,d,0.3,\np,d,0.4,\nm,e,0.5,cnn\n")
    with pytest.raises(HistoryImportError, match=r"row 5 \(file line 6\).*'cnn' here but 'vit' in row 1"):
        get_importer("generic").run(store, f)


def test_percent_check_spans_chunks(store, tmp_path, small_chunks):
    f = _write(tmp_path, "model,dataset,accuracy\n" + "\n".join(f"m{i},d,0.{i}" for i in range(1, 8)) + "\nz,d,80\n")
    rep = get_importer("generic").run(store, f, unit="percent")  # one value above 1 in the last chunk: fine
    assert rep.jobs_added == 8


def test_format_is_inferred_from_the_extension(home, tmp_path, capsys):
    url = f"sqlite:///{home / 'history.db'}"
    f = _write(tmp_path, "model,dataset,accuracy\nm,d,0.5\n")
    assert main(["--store", url, "history", "import", str(f)]) == 0
    assert "jobs: 1 parsed, 1 added" in capsys.readouterr().out
    other = _write(tmp_path, "x", name="runs.json")
    assert main(["--store", url, "history", "import", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--input-format" in err
