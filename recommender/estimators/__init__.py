"""The learned recommenders (see ``recommender.registry`` for the named entries)."""
from .base import TabularRecommender
from .blend import BlendRecommender
from .fm import FMRecommender
from .lgbm import LGBMRankRecommender, LGBMRecommender
from .lr import LinearRecommender

__all__ = ["TabularRecommender", "BlendRecommender", "LinearRecommender", "FMRecommender", "LGBMRecommender",
           "LGBMRankRecommender"]
