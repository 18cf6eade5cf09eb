"""Input sanity on import: units, decimal commas, non-finite and NaN accuracies, encodings, job identity."""
from __future__ import annotations

import pytest

from history import schema as S
from history.errors import HistoryImportError
from history.importers import get_importer
from history.store import HistoryStore
from recommender.cli import main


def _write(tmp_path, text, name="runs.csv", encoding="utf-8"):
    f = tmp_path / name
    f.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return f


def _import(store, path, **opts):
    return get_importer("generic").run(store, path, **opts)


def _import_error(store, path, **opts) -> str:
    """The message of the HistoryImportError that importing ``path`` raises."""
    with pytest.raises(HistoryImportError) as e:
        _import(store, path, **opts)
    return str(e.value)


# ---------------------------------------------------------------------- 5. units
def test_percent_unit_on_fractions_is_refused(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,0.9\nb,d,0.85\n")
    with pytest.raises(HistoryImportError, match=r"--unit percent.*at most 1.*--force-unit"):
        _import(store, f, unit="percent")
    assert store.stats()["totals"]["jobs"] == 0


def test_percent_unit_forced(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,0.9\nb,d,0.85\n")
    rep = _import(store, f, unit="percent", force_unit=True)
    assert rep.jobs_added == 2
    assert sorted(store.jobs_frame()["value"].round(6)) == [0.0085, 0.009]


def test_percent_unit_on_percentages_still_works(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,90\nb,d,0.5\n")
    _import(store, f, unit="percent")
    assert sorted(store.jobs_frame()["value"].round(6)) == [0.005, 0.9]


def test_cli_force_unit(home, tmp_path, capsys):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,0.9\n")
    url = f"sqlite:///{home / 'history.db'}"
    assert main(["--store", url, "history", "import", str(f), "--input-format", "generic", "--unit", "percent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force-unit" in err and len(err.strip().splitlines()) == 1
    assert main(["--store", url, "history", "import", str(f), "--input-format", "generic", "--unit", "percent",
                 "--force-unit"]) == 0


@pytest.mark.parametrize("unit", ["fraction", "percent"])
def test_decimal_comma_is_ambiguous(store, tmp_path, unit):
    f = _write(tmp_path, 'model,dataset,accuracy\na,d,0.5\nb,d,"0,9"\n')
    msg = _import_error(store, f, unit=unit, force_unit=True)
    assert "row 2 (file line 3)" in msg and "comma" in msg and "ambiguous" in msg and "--unit" not in msg


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_accuracy_is_named(store, tmp_path, value):
    msg = _import_error(store, _write(tmp_path, f"model,dataset,accuracy\na,d,0.5\nb,d,{value}\n"))
    assert "file line 3" in msg and "not a finite number" in msg and "above 1" not in msg


# ---------------------------------------------------------------------- 9. NaN, encodings
def test_nan_accuracy_is_named_and_its_model_not_added(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,0.5\nghost,d,NaN\nb,d,\n")
    rep = _import(store, f)
    assert rep.dropped == {"accuracy is NaN (not a number) on a completed job": 1,
                           "empty accuracy on a completed job": 1}
    assert set(store.models_frame()["name"]) == {"a"}


def test_non_utf8_input_names_the_line(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy\na,d,0.5\nb,d,0.6\nmod\u00e8le,d,0.7\n".encode("latin-1"))
    msg = _import_error(store, f)
    assert "file line 4 is not valid UTF-8" in msg and "e8" in msg and "position" not in msg


# ---------------------------------------------------------------------- 6. job identity
def test_runs_with_same_value_but_different_provenance_are_jobs(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy,provenance\nm,d,0.5,run-1\nm,d,0.5,run-2\nm,d,0.8,run-3\n")
    rep = _import(store, f)
    assert (rep.jobs_added, rep.jobs_existing, rep.rows_dropped) == (3, 0, 0)
    t = store.targets("mean")
    assert t["value"].iloc[0] == pytest.approx(0.6) and t["n_jobs"].iloc[0] == 3
    again = _import(store, f)  # re-importing the same file stays idempotent
    assert (again.jobs_added, again.jobs_existing) == (0, 3)


def test_same_value_without_provenance_is_still_one_job(store, tmp_path):
    f = _write(tmp_path, "model,dataset,accuracy,lr\nm,d,0.5,0.1\nm,d,0.5,0.1\n")
    rep = _import(store, f)
    assert rep.jobs_added == 1 and rep.rows_dropped == 1


def test_old_store_is_rekeyed_once(tmp_path):
    """A store written before provenance was part of job identity: re-import stays idempotent."""
    from sqlalchemy import delete, update

    url = f"sqlite:///{tmp_path / 'old.db'}"
    f = _write(tmp_path, "model,dataset,accuracy,provenance\nm,d,0.5,run-1\nm,d,0.8,run-3\nn,d,0.4,\n")
    s = HistoryStore(url)
    _import(s, f)
    with s.write() as conn:  # make it look like a version-1 store: old keys, no job_key_version row
        for r in conn.execute(S.jobs.select().join(S.models).join(S.datasets)).mappings().all():
            old = S._digest(["job", "m" if r["provenance"] else "n", "d", r["regime"], r["hparams"] or {},
                             r["metric"], round(r["value"], 10), r["status"], r["source"]])
            conn.execute(update(S.jobs).where(S.jobs.c.id == r["id"]).values(key=old))
        conn.execute(delete(S.meta).where(S.meta.c.key == "job_key_version"))
    s.dispose()
    s = HistoryStore(url)
    try:
        rep = _import(s, f)
        assert (rep.jobs_added, rep.jobs_existing) == (0, 3)
        assert len(s.jobs_frame()) == 3
    finally:
        s.dispose()
