"""Writing to a history store: the one-transaction ``commit`` of an import, single entities,
and the runner's job lifecycle (:class:`_Writes`, part of :class:`history.store.HistoryStore`)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from .. import schema as S
from .. import viability as V
from ..errors import NotFoundError, StoreError
from ._open import _CHUNK
from ._reads import _filter


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

    def take(self, idx) -> JobColumns:
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



class _Writes:
    """Upserts, the import ``commit``, single entities and job lifecycle."""

    if TYPE_CHECKING:  # provided by _Opening and _Reads, HistoryStore's other bases
        def write(self) -> AbstractContextManager[Connection]: ...

        def get_dataset(self, name: str) -> dict: ...

    # ------------------------------------------------------------------ upserts
    @staticmethod
    def _upsert_named(conn, table, fields: Iterable[str], records: Iterable[Mapping], overwrite: bool):
        """Insert new names; for existing ones fill missing fields (or overwrite non-null ones)."""
        recs: dict[str, dict] = {}
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
            self._commit_jobs(conn, jobs, cols, mids, dids, now, jobs_are_new, res)
        if scores:
            self._commit_scores(conn, scores, mids, dids, now, res)
        self._commit_probes(conn, probes, dids, now, res)

        if viability or (viability is None and (res.jobs_added or explicit_datasets)):
            res.details["viability"] = V.update_models(conn)

        if import_log is not None:
            self._log_import(conn, import_log, now, res)
        return res

    @staticmethod
    def _job_values(jobs: list, cols: JobColumns | None) -> tuple:
        """The jobs' fields as lists, defaults applied and hyper-parameters cleaned:
        (model, dataset, regime, hparams, metric, value, status, source, provenance, key, created_at)."""
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
        return model, dataset, regime, hps, metric, value, status, source, prov, keys, created

    def _commit_jobs(self, conn, jobs: list, cols: JobColumns | None, mids: dict, dids: dict, now,
                     jobs_are_new: bool, res: CommitResult) -> None:
        """Insert the jobs whose key is new (the first of repeated keys); count the others."""
        model, dataset, regime, hps, metric, value, status, source, prov, keys, created = \
            self._job_values(jobs, cols)
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

    @staticmethod
    def _commit_scores(conn, scores: list, mids: dict, dids: dict, now, res: CommitResult) -> None:
        """Insert new score keys, replace changed ones (the last of a key within a batch wins)."""
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

    def _commit_probes(self, conn, probes: Iterable[Mapping], dids: dict, now, res: CommitResult) -> None:
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

    @staticmethod
    def _log_import(conn, import_log: Mapping, now, res: CommitResult) -> None:
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

    def refresh_viability(self) -> dict:
        """Recompute the degenerate-model flag of every model (e.g. after a migration)."""
        with self.write() as conn:
            return V.update_models(conn)

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
            pk = r.inserted_primary_key
            assert pk is not None  # set by a single-row INSERT
            return int(pk[0])

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
            pk = r.inserted_primary_key
            assert pk is not None  # set by a single-row INSERT
            return int(pk[0])

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


def _existing_keys(conn, table, keys: list) -> set:
    """The ones of ``keys`` already in ``table.key``."""
    have: set = set()
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
