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
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Integer, String, select

from .. import schema as S
from .. import store as S_store
from ..errors import HistoryImportError
from .base import (
    FIRST_ROWS, ImportBatch, Importer, ImportReport, not_utf8_message, read_table, register_importer, sha256_of,
)
from .generic_columns import (
    DATASET_COLUMNS, HPARAM_COLUMNS, JOB_STATUSES, MODEL_COLUMNS, PAUSE_ENV, PAUSE_SECONDS_ENV, SAME_JOB,
    SCORE_CHANGED, SCORE_PREFIX, UNITS, _accuracies, _add_score, _as_int, _at, _check_len, _is_missing, _json_object,
    _max_len, _numbers, _parse_time, _probe, _text, _where, record_kinds, score_columns)
from .generic_fast import _Fallback, _fast_eligible, _fast_jobs


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
        self.chunk_start = 0  # rows of the file before the chunk being parsed

    def row(self, i) -> int:
        """The 1-based data row number of the current chunk's row ``i`` (file line = row + 1)."""
        return self.chunk_start + int(i) + 1

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
    state.chunk_start = state.offset
    state.offset += len(df)
    df = _normalize_frame(df, path, state.report)
    score_methods = score_columns(df.columns, path, state.report)
    kinds = record_kinds(df, path)
    dup = _exact_duplicates(state, df)
    acc, acc_nan = _job_accuracies(state, df, path, kinds, dup)
    nums = _numeric_columns(df, path, score_methods)
    if FAST_PATH and _fast_eligible(list(df.columns), kinds, dup):
        try:
            jobs, keys, scores, score_rows, job_rows = _fast_jobs(state, df, path, dup, acc, acc_nan, nums.hp,
                                                                  nums.wide)
            return _end_chunk(state, jobs, keys, scores, score_rows, [], job_rows)
        except (HistoryImportError, _Fallback):
            pass  # the row-by-row loop below names the first bad row exactly (or handles the case)
    loop = _RowLoop(state, path, df, kinds, dup, acc, acc_nan, nums, score_methods)
    del df
    return loop.run(progress)


def _normalize_frame(df: pd.DataFrame, path, report) -> pd.DataFrame:
    """Cells as objects (missing: None), stripped column names, no repeated column."""
    if not all(dt == np.dtype("O") for dt in df.dtypes) or df.isna().to_numpy().any():
        df = df.astype(object).where(df.notna(), None)  # pd.NA / NaN (Parquet) -> None
    df.columns = [str(c).strip() for c in df.columns]
    dupe_cols = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupe_cols:
        raise HistoryImportError(f"{path}: column(s) {', '.join(dupe_cols)} appear more than once in the header")
    report.rows_read += len(df)
    return df


def _exact_duplicates(state: ParseState, df: pd.DataFrame) -> np.ndarray:
    """Rows that repeat an earlier row of this chunk or of an earlier one, cell for cell."""
    if len(df):
        h = pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy()
        dup = np.array(pd.Series(h).duplicated(), dtype=bool)
        dup |= state.row_hashes.seen(h)
        state.row_hashes.add(h)
    else:
        dup = np.zeros(0, bool)
    state.report.drop("exact duplicate of an earlier row", int(dup.sum()),
                      rows=[state.row(i) for i in np.flatnonzero(dup)[:FIRST_ROWS]])
    return dup


def _refuse_first(bad: np.ndarray, path, df: pd.DataFrame, why: str) -> None:
    """Refuse the file at the first row where ``bad`` holds: ``<where>: accuracy <value> <why>``
    (``{n}`` in ``why``: how many rows are bad)."""
    rows = np.flatnonzero(bad)
    if len(rows):
        i = int(rows[0])
        raise HistoryImportError(f"{_where(path, i)}: accuracy {df['accuracy'].iloc[i]!r} {why.format(n=len(rows))}")


def _job_accuracies(state: ParseState, df: pd.DataFrame, path, kinds, dup):
    """The job rows' accuracies as fractions (range checked against the unit), and the NaN mask."""
    acc, acc_nan = _accuracies(df, path, (kinds == "job") & ~dup, fast=FAST_PATH)
    if acc is None:
        return acc, acc_nan
    job_rows = (kinds == "job") & ~dup
    vals = np.where(job_rows, acc, np.nan)
    _refuse_first(vals < 0, path, df, "is negative; a placeholder for 'not available' must be left empty")
    if state.unit == "fraction":
        _refuse_first(vals > 1, path, df, "is above 1, but accuracies are fractions in [0, 1] ({n} row(s) above 1). "
                                          "If the file is in percent, import it with --unit percent (unit='percent')")
    else:
        _refuse_first(vals > 100, path, df, "is above 100 with --unit percent ({n} row(s) above 100); "
                                            "fix the value or the unit")
        seen = vals[~np.isnan(vals)]
        if len(seen):
            state.pct_max, state.pct_n = max(state.pct_max, float(seen.max())), state.pct_n + len(seen)
        acc = acc / 100.0
    return acc, acc_nan


@dataclass
class _Numbers:
    """A chunk's numeric columns, parsed once (errors name row and value); None where absent."""
    hp: dict  # hyper-parameter column -> values
    sc: dict  # score, probe_size, runtime_s
    wide: dict  # score method -> values of its score_<method> column
    meta: dict  # numeric model_<field> / dataset_<field> columns


def _numeric_columns(df: pd.DataFrame, path, score_methods: dict) -> _Numbers:
    hp_nums = {c: _numbers(df, c, path) for c in HPARAM_COLUMNS}
    sc_nums = {c: _numbers(df, c, path) for c in ("score", "probe_size", "runtime_s")}
    wide = {m: _numbers(df, c, path) for c, m in score_methods.items()}
    meta_nums = {}
    for col, f in {**MODEL_COLUMNS, **DATASET_COLUMNS}.items():
        table = S.models if col.startswith("model_") else S.datasets
        if col in df.columns and not isinstance(table.c[f].type, String):
            meta_nums[col] = _numbers(df, col, path)
    return _Numbers(hp=hp_nums, sc=sc_nums, wide=wide, meta=meta_nums)


class _RowLoop:
    """The row-by-row parse of a chunk (any record kinds; names the first bad row exactly)."""

    def __init__(self, state: ParseState, path, df: pd.DataFrame, kinds, dup, acc, acc_nan, nums: _Numbers,
                 score_methods: dict):
        self.state, self.path, self.kinds, self.dup, self.acc, self.acc_nan = state, path, kinds, dup, acc, acc_nan
        self.nums, self.score_methods = nums, score_methods
        self.columns = list(df.columns)
        self.column_values = [df[c].tolist() for c in self.columns]
        # only the meta columns this file has (a row dict has every column of the file)
        self.model_cols = {c: f for c, f in MODEL_COLUMNS.items() if c in self.columns}
        self.dataset_cols = {c: f for c, f in DATASET_COLUMNS.items() if c in self.columns}
        self.jobs: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []
        self.job_keys: set[str] = set()
        self.job_key_list: list[str] = []
        self.job_rows: list[int] = []  # the chunk row of each job
        self.score_rows: dict[str, int] = {}

    def run(self, progress) -> ImportBatch:
        n_rows = len(self.kinds)
        it: Iterable[int] = range(n_rows)
        if progress is True and n_rows >= 20000:
            from tqdm import tqdm

            it = tqdm(it, desc=f"parsing {Path(self.path).name}", unit="row", leave=False)
        for i in it:
            if not self.dup[i]:
                self.row(i, dict(zip(self.columns, [col[i] for col in self.column_values])))
        s = self
        return _end_chunk(s.state, s.jobs, s.job_key_list, s.scores, s.score_rows, s.probes, s.job_rows)

    def row(self, i: int, r: dict) -> None:
        path, report, acc = self.path, self.state.report, self.acc
        kind = self.kinds[i]
        model = _text(r.get("model"))
        dataset = _text(r.get("dataset"))
        if (kind == "job" and acc is not None and np.isnan(acc[i])
                and (_text(r.get("status")) or "completed") == "completed"):
            # dropped before its model / dataset are registered: nothing of the row is kept
            report.drop("accuracy is NaN (not a number) on a completed job" if self.acc_nan[i]
                        else "empty accuracy on a completed job", 1, rows=[self.state.row(i)])
            return
        if kind in ("job", "score", "model") and model is None:
            raise HistoryImportError(f"{_where(path, i)}: column 'model' is empty")
        if kind in ("job", "score", "dataset", "probe") and dataset is None:
            raise HistoryImportError(f"{_where(path, i)}: column 'dataset' is empty")
        if kind == "model":
            dataset = None
        if kind in ("dataset", "probe"):
            model = None
        if kind == "probe":
            self.probes.append(_probe(r, i, dataset, self.nums.sc, self.nums.hp, path))
            self.state.datasets.setdefault(dataset, {"name": dataset})
            return
        _check_len(model, 255, "model", path, i)
        _check_len(dataset, 255, "dataset", path, i)
        self.row_meta(i, r, model, dataset)
        if kind in ("model", "dataset"):
            for c in self.score_methods:
                if not _is_missing(r[c]):
                    raise HistoryImportError(f"{_where(path, i)}: column {c!r} is set on a {kind} row; "
                                             "scores belong to job or score rows")
            return

        src = _text(r.get("source")) or self.state.default_source
        _check_len(src, 64, "source", path, i)
        created = _parse_time(r.get("created_at"), path, i)
        if kind == "score":
            self.score_row(i, r, model, dataset, src, created)
        else:
            self.job_row(i, r, model, dataset, src, created)

    def meta(self, kind, name, field, value, i, col):
        target = self.state.models if kind == "model" else self.state.datasets
        origin = self.state.origin
        rec = target.setdefault(name, {"name": name})
        if value is None:
            return
        old = rec.get(field)
        if old is not None and old != value:
            raise HistoryImportError(
                f"{_where(self.path, i)}: {kind} {name!r}: column {col!r} is {value!r} here but "
                f"{old!r} in row {origin[(kind, name, field)] + 1}; one {kind} has one value per field"
            )
        rec[field] = value
        origin.setdefault((kind, name, field), i + self.path.offset)

    def row_meta(self, i: int, r: dict, model, dataset) -> None:
        """Meta-features carried by any row that names the model / dataset."""
        path, meta_nums = self.path, self.nums.meta
        for name, kind2, cols, table in ((model, "model", self.model_cols, S.models),
                                         (dataset, "dataset", self.dataset_cols, S.datasets)):
            if name is None:
                continue
            (self.state.models if kind2 == "model" else self.state.datasets).setdefault(name, {"name": name})
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
                self.meta(kind2, name, f, v, i, col)
            ex_col = f"{kind2}_extra"
            if ex_col in r:
                ex = _json_object(r[ex_col], ex_col, path, i)
                if ex is not None:
                    self.meta(kind2, name, "extra", ex, i, ex_col)

    def score_row(self, i: int, r: dict, model, dataset, src, created) -> None:
        path, sc_nums = self.path, self.nums.sc
        method = _text(r.get("method"))
        if method is None:
            raise HistoryImportError(f"{_where(path, i)}: score row has an empty 'method'")
        _check_len(method, 64, "method", path, i)
        value = sc_nums["score"][i]
        if np.isnan(value):
            self.state.report.drop("score row with an empty score", 1, rows=[self.state.row(i)])
            return
        probe = sc_nums["probe_size"]
        seed = self.nums.hp["seed"]
        rt = sc_nums["runtime_s"]
        rec = {
            "model": model, "dataset": dataset, "method": method, "value": float(value),
            "probe_size": (None if probe is None or np.isnan(probe[i])
                           else _as_int(probe[i], "probe_size", path, i, r["probe_size"])),
            "seed": None if seed is None or np.isnan(seed[i]) else _as_int(seed[i], "seed", path, i, r["seed"]),
            "runtime_s": None if rt is None or np.isnan(rt[i]) else float(rt[i]),
            "source": src, "created_at": created,
            "flag": _text(r.get("flag")), "params": _json_object(r.get("params"), "params", path, i),
        }
        _add_score(rec, self.state.row(i), self.scores, self.score_rows, self.state.report)

    def job_row(self, i: int, r: dict, model, dataset, src, created) -> None:
        path, report, acc, hp_nums = self.path, self.state.report, self.acc, self.nums.hp
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
            report.drop("empty accuracy on a completed job", 1, rows=[self.state.row(i)])
            return
        job = {
            "model": model, "dataset": dataset, "regime": regime, "hparams": hp, "metric": metric,
            "value": value, "status": status, "source": src,
            "provenance": _text(r.get("provenance")), "created_at": created,
        }
        key = S.job_key(model=model, dataset=dataset, regime=regime, hparams=S._clean(hp), metric=metric,
                        value=value, status=status, source=src, provenance=job["provenance"])
        if key in self.job_keys:
            report.drop(SAME_JOB, 1, rows=[self.state.row(i)])
        else:
            self.job_keys.add(key)
            self.job_key_list.append(key)
            self.job_rows.append(i)
            job["key"] = key  # the same fields the store would hash: spares it a second hash
            self.jobs.append(job)
        for m, col in self.nums.wide.items():
            if col is not None and not np.isnan(col[i]):
                _check_len(m, 64, f"{SCORE_PREFIX}{m}", path, i)
                _add_score({"model": model, "dataset": dataset, "method": m, "value": float(col[i]),
                            "probe_size": None, "seed": None, "runtime_s": None, "source": src,
                            "created_at": None}, self.state.row(i), self.scores, self.score_rows, report)


def _end_chunk(state: ParseState, jobs, job_key_list, scores, score_rows, probes, job_rows) -> ImportBatch:
    """Drop the jobs an earlier chunk already had and note scores that change a value.

    ``job_rows``: the chunk row of each job (for the row numbers of the drops)."""
    report = state.report
    kh = np.array([int(k[:16], 16) for k in job_key_list], dtype=np.uint64)
    if len(kh):
        again = state.job_hashes.seen(kh)
        if again.any():
            report.drop(SAME_JOB, int(again.sum()),
                        rows=[state.row(job_rows[j]) for j in np.flatnonzero(again)[:FIRST_ROWS]])
            jobs = (jobs.take(np.flatnonzero(~again)) if isinstance(jobs, S_store.JobColumns)
                    else [j for j, a in zip(jobs, again) if not a])
    if len(kh):
        state.job_hashes.add(kh)
    for k in list(score_rows):  # scores of earlier chunks: the later row wins (the store replaces it)
        rec = scores[score_rows[k]]
        if rec is None:
            continue
        if k in state.score_values and state.score_values[k] != rec["value"]:
            report.drop(SCORE_CHANGED, 1, rows=[rec["_row"]] if "_row" in rec else ())
        state.score_values[k] = rec["value"]
    scores = [s for s in scores if s is not None]
    for s in scores:
        s.pop("_row", None)
    return ImportBatch(report=report, jobs=jobs, scores=scores, probes=probes)


# ---------------------------------------------------------------------- column-wise fast path
#: Parse chunks of plain job rows column by column (``_fast_jobs``). Same results as the
#: row-by-row loop, which still runs whenever the fast path meets anything else; tests
#: switch it off to compare both.
FAST_PATH = True


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
                                     "(folders of public histories use --input-format transfergraph/shift/parc/timm)")
        if p.suffix.lower() not in (".csv", ".parquet", ".pq", ".txt", ".tsv", ".gz"):
            raise HistoryImportError(
                f"{p}: unsupported file extension {p.suffix!r}; the generic format is read from .csv or .parquet"
            )
        return p

    @staticmethod
    def _csv_options(p: Path) -> dict:
        return {} if p.suffix.lower() in (".parquet", ".pq") else {
            "dtype": str, "keep_default_na": False, "sep": "\t" if p.suffix.lower() == ".tsv" else ","}

    @classmethod
    def _check_header(cls, p: Path) -> None:
        """A column named twice is an error naming it (pandas would silently rename the second
        ``accuracy`` to ``accuracy.1``, and the importer would have to guess which one is meant)."""
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            try:
                names = [str(c).strip() for c in pq.ParquetFile(p).schema_arrow.names]
            except Exception:  # unreadable: the reader's own error says why
                return
        else:
            import csv
            import gzip

            opener = gzip.open if p.suffix.lower() == ".gz" else open
            try:
                with opener(p, "rt", encoding="utf-8", newline="") as f:
                    names = [c.strip() for c in next(csv.reader(f, delimiter=cls._csv_options(p)["sep"]), [])]
            except (OSError, UnicodeDecodeError, csv.Error):  # read_table reports these
                return
        seen: dict[str, list[int]] = {}
        for i, c in enumerate(names, start=1):
            seen.setdefault(c, []).append(i)
        twice = {c: at for c, at in seen.items() if len(at) > 1 and c}
        if twice:
            parts = "; ".join(f"{c!r} is columns {', '.join(map(str, at))}" for c, at in twice.items())
            raise HistoryImportError(
                f"{p}: column {', '.join(map(repr, twice))} appears more than once in the header ({parts}); "
                "the importer does not guess which one to use: rename or remove the extra column and import again")

    # its own keyword options, where Importer.read declares **options
    def read(self, path, *, unit: str = "fraction", source: str | None = None, progress: bool = True,  # type: ignore[override]
             force_unit: bool = False) -> ImportBatch:
        """The whole file as one batch (for small files and the Python API; ``run`` streams)."""
        p = self._check_path(path)
        if p.is_file():
            self._check_header(p)
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
        self._check_header(p)
        try:
            if p.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                for b in pq.ParquetFile(p).iter_batches(batch_size=self.CHUNK_ROWS):
                    yield b.to_pandas()
                return
            with pd.read_csv(p, chunksize=self.CHUNK_ROWS, **self._csv_options(p)) as reader:
                yield from reader
        except UnicodeDecodeError as exc:
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
