"""The feature groups of :mod:`features.featurizer`, in a module without heavy imports (the CLI
builds its ``--features`` help from them without loading numpy / pandas)."""
from __future__ import annotations

GROUPS = ("d", "m", "s", "t", "k", "x", "p")
#: what each group holds, for error messages, ``--help`` and docs
GROUP_HELP = {"d": "dataset meta", "m": "model meta", "s": "model-selection scores",
              "t": "text similarity of datasets and model sources",
              "k": "collaborative kernel over rich dataset similarity",
              "x": "model x dataset interactions",
              "p": "specialists: source-target task match, resolution x native image size"}


def groups_help() -> str:
    """``d (dataset meta), m (model meta), ...``: every group with what it holds."""
    return ", ".join(f"{g} ({GROUP_HELP[g]})" for g in GROUPS)
