"""CLI sub-commands, one module each (see ``recommender.cli``)."""
from __future__ import annotations

from history.config import resolve_store_url
from history.errors import StoreError
from history.store import HistoryStore
from history.util import is_missing


def open_store(args, *, write: bool = True) -> HistoryStore:
    """The history store selected by --store / --home / env.

    ``write=False`` (read-only commands): a SQLite store must exist -- the default
    ``<home>/history.db`` as well as one named with --store / RECOMMENDER_STORE -- so a read
    never creates a store, an empty history.db or the home folder, and a typo is an error
    naming the file; a store without write permission opens read-only. ``write=True``: a
    read-only store is refused at once with one line; the home folder and the store are
    created when missing. The URL is remembered on ``args`` (``_store_url``) so that the
    CLI's last-resort error handler can name the store.
    """
    try:
        args._store_url = resolve_store_url(getattr(args, "store", None), getattr(args, "home", None))
    except Exception:  # reported by HistoryStore below
        pass
    store = HistoryStore(getattr(args, "store", None), home=getattr(args, "home", None),
                         must_exist=not write, lock_timeout=getattr(args, "lock_timeout", None))
    if write and store.read_only:
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
