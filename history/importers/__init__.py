"""Importers of fine-tuning histories. ``get_importer(name)`` returns one by format name."""
from .base import IMPORTERS, ImportBatch, Importer, ImportReport, get_importer, register_importer

_BUILTIN = ["transfergraph", "shift", "parc", "timm", "generic", "mlflow_runs"]


def load_all():
    import importlib

    for mod in _BUILTIN:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a module not written yet
            if exc.name != f"{__name__}.{mod}":
                raise


__all__ = ["IMPORTERS", "ImportBatch", "Importer", "ImportReport", "get_importer", "register_importer", "load_all"]
