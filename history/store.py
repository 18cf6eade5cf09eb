"""The history store: fine-tuning jobs, models, datasets and model-selection scores.

Works over any SQLAlchemy URL (SQLite by default, PostgreSQL tested). All writes of one
import happen in a single transaction, so a failing import leaves the store untouched.
On SQLite, write transactions start with ``BEGIN IMMEDIATE`` and a busy timeout, so two
processes importing at once are serialized instead of failing or doubling rows.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from sqlalchemy import create_engine, event, func, insert, inspect, select, update, delete
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from . import schema as S
from .config import resolve_store_url
from .errors import NotFoundError, StoreError, closest

#: How the training target of a (model, dataset, regime) is derived from its jobs.
TARGET_RULES = {
    "best": "the best completed job (each job is the best of its hyper-parameter sweep)",
    "mean": "the mean over completed jobs (e.g. over seeds)",
    "latest": "the most recently created completed job",
}

_CHUNK = 5000


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


class HistoryStore:
    """A fine-tuning history store over a SQLAlchemy URL.

    >>> store = HistoryStore("sqlite:///:memory:")  # doctest: +SKIP
    """

    def __init__(self, url: str | None = None, *, home=None, create: bool = True):
        self.url = resolve_store_url(url, home)
        self.engine = self._open(self.url, create)

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _open(url: str, create: bool) -> Engine:
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
        if is_sqlite:
            db = u.database
            if db and db != ":memory:" and not db.startswith("file:"):
                p = Path(db)
                if p.is_dir():
                    raise StoreError(f"cannot open history store {_safe_url(url)}: {p} is a directory. {hint}")
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot open history store {_safe_url(url)}: {exc}. {hint}") from None
            kwargs["connect_args"] = {"timeout": 120}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
            raise StoreError(
                f"cannot open history store {_safe_url(url)}: database driver missing ({exc}). "
                f"Install it (PostgreSQL: pip install 'psycopg[binary]'). {hint}"
            ) from None
        except (ArgumentError, SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreError(f"cannot open history store {_safe_url(url)}: {exc}. {hint}") from None

        if is_sqlite:
            @event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi_conn, _rec):  # pragma: no cover - trivial
                dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=120000")
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                except Exception:
                    pass
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn):  # pragma: no cover - trivial
                mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
                conn.exec_driver_sql(f"BEGIN {mode}")

        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            if create:
                # Schema creation runs in a write transaction (BEGIN IMMEDIATE on SQLite): two
                # processes opening a fresh store at once are serialized by the busy timeout
                # instead of one failing with "database is locked" on a read->write upgrade.
                # A store that is already initialised is only read, so opening never waits
                # for a running import.
                with engine.connect() as conn:
                    ready = set(S.metadata.tables) <= set(inspect(conn).get_table_names()) and conn.execute(
                        select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar() is not None
                    ready = ready and not _missing_columns(conn)
                init = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite else engine
                with (engine if ready else init).begin() as conn:
                    if not ready:
                        S.metadata.create_all(conn)
                        _add_missing_columns(conn)
                    have = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar()
                    if have is None:
                        conn.execute(insert(S.meta).values(key="schema_version", value=str(S.SCHEMA_VERSION)))
                    elif int(have) != S.SCHEMA_VERSION:
                        raise StoreError(
                            f"history store {_safe_url(url)} has schema version {have}, this tool "
                            f"writes version {S.SCHEMA_VERSION}; export it with an older version "
                            "(history export) and import the file into a new store."
                        )
        except StoreError:
            raise
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            msg = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreError(f"cannot open history store {_safe_url(url)}: {msg}. {hint}") from None
        return engine

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def write(self):
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite). Rolls back on any error."""
        eng = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        with eng.begin() as conn:
            yield conn

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
        for i in range(0, len(new_rows), _CHUNK):
            conn.execute(insert(table), new_rows[i : i + _CHUNK])
            added += len(new_rows[i : i + _CHUNK])
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
    ) -> CommitResult:
        """Write models, datasets, jobs and scores in ONE transaction.

        ``models``/``datasets``: dicts with ``name`` and any of the schema fields; an
        existing entry only gets its missing fields filled (``overwrite_meta`` replaces).
        ``jobs``: dicts with ``model``, ``dataset``, ``value`` and optional ``regime``,
        ``hparams``, ``metric``, ``status``, ``source``, ``provenance``, ``created_at``;
        a job whose content key already exists is skipped (idempotent imports).
        ``scores``: dicts with ``model``, ``dataset``, ``method``, ``value`` and optional
        ``probe_size``, ``seed``, ``runtime_s``, ``source``, ``flag`` (why the value is
        degenerate, or None) and ``params`` (options it was computed with, JSON); an
        existing key is replaced.
        Models/datasets referenced by jobs or scores but not listed are created bare.
        """
        if conn is None:
            with self.write() as c:
                return self.commit(
                    models=models, datasets=datasets, jobs=jobs, scores=scores,
                    import_log=import_log, overwrite_meta=overwrite_meta, conn=c,
                )
        res = CommitResult()
        jobs = list(jobs)
        scores = list(scores)
        models = list(models) + [{"name": r["model"]} for r in jobs + scores]
        datasets = list(datasets) + [{"name": r["dataset"]} for r in jobs + scores]
        mids, res.models_added, res.models_updated = self._upsert_named(
            conn, S.models, S.MODEL_FIELDS, models, overwrite_meta)
        dids, res.datasets_added, res.datasets_updated = self._upsert_named(
            conn, S.datasets, S.DATASET_FIELDS, datasets, overwrite_meta)
        now = S.utcnow()

        if jobs:
            rows = {}
            for r in jobs:
                hp = S._clean(dict(r.get("hparams") or {}))
                row = {
                    "model_id": mids[str(r["model"])],
                    "dataset_id": dids[str(r["dataset"])],
                    "regime": str(r.get("regime") or "full"),
                    "hparams": hp,
                    "metric": str(r.get("metric") or "accuracy"),
                    "value": None if r.get("value") is None else float(r["value"]),
                    "status": str(r.get("status") or "completed"),
                    "source": str(r.get("source") or "unknown"),
                    "provenance": r.get("provenance"),
                    "created_at": r.get("created_at") or now,
                }
                row["key"] = S.job_key(
                    model=str(r["model"]), dataset=str(r["dataset"]), regime=row["regime"], hparams=hp,
                    metric=row["metric"], value=row["value"], status=row["status"], source=row["source"],
                )
                rows.setdefault(row["key"], row)
            keys = list(rows)
            have = set()
            for i in range(0, len(keys), 900):
                have.update(conn.execute(select(S.jobs.c.key).where(S.jobs.c.key.in_(keys[i : i + 900]))).scalars())
            new = [rows[k] for k in keys if k not in have]
            for i in range(0, len(new), _CHUNK):
                conn.execute(insert(S.jobs), new[i : i + _CHUNK])
            res.jobs_added = len(new)
            res.jobs_existing = len(jobs) - len(new)

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
            for i in range(0, len(new), _CHUNK):
                conn.execute(insert(S.scores), new[i : i + _CHUNK])
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

        if import_log is not None:
            log = dict(import_log)
            conn.execute(
                insert(S.imports).values(
                    importer=log.get("importer", "unknown"),
                    source=log.get("source", "unknown"),
                    path=log.get("path"),
                    sha256=log.get("sha256"),
                    rows_read=int(log.get("rows_read", 0)),
                    jobs_added=res.jobs_added,
                    scores_added=res.scores_added,
                    dropped=S._clean(log.get("dropped") or {}),
                    created_at=now,
                )
            )
        return res

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
        q = select(S.probes, S.datasets.c.name.label("dataset")).join(S.datasets)
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
        return out


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
        val = g["value"].max()
    elif rule == "mean":
        val = g["value"].mean()
    else:
        ordered = jobs.sort_values(["created_at", "job_id"]) if "job_id" in jobs else jobs.sort_values("created_at")
        val = ordered.groupby(keys, sort=True)["value"].last()
    out = pd.concat([val.rename("value"), n, srcs], axis=1).reset_index()
    return out[cols]
