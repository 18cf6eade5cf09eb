"""User-facing errors shared by every layer.

Every error raised for bad input derives from :class:`RecommenderError`; the CLI prints its
message (which must say what is wrong and what to do) and exits non-zero without a
traceback.
"""
from __future__ import annotations


class RecommenderError(Exception):
    """Base class of all errors that are reported to the user as a one-paragraph message."""

    exit_code = 2


class StoreError(RecommenderError):
    """The history store cannot be opened, or an operation on it failed."""


class HistoryImportError(RecommenderError):
    """An input file cannot be imported; the store was left unchanged."""


class NotFoundError(RecommenderError):
    """A named model, dataset, recommender, ... does not exist."""


class SchemaMismatchError(RecommenderError):
    """A saved artifact was written with a feature schema that no longer matches."""


def closest(name: str, choices, n: int = 3) -> list[str]:
    """The closest names to ``name`` among ``choices`` (difflib), for 'did you mean' hints."""
    import difflib

    choices = [str(c) for c in choices]
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:
        low = name.lower()
        found = [c for c in choices if low in c.lower() or c.lower() in low][:n]
    return found


def unknown_name_error(kind: str, name, valid, *, where: str = "", extra: str = "", plural: str | None = None,
                       cls: type[RecommenderError] = NotFoundError) -> RecommenderError:
    """The one "unknown <kind>" error, with did-you-mean hints and the valid names (raise it).

    ``unknown recommender 'lgmb'. Did you mean 'lgbm'? Valid recommenders: lr, fm, lgbm, lgbm-rank.``
    ``where`` follows the name (e.g. ``" in --source 'a,b'"``); ``extra`` ends the message.
    Used for recommender, source, regime, baseline, score and protocol names."""
    valid = [str(v) for v in valid]
    hint = closest(str(name), valid)
    did = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    return cls(f"unknown {kind} {name!r}{where}.{did} Valid {plural or kind + 's'}: "
               f"{', '.join(valid) or 'none'}.{' ' + extra if extra else ''}")

