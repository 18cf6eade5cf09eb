"""Popularity statistics of a history: how good each model is across datasets.

``additive_effects`` fits ``y(m, t) ~ a_m + b_t`` on the observed (model, dataset) cells. Its
model effect ``a_m`` is the popularity that the ``model-additive`` baseline ranks by and that
the default ``blend`` recommender starts from. Unlike a model's plain mean accuracy
(``model-mean``), it is not biased by which datasets a model happens to have been run on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["additive_effects"]


def additive_effects(targets: pd.DataFrame, *, standardize: bool = True, iters: int = 100,
                     tol: float = 1e-10) -> tuple[pd.Series, pd.Series]:
    """Model and dataset effects ``(a, b)`` of the additive fit ``y(m, t) ~ a_m + b_t``.

    Fitted by alternating least squares on the observed cells only (the history matrix has
    holes); ``y`` is the accuracy standardized within each dataset when ``standardize``.
    The model effects are centred (mean 0).
    """
    t = targets.dropna(subset=["value"])
    if t.empty:
        return pd.Series(dtype=float), pd.Series(dtype=float)
    y = t["value"].to_numpy(dtype=float)
    di, dk = pd.factorize(t["dataset"], sort=True)
    if standardize:
        n_d = np.bincount(di, minlength=len(dk)).astype(float)
        mu = np.bincount(di, y, len(dk)) / n_d
        sd = np.sqrt(np.bincount(di, (y - mu[di]) ** 2, len(dk)) / n_d)
        y = (y - mu[di]) / np.where(sd > 1e-12, sd, 1.0)[di]
    mi, mk = pd.factorize(t["model"], sort=True)
    n_m = np.bincount(mi, minlength=len(mk)).astype(float)
    n_d = np.bincount(di, minlength=len(dk)).astype(float)
    a, b = np.zeros(len(mk)), np.zeros(len(dk))
    for _ in range(iters):
        b = np.bincount(di, y - a[mi], len(dk)) / n_d
        a_new = np.bincount(mi, y - b[di], len(mk)) / n_m
        done = np.max(np.abs(a_new - a)) < tol
        a = a_new
        if done:
            break
    shift = a.mean()
    return pd.Series(a - shift, index=mk), pd.Series(b + shift, index=dk)
