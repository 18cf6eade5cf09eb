"""Lazy public names of a package: ``from history import HistoryStore`` imports history.store only then.

Each package's ``__init__`` maps its public names to the modules that define them; nothing heavy
(torch, mlflow, ray, lightgbm, even pandas) is imported by ``import <package>`` itself.
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in ``exports``
    (name -> ``"module"``, or ``"module:attribute"`` when the public name differs)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = exports[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        setattr(importlib.import_module(package), name, value)  # next access skips this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return sorted(exports), __getattr__, __dir__
