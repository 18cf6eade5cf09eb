"""Export a history store (or one source of it) to the generic CSV / Parquet format.

The export is lossless: importing the file with the ``generic`` importer into a fresh
store reproduces the same models (with all meta-features and ``extra``), datasets, jobs
(hyper-parameters, status, provenance, timestamps) and scores (method, probe size, seed,
runtime, source, degeneracy flag, parameters). Layout, one table with a ``record`` column:

* one ``model`` row per model and one ``dataset`` row per dataset (all meta columns),
* one ``job`` row per job (all hyper-parameters in the ``hparams`` JSON column),
* one ``score`` row per score (long form: ``method``, ``score``, ``probe_size``, ``seed``),
* one ``probe`` row per probe set (``probe_size``, ``seed``, ``probe_indices`` as JSON).

An empty store exports a header-only file, which imports back as nothing.
``wide_frame`` / ``history export --wide`` is a lossy view for pandas users instead: one
row per (model, dataset, regime, metric) with the training target and one column per
score method.

Floats are written with ``repr`` precision in CSV (Python round-trips them exactly) and
as float64 in Parquet; timestamps as ISO 8601 in UTC.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pandas as pd

from history.util import is_missing

from . import schema as S
from .errors import RecommenderError
from .importers.generic_columns import DATASET_COLUMNS, MODEL_COLUMNS, PROBE_COLUMNS

FORMATS = ("csv", "parquet")
COLUMNS = (
    ["record", "model", "dataset", "accuracy", "regime", "metric", "status", "hparams", "source",
     "provenance", "created_at", "method", "score", "probe_size", "seed", "runtime_s", "flag", "params",
     *PROBE_COLUMNS]
    + list(MODEL_COLUMNS) + ["model_extra"] + list(DATASET_COLUMNS) + ["dataset_extra"]
)
_INT_COLUMNS = {"probe_size", "seed", "probe_num_classes"} \
    | {c for c, f in MODEL_COLUMNS.items() if S.MODEL_FIELDS[f].python_type is int} \
    | {c for c, f in DATASET_COLUMNS.items() if S.DATASET_FIELDS[f].python_type is int}
_FLOAT_COLUMNS = {"accuracy", "score", "runtime_s"} | {
    c for c, f in MODEL_COLUMNS.items() if S.MODEL_FIELDS[f].python_type is float}


class ExportError(RecommenderError):
    """The export could not be written."""


@dataclass
class ExportReport:
    path: str
    format: str
    models: int = 0
    datasets: int = 0
    jobs: int = 0
    scores: int = 0
    probes: int = 0
    pairs: int = 0
    wide: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        if self.wide:
            return (f"exported {self.pairs} (model, dataset) rows of {self.models} models and {self.datasets} "
                    f"datasets with targets and scores to {self.path} ({self.format}, wide; not re-importable)")
        return (f"exported {self.jobs} jobs, {self.scores} scores, {self.models} models and {self.datasets} datasets"
                + (f" (and {self.probes} probes)" if self.probes else "") + f" to {self.path} ({self.format})")


def _iso(ts) -> str | None:
    if is_missing(ts):
        return None
    if isinstance(ts, pd.Timestamp):
        ts = ts.to_pydatetime()
    if isinstance(ts, str):
        return ts
    if ts.tzinfo is None:  # SQLite returns naive UTC
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat()


def _json(obj, empty_as_none: bool = False) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, str):  # some drivers return JSON as text
        obj = json.loads(obj)
    if empty_as_none and not obj:
        return None
    return S.canonical_json(obj)


def _none(v):
    return None if is_missing(v) else v


def history_frame(store, *, source=None) -> pd.DataFrame:
    """The store (or the jobs and scores of ``source``) as one generic-format frame."""
    jobs = store.jobs_frame(source=source, include_failed=True)
    scores = store.scores_frame(source=source)
    models = store.models_frame()
    datasets = store.datasets_frame()
    if source is not None:
        srcs = [source] if isinstance(source, str) else list(source)
        if jobs.empty and scores.empty:
            have = sorted(set(store.sources()) | set(store.scores_frame()["source"].unique()))
            raise ExportError(f"no jobs or scores with source {', '.join(map(repr, srcs))} in the store; "
                              f"sources: {', '.join(have) or '(store is empty)'}")
        used_m = set(jobs["model"]) | set(scores["model"])
        used_d = set(jobs["dataset"]) | set(scores["dataset"])
        models = models[models["name"].isin(used_m)]
        datasets = datasets[datasets["name"].isin(used_d)]
    rows = []
    for m in models.to_dict("records"):
        row = {"record": "model", "model": m["name"], "model_extra": _json(_none(m.get("extra")))}
        for col, f in MODEL_COLUMNS.items():
            row[col] = _none(m.get(f))
        rows.append(row)
    for d in datasets.to_dict("records"):
        row = {"record": "dataset", "dataset": d["name"], "dataset_extra": _json(_none(d.get("extra")))}
        for col, f in DATASET_COLUMNS.items():
            row[col] = _none(d.get(f))
        rows.append(row)
    for j in jobs.to_dict("records"):
        rows.append({
            "record": "job", "model": j["model"], "dataset": j["dataset"], "accuracy": _none(j["value"]),
            "regime": j["regime"], "metric": j["metric"], "status": j["status"],
            "hparams": _json(_none(j["hparams"]), empty_as_none=True), "source": j["source"],
            "provenance": _none(j["provenance"]),
            "created_at": _iso(_none(j["created_at"])),
        })
    for s in scores.to_dict("records"):
        rows.append({
            "record": "score", "model": s["model"], "dataset": s["dataset"], "method": s["method"],
            "score": _none(s["value"]), "probe_size": _none(s["probe_size"]), "seed": _none(s["seed"]),
            "runtime_s": _none(s["runtime_s"]), "source": s["source"], "created_at": _iso(_none(s["created_at"])),
            "flag": _none(s.get("flag")), "params": _json(_none(s.get("params")), empty_as_none=True),
        })
    probes = store.probes_frame()
    if len(probes) and source is not None:
        probes = probes[probes["dataset"].isin(used_d)]
    for pr in probes.to_dict("records"):
        rows.append({
            "record": "probe", "dataset": pr["dataset"], "probe_size": pr["size"], "seed": pr["seed"],
            "probe_indices": json.dumps([int(i) for i in pr["indices"]], separators=(",", ":")),
            "probe_num_classes": _none(pr["num_classes"]), "probe_data_ref": _none(pr["data_ref"]),
            "created_at": _iso(_none(pr["created_at"])),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS:
        if c in _INT_COLUMNS:
            df[c] = pd.array([None if _none(v) is None else int(v) for v in df[c]], dtype="Int64")
        elif c in _FLOAT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
        else:
            df[c] = pd.array([None if _none(v) is None else str(v) for v in df[c]], dtype=object)
    return df


def wide_frame(store, *, source=None, target_rule: str = "best") -> pd.DataFrame:
    """One row per (model, dataset, regime, metric): the target by ``target_rule`` and its
    job count, then one ``score_<method>`` column per score method (the mean over probe
    sizes, seeds and sources). Pairs with scores but no jobs have an empty target."""
    t = store.targets(target_rule, source=source).rename(columns={"value": "target"})
    sc = store.scores_frame(source=source)
    if source is not None and t.empty and sc.empty:
        history_frame(store, source=source)  # raises the 'no such source' error
    if not sc.empty:
        w = sc.groupby(["model", "dataset", "method"])["value"].mean().unstack("method")
        w.columns = [f"score_{m}" for m in w.columns]
        t = t.merge(w.reset_index(), on=["model", "dataset"], how="outer")
    return t.sort_values(["model", "dataset"]).reset_index(drop=True)


def export_history(store, path, *, source=None, format: str | None = None, wide: bool = False,
                   target_rule: str = "best") -> ExportReport:
    """Write the store (or only ``source``) to ``path`` in the generic format.

    ``format`` is ``csv`` or ``parquet``; by default taken from the extension (``.parquet``
    / ``.pq`` -> Parquet, anything else CSV). The file is written to a temporary name and
    moved into place, so a failed export never leaves a half-written file.
    """
    p = Path(path)
    fmt = format or ("parquet" if p.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; supported: {', '.join(FORMATS)}")
    if p.is_dir():
        raise ExportError(f"{p} is a directory; give a file name such as {p / 'history.csv'}")
    df = wide_frame(store, source=source, target_rule=target_rule) if wide else history_frame(store, source=source)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        if fmt == "csv":
            # Python's repr of a float round-trips exactly; pandas writes repr by default.
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        tmp.replace(p)
    except OSError as exc:
        raise ExportError(f"cannot write {p}: {exc}") from None
    if wide:
        return ExportReport(path=str(p), format=fmt, models=int(df["model"].nunique()),
                            datasets=int(df["dataset"].nunique()), pairs=len(df), wide=True)
    kinds = df["record"].value_counts()
    return ExportReport(path=str(p), format=fmt, models=int(kinds.get("model", 0)),
                        datasets=int(kinds.get("dataset", 0)), jobs=int(kinds.get("job", 0)),
                        scores=int(kinds.get("score", 0)), probes=int(kinds.get("probe", 0)))


__all__ = ["export_history", "history_frame", "wide_frame", "ExportReport", "ExportError", "COLUMNS"]
