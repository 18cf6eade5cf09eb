"""The generic importer's column-wise fast path (``history.importers.generic.FAST_PATH``).

A chunk whose rows are all plain jobs (no meta-feature, score-row, probe or JSON ``hparams``
columns) is parsed column by column: text columns are stripped with list comprehensions,
checks run on whole columns, and job keys are built by ``schema.job_keys``. Same results as
the row-by-row loop of :func:`history.importers.generic.parse_chunk`, which runs instead
whenever anything here raises (before the parse state is touched).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from typing import Any

from .. import schema as S
from .. import store as S_store
from .base import FIRST_ROWS, ImportReport
from .generic_columns import (
    HPARAM_COLUMNS, JOB_STATUSES, PROBE_COLUMNS, SAME_JOB, SCORE_CHANGED, _add_score, _is_missing, _parse_time,
    _text)


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


class _FastCells:
    """The text cells of a chunk's rows that are not exact duplicates (``keep0``), and of those
    the rows still kept (``keep``) once the empty accuracies are dropped."""

    def __init__(self, df: pd.DataFrame, dup):
        self.df = df
        self.keep = self.keep0 = np.flatnonzero(~dup)  # rows not exactly duplicated; ``keep``: also not dropped
        self.whole = len(self.keep0) == len(df)
        self.stay: np.ndarray | None = None  # positions in keep0 of the rows kept (None: all)

    def column(self, c):  # the cells of rows keep0
        if c not in self.df.columns:
            return None
        vals = self.df[c].tolist()
        return _texts(vals if self.whole else [vals[i] for i in self.keep0])

    def raw(self, c):  # the cells of rows keep, as they are
        vals = self.df[c].tolist()
        return self.pick(vals if self.whole else [vals[i] for i in self.keep0])

    def pick(self, xs):
        if self.stay is None:
            return xs
        return None if xs is None else [xs[i] for i in self.stay]


def _fast_jobs(state, df: pd.DataFrame, path, dup, acc, acc_nan, hp_nums, wide) -> tuple:
    """``parse_chunk`` for a chunk whose rows are all jobs and whose columns are the job columns.

    Works column by column; any problem raises (HistoryImportError or _Fallback) before
    ``state`` (a :class:`history.importers.generic.ParseState`) is touched, and the caller
    then runs the row-by-row loop, which reports the first bad row exactly as before. Returns
    (jobs, job_key_list, scores, score_rows, job_rows) for the caller's ``_end_chunk`` (job_rows:
    the chunk row of each job).
    """
    cells = _FastCells(df, dup)
    status, a, drops = _fast_drop_empty(cells, acc, acc_nan)
    model, dataset, source, regime, metric, prov, created = _fast_texts(cells, state, path, status)
    hp_names, hp_rows = _fast_hparams(cells, hp_nums, len(cells.keep))
    if any(len(m) > 64 and not np.isnan(col[cells.keep]).all() for m, col in wide.items() if col is not None):
        raise _Fallback  # a score method name the store cannot hold
    value = [None if v != v else v for v in a.tolist()]
    keys = S.job_keys(model=model, dataset=dataset, regime=regime, hparams=(hp_names, hp_rows), metric=metric,
                      value=value, status=status, source=source, provenance=prov)

    # ---- nothing below raises: record the chunk in state
    hp_dicts: dict[tuple, dict] = {}
    hps = []  # one dict per distinct setting, shared by its rows (the store cleans it once)
    for t in hp_rows:
        hp = hp_dicts.get(t)
        if hp is None:
            hp = hp_dicts[t] = {c: v for c, v in zip(hp_names, t) if v is not None}
        hps.append(hp)
    jobs = S_store.JobColumns(model=model, dataset=dataset, regime=regime, hparams=hps, metric=metric, value=value,
                              status=status, source=source, provenance=prov, created_at=created, key=keys)
    jobs, job_rows = _fast_unique_jobs(jobs, cells.keep, drops)
    job_key_list = jobs.key
    for m in dict.fromkeys(model):
        state.models.setdefault(m, {"name": m})
    for d in dict.fromkeys(dataset):
        state.datasets.setdefault(d, {"name": d})
    scores, score_rows = _fast_wide_scores(wide, cells.keep, model, dataset, source, drops, state.row)
    for _, reason, count, rows in sorted(drops, key=lambda d: d[0]):
        state.report.drop(reason, count, rows=[state.row(r) for r in rows])
    return jobs, job_key_list, scores, score_rows, job_rows


def _fast_drop_empty(cells: _FastCells, acc, acc_nan):
    """Statuses and accuracies of the kept rows: an empty / NaN accuracy on a completed job is
    dropped before anything of the row is kept. Returns (status, accuracies, drops), drops as
    (first row, reason, count, first rows) in the order the loop would report them."""
    keep = cells.keep
    status = cells.column("status")
    if status is None:
        status = ["completed"] * len(keep)
    else:
        status = [s or "completed" for s in status]
    a = acc[keep]
    gone = np.isnan(a) & (np.array(status, dtype=object) == "completed")
    drops = []
    if gone.any():
        nan_rows = gone & acc_nan[keep]
        for mask, reason in ((nan_rows, "accuracy is NaN (not a number) on a completed job"),
                             (gone & ~nan_rows, "empty accuracy on a completed job")):
            if mask.any():
                at = keep[np.flatnonzero(mask)[:FIRST_ROWS]]
                drops.append((int(at[0]), reason, int(mask.sum()), at.tolist()))
        stay = np.flatnonzero(~gone)
        cells.keep, a = keep[stay], a[stay]
        status = [status[i] for i in stay]
        cells.stay = stay
    return status, a, drops


def _fast_texts(cells: _FastCells, state, path, status):
    """The kept rows' model, dataset, source, regime, metric, provenance and created_at,
    defaults applied; raises _Fallback for whatever the row loop must handle."""
    pick, column = cells.pick, cells.column
    model, dataset = pick(column("model")), pick(column("dataset"))
    if model is None or dataset is None or None in model or None in dataset:
        raise _Fallback
    if (max(map(len, model), default=0) > 255 or max(map(len, dataset), default=0) > 255
            or any(s not in JOB_STATUSES for s in set(status))):
        raise _Fallback
    rows = len(cells.keep)

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
    if "created_at" in cells.df.columns:
        raw = cells.raw("created_at")
        parsed = {}
        for v in set(raw):  # raises on a bad value: the loop then names its first row
            parsed[v] = _parse_time(v, path, 0)
        created = [parsed[v] for v in raw]
    return model, dataset, source, regime, metric, prov, created


def _fast_hparams(cells: _FastCells, hp_nums, rows: int):
    """Hyper-parameter columns of the kept rows as (names, one tuple per row): whole numbers
    where the store wants integers, finite values; JSON ``hparams`` go to the row loop."""
    if "hparams" in cells.df.columns and any(not _is_missing(v) for v in cells.df["hparams"].tolist()):
        raise _Fallback  # JSON hyper-parameters: merged and checked row by row
    hp_names, hp_vals = [], []
    for c, typ in sorted(HPARAM_COLUMNS.items()):
        col = hp_nums[c]
        if col is None:
            continue
        x = col[cells.keep]
        ok = np.isnan(x) | np.isfinite(x)
        if typ is int:
            ok &= np.isnan(x) | (x == np.floor(x))
        if not ok.all():
            raise _Fallback
        hp_names.append(c)
        hp_vals.append([None if v != v else (typ(v)) for v in x.tolist()])
    hp_rows = list(zip(*hp_vals)) if hp_names else [()] * rows
    return hp_names, hp_rows


def _fast_unique_jobs(jobs, keep, drops: list):
    """The first job of each key and the chunk rows of those; the repeats are noted in ``drops``."""
    keys = jobs.key
    first = dict.fromkeys(keys)  # distinct keys, first row of each
    same = len(keys) - len(first)
    if not same:
        return jobs, keep
    same_rows: list[int] = []
    seen = set()
    sel = []
    for j, k in enumerate(keys):
        if k in seen:
            if len(same_rows) < FIRST_ROWS:
                same_rows.append(int(keep[j]))
            continue
        seen.add(k)
        sel.append(j)
    drops.append((same_rows[0], SAME_JOB, same, same_rows))
    return jobs.take(sel), keep[sel]


def _fast_wide_scores(wide, keep, model, dataset, source, drops: list, row):
    """The scores of the ``score_<method>`` columns: (scores, score_rows) as ``_add_score`` keeps them
    (``row``: chunk row -> 1-based file row)."""
    scores: list[dict[str, Any]] = []
    score_rows: dict[str, int] = {}
    if not wide:
        return scores, score_rows
    cols = [(m, col[keep]) for m, col in wide.items() if col is not None]
    changed = ImportReport(importer="generic", source="")
    first_changed = None
    for j in range(len(keep)):
        for m, col in cols:
            x = col[j]
            if x == x:
                before = changed.rows_dropped
                _add_score({"model": model[j], "dataset": dataset[j], "method": m, "value": float(x),
                            "probe_size": None, "seed": None, "runtime_s": None, "source": source[j],
                            "created_at": None}, row(keep[j]), scores, score_rows, changed)
                if first_changed is None and changed.rows_dropped > before:
                    first_changed = int(keep[j])
    if changed.rows_dropped:
        at = [r - row(0) for r in changed.dropped_rows.get(SCORE_CHANGED, [])]  # back to chunk rows
        drops.append((first_changed, SCORE_CHANGED, changed.rows_dropped, at))
    return scores, score_rows
