"""recommender: recommenders (lr, fm, lgbm, lgbm-rank, blend, ...), their registry, training,
prediction, evaluation protocols and the ``python -m recommender`` CLI.

The public names below are imported on first use (``import recommender`` loads neither
LightGBM, torch, MLflow nor Ray)::

    from recommender import create_recommender, register_recommender, train_recommenders
"""
from history._lazy import lazy_exports

_EXPORTS = {
    # the registry of recommenders
    "BaseRecommender": "recommender.base", "NotFittedError": "recommender.base",
    "register_recommender": "recommender.registry", "create_recommender": "recommender.registry",
    "list_recommenders": "recommender.registry", "get_entry": "recommender.registry",
    "RecommenderEntry": "recommender.registry",
    "DEFAULT_RECOMMENDER": "recommender.defaults", "DEFAULT_FEATURES": "recommender.defaults",
    # save / load, train on a store, recommend for a dataset
    "save_recommender": "recommender.io", "load_recommender": "recommender.io",
    "train_recommenders": "recommender.training", "build_history": "recommender.training",
    "recommend_for_dataset": "recommender.prediction",
    # evaluation protocols
    "register_protocol": "recommender.protocols", "get_protocol": "recommender.protocols",
    "list_protocols": "recommender.protocols", "make_folds": "recommender.protocols",
    # the CLI
    "main": "recommender.cli", "build_parser": "recommender.cli",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
