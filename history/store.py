"""The history store: fine-tuning jobs, models, datasets and model-selection scores.

Works over any SQLAlchemy URL (SQLite by default, PostgreSQL tested). All writes of one
import happen in a single transaction, so a failing import leaves the store untouched.
On SQLite, write transactions start with ``BEGIN IMMEDIATE`` and a busy timeout, so two
processes importing at once are serialized instead of failing or doubling rows.
"""
from __future__ import annotations

import json

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import quote

import pandas as pd
from sqlalchemy import create_engine, event, func, insert, inspect, select, update, delete
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from . import schema as S
from .config import resolve_store_url
from .errors import NotFoundError, StoreError, closest

#: How the training target of a (model, dataset, regime) is derived from its jobs.
TARGET_RULES = {
    "best": "the best configuration: completed jobs with identical hyper-parameters (repeats, e.g. seeds) are "
            "averaged first, then the configuration with the highest mean is taken -- chosen on the reported "
            "metric itself, as the published histories do",
    "mean": "the mean over completed jobs (e.g. over seeds)",
    "latest": "the most recently created completed job",
}

_CHUNK = 5000


@dataclass
class JobColumns:
    """Jobs given column by column, one list per field (large imports: no dict per row).

    Same fields as the job dicts :meth:`HistoryStore.commit` takes, every list one entry per
    job: ``model``/``dataset``/``regime``/``metric``/``status``/``source`` strings (defaults
    applied), ``hparams`` dicts (rows with the same settings may share one dict object),
    ``value`` float or None, ``provenance`` and ``created_at`` value or None, ``key`` the
    job's :func:`schema.job_key`. Iterating yields the job dicts.
    """
    model: list
    dataset: list
    regime: list
    hparams: list
    metric: list
    value: list
    status: list
    source: list
    provenance: list
    created_at: list
    key: list

    FIELDS = ("model", "dataset", "regime", "hparams", "metric", "value", "status", "source", "provenance",
              "created_at", "key")

    def __len__(self) -> int:
        return len(self.key)

    def take(self, idx) -> "JobColumns":
        """The jobs at positions ``idx``, in that order."""
        return JobColumns(**{f: [getattr(self, f)[i] for i in idx] for f in self.FIELDS})

    def __iter__(self):
        cols = [getattr(self, f) for f in self.FIELDS]
        for t in zip(*cols):
            yield dict(zip(self.FIELDS, t))


@dataclass
class CommitResult:
    models_added: int = 0
    models_updated: int = 0
    datasets_added: int = 0
    datasets_updated: int = 0
    jobs_added: int = 0
    jobs_existing: int = 0
    scores_added: int = 0
    scores_replaced: int = 0
    scores_unchanged: int = 0
    probes_added: int = 0
    details: dict = field(default_factory=dict)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - unparsable URL, shown as given
        return url


def _missing_columns(conn) -> list:
    """Columns the schema declares that an existing store's tables lack, as (table, column)."""
    insp = inspect(conn)
    have_tables = set(insp.get_table_names())
    missing = []
    for name, table in S.metadata.tables.items():
        if name not in have_tables:
            continue
        have = {c["name"] for c in insp.get_columns(name)}
        missing += [(table, col) for col in table.columns if col.name not in have]
    return missing


def _add_missing_columns(conn) -> None:
    """Additive migration: add every declared column an older store lacks (all nullable).

    Runs inside the schema write transaction, so two processes opening an old store at
    once add each column once; a store already up to date is left as it is.
    """
    for table, col in _missing_columns(conn):
        if not col.nullable:
            raise StoreError(
                f"history store lacks the non-nullable column {table.name}.{col.name}; export it "
                "with the older version (history export) and import the file into a new store.")
        ddl = col.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}')


#: Default seconds a write waits for another process's SQLite write lock (``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 600.0
LOCK_TIMEOUT_ENV = "RECOMMENDER_LOCK_TIMEOUT"
_POLL_MS = 500  # busy timeout of one attempt at taking the write lock


def _default_lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(raw)
    except ValueError:
        raise StoreError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first_line(exc) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _is_locked(exc) -> bool:
    m = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in m or "database is busy" in m


def _is_readonly(exc) -> bool:
    return "readonly database" in str(getattr(exc, "orig", exc)).lower()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory and ``file:`` URIs)."""
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _rekey_jobs(conn) -> None:
    """Bring job keys up to ``schema.JOB_KEY_VERSION`` (provenance is part of a job's identity).

    Keys of jobs without provenance do not change; keys of jobs with provenance gain it, so
    re-importing the same file stays idempotent. Idempotent itself (guarded by the meta row).
    """
    have = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "job_key_version")).scalar()
    if have == str(S.JOB_KEY_VERSION):
        return  # another process did it while we waited for the lock
    m, d, j = S.models, S.datasets, S.jobs
    q = (select(j.c.id, j.c.key, m.c.name.label("model"), d.c.name.label("dataset"), j.c.regime, j.c.hparams,
                j.c.metric, j.c.value, j.c.status, j.c.source, j.c.provenance)
         .join(m, m.c.id == j.c.model_id).join(d, d.c.id == j.c.dataset_id).where(j.c.provenance.is_not(None)))
    changes = []
    for r in conn.execute(q).mappings():
        key = S.job_key(model=r["model"], dataset=r["dataset"], regime=r["regime"], hparams=r["hparams"],
                        metric=r["metric"], value=r["value"], status=r["status"], source=r["source"],
                        provenance=r["provenance"])
        if key != r["key"]:
            changes.append({"_id": r["id"], "_key": key})
    if changes:
        from sqlalchemy import bindparam

        stmt = update(j).where(j.c.id == bindparam("_id")).values(key=bindparam("_key"))
        for i in range(0, len(changes), _CHUNK):
            conn.execute(stmt, changes[i : i + _CHUNK])
    if have is None:
        conn.execute(insert(S.meta).values(key="job_key_version", value=str(S.JOB_KEY_VERSION)))
    else:
        conn.execute(update(S.meta).where(S.meta.c.key == "job_key_version").values(value=str(S.JOB_KEY_VERSION)))


class HistoryStore:
    """A fine-tuning history store over a SQLAlchemy URL.

    ``must_exist``: refuse a SQLite file that does not exist (read commands given an
    explicit ``--store``, so a typo is not silently a new empty store). A new SQLite file is
    created only in an existing folder. A SQLite store whose file or folder is not writable
    is opened read-only (:attr:`read_only`): reads work, writes raise a one-line
    :class:`StoreError`. ``lock_timeout``: seconds a write waits for another writer's lock
    (default 600, env ``RECOMMENDER_LOCK_TIMEOUT``), saying so on stderr while it waits.

    >>> store = HistoryStore("sqlite:///:memory:")  # doctest: +SKIP
    """

    def __init__(self, url: str | None = None, *, home=None, create: bool = True, must_exist: bool = False,
                 lock_timeout: float | None = None):
        self.url = resolve_store_url(url, home)
        self.lock_timeout = _default_lock_timeout() if lock_timeout is None else float(lock_timeout)
        if self.lock_timeout < 0:
            raise StoreError(f"--lock-timeout must be >= 0 seconds, got {self.lock_timeout:g}")
        self.read_only = False
        self.engine = self._open(self.url, create, must_exist)

    # ------------------------------------------------------------------ opening
    def _open(self, url: str, create: bool, must_exist: bool = False) -> Engine:
        hint = (
            "Pass --store (or set RECOMMENDER_STORE) to a valid SQLAlchemy URL, e.g. "
            "sqlite:///path/to/history.db or postgresql+psycopg://user:pass@host/db."
        )
        try:
            u = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"cannot parse history store URL {url!r}: {exc}. {hint}") from None
        is_sqlite = u.get_backend_name() == "sqlite"
        kwargs = {}
        engine_url = url
        if is_sqlite:
            p = sqlite_path(url)
            if p is not None:
                if p.is_dir():
                    raise StoreError(f"cannot open history store {_safe_url(url)}: {p} is a directory. {hint}")
                if not p.exists():
                    if must_exist:
                        raise StoreError(
                            f"no history store at {p} (--store {_safe_url(url)}): the file does not exist. "
                            "Check the path for a typo, or fill a new store with 'history pull NAME' or "
                            "'history import PATH'.")
                    if not p.parent.is_dir():
                        raise StoreError(
                            f"cannot create history store {_safe_url(url)}: the folder {p.parent} does not "
                            "exist. Create it first (a new store is only created in an existing folder), "
                            "or check --store for a typo.")
                    if not os.access(p.parent, os.W_OK):
                        raise StoreError(f"cannot create history store {_safe_url(url)}: the folder "
                                         f"{p.parent} is read-only. {hint}")
                elif not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)):
                    # Read-only: open without locks/journal files when the folder is read-only
                    # too (no -wal/-shm can be created there; nobody can write it either).
                    self.read_only = True
                    q = "mode=ro" + ("" if os.access(p.parent, os.W_OK) else "&immutable=1")
                    engine_url = f"sqlite:///file:{quote(str(p.resolve()))}?{q}&uri=true"
            timeout_ms = int(self.lock_timeout * 1000)
            kwargs["connect_args"] = {"timeout": self.lock_timeout}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(engine_url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
            raise StoreError(
                f"cannot open history store {_safe_url(url)}: database driver missing ({exc}). "
                f"Install it (PostgreSQL: pip install 'psycopg[binary]'). {hint}"
            ) from None
        except (ArgumentError, SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreError(f"cannot open history store {_safe_url(url)}: {exc}. {hint}") from None

        if is_sqlite:
            read_only = self.read_only
            store = self

            @event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi_conn, _rec):  # pragma: no cover - trivial
                dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={timeout_ms}")
                if not read_only:
                    try:
                        cur.execute("PRAGMA journal_mode=WAL")
                    except Exception:
                        pass
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn):  # pragma: no cover - trivial
                mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
                if mode == "IMMEDIATE":
                    store._begin_immediate(conn, timeout_ms)
                else:
                    conn.exec_driver_sql(f"BEGIN {mode}")

        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                # Is the schema there and current? Then opening only reads, never waiting for a
                # running import; otherwise it is created / upgraded in a write transaction.
                ready = set(S.metadata.tables) <= set(inspect(conn).get_table_names()) and conn.execute(
                    select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar() is not None
                ready = ready and not _missing_columns(conn)
                rekey = ready and conn.execute(select(S.meta.c.value).where(
                    S.meta.c.key == "job_key_version")).scalar() != str(S.JOB_KEY_VERSION)
            if create and rekey and not self.read_only:
                init = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite else engine
                with init.begin() as conn:
                    _rekey_jobs(conn)
            if self.read_only and not ready:
                raise StoreError(
                    f"history store {_safe_url(url)} is read-only (no write permission on the file or its "
                    "folder) and is not a history store of this version; it would need to be created or "
                    "upgraded. Open it once with write permission, or copy it somewhere writable.")
            if create and not self.read_only:
                # Schema creation runs in a write transaction (BEGIN IMMEDIATE on SQLite): two
                # processes opening a fresh store at once are serialized by the lock wait
                # instead of one failing with "database is locked" on a read->write upgrade.
                init = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite else engine
                with (engine if ready else init).begin() as conn:
                    if not ready:
                        S.metadata.create_all(conn)
                        _add_missing_columns(conn)
                    have = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar()
                    if have is None:
                        conn.execute(insert(S.meta).values(key="schema_version", value=str(S.SCHEMA_VERSION)))
                        conn.execute(insert(S.meta).values(key="job_key_version", value=str(S.JOB_KEY_VERSION)))
                    elif int(have) != S.SCHEMA_VERSION:
                        raise StoreError(
                            f"history store {_safe_url(url)} has schema version {have}, this tool "
                            f"writes version {S.SCHEMA_VERSION}; export it with an older version "
                            "(history export) and import the file into a new store."
                        )
        except StoreError:
            engine.dispose()
            raise
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            engine.dispose()
            if _is_readonly(exc):
                raise StoreError(self._readonly_message(url)) from None
            raise StoreError(f"cannot open history store {_safe_url(url)}: {_first_line(exc)}. {hint}") from None
        return engine

    def _readonly_message(self, url=None) -> str:
        p = sqlite_path(url or self.url)
        where = f"{p} or its folder {p.parent}" if p is not None else "it"
        return (f"history store {_safe_url(url or self.url)} is read-only (no write permission on {where}); "
                "this command writes to it. Use a writable copy (--store PATH) or fix the permissions.")

    def _begin_immediate(self, conn, timeout_ms: int) -> None:
        """``BEGIN IMMEDIATE``, polling for another writer's lock for up to ``lock_timeout`` s."""
        deadline = time.monotonic() + self.lock_timeout
        conn.exec_driver_sql(f"PRAGMA busy_timeout={min(_POLL_MS, timeout_ms)}")
        waited = False
        next_note = time.monotonic() + 30
        try:
            while True:
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except OperationalError as exc:
                    if not _is_locked(exc):
                        raise
                    now = time.monotonic()
                    if now >= deadline:
                        raise StoreError(
                            f"gave up after waiting {self.lock_timeout:g} s for another writer's lock on history "
                            f"store {_safe_url(self.url)} (another import or score is still running); nothing "
                            "was written. Retry when it has finished, or wait longer with --lock-timeout SECONDS."
                        ) from None
                    if not waited:
                        _say(f"waiting for another writer to finish with {_safe_url(self.url)} "
                             f"(up to {self.lock_timeout:g} s, --lock-timeout)...")
                        waited = True
                    elif now >= next_note:
                        _say(f"still waiting for another writer ({self.lock_timeout - (deadline - now):.0f} s so far)...")
                        next_note = now + 30
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={timeout_ms}")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def write(self):
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite). Rolls back on any error.

        A read-only store, a lock wait past ``lock_timeout`` or a lock lost mid-write raise a
        one-line :class:`StoreError`; the transaction is rolled back, so nothing is written.
        """
        if self.read_only:
            raise StoreError(self._readonly_message())
        eng = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        try:
            with eng.begin() as conn:
                yield conn
        except OperationalError as exc:
            if _is_readonly(exc):
                raise StoreError(self._readonly_message()) from None
            if _is_locked(exc):
                raise StoreError(
                    f"history store {_safe_url(self.url)} stayed locked by another writer for more than "
                    f"{self.lock_timeout:g} s; nothing was written. Retry, or raise --lock-timeout.") from None
            raise

    @contextlib.contextmanager
    def read(self):
        with self.engine.connect() as conn:
            yield conn

    def dispose(self):
        self.engine.dispose()

    def __repr__(self):
        return f"HistoryStore({_safe_url(self.url)!r})"

    # ------------------------------------------------------------------ upserts
    @staticmethod
    def _upsert_named(conn, table, fields: Iterable[str], records: Iterable[Mapping], overwrite: bool):
        """Insert new names; for existing ones fill missing fields (or overwrite non-null ones)."""
        recs = {}
        for r in records:
            name = str(r["name"])
            merged = recs.setdefault(name, {"name": name})
            for k in list(fields) + ["extra"]:
                v = S._clean(r.get(k))
                if v is not None and (overwrite or merged.get(k) is None):
                    merged[k] = v
        if not recs:
            return {}, 0, 0
        existing = {}
        names = list(recs)
        for i in range(0, len(names), 900):
            rows = conn.execute(select(table).where(table.c.name.in_(names[i : i + 900]))).mappings()
            for row in rows:
                existing[row["name"]] = dict(row)
        added = updated = 0
        new_rows = []
        for name, rec in recs.items():
            if name not in existing:
                new_rows.append({k: rec.get(k) for k in ["name", *fields, "extra"]})
                continue
            old = existing[name]
            changes = {}
            for k in fields:
                v = rec.get(k)
                if v is not None and (old.get(k) is None or (overwrite and old.get(k) != v)):
                    changes[k] = v
            if rec.get("extra"):
                ex = dict(old.get("extra") or {})
                merged_extra = {**rec["extra"], **ex} if not overwrite else {**ex, **rec["extra"]}
                if merged_extra != ex:
                    changes["extra"] = merged_extra
            if changes:
                conn.execute(update(table).where(table.c.id == old["id"]).values(**changes))
                updated += 1
        _bulk_insert(conn, table, new_rows)
        added = len(new_rows)
        ids = {}
        for i in range(0, len(names), 900):
            for row in conn.execute(select(table.c.id, table.c.name).where(table.c.name.in_(names[i : i + 900]))):
                ids[row.name] = row.id
        return ids, added, updated

    def commit(
        self,
        *,
        models: Iterable[Mapping] = (),
        datasets: Iterable[Mapping] = (),
        jobs: Iterable[Mapping] = (),
        scores: Iterable[Mapping] = (),
        import_log: Mapping | None = None,
        overwrite_meta: bool = False,
        conn=None,
        probes: Iterable[Mapping] = (),
        viability: bool | None = None,
        jobs_are_new: bool = False,
    ) -> CommitResult:
        """Write models, datasets, jobs and scores in ONE transaction.

        ``models``/``datasets``: dicts with ``name`` and any of the schema fields; an
        existing entry only gets its missing fields filled (``overwrite_meta`` replaces).
        ``jobs``: dicts with ``model``, ``dataset``, ``value`` and optional ``regime``,
        ``hparams``, ``metric``, ``status``, ``source``, ``provenance``, ``created_at`` and
        ``key`` (its :func:`schema.job_key`, when the caller computed it already);
        a job whose content key already exists is skipped (idempotent imports).
        ``scores``: dicts with ``model``, ``dataset``, ``method``, ``value`` and optional
        ``probe_size``, ``seed``, ``runtime_s``, ``source``, ``flag`` (why the value is
        degenerate, or None) and ``params`` (options it was computed with, JSON); an
        existing key is replaced.
        Models/datasets referenced by jobs or scores but not listed are created bare.
        ``viability``: recompute every model's degenerate flag (``history.viability``) in
        this transaction; ``None`` (default) does so when jobs were added or dataset facts
        given. A caller that commits one file in several chunks of one transaction passes
        ``False`` for the chunks and ``True`` for the last commit, so the flags are computed
        once. ``jobs_are_new``: the caller guarantees that no job key is in the store yet (an
        import into a store that had no jobs, whose parser dropped repeated keys), so the
        lookup of existing keys is skipped.
        """
        if conn is None:
            with self.write() as c:
                return self.commit(
                    models=models, datasets=datasets, jobs=jobs, scores=scores,
                    import_log=import_log, overwrite_meta=overwrite_meta, conn=c, probes=probes,
                    viability=viability, jobs_are_new=jobs_are_new,
                )
        res = CommitResult()
        cols = jobs if isinstance(jobs, JobColumns) else None
        jobs = [] if cols is not None else list(jobs)
        scores = list(scores)
        datasets = list(datasets)
        explicit_datasets = [r for r in datasets if "num_classes" in r]
        # models / datasets referenced by jobs and scores, once per name (bare: nothing to merge)
        job_models = cols.model if cols is not None else [r["model"] for r in jobs]
        job_datasets = cols.dataset if cols is not None else [r["dataset"] for r in jobs]
        models = list(models) + [{"name": n} for n in dict.fromkeys(job_models + [r["model"] for r in scores])]
        datasets = list(datasets) + [{"name": n}
                                     for n in dict.fromkeys(job_datasets + [r["dataset"] for r in scores])]
        mids, res.models_added, res.models_updated = self._upsert_named(
            conn, S.models, S.MODEL_FIELDS, models, overwrite_meta)
        dids, res.datasets_added, res.datasets_updated = self._upsert_named(
            conn, S.datasets, S.DATASET_FIELDS, datasets, overwrite_meta)
        now = S.utcnow()

        if jobs or cols:
            hp_clean: dict = {}  # hparams items -> cleaned dict (a large import repeats a few settings)

            def clean(hp):
                hp = hp or {}
                try:
                    h = tuple((k, type(v), v) for k, v in hp.items())  # types too: 1, 1.0 and True are equal
                    c = hp_clean.get(h)
                    if c is None:
                        c = hp_clean[h] = S._clean(dict(hp))
                    return c
                except TypeError:  # unhashable values (lists, nested dicts)
                    return S._clean(dict(hp))

            def text(field, default=None):
                vals = (r[field] for r in jobs) if default is None else (r.get(field) or default for r in jobs)
                return [x if type(x) is str else str(x) for x in vals]

            if cols is not None:  # columns as the parser made them: no per-row dicts to read
                model, dataset, regime, metric, status = cols.model, cols.dataset, cols.regime, cols.metric, cols.status
                source = [s or "unknown" for s in cols.source]
                by_id: dict = {}  # rows with the same settings share one dict: clean it once
                hps = []
                for h in cols.hparams:
                    c = by_id.get(id(h))
                    if c is None:
                        c = by_id[id(h)] = clean(h)
                    hps.append(c)
                value, prov, keys, created = cols.value, cols.provenance, cols.key, cols.created_at
            else:
                model, dataset = text("model"), text("dataset")
                hps = [clean(r.get("hparams")) for r in jobs]
                regime, metric = text("regime", "full"), text("metric", "accuracy")
                status, source = text("status", "completed"), text("source", "unknown")
                value = [None if v is None else float(v) for v in (r.get("value") for r in jobs)]
                prov = [r.get("provenance") for r in jobs]
                keys = [r.get("key") or S.job_key(
                    model=model[i], dataset=dataset[i], regime=regime[i], hparams=hps[i], metric=metric[i],
                    value=value[i], status=status[i], source=source[i], provenance=prov[i])
                    for i, r in enumerate(jobs)]
                created = [r.get("created_at") for r in jobs]
            first: dict = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            have = set() if jobs_are_new else _existing_keys(conn, S.jobs, list(first))
            idx = [i for k, i in first.items() if k not in have]
            pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
            _insert_columns(conn, S.jobs, {
                "model_id": [mids[m] for m in pick(model)], "dataset_id": [dids[d] for d in pick(dataset)],
                "regime": pick(regime), "hparams": pick(hps), "metric": pick(metric), "value": pick(value),
                "status": pick(status), "source": pick(source), "provenance": pick(prov),
                "created_at": [created[i] or now for i in idx], "key": pick(keys)})
            new = idx
            res.jobs_added = len(new)
            res.jobs_existing = len(keys) - len(new)

        if scores:
            rows = {}
            for r in scores:
                row = {
                    "model_id": mids[str(r["model"])],
                    "dataset_id": dids[str(r["dataset"])],
                    "method": str(r["method"]),
                    "value": float(r["value"]),
                    "probe_size": None if r.get("probe_size") is None else int(r["probe_size"]),
                    "seed": None if r.get("seed") is None else int(r["seed"]),
                    "runtime_s": None if r.get("runtime_s") is None else float(r["runtime_s"]),
                    "source": str(r.get("source") or "unknown"),
                    "created_at": r.get("created_at") or now,
                    "flag": str(r["flag"]) if r.get("flag") else None,
                    "params": S._clean(r.get("params")) or None,
                }
                row["key"] = S.score_key(
                    model=str(r["model"]), dataset=str(r["dataset"]), method=row["method"],
                    probe_size=row["probe_size"], seed=row["seed"], source=row["source"],
                )
                rows[row["key"]] = row  # last one wins within a batch
            keys = list(rows)
            have = {}
            for i in range(0, len(keys), 900):
                for k, v, fl, pa in conn.execute(
                    select(S.scores.c.key, S.scores.c.value, S.scores.c.flag, S.scores.c.params)
                    .where(S.scores.c.key.in_(keys[i : i + 900]))
                ):
                    have[k] = (v, fl, pa)
            new = [rows[k] for k in keys if k not in have]
            _bulk_insert(conn, S.scores, new)
            for k in keys:
                if k in have:
                    v, fl, pa = have[k]
                    r = rows[k]
                    if (v is not None and abs(v - r["value"]) <= 1e-12 * max(1.0, abs(v))
                            and fl == r["flag"] and (pa or None) == r["params"]):
                        res.scores_unchanged += 1
                        continue
                    conn.execute(
                        update(S.scores).where(S.scores.c.key == k).values(
                            value=r["value"], runtime_s=r["runtime_s"], created_at=r["created_at"],
                            flag=r["flag"], params=r["params"])
                    )
                    res.scores_replaced += 1
            res.scores_added = len(new)

        for p in probes:  # (dataset, size, seed) identifies a probe set; a new one replaces it
            did = dids.get(str(p["dataset"]))
            if did is None:
                did = self._upsert_named(conn, S.datasets, S.DATASET_FIELDS, [{"name": p["dataset"]}], False)[0][
                    str(p["dataset"])]
            pr = S.probes
            conn.execute(delete(pr).where((pr.c.dataset_id == did) & (pr.c.size == int(p["size"]))
                                          & (pr.c.seed == int(p["seed"]))))
            conn.execute(insert(pr).values(
                dataset_id=did, size=int(p["size"]), seed=int(p["seed"]), num_classes=p.get("num_classes"),
                indices=[int(i) for i in p["indices"]], data_ref=p.get("data_ref"),
                created_at=p.get("created_at") or now))
            res.probes_added += 1

        if viability or (viability is None and (res.jobs_added or explicit_datasets)):
            from . import viability as V

            res.details["viability"] = V.update_models(conn)

        if import_log is not None:
            log = dict(import_log)
            conn.execute(
                insert(S.imports).values(
                    importer=log.get("importer", "unknown"),
                    source=log.get("source", "unknown"),
                    path=log.get("path"),
                    sha256=log.get("sha256"),
                    rows_read=int(log.get("rows_read", 0)),
                    jobs_added=int(log.get("jobs_added", res.jobs_added)),
                    scores_added=int(log.get("scores_added", res.scores_added)),
                    dropped=S._clean(log.get("dropped") or {}),
                    created_at=now,
                )
            )
        return res

    def refresh_viability(self) -> dict:
        """Recompute the degenerate-model flag of every model (e.g. after a migration)."""
        from . import viability

        with self.write() as conn:
            return viability.update_models(conn)

    # ------------------------------------------------------------------ single entities
    def add_dataset(self, name: str, *, exist_ok: bool = False, **fields) -> dict:
        unknown = set(fields) - set(S.DATASET_FIELDS) - {"extra"}
        if unknown:
            raise ValueError(f"unknown dataset fields {sorted(unknown)}; valid: {sorted(S.DATASET_FIELDS)}")
        with self.write() as conn:
            row = conn.execute(select(S.datasets).where(S.datasets.c.name == name)).mappings().first()
            if row is not None and not exist_ok:
                raise StoreError(f"dataset {name!r} already exists in the store; use 'history show dataset {name}'.")
            self._upsert_named(conn, S.datasets, S.DATASET_FIELDS, [{"name": name, **fields}], overwrite=True)
        return self.get_dataset(name)

    def update_model(self, name: str, **fields) -> None:
        unknown = set(fields) - set(S.MODEL_FIELDS) - {"extra"}
        if unknown:
            raise ValueError(f"unknown model fields {sorted(unknown)}; valid: {sorted(S.MODEL_FIELDS)}")
        with self.write() as conn:
            self._upsert_named(conn, S.models, S.MODEL_FIELDS, [{"name": name, **fields}], overwrite=True)

    def _get(self, table, name: str, kind: str) -> dict:
        with self.read() as conn:
            row = conn.execute(select(table).where(table.c.name == name)).mappings().first()
            if row is None:
                names = conn.execute(select(table.c.name)).scalars().all()
        if row is None:
            hint = closest(name, names)
            extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
            raise NotFoundError(f"no {kind} named {name!r} in the store.{extra}")
        return dict(row)

    def get_model(self, name: str) -> dict:
        return self._get(S.models, name, "model")

    def get_dataset(self, name: str) -> dict:
        return self._get(S.datasets, name, "dataset")

    def has_dataset(self, name: str) -> bool:
        with self.read() as conn:
            return conn.execute(select(S.datasets.c.id).where(S.datasets.c.name == name)).first() is not None

    def add_probe(self, dataset: str, *, size: int, seed: int, indices, num_classes=None, data_ref=None) -> int:
        """Record (or replace) the probe set drawn from ``dataset`` with (size, seed)."""
        with self.write() as conn:
            ids, _, _ = self._upsert_named(conn, S.datasets, S.DATASET_FIELDS, [{"name": dataset}], False)
            did = ids[dataset]
            conn.execute(delete(S.probes).where(
                (S.probes.c.dataset_id == did) & (S.probes.c.size == size) & (S.probes.c.seed == seed)))
            r = conn.execute(insert(S.probes).values(
                dataset_id=did, size=int(size), seed=int(seed), num_classes=num_classes,
                indices=[int(i) for i in indices], data_ref=data_ref, created_at=S.utcnow()))
            return int(r.inserted_primary_key[0])

    # ------------------------------------------------------------------ job lifecycle (runner)
    def start_job(self, *, model: str, dataset: str, hparams: Mapping, source: str, regime: str = "full",
                  metric: str = "accuracy", provenance: str | None = None, extra: Mapping | None = None,
                  model_fields: Mapping | None = None, dataset_fields: Mapping | None = None) -> int:
        """Insert one job with status ``running`` (value NULL) in one transaction; return its id.

        The job's key is unique per call (a run, not content: two runs of the same
        configuration are two jobs). ``model_fields`` / ``dataset_fields`` fill missing meta
        of the model / dataset (created bare when unknown). Finish it with :meth:`finish_job`.
        """
        import uuid

        with self.write() as conn:
            mids, _, _ = self._upsert_named(conn, S.models, S.MODEL_FIELDS,
                                            [{"name": model, **dict(model_fields or {})}], False)
            dids, _, _ = self._upsert_named(conn, S.datasets, S.DATASET_FIELDS,
                                            [{"name": dataset, **dict(dataset_fields or {})}], False)
            r = conn.execute(insert(S.jobs).values(
                key=S._digest(["run", model, dataset, uuid.uuid4().hex]), model_id=mids[model],
                dataset_id=dids[dataset], regime=str(regime), hparams=S._clean(dict(hparams or {})),
                metric=str(metric), value=None, status="running", source=str(source), provenance=provenance,
                created_at=S.utcnow(), extra=S._clean(dict(extra or {}))))
            return int(r.inserted_primary_key[0])

    def finish_job(self, job_id: int, *, status: str, value: float | None = None, duration_s: float | None = None,
                   extra: Mapping | None = None) -> None:
        """Set a ``running`` job to ``completed`` (with its value) or ``failed``: one atomic UPDATE.

        ``extra`` is merged into the job's ``extra``. A job that is no longer running (already
        finished, or marked stale by another process) is left as it is and a StoreError raised.
        """
        if status not in ("completed", "failed"):
            raise ValueError(f"status must be completed or failed, got {status!r}")
        if status == "completed" and value is None:
            raise ValueError("a completed job needs a value")
        with self.write() as conn:
            row = conn.execute(select(S.jobs.c.status, S.jobs.c.extra).where(S.jobs.c.id == int(job_id))).first()
            if row is None:
                raise NotFoundError(f"no job with id {job_id} in the store")
            if row.status != "running":
                raise StoreError(f"job {job_id} is {row.status}, not running; it was not changed")
            merged = {**dict(row.extra or {}), **dict(extra or {})}
            conn.execute(update(S.jobs).where((S.jobs.c.id == int(job_id)) & (S.jobs.c.status == "running")).values(
                status=status, value=None if value is None else float(value),
                duration_s=None if duration_s is None else float(duration_s), extra=S._clean(merged)))

    def fail_stale_jobs(self, *, source=None, dataset=None, is_alive=None, reason: str = "stale") -> list[int]:
        """Mark ``running`` jobs whose process is gone as ``failed``; return their ids.

        ``is_alive(extra) -> bool`` says whether the process recorded in a job's ``extra``
        (e.g. host and pid) still runs; jobs it calls alive are left running.
        """
        j, d = S.jobs, S.datasets
        q = select(j.c.id, j.c.extra).join(d, d.c.id == j.c.dataset_id).where(j.c.status == "running")
        q = _filter(q, j.c.source, source)
        q = _filter(q, d.c.name, dataset)
        failed = []
        with self.write() as conn:
            for jid, extra in conn.execute(q).all():
                if is_alive is not None and is_alive(dict(extra or {})):
                    continue
                conn.execute(update(j).where((j.c.id == jid) & (j.c.status == "running")).values(
                    status="failed", extra=S._clean({**dict(extra or {}), "error": reason})))
                failed.append(int(jid))
        return failed

    def runs_frame(self, *, source=None, dataset=None, status=None) -> pd.DataFrame:
        """Jobs with their ``duration_s`` and ``extra`` (learning curves, weights paths, errors)."""
        m, d, j = S.models, S.datasets, S.jobs
        q = (select(j.c.id.label("job_id"), m.c.name.label("model"), d.c.name.label("dataset"), j.c.regime,
                    j.c.hparams, j.c.metric, j.c.value, j.c.status, j.c.source, j.c.provenance, j.c.created_at,
                    j.c.duration_s, j.c.extra)
             .join(m, m.c.id == j.c.model_id).join(d, d.c.id == j.c.dataset_id).order_by(j.c.id))
        q = _filter(_filter(_filter(q, j.c.source, source), d.c.name, dataset), j.c.status, status)
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(q).mappings().all())
        if df.empty:
            df = pd.DataFrame(columns=["job_id", "model", "dataset", "regime", "hparams", "metric", "value", "status",
                                       "source", "provenance", "created_at", "duration_s", "extra"])
        return df

    # ------------------------------------------------------------------ frames
    def models_frame(self) -> pd.DataFrame:
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(select(S.models).order_by(S.models.c.name)).mappings().all())
        if df.empty:
            df = pd.DataFrame(columns=["id", "name", *S.MODEL_FIELDS, "extra"])
        return df

    def datasets_frame(self) -> pd.DataFrame:
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(select(S.datasets).order_by(S.datasets.c.name)).mappings().all())
        if df.empty:
            df = pd.DataFrame(columns=["id", "name", *S.DATASET_FIELDS, "extra"])
        return df

    def probes_frame(self) -> pd.DataFrame:
        q = select(S.probes, S.datasets.c.name.label("dataset")).join(S.datasets).order_by(S.probes.c.id)
        with self.read() as conn:
            return pd.DataFrame(conn.execute(q).mappings().all())

    def jobs_frame(self, *, source=None, regime=None, dataset=None, include_failed: bool = False) -> pd.DataFrame:
        """All jobs as a frame: job_id, model, dataset, regime, metric, value, status, source, hparams, ..."""
        m, d, j = S.models, S.datasets, S.jobs
        q = (
            select(
                j.c.id.label("job_id"), m.c.name.label("model"), d.c.name.label("dataset"), j.c.regime,
                j.c.metric, j.c.value, j.c.status, j.c.source, j.c.hparams, j.c.provenance, j.c.created_at,
            )
            .join(m, m.c.id == j.c.model_id)
            .join(d, d.c.id == j.c.dataset_id)
            .order_by(j.c.id)
        )
        q = _filter(q, j.c.source, source)
        q = _filter(q, j.c.regime, regime)
        q = _filter(q, d.c.name, dataset)
        if not include_failed:
            q = q.where(j.c.status == "completed")
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(q).mappings().all())
        if df.empty:
            df = pd.DataFrame(columns=["job_id", "model", "dataset", "regime", "metric", "value", "status",
                                       "source", "hparams", "provenance", "created_at"])
        return df

    def targets(self, rule: str = "best", *, source=None, regime=None) -> pd.DataFrame:
        """One training target per (model, dataset, regime, metric), by ``rule`` (see TARGET_RULES).

        Columns: model, dataset, regime, metric, value, n_jobs, sources.
        """
        if rule not in TARGET_RULES:
            raise ValueError(f"unknown target rule {rule!r}; valid: {', '.join(TARGET_RULES)}")
        df = self.jobs_frame(source=source, regime=regime)
        df = df[df["value"].notna()]
        return aggregate_targets(df, rule)

    def scores_frame(self, *, method=None, source=None) -> pd.DataFrame:
        m, d, s = S.models, S.datasets, S.scores
        q = (
            select(m.c.name.label("model"), d.c.name.label("dataset"), s.c.method, s.c.value, s.c.probe_size,
                   s.c.seed, s.c.runtime_s, s.c.source, s.c.created_at, s.c.flag, s.c.params)
            .join(m, m.c.id == s.c.model_id).join(d, d.c.id == s.c.dataset_id).order_by(s.c.id)
        )
        q = _filter(q, s.c.method, method)
        q = _filter(q, s.c.source, source)
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(q).mappings().all())
        if df.empty:
            df = pd.DataFrame(columns=["model", "dataset", "method", "value", "probe_size", "seed",
                                       "runtime_s", "source", "created_at", "flag", "params"])
        return df

    def imports_frame(self) -> pd.DataFrame:
        with self.read() as conn:
            return pd.DataFrame(conn.execute(select(S.imports).order_by(S.imports.c.id)).mappings().all())

    def sources(self) -> list[str]:
        with self.read() as conn:
            return sorted(conn.execute(select(S.jobs.c.source).distinct()).scalars())

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict:
        j, s = S.jobs, S.scores
        with self.read() as conn:
            def count(table):
                return conn.execute(select(func.count()).select_from(table)).scalar_one()

            out = {
                "store": _safe_url(self.url),
                "totals": {
                    "jobs": count(j), "models": count(S.models), "datasets": count(S.datasets),
                    "scores": count(s), "probes": count(S.probes),
                    "pairs": conn.execute(select(func.count()).select_from(
                        select(j.c.model_id, j.c.dataset_id).distinct().subquery())).scalar_one(),
                },
                "by_source": {}, "by_regime": {}, "by_source_regime": {}, "scores_by_method": {},
            }
            for src, n, nm, nd in conn.execute(
                select(j.c.source, func.count(), func.count(j.c.model_id.distinct()),
                       func.count(j.c.dataset_id.distinct())).group_by(j.c.source).order_by(j.c.source)
            ):
                out["by_source"][src] = {"jobs": n, "models": nm, "datasets": nd}
            for reg, n in conn.execute(select(j.c.regime, func.count()).group_by(j.c.regime).order_by(j.c.regime)):
                out["by_regime"][reg] = n
            for src, reg, n, nd in conn.execute(
                select(j.c.source, j.c.regime, func.count(), func.count(j.c.dataset_id.distinct()))
                .group_by(j.c.source, j.c.regime).order_by(j.c.source, j.c.regime)
            ):
                out["by_source_regime"][f"{src}/{reg}"] = {"jobs": n, "datasets": nd}
            pair_q = select(s.c.method, s.c.model_id, s.c.dataset_id).distinct().subquery()
            pairs = dict(conn.execute(select(pair_q.c.method, func.count()).group_by(pair_q.c.method)).all())
            for meth, src, n in conn.execute(
                select(s.c.method, s.c.source, func.count()).group_by(s.c.method, s.c.source).order_by(s.c.method)
            ):
                e = out["scores_by_method"].setdefault(meth, {"scores": 0, "pairs": pairs.get(meth, 0), "sources": {}})
                e["scores"] += n
                e["sources"][src] = n
            out["last_imports"] = self._last_imports(conn)
        return out

    LAST_IMPORTS = 5

    def _last_imports(self, conn) -> list[dict]:
        """The most recent imports (newest first) with rows read / added and drops by reason."""
        im = S.imports
        rows = conn.execute(select(im).order_by(im.c.id.desc()).limit(self.LAST_IMPORTS)).mappings().all()
        out = []
        for r in rows:
            dropped = {str(k): int(v) for k, v in (r["dropped"] or {}).items()}
            out.append({
                "id": r["id"], "created_at": r["created_at"], "importer": r["importer"], "source": r["source"],
                "path": r["path"], "rows_read": r["rows_read"], "jobs_added": r["jobs_added"],
                "scores_added": r["scores_added"], "rows_dropped": sum(dropped.values()),
                "dropped": dict(sorted(dropped.items(), key=lambda kv: -kv[1])),
            })
        return out


def _existing_keys(conn, table, keys: list) -> set:
    """The ones of ``keys`` already in ``table.key``."""
    have = set()
    if conn.dialect.name == "sqlite":  # plain driver SQL: no per-call statement compilation
        for i in range(0, len(keys), 900):
            part = keys[i : i + 900]
            cur = conn.exec_driver_sql(
                f'SELECT "key" FROM "{table.name}" WHERE "key" IN ({",".join("?" * len(part))})', tuple(part))
            have.update(k for (k,) in cur)
        return have
    for i in range(0, len(keys), 900):
        have.update(conn.execute(select(table.c.key).where(table.c.key.in_(keys[i : i + 900]))).scalars())
    return have


def _bulk_insert(conn, table, rows: list) -> None:
    """INSERT many rows (dicts with the same keys): :func:`_insert_columns`."""
    if rows:
        _insert_columns(conn, table, {c: [r[c] for r in rows] for c in rows[0]})


def _insert_columns(conn, table, columns: dict) -> None:
    """INSERT the rows given as columns (name -> list of values) in as few round trips as possible.

    On SQLite the rows go to the driver's ``executemany`` as tuples, each value passed
    through the column type's own bind processor (JSON, DateTime) once per distinct
    object; SQLAlchemy's per-row parameter handling is most of the cost otherwise.
    Other databases get SQLAlchemy's executemany.
    """
    cols = list(columns)
    n = len(columns[cols[0]]) if cols else 0
    if not n:
        return
    if conn.dialect.name != "sqlite":
        rows = [dict(zip(cols, t)) for t in zip(*columns.values())]
        for i in range(0, n, _CHUNK):
            conn.execute(insert(table), rows[i : i + _CHUNK])
        return
    values = []
    for c in cols:
        p = table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        vals = columns[c]
        if p is not None:
            done = {}  # id -> bound value; the objects stay alive in ``columns`` meanwhile
            for v in vals:
                if id(v) not in done:
                    done[id(v)] = p(v)
            vals = [done[id(v)] for v in vals]
        values.append(vals)
    q = conn.dialect.identifier_preparer.quote
    sql = f"INSERT INTO {q(table.name)} ({', '.join(map(q, cols))}) VALUES ({', '.join('?' * len(cols))})"
    data = list(zip(*values))
    for i in range(0, len(data), 50_000):
        conn.exec_driver_sql(sql, data[i : i + 50_000])


def _filter(q, col, value):
    if value is None:
        return q
    if isinstance(value, (list, tuple, set)):
        return q.where(col.in_(list(value)))
    return q.where(col == value)


def aggregate_targets(jobs: pd.DataFrame, rule: str = "best") -> pd.DataFrame:
    """Collapse a jobs frame to one target per (model, dataset, regime, metric)."""
    if rule not in TARGET_RULES:
        raise ValueError(f"unknown target rule {rule!r}; valid: {', '.join(TARGET_RULES)}")
    keys = ["model", "dataset", "regime", "metric"]
    cols = keys + ["value", "n_jobs", "sources"]
    if jobs.empty:
        return pd.DataFrame(columns=cols)
    g = jobs.groupby(keys, sort=True)
    n = g["value"].size().rename("n_jobs")
    srcs = g["source"].agg(lambda x: ",".join(sorted(set(x)))).rename("sources")
    if rule == "best":
        val = _best_configuration(jobs, keys)
    elif rule == "mean":
        val = g["value"].mean()
    else:
        ordered = jobs.sort_values(["created_at", "job_id"]) if "job_id" in jobs else jobs.sort_values("created_at")
        val = ordered.groupby(keys, sort=True)["value"].last()
    out = pd.concat([val.rename("value"), n, srcs], axis=1).reset_index()
    return out[cols]


#: hyper-parameter keys that identify a repeat, not a configuration
REPEAT_KEYS = frozenset({"seed", "random_state", "run", "repeat", "trial"})


def _config_key(hp) -> str:
    if isinstance(hp, str):
        try:
            hp = json.loads(hp)
        except ValueError:
            return hp
    if not isinstance(hp, dict):
        return "" if hp is None else str(hp)
    return json.dumps({k: v for k, v in hp.items() if k not in REPEAT_KEYS}, sort_keys=True, default=str)


def _best_configuration(jobs: pd.DataFrame, keys: list) -> pd.Series:
    """Rule ``best``: mean over repeats of one configuration (same hyper-parameters, ignoring
    :data:`REPEAT_KEYS`), then the maximum over configurations, per ``keys`` group."""
    hp = jobs["hparams"] if "hparams" in jobs.columns else pd.Series(None, index=jobs.index)
    cfg = hp.map(_config_key)
    per_cfg = jobs.assign(_cfg=cfg).groupby(keys + ["_cfg"], sort=True)["value"].mean()
    return per_cfg.groupby(level=list(range(len(keys))), sort=True).max()

