"""Registry of the named recommenders (timm-style): ``create_recommender("fm", features="d,m")``."""
from __future__ import annotations

from dataclasses import dataclass

from history.errors import RecommenderError, unknown_name_error

from .base import BaseRecommender
from .estimators import BlendRecommender, FMRecommender, LGBMRankRecommender, LGBMRecommender, LinearRecommender


@dataclass(frozen=True)
class RecommenderEntry:
    name: str
    cls: type[BaseRecommender]
    summary: str
    has_uncertainty: bool


RECOMMENDERS: dict[str, RecommenderEntry] = {}


def register_recommender(cls, summary: str) -> type:
    RECOMMENDERS[cls.name] = RecommenderEntry(cls.name, cls, summary, bool(cls.has_uncertainty))
    return cls


def _register_builtins():
    register_recommender(BlendRecommender, "the default: popularity (additive model effect) + w x the ridge's learned "
                                           "residual, w chosen on inner folds of the training datasets")
    register_recommender(LinearRecommender, "ridge regression, alpha by dataset-grouped CV")
    register_recommender(FMRecommender,
                         "factorization machine (torch, L-BFGS); std over a 3-member seed ensemble as uncertainty")
    register_recommender(LGBMRecommender, "LightGBM gradient-boosted regression trees")
    register_recommender(LGBMRankRecommender, "LightGBM LambdaRank per dataset, linearly calibrated to accuracy")


_register_builtins()


def list_recommenders() -> list[str]:
    return list(RECOMMENDERS)


def get_entry(name: str) -> RecommenderEntry:
    if name not in RECOMMENDERS:
        raise unknown_name_error("recommender", name, RECOMMENDERS)
    return RECOMMENDERS[name]


def create_recommender(name: str, **params) -> BaseRecommender:
    """A new, unfitted recommender; ``params`` are its constructor parameters."""
    entry = get_entry(name)
    valid = entry.cls._param_names()
    bad = [k for k in params if k not in valid]
    if bad:
        raise RecommenderError(f"invalid parameter(s) {bad} for recommender {name!r}; valid: {', '.join(valid)}")
    return entry.cls(**params)
