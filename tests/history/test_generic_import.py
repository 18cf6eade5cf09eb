"""Generic CSV/Parquet format: parsing, bad input, and lossless export -> import round trips."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from history.errors import HistoryImportError
from history.export import ExportError, export_history, history_frame
from history.importers import get_importer
from history.store import HistoryStore


def _write(path, text):
    path.write_text(text)
    return path


def _run(store, path, **opts):
    return get_importer("generic").run(store, path, progress=False, **opts)


def _snapshot(store) -> dict:
    """Everything an import can change, without surrogate ids (compared across stores)."""
    jobs = store.jobs_frame(include_failed=True).drop(columns=["job_id"])
    out = {
        "jobs": jobs,
        "scores": store.scores_frame(),
        "models": store.models_frame().drop(columns=["id"]),
        "datasets": store.datasets_frame().drop(columns=["id"]),
    }
    for k, df in out.items():
        key = ["|".join(map(str, r)) for r in df.itertuples(index=False)]
        out[k] = df.assign(_k=key).sort_values("_k").drop(columns="_k").reset_index(drop=True)
    return out


def _assert_same(a: dict, b: dict):
    for k in a:
        assert len(a[k]) == len(b[k]), k
        pd.testing.assert_frame_equal(a[k], b[k], check_dtype=False, obj=k)


# ---------------------------------------------------------------------- parsing
def test_minimal_file(store, tmp_path):
    f = _write(tmp_path / "my_runs.csv", "model,dataset,accuracy\nvit,cifar,0.91\nresnet,cifar,0.85\n")
    rep = _run(store, f)
    assert (rep.rows_read, rep.jobs_added, rep.rows_dropped) == (2, 2, 0)
    jobs = store.jobs_frame()
    assert set(jobs["source"]) == {"my_runs"}  # default source: the file stem
    assert set(jobs["regime"]) == {"full"} and set(jobs["metric"]) == {"accuracy"}
    assert sorted(jobs["value"]) == [0.85, 0.91]


def test_all_columns(store, tmp_path):
    f = _write(tmp_path / "all.csv", (
        "model,dataset,accuracy,regime,metric,status,lr,epochs,batch_size,seed,hparams,source,provenance,"
        "created_at,model_family,model_params,model_input_size,model_extra,dataset_num_samples,"
        "dataset_num_classes,dataset_domain,score_logme,score_parc\n"
        'vit,pets,0.9,vtab1k,accuracy,completed,0.01,30,64,1,"{""opt"": ""sgd""}",mine,run-1,'
        '2024-03-01T10:00:00+02:00,vit,"86,000,000",224,"{""mem"": 2}",3680,37,natural,1.5,0.25\n'
        "vit,pets,,full,accuracy,failed,0.1,30,64,1,,mine,run-2,,,,,,,,,,\n"
    ))
    rep = _run(store, f, source="ignored-when-column-set")
    assert (rep.jobs_added, rep.scores_added, rep.rows_dropped) == (2, 2, 0)
    jobs = store.jobs_frame(include_failed=True).set_index("provenance")
    done = jobs.loc["run-1"]
    assert done["hparams"] == {"opt": "sgd", "lr": 0.01, "epochs": 30, "batch_size": 64, "seed": 1}
    assert isinstance(done["hparams"]["epochs"], int)
    assert (done["regime"], done["source"], done["status"]) == ("vtab1k", "mine", "completed")
    assert done["created_at"].replace(tzinfo=UTC) == datetime(2024, 3, 1, 8, tzinfo=UTC)
    assert jobs.loc["run-2", "status"] == "failed" and pd.isna(jobs.loc["run-2", "value"])
    m = store.get_model("vit")
    assert (m["family"], m["params"], m["input_size"], m["extra"]) == ("vit", 86e6, 224, {"mem": 2})
    d = store.get_dataset("pets")
    assert (d["num_samples"], d["num_classes"], d["domain"]) == (3680, 37, "natural")
    sc = store.scores_frame().set_index("method")["value"].to_dict()
    assert sc == {"logme": 1.5, "parc": 0.25}
    assert set(store.scores_frame()["source"]) == {"mine"}


def test_percent_unit(store, tmp_path):
    f = _write(tmp_path / "p.csv", "model,dataset,accuracy\na,d,87.5\nb,d,100\n")
    _run(store, f, unit="percent")
    assert sorted(store.jobs_frame()["value"]) == [0.875, 1.0]


def test_score_rows_and_meta_rows(store, tmp_path):
    f = _write(tmp_path / "s.csv", (
        "record,model,dataset,accuracy,method,score,probe_size,seed,runtime_s,model_depth,dataset_num_classes\n"
        "score,a,d,,logme,-3.5,500,2,1.25,,\n"
        "model,b,,,,,,,,12,\n"
        "dataset,,e,,,,,,,,7\n"
    ))
    rep = _run(store, f)
    assert (rep.jobs_added, rep.scores_added) == (0, 1)
    s = store.scores_frame().iloc[0]
    assert (s["method"], s["value"], s["probe_size"], s["seed"], s["runtime_s"]) == ("logme", -3.5, 500, 2, 1.25)
    assert store.get_model("b")["depth"] == 12 and store.get_dataset("e")["num_classes"] == 7


def test_reimport_adds_nothing(store, tmp_path):
    f = _write(tmp_path / "r.csv", "model,dataset,accuracy,score_logme\na,d,0.5,1\nb,d,0.6,2\n")
    _run(store, f)
    rep = _run(store, f)
    assert (rep.jobs_added, rep.jobs_existing, rep.scores_added) == (0, 2, 0)
    assert len(store.jobs_frame()) == 2 and len(store.imports_frame()) == 2


def test_parquet_input(store, tmp_path):
    f = tmp_path / "h.parquet"
    pd.DataFrame({"model": ["a", "b"], "dataset": ["d", "d"], "accuracy": [0.5, None],
                  "status": ["completed", "failed"], "epochs": pd.array([10, None], dtype="Int64")}).to_parquet(f)
    rep = _run(store, f)
    assert rep.jobs_added == 2
    jobs = store.jobs_frame(include_failed=True).set_index("model")
    assert jobs.loc["a", "hparams"] == {"epochs": 10} and jobs.loc["b", "hparams"] == {}


# ---------------------------------------------------------------------- drops
def test_exact_duplicates_dropped_and_counted(store, tmp_path):
    f = _write(tmp_path / "d.csv", "model,dataset,accuracy\na,d,0.5\nb,d,0.6\na,d,0.5\na,d,0.5\n")
    rep = _run(store, f)
    assert rep.dropped == {"exact duplicate of an earlier row": 2}
    assert rep.jobs_added == 2 and "2 x exact duplicate" in rep.summary()


def test_empty_accuracy_dropped_unless_failed(store, tmp_path):
    f = _write(tmp_path / "e.csv", "model,dataset,accuracy,status\na,d,,completed\nb,d,,failed\nc,d,0.4,\n")
    rep = _run(store, f)
    assert rep.dropped == {"empty accuracy on a completed job": 1}
    jobs = store.jobs_frame(include_failed=True)
    assert sorted(jobs["model"]) == ["b", "c"]


# ---------------------------------------------------------------------- bad input
def _fails(store, tmp_path, text, match, name="bad.csv", **opts):
    store.commit(jobs=[{"model": "keep", "dataset": "me", "value": 0.5, "source": "before"}])
    before = _snapshot(store)
    f = _write(tmp_path / name, text)
    with pytest.raises(HistoryImportError, match=match):
        _run(store, f, **opts)
    _assert_same(before, _snapshot(store))  # a failed import changes nothing
    assert len(store.imports_frame()) == 0


#: (id, file text, error pattern, importer options): each bad file fails with that error and changes nothing
BAD_FILES = [
    ("missing_columns", "model,acc\na,0.5\n", r"bad\.csv: missing required column\(s\) dataset, accuracy", {}),
    ("unparsable_accuracy", "model,dataset,accuracy\na,d,0.5\nb,d,zero point six\n",
     r"row 2 \(file line 3\): column 'accuracy' has value 'zero point six'", {}),
    ("unparsable_meta_number", "model,dataset,accuracy,model_params\na,d,0.5,86M\n",
     r"row 1 .*'model_params' has value '86M'", {}),
    ("whole_number_required", "model,dataset,accuracy,epochs\na,d,0.5,2.5\n", r"'epochs' has value '2.5'.*whole number",
     {}),
    ("percent_without_unit", "model,dataset,accuracy\na,d,0.5\nb,d,87.5\n",
     r"row 2 .*accuracy '87.5' is above 1.*--unit percent", {}),
    ("percent_above_100", "model,dataset,accuracy\na,d,101\n", r"above 100 with --unit percent", {"unit": "percent"}),
    ("negative_accuracy", "model,dataset,accuracy\na,d,-1\n", r"row 1 .*negative", {}),
    ("empty_file", "", "file is empty", {}),
    ("header_only", "model,dataset,accuracy\n", "no data rows", {}),
    ("bad_hparams_json", 'model,dataset,accuracy,hparams\na,d,0.5,"{lr: 0.1}"\n',
     r"row 1 .*'hparams' is not valid JSON", {}),
    ("bad_status", "model,dataset,accuracy,status\na,d,0.5,done\n", r"'status' has value 'done'.*completed", {}),
    ("conflicting_meta", "model,dataset,accuracy,model_depth\na,d,0.5,12\na,e,0.6,24\n",
     r"row 2 .*model 'a'.*'model_depth' is 24 here but 12 in row 1", {}),
    ("meta_column_typo", "model,dataset,accuracy,model_parms\na,d,0.5,1\n", r"did you mean 'model_params'", {}),
    ("unit_percent_flag_name_typo", "model,dataset,accuracy\na,d,0.5\n", r"unknown accuracy unit 'percentage'",
     {"unit": "percentage"}),
]


@pytest.mark.parametrize("text,match,opts", [pytest.param(*case[1:], id=case[0]) for case in BAD_FILES])
def test_bad_file_fails_and_changes_nothing(store, tmp_path, text, match, opts):
    _fails(store, tmp_path, text, match, **opts)


def test_unknown_format_lists_supported():
    with pytest.raises(HistoryImportError) as e:
        get_importer("csv")
    for name in ("generic", "mlflow"):
        assert name in str(e.value)


def test_unknown_other_columns_are_reported(store, tmp_path):
    f = _write(tmp_path / "u.csv", "model,dataset,accuracy,notes\na,d,0.5,hello\n")
    rep = _run(store, f)
    assert any("notes" in n for n in rep.notes) and "notes" in rep.summary()


# ---------------------------------------------------------------------- round trips
def _full_store(url) -> HistoryStore:
    """A store with every field of every table set (and a few deliberately awkward values)."""
    s = HistoryStore(url)
    t0 = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    s.commit(
        models=[{"name": "vit_b16", "modality": "image", "family": "vit", "architecture": "ViT-B/16",
                 "input_size": 224, "params": 86_567_656.0, "gmacs": 17.5 + 1e-9, "feature_dim": 768, "depth": 12,
                 "pretrain_dataset": "in21k", "domain": "natural", "source_accuracy": 0.1 + 0.2,
                 "extra": {"memory": 1.5, "labels": ["a", "b"]}},
                {"name": "lonely, \"quoted\" model", "family": "cnn"}],
        datasets=[{"name": "pets", "modality": "image", "num_samples": 3680, "num_classes": 37,
                   "domain": "natural", "extra": {"split": "0.7:1"}},
                  {"name": "unused_dataset", "num_samples": 10}],
        jobs=[{"model": "vit_b16", "dataset": "pets", "value": 1 / 3, "regime": "vtab1k", "metric": "accuracy",
               "hparams": {"lr": 0.01, "epochs": 30, "epochs_f": 30.0, "opt": "sgd", "nested": {"a": [1, 2]}},
               "status": "completed", "source": "src-a", "provenance": "line 12\nof file", "created_at": t0},
              {"model": "vit_b16", "dataset": "pets", "value": None, "status": "failed", "source": "src-a",
               "created_at": t0},
              {"model": "r50", "dataset": "pets", "value": 0.0, "metric": "map", "source": "src-b", "created_at": t0}],
        scores=[{"model": "vit_b16", "dataset": "pets", "method": "logme", "value": -1.2345678901234567,
                 "probe_size": 500, "seed": 3, "runtime_s": 12.5, "source": "src-a", "created_at": t0},
                {"model": "vit_b16", "dataset": "pets", "method": "logme", "value": 2.0, "probe_size": 1000,
                 "seed": 3, "source": "src-a", "created_at": t0},
                {"model": "r50", "dataset": "only_scored", "method": "parc", "value": 1e-300, "source": "src-c",
                 "created_at": t0}],
    )
    return s


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_roundtrip_synthetic(tmp_path, ext):
    a = _full_store(f"sqlite:///{tmp_path / 'a.db'}")
    rep = export_history(a, tmp_path / f"h.{ext}")
    assert (rep.jobs, rep.scores, rep.models, rep.datasets) == (3, 3, 3, 3)
    b = HistoryStore(f"sqlite:///{tmp_path / 'b.db'}")
    imp = _run(b, tmp_path / f"h.{ext}")
    assert imp.rows_dropped == 0
    _assert_same(_snapshot(a), _snapshot(b))
    again = _run(b, tmp_path / f"h.{ext}")  # and importing it again adds nothing
    assert (again.jobs_added, again.scores_added, again.scores_replaced) == (0, 0, 0)
    a.dispose()
    b.dispose()


def test_export_source_filter(tmp_path):
    a = _full_store(f"sqlite:///{tmp_path / 'a.db'}")
    df = history_frame(a, source="src-b")
    assert df["record"].value_counts().to_dict() == {"model": 1, "dataset": 1, "job": 1}
    assert set(df["model"].dropna()) == {"r50"}
    with pytest.raises(ExportError, match="src-a, src-b"):
        export_history(a, tmp_path / "x.csv", source="nope")
    assert not (tmp_path / "x.csv").exists()


def test_export_csv_is_readable(tmp_path):
    a = _full_store(f"sqlite:///{tmp_path / 'a.db'}")
    export_history(a, tmp_path / "h.csv")
    df = pd.read_csv(tmp_path / "h.csv")
    job = df[(df["record"] == "job") & (df["metric"] == "accuracy") & (df["status"] == "completed")].iloc[0]
    assert json.loads(job["hparams"])["lr"] == 0.01
    assert job["accuracy"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_roundtrip_real_transfergraph(tmp_path, shared_data):
    tg = pytest.importorskip("history.importers.transfergraph")
    a = HistoryStore(f"sqlite:///{tmp_path / 'a.db'}")
    assert tg is not None
    get_importer("transfergraph").run(a, shared_data / "transfergraph-image")
    assert a.stats()["totals"]["jobs"] > 1000
    export_history(a, tmp_path / "tg.csv")
    b = HistoryStore(f"sqlite:///{tmp_path / 'b.db'}")
    rep = _run(b, tmp_path / "tg.csv")
    assert rep.rows_dropped == 0
    _assert_same(_snapshot(a), _snapshot(b))
    a.dispose()
    b.dispose()


@pytest.mark.parametrize("name", ["generic", "mlflow", "transfergraph", "shift", "parc", "timm"])
def test_every_importer_refuses_unknown_options_listing_valid_ones(name, store):
    imp = get_importer(name)
    with pytest.raises(HistoryImportError, match=r"unknown option\(s\) bogus; valid: "):
        imp.run(store, "/nonexistent", bogus=1)
    assert store.stats()["totals"]["jobs"] == 0
