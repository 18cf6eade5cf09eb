"""Importers of fine-tuning histories. ``get_importer(name)`` returns one by format name."""
from .base import IMPORTERS, ImportBatch, Importer, ImportReport, get_importer, load_all, register_importer

__all__ = ["IMPORTERS", "ImportBatch", "Importer", "ImportReport", "get_importer", "register_importer", "load_all"]
