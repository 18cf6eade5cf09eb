"""The history store's schema (SQLAlchemy Core, portable: SQLite, PostgreSQL, any URL).

Tables
------
``models``    one row per pretrained model (``name`` unique) with its meta-features.
``datasets``  one row per target dataset / task (``name`` unique).
``jobs``      one row per fine-tuning run: model, dataset, regime, hyper-parameters (JSON),
              metric name and value (a fraction in [0, 1]), status, source, provenance.
``scores``    one model-selection score per (model, dataset, method, probe size, seed, source).
``probes``    the probe sets (sample indices) that scores were computed on.
``imports``   a log of every import: file, sha256, rows read / added / dropped.

Identity and idempotency: ``jobs.key`` and ``scores.key`` are content hashes (see
:func:`job_key`, :func:`score_key`) with a unique constraint, so importing the same
rows twice adds nothing. No SQLite-only SQL is used anywhere.
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_str  # json.dumps' string encoder
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Boolean,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Index,
)
from sqlalchemy.types import TypeEngine

#: Bumped only for changes an older store cannot be brought up to by adding columns.
#: Columns added to a table below are added to existing stores when they are opened
#: (``history.store.HistoryStore``: an additive, idempotent migration), so adding a
#: nullable column needs no bump.
SCHEMA_VERSION = 1

metadata = MetaData()

#: Model meta-feature columns (besides ``id``/``name``) in a fixed order.
MODEL_FIELDS: dict[str, TypeEngine[Any]] = {
    "modality": String(16),  # image | text
    "family": String(64),  # vit, resnet, convnext, bert, ...
    "architecture": String(128),  # e.g. ViTForImageClassification / resnet50
    "input_size": Integer(),  # input resolution (image) or max sequence length (text)
    "params": Float(),  # number of parameters (count, not millions)
    "gmacs": Float(),  # inference GMACs at input_size
    "feature_dim": Integer(),  # penultimate feature dimension
    "depth": Integer(),  # number of layers
    "pretrain_dataset": String(128),  # source / pre-training dataset (imagenet, in21k, ...)
    "domain": String(64),  # pre-training domain
    "source_accuracy": Float(),  # accuracy on the pre-training task, fraction
}
DATASET_FIELDS: dict[str, TypeEngine[Any]] = {
    "modality": String(16),
    "num_samples": Integer(),
    "num_classes": Integer(),
    "domain": String(64),
}

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    *[Column(k, t, nullable=True) for k, t in MODEL_FIELDS.items()],
    Column("extra", JSON, nullable=True),  # anything else a source knows (memory, labels, ...)
    # Viability (computed from the jobs whenever histories change; NULL = not computed yet):
    # a degenerate model scores at chance on (nearly) every dataset it was run on.
    Column("degenerate", Boolean, nullable=True),
    Column("degenerate_reason", Text, nullable=True),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    *[Column(k, t, nullable=True) for k, t in DATASET_FIELDS.items()],
    Column("extra", JSON, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("regime", String(64), nullable=False, default="full"),
    Column("hparams", JSON, nullable=True),
    Column("metric", String(64), nullable=False, default="accuracy"),
    Column("value", Float, nullable=True),
    Column("status", String(16), nullable=False, default="completed"),
    Column("source", String(64), nullable=False),
    Column("provenance", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("duration_s", Float, nullable=True),  # wall time of the run, when known
    Column("extra", JSON, nullable=True),  # learning curve, weights path, error, ...
    Index("ix_jobs_pair", "model_id", "dataset_id", "regime"),
    Index("ix_jobs_source", "source"),
)

scores = Table(
    "scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("method", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("probe_size", Integer, nullable=True),
    Column("seed", Integer, nullable=True),
    Column("runtime_s", Float, nullable=True),
    Column("source", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Why the value carries no information for this input (e.g. "hscore: n <= d"), or NULL.
    Column("flag", Text, nullable=True),
    Column("params", JSON, nullable=True),  # parameters the value depends on (caps, variants)
    Index("ix_scores_pair", "model_id", "dataset_id", "method"),
)

probes = Table(
    "probes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("size", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("num_classes", Integer, nullable=True),
    Column("indices", JSON, nullable=False),
    Column("data_ref", Text, nullable=True),  # where the probe's data came from
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_id", "size", "seed", name="uq_probe"),
)

imports = Table(
    "imports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("importer", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("path", Text, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("rows_read", Integer, nullable=False),
    Column("jobs_added", Integer, nullable=False),
    Column("scores_added", Integer, nullable=False),
    Column("dropped", JSON, nullable=True),  # {reason: count}
    Column("created_at", DateTime(timezone=True), nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _clean(v):
    """JSON-safe canonical value (NaN -> None, numpy scalars -> python)."""
    t = type(v)
    if v is None or t is str or t is int or t is bool:  # fast paths (imports call this per row)
        return v
    if t is float:
        return None if (math.isnan(v) or math.isinf(v)) else v
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        out = {}
        for k, x in sorted(v.items()):
            c = _clean(x)
            if c is not None:
                out[str(k)] = c
        return out
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def canonical_json(obj) -> str:
    return json.dumps(_clean(obj), sort_keys=True, separators=(",", ":"), default=str)


def _digest(parts) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:40]


#: Version of :func:`job_key`; stores written with an older one are re-keyed when opened.
JOB_KEY_VERSION = 2


def job_key(*, model, dataset, regime, hparams, metric, value, status, source, provenance=None) -> str:
    """Content hash identifying a job: the same run imported twice gets the same key.

    The value is part of the identity, so two runs of the same configuration that ended
    with different accuracies (e.g. two seeds) are two jobs; an exact duplicate is one.
    So is the provenance (e.g. an MLflow run id or a log path): two runs with the same
    configuration and the same accuracy but different provenance are two jobs. A job
    without provenance keeps the key it had before provenance was part of it (version 1).
    """
    v = None if value is None else round(float(value), 10)
    hp = hparams or {}
    parts = ["job", model, dataset, regime, hp, metric, v, status, source]
    if provenance is not None and str(provenance) != "":
        parts.append(str(provenance))
    if (type(hp) is dict and (v is None or math.isfinite(v))
            and all(type(x) is str for x in (model, dataset, regime, metric, status, source))
            and all(type(k) is str and (x is None or type(x) in _PLAIN or (type(x) is float and math.isfinite(x)))
                    for k, x in hp.items())):
        # fast path (large imports), same text as canonical_json: flat, already clean values
        parts[4] = {k: x for k, x in hp.items() if x is not None}
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:40]
    return _digest(parts)


_PLAIN = (str, int, bool)


def job_keys(*, model, dataset, regime, hparams, metric, value, status, source, provenance) -> list[str]:
    """:func:`job_key` of many jobs at once (large imports), the same keys.

    Every argument is a list with one entry per job: strings (``provenance``: string or
    None), ``value`` a finite float or None. ``hparams`` is ``(names, rows)``: sorted
    hyper-parameter names and one tuple of plain values (int, finite float or None) per job.
    The canonical JSON text of :func:`job_key` is assembled from per-value encodings
    cached for the repeating columns, then hashed.
    """
    def texts(xs):
        enc = {x: _json_str(x) for x in set(xs)}
        return [enc[x] for x in xs]

    names, rows = hparams
    hp_enc: dict[tuple, str] = {}
    name_enc = [_json_str(n) for n in names]
    hp = []
    for t in rows:
        e = hp_enc.get(t)
        if e is None:
            e = hp_enc[t] = "{" + ",".join(f"{k}:{json.dumps(x)}" for k, x in zip(name_enc, t) if x is not None) + "}"
        hp.append(e)
    vals = ["null" if v is None else float.__repr__(round(float(v), 10)) for v in value]
    prov = ["" if p is None or p == "" else "," + _json_str(str(p)) for p in provenance]
    sha = hashlib.sha256
    return [sha(f'["job",{m},{d},{r},{h},{me},{v},{st},{so}{p}]'.encode()).hexdigest()[:40]
            for m, d, r, h, me, v, st, so, p in zip(texts(model), texts(dataset), texts(regime), hp, texts(metric),
                                                    vals, texts(status), texts(source), prov)]



def score_key(*, model, dataset, method, probe_size, seed, source) -> str:
    """Identity of a score; re-computing it replaces the value (see ``HistoryStore.add_scores``)."""
    return _digest(["score", model, dataset, method, probe_size, seed, source])
