"""``blend``: popularity plus a weighted learned residual -- the project's default recommender.

Within one dataset ``d`` the prediction, in the per-dataset standardized units of the
learned model (``y' = (acc - mu_d) / sd_d``, see :mod:`recommender.estimators.base`), is

.. math::  \\hat y'(m, d) = (1 - w)\\, a_m + w\\, f(m, d),

* ``a_m`` -- **popularity**: the model effect of a two-way additive fit
  ``z(m, t) ~ a_m + b_t`` of the training targets, standardized per dataset (the same
  baseline as ``model-additive``; unlike a plain mean it is not biased by which datasets a
  model happens to have);
* ``f(m, d)`` -- the ridge regression ``lr`` on the feature groups ``features``;
* ``w`` in ``weights`` -- how far to trust the learned residual ``f - a``. It is chosen on
  ``inner_folds`` folds of the *training* datasets (each fold holds out whole datasets,
  as a new dataset would be), maximizing the mean weighted Kendall tau of the held-out
  datasets, a smooth ranking objective (regret@1 alone is too noisy to choose with); ties
  go to the smaller ``w``, closer to popularity.

A model without training targets has no popularity: its prediction is ``f`` alone. So
``w = 0`` is popularity, ``w = 1`` is ``lr``, and where the history carries no signal
beyond popularity the inner folds pull ``w`` towards 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.popularity import additive_effects
from history.errors import RecommenderError

from ..defaults import DEFAULT_FEATURES
from ..metrics import weighted_tau
from .base import grouped_folds
from .lr import LinearRecommender


class BlendRecommender(LinearRecommender):
    """Popularity (additive model effect) plus ``w`` x the ridge's learned residual; ``w`` by inner folds."""

    name = "blend"
    has_uncertainty = False

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0, target_norm: str = "dataset",
                 alphas: tuple = (0.1, 1.0, 10.0, 100.0, 1000.0), cv_folds: int = 5,
                 collab_bandwidth: float = 1.0, model_ids=None, collab: bool = True, interactions: bool = False,
                 unpenalized: str = "", weights: tuple = (0.0, 0.25, 0.5, 0.75, 1.0), inner_folds: int = 3):
        super().__init__(features=features, random_state=random_state, target_norm=target_norm, alphas=alphas,
                         cv_folds=cv_folds, collab_bandwidth=collab_bandwidth, model_ids=model_ids, collab=collab,
                         interactions=interactions, unpenalized=unpenalized)
        self.weights = weights
        self.inner_folds = inner_folds

    # ------------------------------------------------------------------ fit
    def _validate_params(self):
        super()._validate_params()
        w = [float(x) for x in self.weights]
        if not w or any(not 0.0 <= x <= 1.0 for x in w):
            raise RecommenderError(f"blend: weights must be numbers in [0, 1], got {self.weights!r}")
        if self.target_norm != "dataset":
            raise RecommenderError("blend: target_norm must be 'dataset' (popularity is blended in per-dataset "
                                   "standardized units)")

    def fit(self, history):
        super().fit(history)
        a, _ = additive_effects(history.targets)
        self.popularity_ = {str(k): float(v) for k, v in a.items()}
        self.weight_, self.weight_scores_ = self._choose_weight(history)
        self.training_summary_["blend_weight"] = self.weight_
        return self

    def _lr_params(self) -> dict:
        return {k: v for k, v in self.get_params().items() if k in LinearRecommender._param_names()}

    def _choose_weight(self, history) -> tuple[float, dict]:
        """``w`` maximizing the mean weighted tau of inner held-out datasets (ties: smaller ``w``)."""
        weights = sorted({float(x) for x in self.weights})
        t = history.targets.dropna(subset=["value"])
        datasets = np.array(sorted(t["dataset"].unique()))
        folds = grouped_folds(np.arange(len(datasets)), self.inner_folds) if len(datasets) >= 3 else []
        if len(weights) == 1 or not folds:
            # too few datasets to hold any out: the middle of the grid, said in the scores
            w = weights[len(weights) // 2]
            return w, {"note": f"{len(datasets)} training dataset(s): no inner folds, w = {w}"}
        taus: dict[float, list[float]] = {w: [] for w in weights}
        for _, va in folds:
            held = list(datasets[va])
            inner = history.drop_targets(datasets=held)
            lr = LinearRecommender(**self._lr_params()).fit(inner)
            pop, _ = additive_effects(inner.targets)
            test = t[t["dataset"].isin(held)]
            X = lr.featurizer_.transform(test[["model", "dataset", "regime"]], inner)
            f = np.asarray(lr._predict_estimator(X), dtype=float)
            a = test["model"].map(pop).to_numpy(dtype=float)
            a = np.where(np.isnan(a), f, a)
            y = test["value"].to_numpy(dtype=float)
            for _, idx in test.groupby("dataset").indices.items():
                if len(idx) < 3:
                    continue
                for w in weights:
                    tau = weighted_tau(y[idx], (1 - w) * a[idx] + w * f[idx])
                    if tau == tau:
                        taus[w].append(tau)
        means = {w: float(np.mean(v)) if v else float("nan") for w, v in taus.items()}
        ok = {w: m for w, m in means.items() if m == m}
        if not ok:
            w = weights[len(weights) // 2]
            return w, {"note": "no inner dataset with >= 3 models", **{str(k): v for k, v in means.items()}}
        best = max(ok.values())
        w = min(x for x, m in ok.items() if m >= best - 1e-12)
        return w, {str(k): v for k, v in means.items()}

    # ------------------------------------------------------------------ predict
    def _normalized_prediction(self, pairs: pd.DataFrame, yn: np.ndarray) -> np.ndarray:
        """``(1 - w) a_m + w f``; a model without training targets: the learned part ``f`` alone."""
        a = pairs["model"].astype(str).map(self.popularity_).to_numpy(dtype=float)
        a = np.where(np.isnan(a), yn, a)
        return (1.0 - self.weight_) * a + self.weight_ * yn

    # ------------------------------------------------------------------ persistence
    def _save_estimator(self, folder: Path) -> list[str]:
        files = super()._save_estimator(folder)
        state = {"weight": self.weight_, "weight_scores": self.weight_scores_, "popularity": self.popularity_}
        (folder / "blend.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        return files + ["blend.json"]

    def _load_estimator(self, folder: Path) -> None:
        super()._load_estimator(folder)
        state = json.loads((folder / "blend.json").read_text())
        self.weight_ = float(state["weight"])
        self.weight_scores_ = state.get("weight_scores", {})
        self.popularity_ = {str(k): float(v) for k, v in state["popularity"].items()}
