"""Loading saved recommenders (folders written by ``TabularRecommender.save``; no pickle).

A folder holds ``meta.json`` (recommender name, params, feature schema + version, package
version, training summary), ``featurizer.json`` + ``*.parquet`` (vocabularies, scalers,
collaborative statistics and the meta / score tables the model was fit with), and the
estimator in native or npz form (``ridge.npz``, ``fm_posterior.npz``, ``lgbm_model.txt``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from features.featurizer import FEATURE_SCHEMA_VERSION, Featurizer
from features.history_frame import HistoryFrame
from history.errors import NotFoundError, RecommenderError, SchemaMismatchError, unknown_name_error

from .base import BaseRecommender
from .registry import RECOMMENDERS


#: Parameters older versions saved that estimators no longer take (they were ignored):
#: ``target_rule`` is a property of the training history (see ``meta.json``), not of a model.
RETIRED_PARAMS = frozenset({"target_rule"})


def save_recommender(rec: BaseRecommender, path) -> Path:
    return rec.save(path)


def _read_json(f: Path) -> dict:
    if not f.is_file():
        raise RecommenderError(f"{f} is missing: {f.parent} is not a complete saved recommender "
                               "(expected meta.json, featurizer.json, *.parquet and the estimator file).")
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecommenderError(f"{f} is corrupt ({exc}); re-run `recommender train` to write it again.") from None


def load_recommender(path) -> BaseRecommender:
    """Read a recommender saved with ``save(path)``; it predicts without the store."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotFoundError(f"no saved recommender at {folder} (expected a folder with meta.json).")
    meta = _read_json(folder / "meta.json")
    name = meta.get("recommender")
    if name not in RECOMMENDERS:
        raise unknown_name_error("recommender", name, RECOMMENDERS, where=f" in {folder / 'meta.json'}",
                                 cls=RecommenderError, extra="Was it saved by another version?")
    ver = meta.get("feature_schema_version")
    if ver != FEATURE_SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"{folder}: saved with feature schema version {ver}, this tool uses version "
            f"{FEATURE_SCHEMA_VERSION}; retrain it (recommender train ...).")
    state = _read_json(folder / "featurizer.json")
    tables = {}
    for fname in meta.get("table_files", []):
        f = folder / fname
        if not f.is_file():
            raise RecommenderError(f"{f} is missing; the saved recommender is incomplete. Retrain it.")
        try:
            tables[fname.rsplit(".", 1)[0]] = pd.read_parquet(f)
        except Exception as exc:
            raise RecommenderError(f"{f} is corrupt ({type(exc).__name__}: {exc}). Retrain it.") from None
    for t in ("models_meta", "datasets_meta", "scores", "train_z"):
        if t not in tables:
            raise RecommenderError(f"{folder}: table {t}.parquet is missing from the saved recommender. Retrain it.")
    fz = Featurizer.from_state(state, tables)
    saved_names = (meta.get("feature_schema") or {}).get("feature_names")
    if saved_names != fz.feature_names_:
        raise SchemaMismatchError(
            f"{folder}: the feature names in meta.json do not match featurizer.json "
            f"({len(saved_names or [])} vs {len(fz.feature_names_)} columns); the files do not belong together.")
    cls = RECOMMENDERS[name].cls
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("params", {}).items()
              if k not in RETIRED_PARAMS}
    try:
        rec: Any = cls(**params)  # a TabularRecommender: the only kind saved to a folder
    except TypeError as exc:
        raise SchemaMismatchError(f"{folder / 'meta.json'}: parameters do not match {cls.__name__} ({exc}).") from None
    rec.featurizer_ = fz
    rec.dataset_stats_ = {k: list(v) for k, v in meta.get("dataset_stats", {}).items()}
    rec.training_summary_ = meta.get("training_summary", {})
    for fname in meta.get("estimator_files", []):
        if not (folder / fname).is_file():
            raise RecommenderError(f"{folder / fname} is missing; the saved recommender is incomplete. Retrain it.")
    try:
        rec._load_estimator(folder)
    except RecommenderError:
        raise
    except Exception as exc:
        raise RecommenderError(f"cannot read the estimator files of {folder} "
                               f"({meta.get('estimator_files')}): {type(exc).__name__}: {exc}") from None
    n_feat = len(fz.feature_names_)
    got = _n_inputs(rec)
    if got is not None and got != n_feat:
        raise SchemaMismatchError(f"{folder}: the estimator expects {got} features but the feature schema "
                                  f"has {n_feat}; the files do not belong together. Retrain it.")
    tz = fz.train_z_
    rec.history_ = HistoryFrame(
        targets=pd.DataFrame({"model": tz["model"], "dataset": tz["dataset"], "value": tz["value"]}),
        models=fz.models_meta_, datasets=fz.datasets_meta_, scores=fz.scores_)
    return rec


def _n_inputs(rec):
    if hasattr(rec, "coef_"):
        return len(rec.coef_)
    if hasattr(rec, "w_"):
        return rec.w_.shape[1]
    if hasattr(rec, "booster_"):
        return rec.booster_.num_feature()
    return None
