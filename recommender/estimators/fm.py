"""``fm``: a factorization machine (Rendle, "Factorization Machines", ICDM 2010); Li et al.
(CVPR 2023) use an FM as their recommender.

``S_FM(z) = w0 + sum_i w_i z_i + sum_{i<j} <v_i, v_j> z_i z_j``, computed as
``w0 + z.w + 1/2 sum_f [(z.V_f)^2 - (z^2).(V_f^2)]``.

Two implementations share the saved format ``fm_posterior.npz`` (``w0 [S]``, ``w [S, p]``,
``V [S, p, k]``, one slice per ensemble member / posterior sample):

* :class:`FMRecommender` (registered as ``fm``): the torch FM of :mod:`.fm_torch`, MAP /
  L2-regularized least squares by full-batch L-BFGS; ``n_members`` seeds form an ensemble
  whose std is ``predict_std``. Chosen over myfm and modern-fm by measurement, see
  ``docs/fm-choice.md`` and ``python -m experiments.fm_compare``.
* :class:`MyFMRecommender` (not registered, kept for ``experiments.fm_compare``): myfm's
  Bayesian FM (Gibbs sampling); ``predict_std`` is the posterior std.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from history.errors import RecommenderError

from ..defaults import DEFAULT_FEATURES
from .base import TabularRecommender
from .fm_torch import TorchFM, fm_score  # noqa: F401  (re-exported: the scoring kernel both FMs share)


class _FMSamplesMixin:
    """Prediction / uncertainty / persistence from stacked ``w0_, w_, V_`` samples."""

    has_uncertainty = True

    def _posterior(self, X):
        return fm_score(X.tocsr().astype(np.float64), self.w0_, self.w_, self.V_)

    def _predict_estimator(self, X):
        return self._posterior(X).mean(1)

    def predict_std(self, pairs, history=None):
        pairs, X = self._features(pairs, history)
        if len(pairs) == 0:
            return np.zeros(0)
        _, sd = self._scale(pairs, history)
        return self._posterior(X).std(1) * sd

    def _save_estimator(self, folder: Path) -> list[str]:
        np.savez(folder / "fm_posterior.npz", w0=self.w0_, w=self.w_, V=self.V_)
        return ["fm_posterior.npz"]

    def _load_estimator(self, folder: Path) -> None:
        with np.load(folder / "fm_posterior.npz", allow_pickle=False) as z:
            self.w0_, self.w_, self.V_ = z["w0"], z["w"], z["V"]


class FMRecommender(_FMSamplesMixin, TabularRecommender):
    """Factorization machine fitted by L-BFGS in torch (:class:`.fm_torch.TorchFM`).

    ``rank`` factors, ``l2_linear`` / ``l2_factors`` L2 penalties, ``n_iter`` L-BFGS
    iterations, ``n_members`` independently initialized members (prediction = their mean,
    ``predict_std`` = their std: optimization spread, not a Bayesian posterior).
    """

    name = "fm"

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0,
                 target_norm: str = "dataset", rank: int = 8, n_iter: int = 100, n_members: int = 3,
                 l2_linear: float = 1e-3, l2_factors: float = 1e-2, init_stdev: float = 0.1,
                 collab_bandwidth: float = 1.0, model_ids=None, collab: bool = False):
        self.features = features
        self.random_state = random_state
        self.target_norm = target_norm
        self.rank = rank
        self.n_iter = n_iter
        self.n_members = n_members
        self.l2_linear = l2_linear
        self.l2_factors = l2_factors
        self.init_stdev = init_stdev
        self.collab_bandwidth = collab_bandwidth
        self.model_ids = model_ids
        self.collab = collab

    def _fit_estimator(self, X, y, groups, targets):
        fm = TorchFM(rank=int(self.rank), l2_linear=float(self.l2_linear), l2_factors=float(self.l2_factors),
                     n_iter=int(self.n_iter), init_stdev=float(self.init_stdev),
                     n_members=int(self.n_members), random_state=int(self.random_state)).fit(X, y)
        self.w0_, self.w_, self.V_ = fm.w0_, fm.w_, fm.V_


class MyFMRecommender(_FMSamplesMixin, TabularRecommender):
    """myfm's Bayesian FM (Gibbs sampling, one hyper-prior group per feature block);
    ``n_kept_samples`` posterior samples; ``predict_std`` = posterior std. Not registered
    (see ``docs/fm-choice.md``); runnable from ``experiments.fm_compare``."""

    name = "fm-myfm"

    def __init__(self, features: str = DEFAULT_FEATURES, random_state: int = 0,
                 target_norm: str = "dataset", rank: int = 8, n_iter: int = 300, n_kept_samples: int = 100,
                 init_stdev: float = 0.1, collab_bandwidth: float = 1.0, model_ids=None,
                 collab: bool = False):
        self.features = features
        self.random_state = random_state
        self.target_norm = target_norm
        self.rank = rank
        self.n_iter = n_iter
        self.n_kept_samples = n_kept_samples
        self.init_stdev = init_stdev
        self.collab_bandwidth = collab_bandwidth
        self.model_ids = model_ids
        self.collab = collab

    def _fit_estimator(self, X, y, groups, targets):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import myfm
            except ModuleNotFoundError as exc:
                if exc.name != "myfm":
                    raise
                raise RecommenderError(
                    "MyFMRecommender needs the optional myfm package (experiments.fm_compare only): "
                    "pip install 'finetune-recommender[fm-compare]'") from None
        names = self.featurizer_.feature_names_
        # one hyper-prior group per feature block (d/m/s x dense/one-hot family)
        keys = [n.split("=")[0] if "=" in n else n.split(":")[0] + ":dense" for n in names]
        uniq = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        grouping = [uniq[k] for k in keys]
        n_kept = max(1, min(int(self.n_kept_samples), int(self.n_iter) - 1))
        fm = myfm.MyFMRegressor(rank=int(self.rank), init_stdev=float(self.init_stdev),
                                random_seed=int(self.random_state))
        devnull = open(os.devnull, "w")
        old = sys.stderr
        try:
            sys.stderr = devnull  # myfm writes a progress line per iteration
            fm.fit(X.tocsr().astype(np.float64), y, n_iter=int(self.n_iter), n_kept_samples=n_kept,
                   grouping=grouping)
        finally:
            sys.stderr = old
            devnull.close()
        samples = fm.predictor_.samples
        self.w0_ = np.array([s.w0 for s in samples], dtype=float)
        self.w_ = np.stack([np.asarray(s.w, dtype=float) for s in samples])
        self.V_ = np.stack([np.asarray(s.V, dtype=float) for s in samples])
