"""Shared machinery of the learned recommenders: featurize -> normalize targets -> estimator.

Target normalization (``target_norm="dataset"``, the default): the estimator is trained on
``y' = (acc - mu_t) / sd_t`` with ``mu_t, sd_t`` the mean / std of the training
accuracies of dataset ``t``, so that it spends its capacity on *which model is better on
a dataset* rather than on how hard each dataset is. Predictions are mapped back with
``acc = mu_d + sd_d * y'``; for a dataset without training targets ``mu_d, sd_d`` are the
kernel-weighted averages of the training datasets' values (weights from the dataset
meta-features, see ``Featurizer``). Within a dataset this map is increasing and linear,
so it changes neither the ranking nor the Pearson correlation of the predictions.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from features.featurizer import FEATURE_SCHEMA_VERSION, Featurizer, check_pairs, parse_groups
from features.history_frame import HistoryFrame
from history.errors import RecommenderError
from history.util import json_default as _json_default

from ..base import BaseRecommender, NotFittedError

TARGET_NORMS = ("dataset", "none")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("finetune-recommender")
    except Exception:  # pragma: no cover - not installed
        return "0+unknown"


class TabularRecommender(BaseRecommender):
    """Base of the recommenders that learn ``f(features(model, dataset)) -> accuracy``.

    Subclasses implement ``_fit_estimator(X, y, groups)``, ``_predict_estimator(X)``,
    ``_save_estimator(folder) -> list[str]`` and ``_load_estimator(folder)``.
    """

    name: ClassVar[str] = ""
    # constructor parameters of every subclass
    features: str
    target_norm: str
    random_state: int
    #: featurizer keyword arguments taken from the recommender's params
    _featurizer_params: ClassVar[tuple] = ("collab_bandwidth", "model_ids", "collab", "interactions")

    # ------------------------------------------------------------------ fit
    def _validate_params(self):
        parse_groups(self.features)
        if self.target_norm not in TARGET_NORMS:
            raise RecommenderError(f"invalid target_norm {self.target_norm!r}; valid: {', '.join(TARGET_NORMS)}")

    def fit(self, history: HistoryFrame) -> TabularRecommender:
        if not isinstance(history, HistoryFrame):
            raise RecommenderError(
                f"{type(self).__name__}.fit expects a features.history_frame.HistoryFrame "
                f"(e.g. HistoryFrame.from_store(store)), got {type(history).__name__}.")
        self._validate_params()
        t = history.targets[history.targets["value"].notna()].reset_index(drop=True)
        if t.empty:
            raise RecommenderError(
                f"cannot train {self.name!r}: the history has no fine-tuning targets (0 rows with a value). "
                "Import a history first (recommender history import ...).")
        if t["model"].nunique() < 2:
            raise RecommenderError(f"cannot train {self.name!r}: the history has targets for fewer than 2 models.")
        # A single training dataset is allowed (setting 1: unseen models on a seen dataset):
        # the dataset-constant d features carry no signal, the collaborative statistics are all
        # missing (leave-own-dataset-out), and models are told apart by their m / s features.
        t0 = time.perf_counter()
        fz = Featurizer(groups=self.features,
                        **{k: getattr(self, k) for k in self._featurizer_params if hasattr(self, k)})
        fz.fit(history)
        X = fz.transform(t[["model", "dataset", "regime"]], history)
        y = t["value"].to_numpy(dtype=float)
        stats = t.groupby("dataset")["value"].agg(["mean", lambda x: x.std(ddof=0)])
        stats.columns = ["mean", "std"]
        if self.target_norm == "dataset":
            mu = t["dataset"].map(stats["mean"]).to_numpy()
            sd = t["dataset"].map(stats["std"]).to_numpy()
            sd = np.where(sd > 1e-6, sd, 1.0)
            yn = (y - mu) / sd
        else:
            yn = y
        groups = pd.factorize(t["dataset"], sort=True)[0]
        rng_state = self.random_state
        self.featurizer_ = fz
        self.dataset_stats_ = {d: [float(r["mean"]), float(r["std"])] for d, r in stats.iterrows()}
        self._fit_estimator(X, yn, groups, t)
        self.history_ = history
        self.training_summary_ = {
            **history.summary(), "n_features": int(X.shape[1]), "random_state": rng_state,
            "fit_seconds": round(time.perf_counter() - t0, 3),
            "target_mean": float(np.mean(y)), "target_std": float(np.std(y)),
        }
        return self

    # ------------------------------------------------------------------ predict
    def _check_fitted(self):
        if not hasattr(self, "featurizer_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() (or run `train`) first.")

    def check_is_fitted(self):
        self._check_fitted()

    def _scale(self, pairs: pd.DataFrame, history) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (mu, sd) mapping normalized predictions back to accuracies."""
        n = len(pairs)
        if self.target_norm != "dataset":
            return np.zeros(n), np.ones(n)
        codes, uniq = pd.factorize(pairs["dataset"].astype(str), sort=False)
        fz = self.featurizer_
        known = [self.dataset_stats_.get(d) for d in uniq]
        mu_u = np.array([k[0] if k else np.nan for k in known], dtype=float)
        sd_u = np.array([k[1] if k else np.nan for k in known], dtype=float)
        unknown = np.isnan(mu_u)
        if unknown.any():
            tnames = list(self.dataset_stats_)
            w = fz.dataset_weights(np.asarray(uniq)[unknown], history, train_datasets=tnames) + 1e-12
            tm = np.array([self.dataset_stats_[d][0] for d in tnames])
            ts = np.array([self.dataset_stats_[d][1] for d in tnames])
            mu_u[unknown] = (w @ tm) / w.sum(1)
            sd_u[unknown] = (w @ ts) / w.sum(1)
        sd_u = np.where(sd_u > 1e-6, sd_u, 1.0)
        return mu_u[codes], sd_u[codes]

    def _features(self, pairs, history):
        self._check_fitted()
        if history is not None and not isinstance(history, HistoryFrame):
            raise RecommenderError(f"history must be a HistoryFrame, got {type(history).__name__}")

        pairs = check_pairs(pairs)
        return pairs, self.featurizer_.transform(pairs, history)

    def predict(self, pairs: pd.DataFrame, history=None) -> np.ndarray:
        pairs, X = self._features(pairs, history)
        if len(pairs) == 0:
            return np.zeros(0)
        yn = self._normalized_prediction(pairs, np.asarray(self._predict_estimator(X), dtype=float))
        mu, sd = self._scale(pairs, history)
        return mu + sd * yn

    def _normalized_prediction(self, pairs: pd.DataFrame, yn: np.ndarray) -> np.ndarray:
        """The estimator's normalized predictions as the recommender predicts them (a subclass may
        combine them with other per-pair terms before they are mapped back to accuracies)."""
        return yn

    def recommend(self, dataset, k=5, history=None, models=None, exclude=()):
        self._check_fitted()
        return super().recommend(dataset, k=k, history=history, models=models, exclude=exclude)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Write the fitted recommender to the folder ``path`` (JSON / npz / parquet / native)."""
        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state, tables = self.featurizer_.get_state()
        (folder / "featurizer.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        for name, df in tables.items():
            df.to_parquet(folder / f"{name}.parquet", index=False)
        files = self._save_estimator(folder)
        meta = {
            "format": "finetune-recommender/1",
            "recommender": self.name,
            "class": type(self).__name__,
            "params": self.get_params(),
            "feature_schema": self.featurizer_.schema(),
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "package_version": package_version(),
            "training_summary": self.training_summary_,
            "dataset_stats": self.dataset_stats_,
            "estimator_files": files,
            "table_files": [f"{n}.parquet" for n in tables],
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=_json_default))
        return folder

    # subclasses
    def _fit_estimator(self, X, y, groups, targets):  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_estimator(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _save_estimator(self, folder: Path) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_estimator(self, folder: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def grouped_folds(groups: np.ndarray, n_splits: int = 5):
    """Leave-groups-out folds over datasets: ``[(train_idx, val_idx), ...]`` (deterministic).

    With a single group (one training dataset) the rows themselves are split into
    ``n_splits`` interleaved folds (each row is one model of that dataset, so this holds
    out models: the setting-1 question). Empty when there are fewer than 2 rows.
    """
    uniq = np.unique(groups)
    if len(uniq) < 2:
        n = len(groups)
        k = min(n_splits, n)
        return ([(np.setdiff1d(np.arange(n), np.arange(f, n, k)), np.arange(f, n, k)) for f in range(k)]
                if k >= 2 else [])
    k = min(n_splits, len(uniq))
    folds = []
    for f in range(k):
        val_groups = uniq[f::k]
        val = np.isin(groups, val_groups)
        folds.append((np.nonzero(~val)[0], np.nonzero(val)[0]))
    return folds
