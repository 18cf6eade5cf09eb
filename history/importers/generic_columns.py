"""The generic format's columns and cells: the column vocabulary, header checks, and parsers of
single cells (text, whole numbers, JSON objects, times, accuracies, probe rows) whose errors name
the file row. Used by :mod:`history.importers.generic` (and the exporters of the same format).
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import String

from history.util import is_missing

from .. import schema as S
from ..errors import HistoryImportError, closest
from .base import parse_numbers

RECORD_KINDS = ("job", "score", "model", "dataset", "probe")
#: Job statuses the store knows; only ``completed`` jobs become training targets.
JOB_STATUSES = ("completed", "failed", "killed", "running")
UNITS = ("fraction", "percent")

REQUIRED = ("model", "dataset", "accuracy")
JOB_COLUMNS = ("regime", "metric", "status", "hparams", "source", "provenance", "created_at")
#: Hyper-parameter columns merged into ``hparams`` (name -> python type).
HPARAM_COLUMNS = {"lr": float, "epochs": int, "batch_size": int, "seed": int}
SCORE_COLUMNS = ("method", "score", "probe_size", "runtime_s", "flag", "params")  # + seed, source, created_at
#: A ``probe`` row: the probe set drawn from ``dataset`` with (``probe_size``, ``seed``).
PROBE_COLUMNS = ("probe_indices", "probe_num_classes", "probe_data_ref")
MODEL_COLUMNS = {f"model_{f}": f for f in S.MODEL_FIELDS}
DATASET_COLUMNS = {f"dataset_{f}": f for f in S.DATASET_FIELDS}
META_EXTRA = {"model_extra": "model", "dataset_extra": "dataset"}
KNOWN_COLUMNS = (
    ("record",) + REQUIRED + JOB_COLUMNS + tuple(HPARAM_COLUMNS) + SCORE_COLUMNS + PROBE_COLUMNS
    + tuple(MODEL_COLUMNS) + tuple(DATASET_COLUMNS) + tuple(META_EXTRA)
)
SCORE_PREFIX = "score_"

SAME_JOB = ("same job as an earlier row (same model, dataset, regime, hparams, metric, value, status, source "
            "and provenance)")
SCORE_CHANGED = ("score repeated for the same (model, dataset, method, probe_size, seed, source) with a "
                 "different value; the later row wins")

PAUSE_ENV = "RECOMMENDER_TEST_IMPORT_PAUSE"
PAUSE_SECONDS_ENV = "RECOMMENDER_TEST_IMPORT_PAUSE_S"

_MISSING = ("", "nan", "NaN", "None", "null", "NA")


# ---------------------------------------------------------------------- cell helpers
def _is_missing(v) -> bool:
    """:func:`history.util.is_missing`, or a blank string."""
    return is_missing(v) or (isinstance(v, str) and v.strip() == "")


def _text(v):
    """A string cell, or None when empty."""
    if _is_missing(v):
        return None
    return str(v).strip()


class _Loc(str):
    """The file name, carrying the row offset of the chunk being parsed (for messages)."""

    offset = 0


def _at(path, offset: int) -> _Loc:
    loc = _Loc(path)
    loc.offset = offset
    return loc


def _where(path, i: int) -> str:
    i = int(i) + getattr(path, "offset", 0)
    return f"{path}: row {i + 1} (file line {i + 2})"


def _max_len(table, column) -> int | None:
    t = table.c[column].type
    return t.length if isinstance(t, String) else None


def _check_len(value: str | None, limit: int | None, column: str, path, i: int):
    if value is not None and limit is not None and len(value) > limit:
        raise HistoryImportError(
            f"{_where(path, i)}: column {column!r} is {len(value)} characters long "
            f"({value[:40]!r}...); the store allows at most {limit}"
        )


def _as_int(x: float, column: str, path, i: int, raw) -> int:
    if not float(x).is_integer():
        raise HistoryImportError(
            f"{_where(path, i)}: column {column!r} has value {raw!r}, which is not a whole number"
        )
    return int(x)


def _json_object(raw, column: str, path, i: int) -> dict | None:
    if _is_missing(raw):
        return None
    if isinstance(raw, dict):
        return raw
    try:
        obj = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise HistoryImportError(
            f"{_where(path, i)}: column {column!r} is not valid JSON ({exc.msg} at character "
            f"{exc.pos}): {str(raw)[:80]!r}. Write a JSON object such as "
            '{"lr": 0.01, "epochs": 30}'
        ) from None
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise HistoryImportError(
            f"{_where(path, i)}: column {column!r} must hold a JSON object ({{...}}), got {str(raw)[:80]!r}"
        )
    return obj


def _parse_time(raw, path, i: int):
    if _is_missing(raw):
        return None
    if isinstance(raw, datetime):
        ts = raw
    elif isinstance(raw, pd.Timestamp):
        ts = raw.to_pydatetime()
    else:
        s = str(raw).strip()
        try:
            ts = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            try:
                ts = pd.Timestamp(s).to_pydatetime()
            except (ValueError, TypeError):
                raise HistoryImportError(
                    f"{_where(path, i)}: column 'created_at' has value {s!r}, which is not a date/time; "
                    "use ISO 8601, e.g. 2024-05-01T12:30:00+00:00"
                ) from None
    if ts.tzinfo is not None:  # stored as UTC (SQLite keeps no offset)
        ts = ts.astimezone(UTC)
    return ts


def _numbers(df: pd.DataFrame, column: str, path) -> np.ndarray | None:
    if column not in df.columns:
        return None
    return parse_numbers(df[column], column, path, offset=getattr(path, "offset", 0)).to_numpy()


_NAN_TOKENS = ("nan", "NaN", "NAN")


def _accuracies(df: pd.DataFrame, path, rows: np.ndarray, *, fast: bool = True):
    """The accuracy column as floats, and a mask of cells that literally say NaN.

    Unlike other numeric columns, an accuracy with a comma is refused (``0,9`` may be a
    decimal comma or a thousands separator), and ``inf`` is named as not finite. Only the
    job rows selected by ``rows`` are checked. ``fast``: first try the whole column at once
    (the importer's ``FAST_PATH``).
    """
    if "accuracy" not in df.columns:
        return None, None
    raw = df["accuracy"].tolist()
    nan = np.zeros(len(raw), bool)
    sel = np.flatnonzero(rows)
    if fast:  # plain strings without commas or NaN / inf: nothing for the loop below to say
        try:
            text = [raw[i].strip() for i in sel]
        except AttributeError:
            text = None
        if text is not None and not any("," in t for t in text):
            isnan = np.fromiter((t in _NAN_TOKENS for t in text), bool, len(text))
            nan[sel[isnan]] = True
            nums = pd.to_numeric(pd.Series([None if b else t for t, b in zip(text, isnan)], dtype=object),
                                 errors="coerce").to_numpy(dtype=float)
            odd = np.isnan(nums) & ~isnan & np.fromiter((t != "" for t in text), bool, len(text))
            if not np.isinf(nums).any() and not odd.any():  # (odd: not a number to pandas; the loop decides)
                sel = sel[:0]
            else:
                nan[:] = False
    for i in sel:
        v = raw[i]
        if isinstance(v, str):
            t = v.strip()
            if t in _NAN_TOKENS:
                nan[i] = True
                continue
            if "," in t:
                raise HistoryImportError(
                    f"{_where(path, int(i))}: accuracy {v!r} has a comma, which is ambiguous (decimal comma or "
                    "thousands separator?); write numbers with a decimal point, e.g. 0.9")
            try:
                x = float(t)
            except ValueError:
                continue  # empty or not a number: parse_numbers below names the cell
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            x = float(v)
        else:
            continue
        if math.isinf(x):
            raise HistoryImportError(
                f"{_where(path, int(i))}: accuracy {v!r} is not a finite number; give the measured fraction, "
                "or leave the cell empty if the run has no result")
    vals = df["accuracy"].where(~pd.Series(nan, index=df.index), None)
    return parse_numbers(vals, "accuracy", path, offset=getattr(path, "offset", 0)).to_numpy(), nan



# ---------------------------------------------------------------------- header
def score_columns(columns, path, report) -> dict:
    """Check a chunk's header: ``score_<method>`` columns (column -> method), with unknown
    ``model_`` / ``dataset_`` columns refused (closest names suggested) and any other unknown
    column noted as ignored."""
    score_methods = {c: c[len(SCORE_PREFIX):] for c in columns if c.startswith(SCORE_PREFIX)}
    for c, m in score_methods.items():
        if not m:
            raise HistoryImportError(f"{path}: column {c!r} names no score method; "
                                     "write score_<method>, e.g. score_logme")
    unknown = [c for c in columns if c not in KNOWN_COLUMNS and c not in score_methods]
    typos = [c for c in unknown if c.startswith(("model_", "dataset_"))]
    if typos:
        hints = []
        for c in typos:
            near = closest(c, list(MODEL_COLUMNS) + list(DATASET_COLUMNS) + list(META_EXTRA), n=1)
            hints.append(f"{c!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise HistoryImportError(
            f"{path}: unknown meta-feature column(s) {', '.join(hints)}; model columns: "
            f"{', '.join(MODEL_COLUMNS)}; dataset columns: {', '.join(DATASET_COLUMNS)}"
        )
    if unknown:
        report.notes.append(f"ignored unknown column(s): {', '.join(unknown)}")
    return score_methods


def record_kinds(df: pd.DataFrame, path) -> np.ndarray:
    """Each row's ``record`` kind (default ``job``), checking that the columns its kinds need are there."""
    kinds = (df["record"].map(lambda v: _text(v) or "job") if "record" in df.columns
             else pd.Series(["job"] * len(df), index=df.index))
    bad_kind = ~kinds.isin(RECORD_KINDS)
    if bad_kind.any():
        i = int(np.flatnonzero(bad_kind.to_numpy())[0])
        raise HistoryImportError(
            f"{_where(path, i)}: column 'record' has value {kinds.iloc[i]!r}; use one of: {', '.join(RECORD_KINDS)}"
        )
    kinds = kinds.to_numpy()
    need = ["model", "dataset"]
    if (kinds == "job").any():
        need.append("accuracy")
    if (kinds == "score").any():
        need += ["method", "score"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise HistoryImportError(
            f"{path}: missing required column(s) {', '.join(missing)}; found: {', '.join(df.columns)}. "
            "A generic history needs at least model,dataset,accuracy (see docs/generic-format.md)"
        )
    return kinds


# ---------------------------------------------------------------------- rows
def _probe(r, i, dataset, sc_nums, hp_nums, path) -> dict:
    size, seed = sc_nums["probe_size"], hp_nums["seed"]
    if size is None or np.isnan(size[i]) or seed is None or np.isnan(seed[i]):
        raise HistoryImportError(f"{_where(path, i)}: a probe row needs 'probe_size' and 'seed'")
    raw = r.get("probe_indices")
    try:
        idx = json.loads(str(raw)) if not _is_missing(raw) else None
    except json.JSONDecodeError:
        idx = None
    if not isinstance(idx, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in idx):
        raise HistoryImportError(f"{_where(path, i)}: column 'probe_indices' must be a JSON list of whole "
                                 f"numbers, got {str(raw)[:60]!r}")
    nc = r.get("probe_num_classes")
    return {"dataset": dataset, "size": _as_int(size[i], "probe_size", path, i, r.get("probe_size")),
            "seed": _as_int(seed[i], "seed", path, i, r.get("seed")), "indices": idx,
            "num_classes": None if _is_missing(nc) else _as_int(float(nc), "probe_num_classes", path, i, nc),
            "data_ref": _text(r.get("probe_data_ref")), "created_at": _parse_time(r.get("created_at"), path, i)}


def _add_score(rec, row, scores, score_rows, report):
    """Keep score ``rec`` of data row ``row`` (1-based, file-wide; kept as ``rec["_row"]`` until the
    chunk ends); a later row with another value for the same score replaces it (noted as a drop)."""
    key = S.score_key(model=rec["model"], dataset=rec["dataset"], method=rec["method"],
                      probe_size=rec["probe_size"], seed=rec["seed"], source=rec["source"])
    rec["_row"] = row
    if key in score_rows:
        j = score_rows[key]
        old = scores[j]
        if old["value"] == rec["value"]:
            return  # the same score repeated on several job rows (one per hyper-parameter setting)
        report.drop(SCORE_CHANGED, 1, rows=[row])
        scores[j] = None
    score_rows[key] = len(scores)
    scores.append(rec)
