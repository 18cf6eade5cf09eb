"""The one default configuration, shared by ``train``, ``predict``, ``search`` and ``evaluate``.

Fixed on 2026-12-06 on the development benchmarks only (TransferGraph-image, SHiFT VTAB-1k,
PARC controlled, PARC all), then measured unchanged on the test benchmarks: the choice, its
reasons and the history of defaults are in docs/recommenders.md ("The default"). A change
here is a change of the default: rerun ``python -m experiments.report`` on every benchmark
and add a dated entry to that history.
"""
from __future__ import annotations

__all__ = ["DEFAULT_FEATURES", "DEFAULT_RECOMMENDER", "DEFAULT_LABEL", "DEFAULT_FIXED_ON"]

#: the recommender ``train`` fits, ``predict`` and ``search`` use, and ``evaluate`` measures by default
DEFAULT_RECOMMENDER = "blend"
#: its feature groups (dataset and model meta-features; MS scores need a probe set, so they are opt-in)
DEFAULT_FEATURES = "d,m"
#: how reports and the budget protocol label it
DEFAULT_LABEL = f"{DEFAULT_RECOMMENDER}[{DEFAULT_FEATURES}]"
#: when it was fixed (docs/recommenders.md keeps every earlier default)
DEFAULT_FIXED_ON = "2026-12-06"
