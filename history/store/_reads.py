"""Reading a history store: entities, frames, training targets and stats
(:class:`_Reads`, part of :class:`history.store.HistoryStore`)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from .. import schema as S
from ..errors import NotFoundError, closest
from ._open import _safe_url
from .targets import TARGET_RULES, aggregate_targets


class _Reads:
    """Entities by name, frames of every table, targets and stats."""

    if TYPE_CHECKING:  # provided by _Opening, HistoryStore's other base
        url: str

        def read(self) -> AbstractContextManager[Connection]: ...

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

            out: dict[str, Any] = {
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
            pairs: dict[str, int] = dict(
                conn.execute(select(pair_q.c.method, func.count()).group_by(pair_q.c.method)).all())
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


def _filter(q, col, value):
    if value is None:
        return q
    if isinstance(value, (list, tuple, set)):
        return q.where(col.in_(list(value)))
    return q.where(col == value)
