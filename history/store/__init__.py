"""The history store: fine-tuning jobs, models, datasets and model-selection scores.

Works over any SQLAlchemy URL (SQLite by default, PostgreSQL tested). All writes of one
import happen in a single transaction, so a failing import leaves the store untouched.
On SQLite, write transactions start with ``BEGIN IMMEDIATE`` and a busy timeout, so two
processes importing at once are serialized instead of failing or doubling rows.
"""
from __future__ import annotations

from ._open import DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_ENV, _Opening, sqlite_path
from ._reads import _Reads
from ._writes import CommitResult, JobColumns, _Writes
from .targets import REPEAT_KEYS, TARGET_RULES, aggregate_targets

__all__ = ["HistoryStore", "JobColumns", "CommitResult", "TARGET_RULES", "REPEAT_KEYS", "aggregate_targets",
           "sqlite_path", "DEFAULT_LOCK_TIMEOUT", "LOCK_TIMEOUT_ENV"]


class HistoryStore(_Opening, _Writes, _Reads):
    """A fine-tuning history store over a SQLAlchemy URL.

    ``must_exist``: refuse a SQLite file that does not exist (read commands given an
    explicit ``--store``, so a typo is not silently a new empty store). A new SQLite file is
    created only in an existing folder. A SQLite store whose file or folder is not writable
    is opened read-only (:attr:`read_only`): reads work, writes raise a one-line
    :class:`StoreError`. ``lock_timeout``: seconds a write waits for another writer's lock
    (default 600, env ``RECOMMENDER_LOCK_TIMEOUT``), saying so on stderr while it waits.

    >>> store = HistoryStore("sqlite:///:memory:")  # doctest: +SKIP
    """
