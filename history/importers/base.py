"""Importer framework: parse a file into records (pure), then commit them in one transaction.

An importer subclass implements :meth:`Importer.read`, which returns an :class:`ImportBatch`
(models, datasets, jobs, scores and an :class:`ImportReport` counting every dropped or
repaired row by reason). :meth:`Importer.run` writes the batch with
:meth:`history.store.HistoryStore.commit` -- a single transaction, so a file that fails to
parse or to write leaves the store untouched -- and fills in what was added.
"""
from __future__ import annotations

import hashlib
import inspect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from history.util import is_missing

from ..errors import HistoryImportError
from .canonical import adopt_source_named_rows, apply_to_store, canonicalize

IMPORTERS: dict[str, type[Importer]] = {}


def register_importer(cls):
    IMPORTERS[cls.name] = cls
    return cls


_BUILTIN = ["transfergraph", "shift", "parc", "timm", "vtab", "two_phase", "openclip", "generic", "mlflow_runs"]


def load_all():
    """Import (and so register) the built-in importers."""
    import importlib

    pkg = __name__.rsplit(".", 1)[0]
    for mod in _BUILTIN:
        try:
            importlib.import_module(f"{pkg}.{mod}")
        except ModuleNotFoundError as exc:  # a module not written yet
            if exc.name != f"{pkg}.{mod}":
                raise


def get_importer(name: str) -> Importer:
    load_all()
    if name not in IMPORTERS:
        raise HistoryImportError(
            f"unknown import format {name!r}; supported formats: {', '.join(sorted(IMPORTERS))}"
        )
    return IMPORTERS[name]()


#: How many row numbers of each drop reason a report keeps (the first ones).
FIRST_ROWS = 5


@dataclass
class ImportReport:
    importer: str
    source: str
    path: str | None = None
    sha256: str | None = None
    rows_read: int = 0
    jobs_read: int = 0
    jobs_added: int = 0
    jobs_existing: int = 0
    scores_read: int = 0
    scores_added: int = 0
    scores_replaced: int = 0
    models_added: int = 0
    datasets_added: int = 0
    probes_read: int = 0
    probes_added: int = 0
    dropped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)
    #: reason -> the first (at most :data:`FIRST_ROWS`) data rows dropped for it, 1-based as a
    #: spreadsheet numbers them after the header (file line = row + 1); where an importer knows them
    dropped_rows: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1, rows=()):
        """Count ``n`` rows dropped for ``reason``; ``rows``: (some of) their 1-based data row numbers."""
        if n:
            self.dropped[reason] += int(n)
            rows = [int(r) for r in rows]
            if rows:
                have = self.dropped_rows.get(reason, [])
                self.dropped_rows[reason] = sorted(set(have) | set(rows))[:FIRST_ROWS]

    def repair(self, what: str, n: int = 1):
        if n:
            self.repaired[what] += int(n)

    @property
    def rows_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def to_dict(self) -> dict:
        return {
            "importer": self.importer, "source": self.source, "path": self.path, "sha256": self.sha256,
            "rows_read": self.rows_read, "jobs_read": self.jobs_read, "jobs_added": self.jobs_added,
            "jobs_existing": self.jobs_existing, "scores_read": self.scores_read,
            "scores_added": self.scores_added, "scores_replaced": self.scores_replaced,
            "models_added": self.models_added, "datasets_added": self.datasets_added,
            "probes_read": self.probes_read, "probes_added": self.probes_added,
            "rows_dropped": self.rows_dropped, "dropped": dict(self.dropped),
            "dropped_first_rows": {k: list(v) for k, v in self.dropped_rows.items()},
            "repaired": dict(self.repaired), "notes": list(self.notes),
        }

    def _rows_note(self, reason: str, n: int) -> str:
        rows = self.dropped_rows.get(reason)
        if not rows:
            return ""
        more = ", ..." if n > len(rows) else ""
        return f" (row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}{more})"

    def summary(self) -> str:
        lines = [
            f"import {self.importer} ({self.source}) from {self.path}",
            f"  rows read: {self.rows_read}",
            f"  jobs: {self.jobs_read} parsed, {self.jobs_added} added, {self.jobs_existing} already in the store",
        ]
        if self.scores_read:
            lines.append(
                f"  scores: {self.scores_read} parsed, {self.scores_added} added, {self.scores_replaced} replaced")
        lines.append(f"  models added: {self.models_added}, datasets added: {self.datasets_added}")
        if self.probes_read:
            lines.append(f"  probes: {self.probes_read} parsed, {self.probes_added} added or replaced")
        if self.dropped:
            lines.append(f"  rows dropped: {self.rows_dropped}")
            for reason, n in sorted(self.dropped.items(), key=lambda kv: -kv[1]):
                lines.append(f"    - {n} x {reason}{self._rows_note(reason, n)}")
        else:
            lines.append("  rows dropped: 0")
        for what, n in self.repaired.items():
            lines.append(f"  repaired: {n} x {what}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


@dataclass
class ImportBatch:
    report: ImportReport
    models: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    probes: list = field(default_factory=list)


class Importer:
    """Base class. Subclasses set ``name``, ``description`` and implement ``read``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Store the datasets the dataset registry knows under their canonical names (the source's
    #: names become aliases; see :mod:`history.importers.canonical`). Set by the importers of the
    #: public histories; a user's own files keep the names they use.
    canonical_datasets: ClassVar[bool] = False

    def read(self, path, **options) -> ImportBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_options(self, options) -> None:
        """Refuse options that ``read`` does not take, listing the ones it does."""
        if not options:
            return
        params = inspect.signature(self.read).parameters.values()
        valid = [p.name for p in params
                 if p.name != "path" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise HistoryImportError(
                f"{self.name} importer: unknown option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(valid) if valid else 'none (it takes no options)'}")

    def open_folder(self, path, main: str, source: str, holds: str) -> tuple[Path, Path, ImportBatch]:
        """``path`` is a source's folder (holding ``main``) or ``main`` itself: ``(folder, main file,
        an empty batch whose report names the file and its SHA-256)``. A missing main file is one
        error line, ``<file>: file not found; <holds>`` (e.g. ``a timm folder holds results.csv``)."""
        p = Path(path)
        folder, main_path = (p, p / main) if p.is_dir() else (p.parent, p)
        if not main_path.exists():
            raise HistoryImportError(f"{main_path}: file not found; {holds}")
        rep = ImportReport(importer=self.name, source=source, path=str(p), sha256=sha256_of(main_path))
        return folder, main_path, ImportBatch(report=rep)

    def run(self, store, path, **options) -> ImportReport:
        self.check_options(options)
        batch = self.read(path, **options)
        rep = batch.report
        rep.jobs_read = len(batch.jobs)
        rep.scores_read = len(batch.scores)
        plan = None
        if self.canonical_datasets:
            plan = canonicalize(batch)
        res = self._commit(
            store,
            models=batch.models, datasets=batch.datasets, jobs=batch.jobs, scores=batch.scores,
            **({"probes": batch.probes} if batch.probes else {}),
            import_log={
                "importer": rep.importer, "source": rep.source, "path": rep.path, "sha256": rep.sha256,
                "rows_read": rep.rows_read, "dropped": dict(rep.dropped),
            },
            **({"_plan": plan, "_report": rep} if plan is not None else {}),
        )
        rep.jobs_added, rep.jobs_existing = res.jobs_added, res.jobs_existing
        rep.scores_added, rep.scores_replaced = res.scores_added, res.scores_replaced
        rep.models_added, rep.datasets_added = res.models_added, res.datasets_added
        rep.probes_read, rep.probes_added = len(batch.probes), res.probes_added
        if not rep.rows_read:
            rep.notes.append("the file has no data rows: nothing imported")
        v = res.details.get("viability") if isinstance(getattr(res, "details", None), dict) else None
        if v:
            rep.notes.append(f"viability: {v['degenerate']} of {v['assessed']} models in the store are degenerate "
                             "(at chance on >= 80% of their datasets; see docs/evaluation.md)")
        return rep

    def _commit(self, store, _plan=None, _report=None, **rows):
        """Write one import's rows (``store.commit`` keyword arguments) in one transaction;
        with a dataset plan, merge the aliases and per-source facts in the same transaction."""
        if _plan is None:
            return store.commit(**rows)

        with store.write() as conn:
            adopt_source_named_rows(conn, _plan, _report)
            res = store.commit(conn=conn, **rows)
            apply_to_store(conn, _plan, _report)
        return res


# ---------------------------------------------------------------------- parsing helpers
def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Text that stands for "no value" in a cell of the public histories (compared lower-cased).
BLANK_TOKENS = frozenset({"", "nan", "none", "null"})


def is_blank(v) -> bool:
    """A cell without a value: None, NaN, or a blank / 'nan' / 'none' / 'null' string."""
    return is_missing(v) or str(v).strip().lower() in BLANK_TOKENS


def read_table(path, allow_no_rows: bool = False, **kw) -> pd.DataFrame:
    """Read a CSV or Parquet file with clear errors for missing / empty / unreadable files."""
    p = Path(path)
    if not p.exists():
        raise HistoryImportError(f"{p}: file not found")
    if p.is_dir():
        raise HistoryImportError(f"{p}: is a directory, expected a file")
    if p.stat().st_size == 0:
        raise HistoryImportError(f"{p}: file is empty")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, **kw)
    except pd.errors.EmptyDataError:
        raise HistoryImportError(f"{p}: file is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        raise HistoryImportError(not_utf8_message(p, exc)) from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise HistoryImportError(f"{p}: cannot be parsed: {exc}") from None
    if df.empty and not allow_no_rows:
        raise HistoryImportError(f"{p}: file has a header but no data rows")
    return df


def read_optional_table(path, rep: ImportReport, lacking: str) -> pd.DataFrame | None:
    """The table at ``path`` (:func:`read_table`), or None with the report note
    ``no <file name>: <lacking>`` when the file is absent."""
    p = Path(path)
    if not p.exists():
        rep.notes.append(f"no {p.name}: {lacking}")
        return None
    return read_table(p)


def refuse_outside_unit(acc: pd.Series, path, column: str, values: list, source: str) -> None:
    """Refuse the file at its first accuracy outside [0, 1] (``source``: whose accuracies are fractions)."""
    bad = acc[(acc < 0) | (acc > 1)]
    if len(bad):
        i = bad.index[0]
        raise HistoryImportError(f"{path}: row {i + 1} (file line {i + 2}): {column} = {values[i]!r} "
                                 f"is outside [0, 1]; {source} accuracies are fractions")


def not_utf8_message(path, exc: UnicodeDecodeError | None = None, encoding: str = "utf-8") -> str:
    """'file line N is not valid UTF-8' for the first line of ``path`` that does not decode."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                bad = raw[e.start:e.end]
                return (f"{path}: file line {n} is not valid UTF-8 (byte {bad.hex(' ')} at character {e.start + 1}: "
                        f"{raw[max(0, e.start - 20):e.end + 20]!r}); save the file as UTF-8 and import it again")
    return f"{path}: the file is not valid UTF-8 ({exc}); save it as UTF-8 and import it again"


def require_columns(df: pd.DataFrame, columns, path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HistoryImportError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"found: {', '.join(map(str, df.columns))}"
        )


def parse_numbers(series: pd.Series, column: str, path, *, allow_missing: bool = True,
                  missing_values=("", "nan", "NaN", "None", "null", "NA"), offset: int = 0) -> pd.Series:
    """Parse a column to float; an unparsable cell raises an error naming row and value.

    Row numbers are 1-based data rows as a spreadsheet shows them after the header
    (file line = row + 1).
    """
    out = np.full(len(series), np.nan)
    vals = series.tolist()
    missing = set(missing_values)
    if all(isinstance(v, str) for v in vals):  # the fast path: plain numbers or empty cells
        try:
            fast = pd.to_numeric(pd.Series([None if v in missing else v for v in vals], dtype=object),
                                 errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError):
            fast = None  # something to clean or to report: the cell-by-cell loop below
        if fast is not None and (allow_missing or not np.isnan(fast).any()):
            return pd.Series(fast, index=series.index, name=column)
    for i, v in enumerate(vals):
        row = i + offset + 1
        if is_missing(v):
            if not allow_missing:
                raise HistoryImportError(f"{path}: row {row}: column {column!r} is empty")
            continue
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[i] = float(v)
            continue
        s = str(v).strip().replace(",", "") if isinstance(v, str) else str(v)
        if s in missing:
            if not allow_missing:
                raise HistoryImportError(f"{path}: row {row}: column {column!r} is empty")
            continue
        try:
            out[i] = float(s)
        except ValueError:
            raise HistoryImportError(
                f"{path}: row {row} (file line {row + 1}): column {column!r} has value {v!r}, "
                "which is not a number"
            ) from None
    return pd.Series(out, index=series.index, name=column)
