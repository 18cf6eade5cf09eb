"""history: the store of past fine-tuning jobs, its importers and the user-facing errors.

The public names below are imported on first use (``import history`` loads nothing heavy)::

    from history import HistoryStore, register_importer, get_importer

The package keeps its name (as do ``features``, ``recommender`` and ``experiments``): see
docs/extending.md, "Package names".
"""
from history._lazy import lazy_exports

_EXPORTS = {
    # the store
    "HistoryStore": "history.store",
    # importers: a format name -> an Importer; register your own
    "Importer": "history.importers", "ImportBatch": "history.importers", "ImportReport": "history.importers",
    "register_importer": "history.importers", "get_importer": "history.importers", "IMPORTERS": "history.importers",
    # public histories and export
    "list_histories": "history.pull", "pull_all": "history.pull", "export_history": "history.export",
    # errors every layer raises (the CLI prints their message, no traceback)
    "RecommenderError": "history.errors", "NotFoundError": "history.errors", "StoreError": "history.errors",
    "HistoryImportError": "history.errors", "SchemaMismatchError": "history.errors",
    "unknown_name_error": "history.errors", "closest": "history.errors",
    # small helpers
    "is_missing": "history.util",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
