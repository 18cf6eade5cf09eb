"""``lr``: ridge regression on the features, alpha chosen by cross-validation grouped by dataset.

``min_w ||y' - Xw - b||^2 + alpha ||w||^2``; ``alpha`` is picked from ``alphas`` by
leave-datasets-out CV (``cv_folds`` folds, each holding out whole datasets, so the choice
mimics recommending for a new dataset), scored by mean squared error on held-out rows.
The featurizer is refitted inside each inner fold on the fold's training targets only, so
the collaborative features of the validation rows never see the validation targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.featurizer import Featurizer
from history.errors import RecommenderError

from ..defaults import DEFAULT_FEATURES
from .base import TabularRecommender, grouped_folds


class LinearRecommender(TabularRecommender):
    name = "lr"
    has_uncertainty = False

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0,
                 target_norm: str = "dataset", alphas: tuple = (0.1, 1.0, 10.0, 100.0, 1000.0), cv_folds: int = 5,
                 collab_bandwidth: float = 1.0, model_ids=None,
                 collab: bool = True, interactions: bool = False, unpenalized: str = ""):
        self.features = features
        self.random_state = random_state
        self.target_norm = target_norm
        self.alphas = alphas
        self.cv_folds = cv_folds
        self.collab_bandwidth = collab_bandwidth
        self.model_ids = model_ids
        self.collab = collab
        self.interactions = interactions
        self.unpenalized = unpenalized

    def fit(self, history):
        self._cv_history = history  # the inner folds of the alpha choice refit the featurizer on it
        try:
            return super().fit(history)
        finally:
            del self._cv_history

    def _fold_features(self, targets, tr, va):
        """(X_train, X_val) of one inner fold, featurized by a featurizer fitted without the
        validation rows' targets."""
        hist = self._cv_history
        val = targets.iloc[va]
        if targets["dataset"].nunique() > 1:
            sub = hist.drop_targets(datasets=sorted(val["dataset"].unique()))
        else:  # one training dataset: the folds hold out models of it
            sub = hist.drop_targets(pairs=val[["model", "dataset"]])
        fz = Featurizer(groups=self.features,
                        **{k: getattr(self, k) for k in self._featurizer_params if hasattr(self, k)})
        fz.fit(sub)
        cols = ["model", "dataset", "regime"]
        scale = self._column_scale(fz)
        import scipy.sparse as sp

        both = pd.concat([targets.iloc[tr][cols], val[cols]], ignore_index=True)
        X = fz.transform(both, sub)  # one call: the featurizer's per-call context is the costly part
        Xtr, Xva = X[: len(tr)], X[len(tr):]
        if (scale != 1).any():
            Xtr, Xva = Xtr @ sp.diags(scale), Xva @ sp.diags(scale)
        return Xtr, Xva

    def _column_scale(self, fz=None):
        """Columns named in ``unpenalized`` are multiplied by 1e3 before the ridge (penalty / 1e6)."""
        names = [n.strip() for n in str(self.unpenalized or "").split(",") if n.strip()]
        fn = (fz or self.featurizer_).feature_names_
        unknown = [n for n in names if n not in fn]
        if unknown:
            raise RecommenderError(f"lr: unpenalized feature(s) {unknown} are not among the {len(fn)} features "
                                   f"(e.g. m:pretrain_matches_dataset)")
        scale = np.ones(len(fn))
        scale[[fn.index(n) for n in names]] = 1e3
        return scale

    def _fit_estimator(self, X, y, groups, targets):
        import scipy.sparse as sp
        from sklearn.linear_model import Ridge  # imported here: predict needs no scikit-learn

        scale = self._column_scale()
        X = X @ sp.diags(scale) if (scale != 1).any() else X
        alphas = [float(a) for a in self.alphas]
        if not alphas or any(a <= 0 for a in alphas):
            raise RecommenderError(f"lr: alphas must be positive numbers, got {self.alphas!r}")
        cv = {}
        folds = grouped_folds(groups, self.cv_folds) if len(alphas) > 1 else []
        if folds:
            errs = {a: [] for a in alphas}
            refit = getattr(self, "_cv_history", None) is not None and targets is not None
            for tr, va in folds:
                Xtr, Xva = self._fold_features(targets, tr, va) if refit else (X[tr], X[va])
                for a in alphas:
                    m = Ridge(alpha=a).fit(Xtr, y[tr])
                    errs[a].append(np.mean((m.predict(Xva) - y[va]) ** 2))
            cv = {a: float(np.mean(e)) for a, e in errs.items()}
            alpha = min(cv, key=lambda a: (cv[a], a))
        else:  # one alpha, or too few rows to cross-validate: the median of the grid
            alpha = sorted(alphas)[len(alphas) // 2]
        m = Ridge(alpha=alpha).fit(X, y)
        self.alpha_ = alpha
        self.cv_mse_ = {str(k): v for k, v in cv.items()}
        self.coef_ = np.asarray(m.coef_, dtype=float).ravel() * scale
        self.intercept_ = float(m.intercept_)

    def _predict_estimator(self, X):
        return np.asarray(X @ self.coef_).ravel() + self.intercept_

    def _save_estimator(self, folder: Path) -> list[str]:
        np.savez(folder / "ridge.npz", coef=self.coef_, intercept=np.array([self.intercept_]),
                 alpha=np.array([self.alpha_]))
        return ["ridge.npz"]

    def _load_estimator(self, folder: Path) -> None:
        with np.load(folder / "ridge.npz", allow_pickle=False) as z:
            self.coef_ = z["coef"]
            self.intercept_ = float(z["intercept"][0])
            self.alpha_ = float(z["alpha"][0])
        self.cv_mse_ = {}
