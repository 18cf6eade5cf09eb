"""The column-wise fast path of the generic importer gives exactly what the row-by-row loop gives.

``history.importers.generic.FAST_PATH`` switches it off; every file below is imported both
ways (in small chunks, so that cross-chunk duplicates and drops are exercised) and the
reports, the stored rows and the job keys must be identical, as must the error line of
every bad file. ``schema.job_keys`` must equal ``schema.job_key`` row by row.
"""
from __future__ import annotations

import random

import pytest

import history.importers.generic as G
import history.store._writes as ST
from history import schema as S
from history.errors import HistoryImportError
from history.importers import get_importer
from history.store import HistoryStore

HEADER = "model,dataset,accuracy,status,regime,lr,epochs,seed,source,provenance,created_at,score_logme"
ROWS = [
    "m0,d0,0.5,,,0.001,10,1,,run-1,2024-05-01T12:30:00+00:00,0.3",
    "m1,d0,0.6,,linear,0.01,,2,src2,,,",
    "m0,d0,0.5,,,0.001,10,1,,run-1,2024-05-01T12:30:00+00:00,0.3",  # exact duplicate
    "m2,d1,nan,,,,,,,,,",                                             # NaN on a completed job: dropped
    "m3,d1,,failed,,,,,,,,",                                          # failed, no value: kept
    "m4,d1,,,,,,,,,,",                                                # empty accuracy: dropped
    " m0 ,d0,0.5,completed,full,0.001,10,1,,run-1,2024-05-01T12:30:00Z,0.3",  # same job, other text
    "ünï \"q\",d2,0.7,,,1e-4,30,0,,run-ü,,0.31",
    "m1,d0,0.6,,linear,0.01,,2,src2,,,0.9",                           # same job, new score value
    "m5,d3,0.25,running,,,,,,p,,",
    "m5,d3,0.25,running,,,,,,p,,",
    "m6,d3,0.0,,,0.1,1,3,,,,",
    "m6,d3,1.0,,,0.1,1,3,,,,",
]


def _import(tmp_path, text, *, fast, name, chunk=4, **opts):
    G.FAST_PATH = fast
    old = G.GenericImporter.CHUNK_ROWS
    G.GenericImporter.CHUNK_ROWS = chunk
    try:
        f = tmp_path / f"{name}.csv"
        f.write_text(text)
        store = HistoryStore(f"sqlite:///{tmp_path / (name + ('-fast' if fast else '-loop'))}.db")
        try:
            rep = get_importer("generic").run(store, f, progress=False, **opts)
        except HistoryImportError as exc:
            return None, str(exc), store
        return rep, None, store
    finally:
        G.FAST_PATH = True
        G.GenericImporter.CHUNK_ROWS = old


def _content(store):
    jobs = store.runs_frame()
    jobs = jobs.astype(object).where(jobs.notna(), None)  # NaN != NaN
    with store.read() as conn:
        keys = [r[0] for r in conn.exec_driver_sql('SELECT "key" FROM jobs ORDER BY id')]
        hps = [r[0] for r in conn.exec_driver_sql("SELECT hparams FROM jobs ORDER BY id")]
        created = [r[0] for r in conn.exec_driver_sql("SELECT created_at FROM jobs ORDER BY id")]
    return (keys, hps, created, jobs.drop(columns=["job_id", "created_at"]).to_dict("list"),
            store.models_frame()["name"].tolist(), store.datasets_frame()["name"].tolist(),
            store.scores_frame()[["model", "dataset", "method", "value"]].to_dict("list"))


@pytest.mark.parametrize("chunk", [3, 4, 100])
def test_fast_path_equals_the_row_loop(tmp_path, chunk, monkeypatch):
    monkeypatch.setattr(S, "utcnow", lambda: S.datetime(2025, 1, 1, tzinfo=S.UTC))
    text = HEADER + "\n" + "\n".join(ROWS) + "\n"
    fast, err_f, s_fast = _import(tmp_path, text, fast=True, name=f"f{chunk}", chunk=chunk)
    loop, err_l, s_loop = _import(tmp_path, text, fast=False, name=f"f{chunk}", chunk=chunk)
    assert err_f is None and err_l is None
    assert fast.to_dict() | {"path": None} == loop.to_dict() | {"path": None}
    assert list(fast.dropped) == list(loop.dropped)  # the same reasons in the same order
    assert fast.jobs_added == 7 and fast.dropped["accuracy is NaN (not a number) on a completed job"] == 1
    assert _content(s_fast) == _content(s_loop)


def test_fast_path_is_taken_for_plain_job_files(tmp_path, monkeypatch):
    calls = []
    real = G._fast_jobs

    def spy(*a, **k):
        out = real(*a, **k)  # counted only when it finishes (no fallback to the row loop)
        calls.append(1)
        return out

    monkeypatch.setattr(G, "_fast_jobs", spy)
    rep, err, _ = _import(tmp_path, HEADER + "\n" + "\n".join(ROWS) + "\n", fast=True, name="taken", chunk=100)
    assert err is None and calls == [1] and rep.jobs_added == 7


BAD = {
    "empty model": ["m0,d0,0.5", ",d0,0.5"],
    "empty dataset": ["m0,d0,0.5", "m1,,0.5"],
    "bad status": ["m0,d0,0.5,done"],
    "not whole epochs": ["m0,d0,0.5,,,,1.5"],
    "inf epochs": ["m0,d0,0.5,,,,inf"],
    "decimal comma": ['m0,d0,"0,5"'],
    "inf accuracy": ["m0,d0,inf"],
    "not a number": ["m0,d0,0.5", "m1,d0,abc"],
    "above 1": ["m0,d0,0.5", "m1,d0,1.5"],
    "negative": ["m0,d0,-0.5"],
    "bad date": ["m0,d0,0.5,,,,,,,,yesterday"],
    "long model": ["m" * 300 + ",d0,0.5"],
    "long source": ["m0,d0,0.5,,,,,," + "s" * 70],
    "long regime": ["m0,d0,0.5,," + "r" * 70],
    "first of two errors": ["m0,d0,0.5,oops", ",d0,0.5"],
    "error after a NaN row": ["m0,d0,nan", "m1,d0,0.5,,,,2.5"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_fast_path_gives_the_loops_error_line(tmp_path, case):
    head = "model,dataset,accuracy,status,regime,lr,epochs,seed,source,regime_x,created_at"
    text = head + "\n" + "\n".join(["ok0,d0,0.1", "ok1,d0,0.2", "ok2,d0,0.3"] + BAD[case]) + "\n"
    _, err_f, s_f = _import(tmp_path, text, fast=True, name="bad", chunk=4)
    _, err_l, _ = _import(tmp_path, text, fast=False, name="bad", chunk=4)
    assert err_f is not None and err_f == err_l
    assert s_f.stats()["totals"]["jobs"] == 0


def test_percent_unit_same_both_ways(tmp_path):
    text = "model,dataset,accuracy\nm0,d0,50\nm1,d0,75.5\nm2,d1,nan\n"
    fast, _, s_f = _import(tmp_path, text, fast=True, name="pct", unit="percent")
    loop, _, s_l = _import(tmp_path, text, fast=False, name="pct", unit="percent")
    assert fast.to_dict() | {"path": None} == loop.to_dict() | {"path": None}
    assert _content(s_f)[0] == _content(s_l)[0]
    assert sorted(s_f.jobs_frame()["value"]) == [0.5, 0.755]


def test_job_keys_equal_job_key_row_by_row():
    rng = random.Random(3)
    words = ["a", 'b"q', "ü-model", "org/m\\x", "x\ty", "日本", "full", "m"]
    names = ["batch_size", "epochs", "lr", "seed"]
    n = 2000
    cols = dict(
        model=[rng.choice(words) for _ in range(n)], dataset=[rng.choice(words) for _ in range(n)],
        regime=[rng.choice(["full", "linear"]) for _ in range(n)], metric=["accuracy"] * n,
        value=[rng.choice([None, 0.5, 0.1234567891234, 1.0, 0.0, 1e-7, 2 / 3]) for _ in range(n)],
        status=[rng.choice(["completed", "failed"]) for _ in range(n)],
        source=[rng.choice(["src", 's"x']) for _ in range(n)],
        provenance=[rng.choice([None, "", "run-1", "ü", 'a"b']) for _ in range(n)])
    hp = [(rng.choice([None, 32]), rng.choice([None, 10, 2 ** 40]), rng.choice([None, 1e-4, 0.001, -0.0, 1e300, 3.0]),
           rng.choice([None, 0, 7])) for _ in range(n)]
    keys = S.job_keys(hparams=(names, hp), **cols)
    for i in range(n):
        one = S.job_key(hparams={k: v for k, v in zip(names, hp[i]) if v is not None},
                        **{k: v[i] for k, v in cols.items()})
        assert keys[i] == one


def test_store_keeps_each_jobs_own_hyper_parameter_types(store):
    """Equal but differently typed settings (1, 1.0, True) are stored as given, not as the first one seen."""
    jobs = [{"model": "m", "dataset": "d", "value": v, "hparams": {"x": x}}
            for v, x in ((0.1, 1), (0.2, 1.0), (0.3, True))]
    store.commit(jobs=jobs)
    with store.read() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT hparams FROM jobs ORDER BY value")]
    assert stored == ['{"x": 1}', '{"x": 1.0}', '{"x": true}']


def test_existing_keys_are_looked_up_only_when_the_store_has_jobs(tmp_path, monkeypatch):
    looked = []
    real = ST._existing_keys
    monkeypatch.setattr(ST, "_existing_keys", lambda *a: looked.append(1) or real(*a))
    text = HEADER + "\n" + "\n".join(ROWS) + "\n"
    rep, err, store = _import(tmp_path, text, fast=True, name="fresh", chunk=3)  # cross-chunk repeats
    assert err is None and rep.jobs_added == 7 and looked == []
    again = get_importer("generic").run(store, tmp_path / "fresh.csv", progress=False)
    assert looked and again.jobs_added == 0 and again.jobs_existing == 7


def test_import_into_fresh_store_rebuilds_the_job_indexes(tmp_path):
    """A fresh SQLite store's secondary job indexes are dropped during an import and rebuilt
    before it commits: the same indexes exist afterwards, also after a failed import."""
    import sqlite3

    db = tmp_path / "s.db"
    store = HistoryStore(f"sqlite:///{db}")

    def indexes():
        with sqlite3.connect(db) as c:
            return sorted(r[0] for r in c.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='jobs' AND sql IS NOT NULL"))

    before = indexes()
    assert before, "the schema declares secondary indexes on jobs"
    bad = tmp_path / "bad.csv"
    bad.write_text("model,dataset,accuracy\nm1,d1,0.5\nm2,d1,oops\n")
    with pytest.raises(HistoryImportError):
        get_importer("generic").run(store, bad, progress=False)
    assert indexes() == before
    good = tmp_path / "good.csv"
    good.write_text("model,dataset,accuracy\nm1,d1,0.5\nm2,d1,0.7\n")
    get_importer("generic").run(store, good, progress=False)
    assert indexes() == before
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
