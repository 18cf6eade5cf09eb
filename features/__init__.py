"""features: the history as a frame, the featurizer (feature groups d, m, s, t, k, x) and the
model-selection (MS) score library.

The public names below are imported on first use (``import features`` loads nothing heavy)::

    from features import Featurizer, HistoryFrame, register_score, compute_score
"""
from history._lazy import lazy_exports

_EXPORTS = {
    "HistoryFrame": "features.history_frame", "synthetic_history": "features.history_frame",
    "Featurizer": "features.featurizer", "parse_groups": "features.featurizer",
    "FEATURE_SCHEMA_VERSION": "features.featurizer",
    "GROUPS": "features.groups", "GROUP_HELP": "features.groups",
    # the MS score registry (features/scores/registry.py)
    "register_score": "features.scores", "get_score": "features.scores", "list_scores": "features.scores",
    "compute_score": "features.scores", "score_with_flag": "features.scores", "ScoreSpec": "features.scores",
    "ScoreInputError": "features.scores", "SCORES": "features.scores",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
