"""CLI sub-commands, one module each (see ``recommender.cli``)."""
from __future__ import annotations

from history.store import HistoryStore


def open_store(args) -> HistoryStore:
    """The history store selected by --store / --home / env."""
    return HistoryStore(getattr(args, "store", None), home=getattr(args, "home", None))


def add_parser(sub, name: str, **kw):
    """Add a sub-command parser that also accepts the global options."""
    return sub.add_parser(name, parents=[sub.parent_parser], **kw)


def fmt_pct(v) -> str:
    """A fraction as a percentage with one decimal ('' for a missing value), clipped to [0, 100]%
    (a regressor may predict slightly outside [0, 1]; metrics use the raw values)."""
    import math

    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * min(max(float(v), 0.0), 1.0):.1f}%"
