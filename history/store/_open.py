"""Opening a history store: URL checks, schema creation and migration, SQLite locking.

:class:`_Opening` is the part of :class:`history.store.HistoryStore` that opens the engine
(creating or upgrading the schema in a write transaction) and hands out transactions: on
SQLite, writes start with ``BEGIN IMMEDIATE`` and wait up to ``lock_timeout`` s for another
writer's lock.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError, SQLAlchemyError

from .. import schema as S
from ..config import home_origin, resolve_home, resolve_store_url, store_is_default
from ..errors import StoreError

_CHUNK = 5000

_OPEN_HINT = (
    "Pass --store (or set RECOMMENDER_STORE) to a valid SQLAlchemy URL, e.g. "
    "sqlite:///path/to/history.db or postgresql+psycopg://user:pass@host/db."
)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - unparsable URL, shown as given
        return url


def _missing_columns(conn) -> list:
    """Columns the schema declares that an existing store's tables lack, as (table, column)."""
    insp = inspect(conn)
    have_tables = set(insp.get_table_names())
    missing = []
    for name, table in S.metadata.tables.items():
        if name not in have_tables:
            continue
        have = {c["name"] for c in insp.get_columns(name)}
        missing += [(table, col) for col in table.columns if col.name not in have]
    return missing


def _add_missing_columns(conn) -> None:
    """Additive migration: add every declared column an older store lacks (all nullable).

    Runs inside the schema write transaction, so two processes opening an old store at
    once add each column once; a store already up to date is left as it is.
    """
    for table, col in _missing_columns(conn):
        if not col.nullable:
            raise StoreError(
                f"history store lacks the non-nullable column {table.name}.{col.name}; export it "
                "with the older version (history export) and import the file into a new store.")
        ddl = col.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}')


#: Default seconds a write waits for another process's SQLite write lock (``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 600.0
LOCK_TIMEOUT_ENV = "RECOMMENDER_LOCK_TIMEOUT"
_POLL_MS = 500  # busy timeout of one attempt at taking the write lock


def _default_lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(raw)
    except ValueError:
        raise StoreError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first_line(exc) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _is_locked(exc) -> bool:
    m = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in m or "database is busy" in m


def _is_readonly(exc) -> bool:
    return "readonly database" in str(getattr(exc, "orig", exc)).lower()


def _is_corrupt(exc) -> bool:
    m = str(getattr(exc, "orig", exc)).lower()
    return "malformed" in m or "file is not a database" in m or "file is encrypted" in m


def _is_full(exc) -> bool:
    import errno

    inner = getattr(exc, "orig", exc)
    if isinstance(inner, OSError) and inner.errno == errno.ENOSPC:
        return True
    m = str(inner).lower()
    return "database or disk is full" in m or "no space left" in m


def corrupt_message(url: str, exc) -> str:
    """One line: the store's file is damaged (names the file, says nothing was changed)."""
    p = sqlite_path(url)
    what = f"SQLite file {p}" if p is not None else _safe_url(url)
    return (f"history store {what} is corrupt ({_first_line(exc)}); nothing was changed. Restore it from a "
            "backup, or start a new store (--store / --home) and import your histories again.")


def full_message(url: str, exc) -> str:
    """One line: the disk filled up during a write (the transaction was rolled back)."""
    p = sqlite_path(url)
    where = f" ({p.parent})" if p is not None else ""
    return (f"no space left on the disk of history store {_safe_url(url)}{where} ({_first_line(exc)}); "
            "nothing was written, the store is as it was. Free some space and run the command again.")


def missing_store_message(url: str, home=None) -> str:
    """One line: the default store ``<home>/history.db`` does not exist (a read-only command)."""
    p = sqlite_path(url)
    assert p is not None  # only the default store (a SQLite file) is reported missing
    how = {"--home": "--home", "RECOMMENDER_HOME": "RECOMMENDER_HOME", ".recommender": "./.recommender here",
           "user": "the per-user default"}[home_origin(home)]
    return (f"no history store at {p} (home {p.parent}, from {how}): nothing imported there yet. Fill it "
            "with 'history pull NAME' or 'history import PATH', or point --home / --store to an existing store.")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory and ``file:`` URIs)."""
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _rekey_jobs(conn) -> None:
    """Bring job keys up to ``schema.JOB_KEY_VERSION`` (provenance is part of a job's identity).

    Keys of jobs without provenance do not change; keys of jobs with provenance gain it, so
    re-importing the same file stays idempotent. Idempotent itself (guarded by the meta row).
    """
    have = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "job_key_version")).scalar()
    if have == str(S.JOB_KEY_VERSION):
        return  # another process did it while we waited for the lock
    m, d, j = S.models, S.datasets, S.jobs
    q = (select(j.c.id, j.c.key, m.c.name.label("model"), d.c.name.label("dataset"), j.c.regime, j.c.hparams,
                j.c.metric, j.c.value, j.c.status, j.c.source, j.c.provenance)
         .join(m, m.c.id == j.c.model_id).join(d, d.c.id == j.c.dataset_id).where(j.c.provenance.is_not(None)))
    changes = []
    for r in conn.execute(q).mappings():
        key = S.job_key(model=r["model"], dataset=r["dataset"], regime=r["regime"], hparams=r["hparams"],
                        metric=r["metric"], value=r["value"], status=r["status"], source=r["source"],
                        provenance=r["provenance"])
        if key != r["key"]:
            changes.append({"_id": r["id"], "_key": key})
    if changes:
        from sqlalchemy import bindparam

        stmt = update(j).where(j.c.id == bindparam("_id")).values(key=bindparam("_key"))
        for i in range(0, len(changes), _CHUNK):
            conn.execute(stmt, changes[i : i + _CHUNK])
    if have is None:
        conn.execute(insert(S.meta).values(key="job_key_version", value=str(S.JOB_KEY_VERSION)))
    else:
        conn.execute(update(S.meta).where(S.meta.c.key == "job_key_version").values(value=str(S.JOB_KEY_VERSION)))



class _Opening:
    """Opening a store (URL checks, SQLite hooks, schema creation and migration) and its
    transactions (``write`` with the SQLite lock wait, ``read``)."""

    def __init__(self, url: str | None = None, *, home=None, create: bool = True, must_exist: bool = False,
                 lock_timeout: float | None = None):
        self.url = resolve_store_url(url, home)
        default = store_is_default(url)
        if default and must_exist and ((p := sqlite_path(self.url)) is not None and not p.exists()):
            raise StoreError(missing_store_message(self.url, home))
        if default and create and not must_exist:
            resolve_home(home, create=True)  # the first write creates the home folder
        self.lock_timeout = _default_lock_timeout() if lock_timeout is None else float(lock_timeout)
        if self.lock_timeout < 0:
            raise StoreError(f"--lock-timeout must be >= 0 seconds, got {self.lock_timeout:g}")
        self.read_only = False
        self.engine = self._open(self.url, create, must_exist)

    # ------------------------------------------------------------------ opening
    def _open(self, url: str, create: bool, must_exist: bool = False) -> Engine:
        try:
            u = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"cannot parse history store URL {url!r}: {exc}. {_OPEN_HINT}") from None
        is_sqlite = u.get_backend_name() == "sqlite"
        engine = self._create_engine(url, is_sqlite, must_exist)
        try:
            self._prepare_schema(engine, url, create, is_sqlite)
        except StoreError:
            engine.dispose()
            raise
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            engine.dispose()
            if _is_readonly(exc):
                raise StoreError(self._readonly_message(url)) from None
            if _is_corrupt(exc):
                raise StoreError(corrupt_message(url, exc)) from None
            if _is_full(exc):
                raise StoreError(full_message(url, exc)) from None
            raise StoreError(f"cannot open history store {_safe_url(url)}: {_first_line(exc)}. {_OPEN_HINT}") from None
        return engine

    def _sqlite_engine_url(self, url: str, must_exist: bool) -> str:
        """Check a SQLite file URL (exists, creatable, writable); the URL to open it with.

        A file that is not writable is opened read-only (:attr:`read_only`).
        """
        p = sqlite_path(url)
        if p is None:
            return url
        if p.is_dir():
            raise StoreError(f"cannot open history store {_safe_url(url)}: {p} is a directory. {_OPEN_HINT}")
        if not p.exists():
            if must_exist:
                raise StoreError(
                    f"no history store at {p} (--store {_safe_url(url)}): the file does not exist. "
                    "Check the path for a typo, or fill a new store with 'history pull NAME' or "
                    "'history import PATH'.")
            if not p.parent.is_dir():
                raise StoreError(
                    f"cannot create history store {_safe_url(url)}: the folder {p.parent} does not "
                    "exist. Create it first (a new store is only created in an existing folder), "
                    "or check --store for a typo.")
            if not os.access(p.parent, os.W_OK):
                raise StoreError(f"cannot create history store {_safe_url(url)}: the folder "
                                 f"{p.parent} is read-only. {_OPEN_HINT}")
        elif not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)):
            # Read-only: open without locks/journal files when the folder is read-only
            # too (no -wal/-shm can be created there; nobody can write it either).
            self.read_only = True
            q = "mode=ro" + ("" if os.access(p.parent, os.W_OK) else "&immutable=1")
            return f"sqlite:///file:{quote(str(p.resolve()))}?{q}&uri=true"
        return url

    def _create_engine(self, url: str, is_sqlite: bool, must_exist: bool) -> Engine:
        kwargs: dict[str, Any] = {}
        engine_url = url
        if is_sqlite:
            engine_url = self._sqlite_engine_url(url, must_exist)
            kwargs["connect_args"] = {"timeout": self.lock_timeout}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(engine_url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
            raise StoreError(
                f"cannot open history store {_safe_url(url)}: database driver missing ({exc}). "
                f"Install it (PostgreSQL: pip install 'psycopg[binary]'). {_OPEN_HINT}"
            ) from None
        except (ArgumentError, SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreError(f"cannot open history store {_safe_url(url)}: {exc}. {_OPEN_HINT}") from None
        if is_sqlite:
            self._install_sqlite_hooks(engine, int(self.lock_timeout * 1000))
        return engine

    def _install_sqlite_hooks(self, engine: Engine, timeout_ms: int) -> None:
        """Pragmas on connect; ``BEGIN`` emitted by us (``IMMEDIATE`` with the lock wait)."""
        read_only = self.read_only
        store = self

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _rec):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={timeout_ms}")
            if not read_only:
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                except Exception:
                    pass
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            if mode == "IMMEDIATE":
                store._begin_immediate(conn, timeout_ms)
            else:
                conn.exec_driver_sql(f"BEGIN {mode}")

    def _prepare_schema(self, engine: Engine, url: str, create: bool, is_sqlite: bool) -> None:
        """Create / upgrade the schema (and job keys) where needed, checking its version."""
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            # Is the schema there and current? Then opening only reads, never waiting for a
            # running import; otherwise it is created / upgraded in a write transaction.
            ready = set(S.metadata.tables) <= set(inspect(conn).get_table_names()) and conn.execute(
                select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar() is not None
            ready = ready and not _missing_columns(conn)
            rekey = ready and conn.execute(select(S.meta.c.value).where(
                S.meta.c.key == "job_key_version")).scalar() != str(S.JOB_KEY_VERSION)
        if create and rekey and not self.read_only:
            init = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite else engine
            with init.begin() as conn:
                _rekey_jobs(conn)
        if self.read_only and not ready:
            raise StoreError(
                f"history store {_safe_url(url)} is read-only (no write permission on the file or its "
                "folder) and is not a history store of this version; it would need to be created or "
                "upgraded. Open it once with write permission, or copy it somewhere writable.")
        if create and not self.read_only:
            # Schema creation runs in a write transaction (BEGIN IMMEDIATE on SQLite): two
            # processes opening a fresh store at once are serialized by the lock wait
            # instead of one failing with "database is locked" on a read->write upgrade.
            init = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite else engine
            with (engine if ready else init).begin() as conn:
                if not ready:
                    S.metadata.create_all(conn)
                    _add_missing_columns(conn)
                have = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar()
                if have is None:
                    conn.execute(insert(S.meta).values(key="schema_version", value=str(S.SCHEMA_VERSION)))
                    conn.execute(insert(S.meta).values(key="job_key_version", value=str(S.JOB_KEY_VERSION)))
                elif int(have) != S.SCHEMA_VERSION:
                    raise StoreError(
                        f"history store {_safe_url(url)} has schema version {have}, this tool "
                        f"writes version {S.SCHEMA_VERSION}; export it with an older version "
                        "(history export) and import the file into a new store."
                    )

    def _readonly_message(self, url=None) -> str:
        p = sqlite_path(url or self.url)
        where = f"{p} or its folder {p.parent}" if p is not None else "it"
        return (f"history store {_safe_url(url or self.url)} is read-only (no write permission on {where}); "
                "this command writes to it. Use a writable copy (--store PATH) or fix the permissions.")

    def _begin_immediate(self, conn, timeout_ms: int) -> None:
        """``BEGIN IMMEDIATE``, polling for another writer's lock for up to ``lock_timeout`` s."""
        deadline = time.monotonic() + self.lock_timeout
        conn.exec_driver_sql(f"PRAGMA busy_timeout={min(_POLL_MS, timeout_ms)}")
        waited = False
        next_note = time.monotonic() + 30
        try:
            while True:
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except OperationalError as exc:
                    if not _is_locked(exc):
                        raise
                    now = time.monotonic()
                    if now >= deadline:
                        raise StoreError(
                            f"gave up after waiting {self.lock_timeout:g} s for another writer's lock on history "
                            f"store {_safe_url(self.url)} (another import or score is still running); nothing "
                            "was written. Retry when it has finished, or wait longer with --lock-timeout SECONDS."
                        ) from None
                    if not waited:
                        _say(f"waiting for another writer to finish with {_safe_url(self.url)} "
                             f"(up to {self.lock_timeout:g} s, --lock-timeout)...")
                        waited = True
                    elif now >= next_note:
                        _say("still waiting for another writer "
                             f"({self.lock_timeout - (deadline - now):.0f} s so far)...")
                        next_note = now + 30
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={timeout_ms}")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def write(self):
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite). Rolls back on any error.

        A read-only store, a lock wait past ``lock_timeout`` or a lock lost mid-write raise a
        one-line :class:`StoreError`; the transaction is rolled back, so nothing is written.
        """
        if self.read_only:
            raise StoreError(self._readonly_message())
        eng = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        try:
            with eng.begin() as conn:
                yield conn
        except (DatabaseError, OSError) as exc:
            if _is_readonly(exc):
                raise StoreError(self._readonly_message()) from None
            if _is_locked(exc):
                raise StoreError(
                    f"history store {_safe_url(self.url)} stayed locked by another writer for more than "
                    f"{self.lock_timeout:g} s; nothing was written. Retry, or raise --lock-timeout.") from None
            if _is_full(exc):
                raise StoreError(full_message(self.url, exc)) from None
            if _is_corrupt(exc):
                raise StoreError(corrupt_message(self.url, exc)) from None
            raise

    @contextlib.contextmanager
    def read(self):
        try:
            with self.engine.connect() as conn:
                yield conn
        except DatabaseError as exc:
            if _is_corrupt(exc):
                raise StoreError(corrupt_message(self.url, exc)) from None
            raise

    def dispose(self):
        self.engine.dispose()

    def __repr__(self):
        return f"HistoryStore({_safe_url(self.url)!r})"
