"""``lgbm`` (gradient-boosted regression trees) and ``lgbm-rank`` (LambdaRank) on LightGBM.

``lgbm`` regresses the per-dataset normalized accuracy. ``lgbm-rank`` optimizes NDCG of
the ranking of models within each training dataset (Burges, "From RankNet to LambdaRank
to LambdaMART", 2010); its labels are graded relevance ``floor(q * (levels-1))`` with
``q`` the within-dataset accuracy quantile. Its raw outputs are ranking scores, which
are reported on the accuracy scale through a monotone map from score to
normalized accuracy: an increasing linear map ``a * score + b`` (a > 0) fitted by least
squares on the training rows -- so the ranking (and the Pearson correlation) is the
ranker's own and ``predicted`` is a calibrated accuracy estimate; the raw scores are
available from ``predict_score``. Both are seeded and deterministic (``deterministic=True``, one thread).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from history.errors import RecommenderError

from ..defaults import DEFAULT_FEATURES
from .base import TabularRecommender


def _lgb_params(self, objective: str) -> dict:
    return {
        "objective": objective, "learning_rate": float(self.learning_rate), "num_leaves": int(self.num_leaves),
        "min_data_in_leaf": int(self.min_child_samples), "feature_fraction": float(self.colsample),
        "bagging_fraction": float(self.subsample), "bagging_freq": 1 if self.subsample < 1 else 0,
        "lambda_l2": float(self.reg_lambda), "seed": int(self.random_state), "deterministic": True,
        "force_row_wise": True, "num_threads": int(self.n_jobs), "verbose": -1,
    }


class _LGBMBase(TabularRecommender):
    """What ``lgbm`` and ``lgbm-rank`` share: the LightGBM hyper-parameters, prediction, save / load."""

    has_uncertainty = False

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0,
                 target_norm: str = "dataset", n_estimators: int = 300, learning_rate: float = 0.03,
                 num_leaves: int = 15, min_child_samples: int = 20, colsample: float = 0.8,
                 subsample: float = 0.8, reg_lambda: float = 1.0, n_jobs: int = 1, collab_bandwidth: float = 1.0,
                 model_ids=None,
                 collab: bool = True, interactions: bool = False):
        self.features = features
        self.random_state = random_state
        self.target_norm = target_norm
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample = colsample
        self.subsample = subsample
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.collab_bandwidth = collab_bandwidth
        self.model_ids = model_ids
        self.collab = collab
        self.interactions = interactions

    def _predict_raw(self, X):
        return self.booster_.predict(X.tocsr(), num_threads=int(self.n_jobs))

    def _save_estimator(self, folder: Path) -> list[str]:
        self.booster_.save_model(str(folder / "lgbm_model.txt"))
        return ["lgbm_model.txt"]

    def _load_estimator(self, folder: Path) -> None:
        import lightgbm as lgb

        f = folder / "lgbm_model.txt"
        try:
            self.booster_ = lgb.Booster(model_file=str(f))
        except Exception as exc:  # lightgbm raises LightGBMError on a corrupt file
            raise RecommenderError(f"cannot read the LightGBM model file {f}: {exc}") from None


class LGBMRecommender(_LGBMBase):
    name = "lgbm"

    def _fit_estimator(self, X, y, groups, targets):
        import lightgbm as lgb

        ds = lgb.Dataset(X.tocsr(), label=y, feature_name=_safe_names(self.featurizer_.feature_names_),
                         free_raw_data=True, params={"verbose": -1})
        self.booster_ = lgb.train(_lgb_params(self, "regression"), ds, num_boost_round=int(self.n_estimators))

    def _predict_estimator(self, X):
        return self._predict_raw(X)


class LGBMRankRecommender(_LGBMBase):
    name = "lgbm-rank"

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0,
                 target_norm: str = "dataset", n_estimators: int = 300, learning_rate: float = 0.03,
                 num_leaves: int = 15, min_child_samples: int = 20, colsample: float = 0.8,
                 subsample: float = 0.8, reg_lambda: float = 1.0, relevance_levels: int = 16,
                 truncation_level=None, n_jobs: int = 1, collab_bandwidth: float = 1.0, model_ids=None,
                 collab: bool = True, interactions: bool = False):
        super().__init__(features, random_state, target_norm, n_estimators, learning_rate, num_leaves,
                         min_child_samples, colsample, subsample, reg_lambda, n_jobs, collab_bandwidth, model_ids,
                         collab, interactions)
        self.relevance_levels = relevance_levels
        self.truncation_level = truncation_level

    def _fit_estimator(self, X, y, groups, targets):
        import lightgbm as lgb

        L = int(self.relevance_levels)
        if not 2 <= L <= 31:
            raise RecommenderError(f"lgbm-rank: relevance_levels must be in 2..31, got {L}")
        order = np.argsort(groups, kind="mergesort")
        g_sorted = groups[order]
        q = targets["value"].groupby(targets["dataset"]).rank(pct=True, method="average").to_numpy()
        label = np.floor(q * (L - 1) + 1e-9).astype(int)
        sizes = np.bincount(g_sorted)
        sizes = sizes[sizes > 0]
        Xs = X.tocsr()[order]
        params = _lgb_params(self, "lambdarank")
        params.update({"label_gain": [float(2 ** i - 1) for i in range(L)],
                       "lambdarank_truncation_level": self._truncation(int(sizes.max()))})
        ds = lgb.Dataset(Xs, label=label[order], group=sizes,
                         feature_name=_safe_names(self.featurizer_.feature_names_), params={"verbose": -1})
        self.booster_ = lgb.train(params, ds, num_boost_round=int(self.n_estimators))
        score = self._predict_raw(X)
        # monotone (increasing linear) map score -> normalized accuracy, least squares on
        # the training rows; a non-positive slope (no signal) falls back to a tiny one
        A = np.column_stack([score, np.ones_like(score)])
        slope, icpt = np.linalg.lstsq(A, y, rcond=None)[0]
        if not slope > 0:
            slope, icpt = 1e-6, float(np.mean(y))
        self.calib_ = np.array([float(slope), float(icpt)])

    def _truncation(self, max_group: int) -> int:
        """LambdaRank truncation level: ``truncation_level`` or, when None, ``clip(10^5 / G, 20, 50)``
        with ``G`` the largest group (models per dataset). The gradient costs ~ level x G per
        dataset and iteration: 50 for histories like TransferGraph (G ~ 200), 20 for 10^4
        models per dataset (halves the training time at 10^6 jobs)."""
        if self.truncation_level is None:
            level = int(np.clip(100_000 // max(max_group, 1), 20, 50))
        else:
            level = int(self.truncation_level)
            if level < 1:
                raise RecommenderError(f"lgbm-rank: truncation_level must be >= 1 or None, got {level}")
        return int(min(max_group, level))

    def predict_score(self, pairs, history=None) -> np.ndarray:
        """The raw LambdaRank scores (comparable within a dataset only)."""
        pairs, X = self._features(pairs, history)
        return self._predict_raw(X)

    def _predict_estimator(self, X):
        return self.calib_[0] * self._predict_raw(X) + self.calib_[1]

    def _save_estimator(self, folder: Path) -> list[str]:
        files = super()._save_estimator(folder)
        np.savez(folder / "calibration.npz", calib=self.calib_)
        return files + ["calibration.npz"]

    def _load_estimator(self, folder: Path) -> None:
        super()._load_estimator(folder)
        with np.load(folder / "calibration.npz", allow_pickle=False) as z:
            self.calib_ = z["calib"]


def _safe_names(names):
    """LightGBM forbids some JSON characters in feature names."""
    import re

    out, seen = [], set()
    for i, n in enumerate(names):
        s = re.sub(r"[^A-Za-z0-9_.\-]", "_", n)
        if s in seen:
            s = f"{s}__{i}"
        seen.add(s)
        out.append(s)
    return out
