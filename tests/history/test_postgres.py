"""The history store on a real PostgreSQL 15 server (started here, on a free local port).

The server binaries come from the Debian package postgresql-15
(``/usr/lib/postgresql/15/bin``, override with ``RECOMMENDER_PG_BIN``). As root, initdb and
pg_ctl run as the ``postgres`` user on a temporary folder; as any other user they run as
that user. The schema test at the end needs no server.
"""
from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from history import schema as S
from history.export import export_history
from history.importers import get_importer
from history.store import HistoryStore

@pytest.fixture()
def pg_store(pg_url):
    s = HistoryStore(pg_url)
    yield s
    with s.write() as conn:  # each test starts from an empty store
        for t in reversed(S.metadata.sorted_tables):
            if t.name != "meta":
                conn.execute(t.delete())
    s.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_generic_import_on_postgres(pg_store, tmp_path):
    assert pg_store.engine.dialect.name == "postgresql"
    f = tmp_path / "runs.csv"
    f.write_text(
        "model,dataset,accuracy,regime,hparams,created_at,model_params,model_extra,dataset_num_classes,score_logme\n"
        'vit,pets,0.91,full,"{""lr"": 0.01, ""opt"": ""sgd""}",2024-01-02T03:04:05+01:00,86000000,'
        '"{""mem"": 1.5}",37,2.5\n'
        "resnet,pets,0.85,vtab1k,,,,,37,-1.0\n"
        "resnet,dtd,0.7,full,,,,,,\n"
    )
    rep = get_importer("generic").run(pg_store, f, progress=False)
    assert (rep.jobs_added, rep.scores_added, rep.models_added, rep.datasets_added) == (3, 2, 2, 2)
    st = pg_store.stats()
    assert st["totals"]["jobs"] == 3 and st["by_regime"] == {"full": 2, "vtab1k": 1}
    assert st["scores_by_method"]["logme"]["pairs"] == 2
    jobs = pg_store.jobs_frame().set_index("model")
    assert jobs.loc["vit", "hparams"] == {"lr": 0.01, "opt": "sgd"}
    assert jobs.loc["vit", "created_at"].isoformat() == "2024-01-02T02:04:05+00:00"
    assert pg_store.get_model("vit")["extra"] == {"mem": 1.5}
    again = get_importer("generic").run(pg_store, f, progress=False)
    assert (again.jobs_added, again.jobs_existing, again.scores_added) == (0, 3, 0)
    assert pg_store.stats()["totals"]["jobs"] == 3

    # a lossless trip PostgreSQL -> file -> SQLite
    export_history(pg_store, tmp_path / "pg.csv")
    lite = HistoryStore(f"sqlite:///{tmp_path / 'lite.db'}")
    get_importer("generic").run(lite, tmp_path / "pg.csv", progress=False)
    cols = ["model", "dataset", "regime", "metric", "value", "status", "source", "provenance"]
    a = pg_store.jobs_frame()[cols + ["hparams"]].sort_values(cols).reset_index(drop=True)
    b = lite.jobs_frame()[cols + ["hparams"]].sort_values(cols).reset_index(drop=True)
    assert a.equals(b)
    lite.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_real_parc_import_on_postgres(pg_store, shared_data):
    pytest.importorskip("history.importers.parc")
    rep = get_importer("parc").run(pg_store, shared_data / "parc")
    assert rep.jobs_added > 400
    st = pg_store.stats()
    assert st["totals"]["jobs"] == rep.jobs_added
    assert sum(v["jobs"] for v in st["by_source"].values()) == rep.jobs_added
    again = get_importer("parc").run(pg_store, shared_data / "parc")
    assert again.jobs_added == 0 and again.jobs_existing == rep.jobs_read
    assert pg_store.stats()["totals"] == st["totals"]


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_stores_on_postgres(pg_url, tmp_path):
    """Two store objects (two connection pools) writing the same rows: nothing doubled."""
    a, b = HistoryStore(pg_url), HistoryStore(pg_url)
    try:
        jobs = [{"model": f"m{i}", "dataset": "d", "value": i / 100, "source": "pgtest"} for i in range(50)]
        ra = a.commit(jobs=jobs)
        rb = b.commit(jobs=jobs)
        assert (ra.jobs_added, rb.jobs_added, rb.jobs_existing) == (50, 0, 50)
        assert len(a.jobs_frame(source="pgtest")) == 50
    finally:
        with a.write() as conn:
            for t in reversed(S.metadata.sorted_tables):
                if t.name != "meta":
                    conn.execute(t.delete())
        a.dispose()
        b.dispose()


def test_schema_compiles_for_postgresql():
    """Every CREATE TABLE / CREATE INDEX of the schema compiles for the PostgreSQL dialect."""
    dialect = postgresql.psycopg.dialect()
    ddl = {}
    for table in S.metadata.sorted_tables:
        ddl[table.name] = str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            assert str(CreateIndex(index).compile(dialect=dialect)).startswith("CREATE INDEX")
    assert set(ddl) == {"models", "datasets", "jobs", "scores", "probes", "imports", "meta"}
    assert "SERIAL" in ddl["jobs"] and "JSON" in ddl["jobs"]
    assert "TIMESTAMP WITH TIME ZONE" in ddl["jobs"]
    assert "UNIQUE (key)" in ddl["jobs"] and "FOREIGN KEY(model_id) REFERENCES models (id)" in ddl["jobs"]
