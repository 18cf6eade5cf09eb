"""Model-selection (MS) score library: registry of transferability scores.

Usage::

    from features.scores import compute_score, list_scores
    compute_score("logme", features, labels)          # features (n, d), labels (n,)
    compute_score("leep", features, labels, probs=P)   # P: (n, n_source_classes)

Every score is registered with :func:`register_score` (a timm-style registry of named
entries with :class:`ScoreSpec` metadata); :func:`compute_score` validates the inputs once
and returns a finite float or raises :class:`ScoreInputError`. See docs/scores.md.
"""
from __future__ import annotations

from .registry import (SCORES, ScoreInputError, ScoreResult, ScoreSpec, compute_score, constant_flag,
                       get_score, input_flag, list_scores, register_score, score_with_flag,
                       validate_inputs)

# importing the modules registers their scores
from . import linear, logme as _logme_module, geometry, probabilistic, etran as _etran_module  # noqa: E402,F401
from .etran import etran_combine  # noqa: E402
from .geometry import parc_ensemble  # noqa: E402
from .linear import ledoit_wolf_shrinkage  # noqa: E402
from .logme import log_evidence, logme_naive, profile_log_evidence  # noqa: E402

__all__ = [
    "SCORES", "ScoreSpec", "ScoreInputError", "register_score", "list_scores", "get_score",
    "compute_score", "score_with_flag", "ScoreResult", "constant_flag", "validate_inputs", "parc_ensemble",
    "etran_combine", "input_flag", "logme_naive", "log_evidence",
    "profile_log_evidence",
    "ledoit_wolf_shrinkage",
]
