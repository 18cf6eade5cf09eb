"""The generic history format: one CSV or Parquet table of fine-tuning jobs (and scores).

The smallest valid file has three columns, ``model,dataset,accuracy``; everything else is
optional. ``history export`` writes this format losslessly (see :mod:`history.export`),
so export -> import into a fresh store reproduces the same models, datasets, jobs and
scores. Full column reference: ``docs/generic-format.md``.

Rows
----
A ``record`` column (optional, default ``job``) says what a row holds:

* ``job``     a fine-tuning run: ``model``, ``dataset``, ``accuracy`` (fraction; option
              ``unit="percent"`` divides by 100), ``regime``, ``metric``, ``status``,
              ``lr``/``epochs``/``batch_size``/``seed`` and ``hparams`` (JSON object),
              ``source``, ``provenance``, ``created_at``, and ``score_<method>`` columns
              (a model-selection score of the (model, dataset) pair).
* ``score``   one score in long form: ``model``, ``dataset``, ``method``, ``score``,
              ``probe_size``, ``seed``, ``runtime_s``, ``source``, ``created_at``,
              ``flag`` (why the score is degenerate), ``params`` (JSON options).
* ``model``   a model and its meta-features only (``model_<field>`` columns).
* ``dataset`` a dataset and its meta-features only (``dataset_<field>`` columns).
* ``probe``   a probe set: ``dataset``, ``probe_size``, ``seed``, ``probe_indices`` (JSON list
              of sample indices), ``probe_num_classes``, ``probe_data_ref``, ``created_at``.

A file with a header but no rows imports as nothing when it has a ``record`` column (the
export of an empty store); otherwise it is an error.

Any row naming a model / dataset may carry ``model_<field>`` / ``dataset_<field>``
meta columns (and ``model_extra`` / ``dataset_extra``, JSON objects).

Test hook
---------
If the environment variable ``RECOMMENDER_TEST_IMPORT_PAUSE`` names a file, :meth:`run`
creates that file after writing every row *inside* the open transaction and then sleeps
(``RECOMMENDER_TEST_IMPORT_PAUSE_S`` seconds, default 60) before committing. Tests use
it to kill an import deterministically half-way; never set it otherwise.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Integer, String, select

from .. import schema as S
from .. import store as S_store
from ..errors import HistoryImportError, closest
from .base import ImportBatch, Importer, ImportReport, parse_numbers, read_table, register_importer, sha256_of

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
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, str) and v.strip() == ""


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
        ts = ts.astimezone(timezone.utc)
    return ts


def _numbers(df: pd.DataFrame, column: str, path) -> np.ndarray | None:
    if column not in df.columns:
        return None
    return parse_numbers(df[column], column, path, offset=getattr(path, "offset", 0)).to_numpy()


_NAN_TOKENS = ("nan", "NaN", "NAN")


def _accuracies(df: pd.DataFrame, path, rows: np.ndarray):
    """The accuracy column as floats, and a mask of cells that literally say NaN.

    Unlike other numeric columns, an accuracy with a comma is refused (``0,9`` may be a
    decimal comma or a thousands separator), and ``inf`` is named as not finite. Only the
    job rows selected by ``rows`` are checked.
    """
    if "accuracy" not in df.columns:
        return None, None
    raw = df["accuracy"].tolist()
    nan = np.zeros(len(raw), bool)
    sel = np.flatnonzero(rows)
    if FAST_PATH:  # plain strings without commas or NaN / inf: nothing for the loop below to say
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


# ---------------------------------------------------------------------- reading
class _Hashes:
    """64-bit hashes of earlier chunks, kept sorted: a membership test costs a binary search per
    new hash and adding a chunk a linear merge (np.isin re-sorted everything each chunk)."""

    def __init__(self):
        self.values = np.zeros(0, np.uint64)

    def seen(self, h: np.ndarray) -> np.ndarray:
        if not len(self.values) or not len(h):
            return np.zeros(len(h), bool)
        i = np.minimum(np.searchsorted(self.values, h), len(self.values) - 1)
        return self.values[i] == h

    def add(self, h: np.ndarray) -> None:
        # two sorted runs: the stable sort (timsort) merges them in linear time
        self.values = np.sort(np.concatenate([self.values, np.sort(np.asarray(h, np.uint64))]), kind="stable")


class ParseState:
    """What parsing one file remembers across its chunks (meta-features, duplicates, units)."""

    def __init__(self, path, *, unit: str, source: str | None, force_unit: bool):
        if unit not in UNITS:
            raise HistoryImportError(f"unknown accuracy unit {unit!r}; use one of: {', '.join(UNITS)}")
        self.path, self.unit, self.force_unit = str(path), unit, force_unit
        self.default_source = source or Path(path).stem
        self.report = ImportReport(importer="generic", source=self.default_source, path=self.path)
        self.models: dict[str, dict] = {}
        self.datasets: dict[str, dict] = {}
        self.origin: dict[tuple, int] = {}  # (kind, name, field) -> row that set it
        self.row_hashes = _Hashes()  # of earlier chunks, for exact duplicates
        self.job_hashes = _Hashes()  # first 64 bits of earlier chunks' job keys
        self.score_values: dict[str, float] = {}  # score key -> value, of earlier chunks
        self.pct_max = -np.inf  # largest accuracy seen with --unit percent
        self.pct_n = 0
        self.offset = 0

    def finish(self) -> None:
        """Checks that need the whole file (raises before anything is committed)."""
        if self.unit == "percent" and self.pct_n and self.pct_max <= 1 and not self.force_unit:
            m = self.pct_max
            raise HistoryImportError(
                f"{self.path}: --unit percent, but all {self.pct_n} accuracies are at most 1 (largest {m:g}), "
                f"so the file looks like fractions: importing would store {m / 100:g} for {m:g}. Import "
                "without --unit percent, or add --force-unit if these really are percentages of at most 1%")


def read_generic_frame(path, df: pd.DataFrame, *, unit: str = "fraction", source: str | None = None,
                       progress: bool = False, force_unit: bool = False) -> ImportBatch:
    """Parse an already loaded generic-format frame (see module docstring) into a batch."""
    state = ParseState(path, unit=unit, source=source, force_unit=force_unit)
    batch = parse_chunk(state, df, progress=progress)
    state.finish()
    batch.models, batch.datasets = list(state.models.values()), list(state.datasets.values())
    return batch


def parse_chunk(state: ParseState, df: pd.DataFrame, *, progress=False) -> ImportBatch:
    """Parse the next chunk of a file: its jobs, scores and probes (models and datasets, with
    their meta-features, accumulate in ``state``). Rows are numbered across chunks."""
    path = _at(state.path, state.offset)
    unit, report, default_source = state.unit, state.report, state.default_source
    state.offset += len(df)
    if not all(dt == object for dt in df.dtypes) or df.isna().to_numpy().any():
        df = df.astype(object).where(df.notna(), None)  # pd.NA / NaN (Parquet) -> None
    df.columns = [str(c).strip() for c in df.columns]
    dupe_cols = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupe_cols:
        raise HistoryImportError(f"{path}: column(s) {', '.join(dupe_cols)} appear more than once in the header")
    report.rows_read += len(df)

    # ---- columns
    score_methods = {c: c[len(SCORE_PREFIX):] for c in df.columns if c.startswith(SCORE_PREFIX)}
    for c, m in score_methods.items():
        if not m:
            raise HistoryImportError(f"{path}: column {c!r} names no score method; write score_<method>, e.g. score_logme")
    unknown = [c for c in df.columns if c not in KNOWN_COLUMNS and c not in score_methods]
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

    # ---- exact duplicates
    if len(df):
        h = pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy()
        dup = np.array(pd.Series(h).duplicated(), dtype=bool)
        dup |= state.row_hashes.seen(h)
        state.row_hashes.add(h)
    else:
        dup = np.zeros(0, bool)
    report.drop("exact duplicate of an earlier row", int(dup.sum()))

    # ---- numeric columns, parsed once (errors name row and value)
    acc, acc_nan = _accuracies(df, path, (kinds == "job") & ~dup)
    if acc is not None:
        job_rows = (kinds == "job") & ~dup
        vals = np.where(job_rows, acc, np.nan)
        neg = np.flatnonzero(vals < 0)
        if len(neg):
            i = int(neg[0])
            raise HistoryImportError(
                f"{_where(path, i)}: accuracy {df['accuracy'].iloc[i]!r} is negative; a placeholder for "
                "'not available' must be left empty"
            )
        if unit == "fraction":
            over = np.flatnonzero(vals > 1)
            if len(over):
                i = int(over[0])
                raise HistoryImportError(
                    f"{_where(path, i)}: accuracy {df['accuracy'].iloc[i]!r} is above 1, but accuracies are "
                    f"fractions in [0, 1] ({len(over)} row(s) above 1). If the file is in percent, "
                    "import it with --unit percent (unit='percent')"
                )
        else:
            over = np.flatnonzero(vals > 100)
            if len(over):
                i = int(over[0])
                raise HistoryImportError(
                    f"{_where(path, i)}: accuracy {df['accuracy'].iloc[i]!r} is above 100 with --unit percent "
                    f"({len(over)} row(s) above 100); fix the value or the unit"
                )
            seen = vals[~np.isnan(vals)]
            if len(seen):
                state.pct_max, state.pct_n = max(state.pct_max, float(seen.max())), state.pct_n + len(seen)
            acc = acc / 100.0
    hp_nums = {c: _numbers(df, c, path) for c in HPARAM_COLUMNS}
    sc_nums = {c: _numbers(df, c, path) for c in ("score", "probe_size", "runtime_s")}
    wide = {m: _numbers(df, c, path) for c, m in score_methods.items()}
    meta_nums = {}
    for col, f in {**MODEL_COLUMNS, **DATASET_COLUMNS}.items():
        table = S.models if col.startswith("model_") else S.datasets
        if col in df.columns and not isinstance(table.c[f].type, String):
            meta_nums[col] = _numbers(df, col, path)

    columns = list(df.columns)
    if FAST_PATH and _fast_eligible(columns, kinds, dup):
        try:
            return _fast_jobs(state, df, path, dup, acc, acc_nan, hp_nums, wide)
        except (HistoryImportError, _Fallback):
            pass  # the row-by-row loop below names the first bad row exactly (or handles the case)
    column_values = [df[c].tolist() for c in columns]
    del df
    n_rows = len(kinds)
    models, datasets, origin = state.models, state.datasets, state.origin
    jobs, scores, probes = [], [], []
    job_keys: set[str] = set()
    job_key_list: list[str] = []
    score_rows: dict[str, int] = {}

    def meta(kind, name, field, value, i, col):
        target = models if kind == "model" else datasets
        rec = target.setdefault(name, {"name": name})
        if value is None:
            return
        old = rec.get(field)
        if old is not None and old != value:
            raise HistoryImportError(
                f"{_where(path, i)}: {kind} {name!r}: column {col!r} is {value!r} here but "
                f"{old!r} in row {origin[(kind, name, field)] + 1}; one {kind} has one value per field"
            )
        rec[field] = value
        origin.setdefault((kind, name, field), i + path.offset)

    # only the meta columns this file has (a row dict has every column of the file)
    model_cols = {c: f for c, f in MODEL_COLUMNS.items() if c in columns}
    dataset_cols = {c: f for c, f in DATASET_COLUMNS.items() if c in columns}
    it = range(n_rows)
    if progress is True and n_rows >= 20000:
        from tqdm import tqdm

        it = tqdm(it, desc=f"parsing {Path(path).name}", unit="row", leave=False)
    for i in it:
        if dup[i]:
            continue
        r = dict(zip(columns, [col[i] for col in column_values]))
        kind = kinds[i]
        model = _text(r.get("model"))
        dataset = _text(r.get("dataset"))
        if kind == "job" and acc is not None and np.isnan(acc[i]) and (_text(r.get("status")) or "completed") == "completed":
            # dropped before its model / dataset are registered: nothing of the row is kept
            report.drop("accuracy is NaN (not a number) on a completed job" if acc_nan[i]
                        else "empty accuracy on a completed job", 1)
            continue
        if kind in ("job", "score", "model") and model is None:
            raise HistoryImportError(f"{_where(path, i)}: column 'model' is empty")
        if kind in ("job", "score", "dataset", "probe") and dataset is None:
            raise HistoryImportError(f"{_where(path, i)}: column 'dataset' is empty")
        if kind == "model":
            dataset = None
        if kind in ("dataset", "probe"):
            model = None
        if kind == "probe":
            probes.append(_probe(r, i, dataset, sc_nums, hp_nums, path))
            datasets.setdefault(dataset, {"name": dataset})
            continue
        _check_len(model, 255, "model", path, i)
        _check_len(dataset, 255, "dataset", path, i)

        # meta-features carried by any row that names the model / dataset
        for name, kind2, cols, table in ((model, "model", model_cols, S.models),
                                         (dataset, "dataset", dataset_cols, S.datasets)):
            if name is None:
                continue
            (models if kind2 == "model" else datasets).setdefault(name, {"name": name})
            for col, f in cols.items():
                if col not in r:
                    continue
                if col in meta_nums:
                    x = meta_nums[col][i]
                    if np.isnan(x):
                        continue
                    v = _as_int(x, col, path, i, r[col]) if isinstance(table.c[f].type, Integer) else float(x)
                else:
                    v = _text(r[col])
                    _check_len(v, _max_len(table, f), col, path, i)
                meta(kind2, name, f, v, i, col)
            ex_col = f"{kind2}_extra"
            if ex_col in r:
                ex = _json_object(r[ex_col], ex_col, path, i)
                if ex is not None:
                    meta(kind2, name, "extra", ex, i, ex_col)
        if kind in ("model", "dataset"):
            for c, m in score_methods.items():
                if not _is_missing(r[c]):
                    raise HistoryImportError(f"{_where(path, i)}: column {c!r} is set on a {kind} row; "
                                             "scores belong to job or score rows")
            continue

        src = _text(r.get("source")) or default_source
        _check_len(src, 64, "source", path, i)
        created = _parse_time(r.get("created_at"), path, i)

        if kind == "score":
            method = _text(r.get("method"))
            if method is None:
                raise HistoryImportError(f"{_where(path, i)}: score row has an empty 'method'")
            _check_len(method, 64, "method", path, i)
            value = sc_nums["score"][i]
            if np.isnan(value):
                report.drop("score row with an empty score", 1)
                continue
            probe = sc_nums["probe_size"]
            seed = hp_nums["seed"]
            rt = sc_nums["runtime_s"]
            rec = {
                "model": model, "dataset": dataset, "method": method, "value": float(value),
                "probe_size": None if probe is None or np.isnan(probe[i]) else _as_int(probe[i], "probe_size", path, i, r["probe_size"]),
                "seed": None if seed is None or np.isnan(seed[i]) else _as_int(seed[i], "seed", path, i, r["seed"]),
                "runtime_s": None if rt is None or np.isnan(rt[i]) else float(rt[i]),
                "source": src, "created_at": created,
                "flag": _text(r.get("flag")), "params": _json_object(r.get("params"), "params", path, i),
            }
            _add_score(rec, i, scores, score_rows, report)
            continue

        # ---- job row
        status = _text(r.get("status")) or "completed"
        if status not in JOB_STATUSES:
            raise HistoryImportError(
                f"{_where(path, i)}: column 'status' has value {status!r}; use one of: {', '.join(JOB_STATUSES)}"
            )
        regime = _text(r.get("regime")) or "full"
        metric = _text(r.get("metric")) or "accuracy"
        _check_len(regime, 64, "regime", path, i)
        _check_len(metric, 64, "metric", path, i)
        hp = _json_object(r.get("hparams"), "hparams", path, i) or {}
        for c, typ in HPARAM_COLUMNS.items():
            col = hp_nums[c]
            if col is None or np.isnan(col[i]):
                continue
            v = float(col[i]) if typ is float else _as_int(col[i], c, path, i, r[c])
            if c in hp and hp[c] != v:
                raise HistoryImportError(
                    f"{_where(path, i)}: {c!r} is {r[c]!r} in its column but {hp[c]!r} in 'hparams'; give it once"
                )
            hp[c] = v
        value = None if acc is None or np.isnan(acc[i]) else float(acc[i])
        if value is None and status == "completed":
            report.drop("empty accuracy on a completed job", 1)
            continue
        job = {
            "model": model, "dataset": dataset, "regime": regime, "hparams": hp, "metric": metric,
            "value": value, "status": status, "source": src,
            "provenance": _text(r.get("provenance")), "created_at": created,
        }
        key = S.job_key(model=model, dataset=dataset, regime=regime, hparams=S._clean(hp), metric=metric,
                        value=value, status=status, source=src, provenance=job["provenance"])
        if key in job_keys:
            report.drop(SAME_JOB, 1)
        else:
            job_keys.add(key)
            job_key_list.append(key)
            job["key"] = key  # the same fields the store would hash: spares it a second hash
            jobs.append(job)
        for m, col in wide.items():
            if col is not None and not np.isnan(col[i]):
                _check_len(m, 64, f"{SCORE_PREFIX}{m}", path, i)
                _add_score({"model": model, "dataset": dataset, "method": m, "value": float(col[i]),
                            "probe_size": None, "seed": None, "runtime_s": None, "source": src,
                            "created_at": None}, i, scores, score_rows, report)

    return _end_chunk(state, jobs, job_key_list, scores, score_rows, probes)


def _end_chunk(state: ParseState, jobs, job_key_list, scores, score_rows, probes) -> ImportBatch:
    """Drop the jobs an earlier chunk already had and note scores that change a value."""
    report = state.report
    kh = np.array([int(k[:16], 16) for k in job_key_list], dtype=np.uint64)
    if len(kh):
        again = state.job_hashes.seen(kh)
        if again.any():
            report.drop(SAME_JOB, int(again.sum()))
            jobs = (jobs.take(np.flatnonzero(~again)) if isinstance(jobs, S_store.JobColumns)
                    else [j for j, a in zip(jobs, again) if not a])
    if len(kh):
        state.job_hashes.add(kh)
    for k in list(score_rows):  # scores of earlier chunks: the later row wins (the store replaces it)
        rec = scores[score_rows[k]]
        if rec is None:
            continue
        if k in state.score_values and state.score_values[k] != rec["value"]:
            report.drop(SCORE_CHANGED, 1)
        state.score_values[k] = rec["value"]
    scores = [s for s in scores if s is not None]
    return ImportBatch(report=report, jobs=jobs, scores=scores, probes=probes)


# ---------------------------------------------------------------------- column-wise fast path
#: Parse chunks of plain job rows column by column (``_fast_jobs``). Same results as the
#: row-by-row loop, which still runs whenever the fast path meets anything else; tests
#: switch it off to compare both.
FAST_PATH = True


class _Fallback(Exception):
    """The chunk holds something only the row-by-row loop handles."""


def _fast_eligible(columns, kinds, dup) -> bool:
    if any(c.startswith(("model_", "dataset_")) or c in PROBE_COLUMNS or c in ("method", "score", "params", "flag")
           for c in columns):
        return False
    return bool(np.all((kinds == "job") | dup))


def _texts(values) -> list:
    """``_text`` over a column."""
    try:
        return [v.strip() or None for v in values]
    except AttributeError:  # not all strings (Parquet): cell by cell
        return [_text(v) for v in values]


def _fast_jobs(state: ParseState, df: pd.DataFrame, path, dup, acc, acc_nan, hp_nums, wide) -> ImportBatch:
    """``parse_chunk`` for a chunk whose rows are all jobs and whose columns are the job columns.

    Works column by column; any problem raises (HistoryImportError or _Fallback) before
    ``state`` is touched, and the caller then runs the row-by-row loop, which reports the
    first bad row exactly as before.
    """
    keep = keep0 = np.flatnonzero(~dup)  # rows not exactly duplicated; ``keep``: also not dropped below
    whole = len(keep0) == len(df)

    def column(c):  # the cells of rows keep0
        if c not in df.columns:
            return None
        vals = df[c].tolist()
        return _texts(vals if whole else [vals[i] for i in keep0])

    status = column("status")
    if status is None:
        status = ["completed"] * len(keep)
    else:
        status = [s or "completed" for s in status]
    # an empty / NaN accuracy on a completed job: dropped before anything of the row is kept
    a = acc[keep]
    gone = np.isnan(a) & (np.array(status, dtype=object) == "completed")
    drops = []  # (first row, reason, count) in the order the loop would report them
    if gone.any():
        nan_rows = gone & acc_nan[keep]
        for mask, reason in ((nan_rows, "accuracy is NaN (not a number) on a completed job"),
                             (gone & ~nan_rows, "empty accuracy on a completed job")):
            if mask.any():
                drops.append((int(keep[np.argmax(mask)]), reason, int(mask.sum())))
        stay = np.flatnonzero(~gone)
        keep, a = keep[stay], a[stay]
        status = [status[i] for i in stay]
        pick = lambda xs: None if xs is None else [xs[i] for i in stay]  # noqa: E731
    else:
        pick = lambda xs: xs  # noqa: E731
    model, dataset = pick(column("model")), pick(column("dataset"))
    if model is None or dataset is None or None in model or None in dataset:
        raise _Fallback
    if (max(map(len, model), default=0) > 255 or max(map(len, dataset), default=0) > 255
            or any(s not in JOB_STATUSES for s in set(status))):
        raise _Fallback
    rows = len(keep)

    def short(c, default):
        vals = pick(column(c))
        if vals is None:
            return [default] * rows
        vals = [v or default for v in vals]
        if max(map(len, set(vals)), default=0) > 64:
            raise _Fallback
        return vals

    source = short("source", state.default_source)
    regime, metric = short("regime", "full"), short("metric", "accuracy")
    prov = pick(column("provenance"))
    if prov is None:
        prov = [None] * rows
    created = [None] * rows
    if "created_at" in df.columns:
        vals = df["created_at"].tolist()
        raw = pick(vals if whole else [vals[i] for i in keep0])
        parsed = {}
        for v in set(raw):  # raises on a bad value: the loop then names its first row
            parsed[v] = _parse_time(v, path, 0)
        created = [parsed[v] for v in raw]
    if "hparams" in df.columns and any(not _is_missing(v) for v in df["hparams"].tolist()):
        raise _Fallback  # JSON hyper-parameters: merged and checked row by row

    # hyper-parameter columns: whole numbers where the store wants integers, finite values
    hp_names, hp_vals = [], []
    for c, typ in sorted(HPARAM_COLUMNS.items()):
        col = hp_nums[c]
        if col is None:
            continue
        x = col[keep]
        ok = np.isnan(x) | np.isfinite(x)
        if typ is int:
            ok &= np.isnan(x) | (x == np.floor(x))
        if not ok.all():
            raise _Fallback
        hp_names.append(c)
        hp_vals.append([None if v != v else (typ(v)) for v in x.tolist()])
    hp_rows = list(zip(*hp_vals)) if hp_names else [()] * rows

    if any(len(m) > 64 and not np.isnan(col[keep]).all() for m, col in wide.items() if col is not None):
        raise _Fallback  # a score method name the store cannot hold
    value = [None if v != v else v for v in a.tolist()]
    keys = S.job_keys(model=model, dataset=dataset, regime=regime, hparams=(hp_names, hp_rows), metric=metric,
                      value=value, status=status, source=source, provenance=prov)

    # ---- nothing below raises: record the chunk in state
    report = state.report
    hp_dicts: dict[tuple, dict] = {}
    hps = []  # one dict per distinct setting, shared by its rows (the store cleans it once)
    for t in hp_rows:
        hp = hp_dicts.get(t)
        if hp is None:
            hp = hp_dicts[t] = {c: v for c, v in zip(hp_names, t) if v is not None}
        hps.append(hp)
    jobs = S_store.JobColumns(model=model, dataset=dataset, regime=regime, hparams=hps, metric=metric, value=value,
                              status=status, source=source, provenance=prov, created_at=created, key=keys)
    first = dict.fromkeys(keys)  # distinct keys, first row of each
    same = rows - len(first)
    first_same = None
    if same:
        seen = set()
        sel = []
        for j, k in enumerate(keys):
            if k in seen:
                if first_same is None:
                    first_same = int(keep[j])
                continue
            seen.add(k)
            sel.append(j)
        jobs = jobs.take(sel)
    job_key_list = jobs.key
    if same:
        drops.append((first_same, SAME_JOB, same))
    for m in dict.fromkeys(model):
        state.models.setdefault(m, {"name": m})
    for d in dict.fromkeys(dataset):
        state.datasets.setdefault(d, {"name": d})
    scores, score_rows = [], {}
    if wide:
        cols = [(m, col[keep]) for m, col in wide.items() if col is not None]
        changed = ImportReport(importer="generic", source="")
        first_changed = None
        for j in range(rows):
            for m, col in cols:
                x = col[j]
                if x == x:
                    before = changed.rows_dropped
                    _add_score({"model": model[j], "dataset": dataset[j], "method": m, "value": float(x),
                                "probe_size": None, "seed": None, "runtime_s": None, "source": source[j],
                                "created_at": None}, int(keep[j]), scores, score_rows, changed)
                    if first_changed is None and changed.rows_dropped > before:
                        first_changed = int(keep[j])
        if changed.rows_dropped:
            drops.append((first_changed, SCORE_CHANGED, changed.rows_dropped))
    for _, reason, count in sorted(drops, key=lambda d: d[0]):
        report.drop(reason, count)
    return _end_chunk(state, jobs, job_key_list, scores, score_rows, [])


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


def _add_score(rec, i, scores, score_rows, report):
    key = S.score_key(model=rec["model"], dataset=rec["dataset"], method=rec["method"],
                      probe_size=rec["probe_size"], seed=rec["seed"], source=rec["source"])
    if key in score_rows:
        j = score_rows[key]
        old = scores[j]
        if old["value"] == rec["value"]:
            return  # the same score repeated on several job rows (one per hyper-parameter setting)
        report.drop(SCORE_CHANGED, 1)
        scores[j] = None
    score_rows[key] = len(scores)
    scores.append(rec)


@register_importer
class GenericImporter(Importer):
    """CSV / Parquet in the generic format (see module docstring and docs/generic-format.md)."""

    name = "generic"
    description = "generic CSV/Parquet: model,dataset,accuracy[,regime,metric,status,hparams,score_<method>,...]"

    #: Rows parsed and written at a time by :meth:`run` (bounds the memory of a large import).
    CHUNK_ROWS = 100_000

    @staticmethod
    def _check_path(path) -> Path:
        p = Path(path)
        if p.is_dir():
            raise HistoryImportError(f"{p}: is a directory; the generic format is one .csv or .parquet file "
                                     "(folders of public histories use --format transfergraph/shift/parc/timm)")
        if p.suffix.lower() not in (".csv", ".parquet", ".pq", ".txt", ".tsv", ".gz"):
            raise HistoryImportError(
                f"{p}: unsupported file extension {p.suffix!r}; the generic format is read from .csv or .parquet"
            )
        return p

    @staticmethod
    def _csv_options(p: Path) -> dict:
        return {} if p.suffix.lower() in (".parquet", ".pq") else {
            "dtype": str, "keep_default_na": False, "sep": "\t" if p.suffix.lower() == ".tsv" else ","}

    def read(self, path, *, unit: str = "fraction", source: str | None = None, progress: bool = True,
             force_unit: bool = False) -> ImportBatch:
        """The whole file as one batch (for small files and the Python API; ``run`` streams)."""
        p = self._check_path(path)
        df = read_table(p, allow_no_rows=True, **self._csv_options(p))
        if df.empty and "record" not in [str(c).strip() for c in df.columns]:
            raise HistoryImportError(f"{p}: file has a header but no data rows")
        batch = read_generic_frame(p, df, unit=unit, source=source, progress=progress, force_unit=force_unit)
        batch.report.sha256 = sha256_of(p)
        return batch

    def _chunks(self, p: Path):
        """The file as frames of at most CHUNK_ROWS rows, with read_table's clear errors."""
        if p.suffix.lower() in (".parquet", ".pq"):
            if not p.exists():
                raise HistoryImportError(f"{p}: file not found")
            if p.stat().st_size == 0:
                raise HistoryImportError(f"{p}: file is empty")
        else:  # existence, empty file, no header, undecodable header: read_table's clear errors
            read_table(p, allow_no_rows=True, nrows=1, **self._csv_options(p))
        try:
            if p.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                for b in pq.ParquetFile(p).iter_batches(batch_size=self.CHUNK_ROWS):
                    yield b.to_pandas()
                return
            with pd.read_csv(p, chunksize=self.CHUNK_ROWS, **self._csv_options(p)) as reader:
                yield from reader
        except UnicodeDecodeError as exc:
            from .base import not_utf8_message

            raise HistoryImportError(not_utf8_message(p, exc)) from None
        except (pd.errors.ParserError, ValueError, OSError) as exc:
            raise HistoryImportError(f"{p}: cannot be parsed: {exc}") from None

    def run(self, store, path, progress: bool = True, **options) -> ImportReport:
        """Stream the file: parse and write CHUNK_ROWS rows at a time, all in ONE transaction
        (an error in any chunk rolls everything back), with a progress bar over both phases."""
        self.check_options(options)
        unit, source = options.get("unit", "fraction"), options.get("source")
        force_unit = bool(options.get("force_unit", False))
        p = self._check_path(path)
        state = ParseState(p, unit=unit, source=source, force_unit=force_unit)
        rep = state.report
        totals = dict(jobs_added=0, jobs_existing=0, scores_added=0, scores_replaced=0, models_added=0,
                      datasets_added=0, probes_added=0)
        bar = None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(desc=f"importing {p.name}", unit="row", leave=False, disable=None)

        def add(res):
            for k in totals:
                totals[k] += getattr(res, k)

        try:
            with store.write() as conn, _page_cache(store, conn):
                # a SQLite store without jobs (and our write lock held): every key the parser lets
                # through (it drops repeats across chunks) is new, so the store need not look them up
                fresh = store.is_sqlite and conn.execute(select(S.jobs.c.id).limit(1)).first() is None
                # ... and its secondary job indexes are built once at the end (a sort) instead of row by row
                deferred = _drop_job_indexes(conn) if fresh else []
                columns = None
                for df in self._chunks(p):
                    columns = columns or [str(c).strip() for c in df.columns]
                    if bar is not None:
                        bar.set_postfix_str("parsing")
                    n = len(df)
                    batch = parse_chunk(state, df, progress=False)
                    del df
                    rep.jobs_read += len(batch.jobs)
                    rep.scores_read += len(batch.scores)
                    rep.probes_read += len(batch.probes)
                    if bar is not None:
                        bar.set_postfix_str("writing")
                    add(store.commit(jobs=batch.jobs, scores=batch.scores,
                                     **({"probes": batch.probes} if batch.probes else {}), conn=conn,
                                     viability=False, jobs_are_new=fresh))  # flags once, in the last commit
                    if bar is not None:
                        bar.update(n)
                if columns is None and p.suffix.lower() in (".parquet", ".pq"):
                    import pyarrow.parquet as pq

                    columns = [str(c).strip() for c in pq.ParquetFile(p).schema_arrow.names]
                if not rep.rows_read and "record" not in (columns or []):
                    raise HistoryImportError(f"{p}: file has a header but no data rows")
                for sql in deferred:
                    conn.exec_driver_sql(sql)
                state.finish()
                rep.sha256 = sha256_of(p)
                res = store.commit(
                    models=list(state.models.values()), datasets=list(state.datasets.values()), conn=conn,
                    viability=totals["jobs_added"] > 0 or None,
                    import_log={"importer": rep.importer, "source": rep.source, "path": rep.path,
                                "sha256": rep.sha256, "rows_read": rep.rows_read, "dropped": dict(rep.dropped),
                                "jobs_added": totals["jobs_added"], "scores_added": totals["scores_added"]})
                add(res)
                _test_pause()
        finally:
            if bar is not None:
                bar.close()
        rep.jobs_added, rep.jobs_existing = totals["jobs_added"], totals["jobs_existing"]
        rep.scores_added, rep.scores_replaced = totals["scores_added"], totals["scores_replaced"]
        rep.models_added, rep.datasets_added = totals["models_added"], totals["datasets_added"]
        rep.probes_added = totals["probes_added"]
        if not rep.rows_read:
            rep.notes.append("the file has no data rows: nothing imported")
        return rep


#: SQLite page cache (KiB) while a file is imported: the jobs' key index of a large file is
#: far bigger than the default 2 MB, and inserts into it then go through the disk cache
#: (1.5M rows: 28 -> 16 s of CPU in SQLite). Memory grows by at most this much.
IMPORT_CACHE_KIB = 128 * 1024


@contextlib.contextmanager
def _page_cache(store, conn):
    """A larger SQLite page cache for the duration of one import (other databases: nothing)."""
    if not store.is_sqlite:
        yield
        return
    old = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(old)}")


def _drop_job_indexes(conn) -> list[str]:
    """Drop the jobs table's non-unique SQLite indexes inside the import transaction and return
    the statements that rebuild them (run before the transaction ends; a failed import rolls the
    drop back with everything else). Building an index over the loaded rows is a sort, much
    cheaper than updating it for each of a million inserts."""
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL").all()
    out = []
    for name, sql in rows:
        if sql.lstrip().upper().startswith("CREATE UNIQUE"):
            continue
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
        out.append(sql)
    return out


def _test_pause():
    """Test hook (see module docstring): signal 'rows written, not committed', then wait."""
    flag = os.environ.get(PAUSE_ENV)
    if not flag:
        return
    Path(flag).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))
