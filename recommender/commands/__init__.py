"""CLI sub-commands, one module each (see ``recommender.cli``)."""
from __future__ import annotations

from history.store import HistoryStore
from history.util import is_missing


def open_store(args, *, write: bool = True) -> HistoryStore:
    """The history store selected by --store / --home / env.

    ``write=False`` (read-only commands): a SQLite store named explicitly (--store or
    RECOMMENDER_STORE) must exist, so a typo is an error instead of a new empty store; a
    store without write permission opens read-only. ``write=True``: a read-only store is
    refused at once with one line.
    """
    import os

    explicit = bool(getattr(args, "store", None) or os.environ.get("RECOMMENDER_STORE"))
    store = HistoryStore(getattr(args, "store", None), home=getattr(args, "home", None),
                         must_exist=explicit and not write, lock_timeout=getattr(args, "lock_timeout", None))
    if write and store.read_only:
        from history.errors import StoreError

        msg = store._readonly_message()
        store.dispose()
        raise StoreError(msg)
    return store


def add_parser(sub, name: str, **kw):
    """Add a sub-command parser that also accepts the global options."""
    return sub.add_parser(name, parents=[sub.parent_parser], **kw)


def fmt_pct(v) -> str:
    """A fraction as a percentage with one decimal ('' for a missing value), clipped to [0, 100]%
    (a regressor may predict slightly outside [0, 1]; metrics use the raw values)."""
    return "" if is_missing(v) else f"{100 * min(max(float(v), 0.0), 1.0):.1f}%"
