"""Warm start: update a ranking with the fine-tunes already observed on the target dataset.

A static recommender predicts every model's accuracy once. Each real fine-tune on the new
dataset is better evidence than any prediction, and it also says something about the
models not tried yet: models that did well (or badly) together on past datasets tend to
do so again. :class:`AdaptiveRanker` makes that precise with a Gaussian-process posterior
over the target dataset's accuracies:

* prior mean: the recommender's predictions ``mu(m)``;
* prior covariance between models ``m, m'``: how their accuracies co-vary across the
  history's datasets, ``C = Z Z^T / D`` with ``Z`` the accuracies centred per dataset and
  then per model (the prior mean already holds a model's overall strength; a model absent
  from a dataset counts as that dataset's mean), plus an independent part
  ``s * I`` (``s``: a tenth of the mean variance) so that models unseen in the history
  still get uncertainty, plus a constant ``c * 1 1^T`` for the unknown difficulty of the
  new dataset (``c``: the variance of the dataset means);
* observations: the fine-tuned accuracies, with noise variance ``noise**2``.

The posterior mean ``mu_u + K_uo (K_oo + noise**2 I)^-1 (y_o - mu_o)`` is the new predicted
accuracy of every model not tried yet, with a posterior variance. The next pick maximises
the *expected improvement* over the best accuracy found so far (the standard acquisition
of Bayesian optimisation: a model with a slightly lower mean but a much wider spread can
be worth more than a near-copy of one already tried); ``acquisition_fn="mean"`` picks the
highest posterior mean instead. With no observation the ranking is the recommender's. All
constants are fixed in advance (none is tuned on held-out results).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

#: observation noise (accuracy, fraction): about one point, the seed-to-seed spread of a fine-tune
NOISE = 0.01
#: independent prior variance, as a fraction of the mean per-model variance across datasets
INDEPENDENT = 0.1


def model_covariance(targets: pd.DataFrame, models, exclude=()) -> tuple[np.ndarray, float]:
    """(covariance [n, n] of ``models`` across the datasets of ``targets``, variance of dataset means).

    ``targets``: columns model, dataset, value. Datasets in ``exclude`` are left out.
    """
    t = targets[~targets["dataset"].isin(set(exclude))]
    t = t[t["value"].notna()]
    models = list(models)
    if t.empty:
        return np.zeros((len(models), len(models))), 0.0
    mat = t.pivot_table(index="model", columns="dataset", values="value", aggfunc="max")
    means = mat.mean(axis=0)
    z = (mat - means).reindex(models)
    # the prior mean already holds each model's overall strength, so the covariance is of what
    # is left: accuracies centred per dataset AND per model (a model's own mean removed)
    z = z.sub(z.mean(axis=1), axis=0).fillna(0.0).to_numpy(float)
    d = max(z.shape[1], 1)
    return z @ z.T / d, float(means.var(ddof=0)) if len(means) > 1 else 0.0


class AdaptiveRanker:
    """Posterior predicted accuracies of ``models`` given observed fine-tunes (see module doc).

    Parameters are set in ``__init__``; :meth:`fit` reads the history and the prior,
    :meth:`posterior` conditions on observations ``{model: accuracy}``.
    """

    def __init__(self, noise: float = NOISE, independent: float = INDEPENDENT, acquisition_fn: str = "ei"):
        self.noise = noise
        self.independent = independent
        self.acquisition_fn = acquisition_fn

    def fit(self, prior: pd.Series, targets: pd.DataFrame, exclude=()) -> "AdaptiveRanker":
        """``prior``: predicted accuracy per model (index = model); ``targets``: the history."""
        self.models_ = list(prior.index)
        self.prior_ = prior.astype(float).to_numpy()
        fill = np.nanmean(self.prior_) if np.isfinite(self.prior_).any() else 0.0
        self.prior_ = np.where(np.isfinite(self.prior_), self.prior_, fill)
        cov, level = model_covariance(targets, self.models_, exclude)
        diag = np.diag(cov)
        base = float(diag[diag > 0].mean()) if (diag > 0).any() else 1e-3
        self.cov_ = cov + self.independent * base * np.eye(len(self.models_)) + max(level, 1e-6)
        self.index_ = {m: i for i, m in enumerate(self.models_)}
        return self

    def _condition(self, observed: dict):
        obs = [(self.index_[m], float(v)) for m, v in observed.items() if m in self.index_ and v is not None
               and np.isfinite(v)]
        mean = self.prior_.copy()
        var = np.diag(self.cov_).copy()
        if obs:
            o = np.array([i for i, _ in obs])
            y = np.array([v for _, v in obs])
            k_oo = self.cov_[np.ix_(o, o)] + self.noise**2 * np.eye(len(o))
            k_ao = self.cov_[:, o]
            mean = self.prior_ + k_ao @ np.linalg.solve(k_oo, y - self.prior_[o])
            var = var - np.einsum("ij,ji->i", k_ao, np.linalg.solve(k_oo, k_ao.T))
            mean[o] = y
            var[o] = 0.0
        return mean, np.sqrt(np.clip(var, 0.0, None))

    def posterior(self, observed: dict) -> pd.Series:
        """Posterior mean accuracy of every model (observed ones keep their observed value)."""
        return pd.Series(self._condition(observed)[0], index=self.models_)

    def posterior_std(self, observed: dict) -> pd.Series:
        return pd.Series(self._condition(observed)[1], index=self.models_)

    def acquisition(self, observed: dict) -> pd.Series:
        """Score of each model as the next fine-tune (higher first).

        ``acquisition="ei"``: expected improvement over the best accuracy observed so far,
        ``E[max(0, f(m) - best)]`` under the posterior; with nothing observed, the posterior
        mean (the first pick is the recommender's top model). ``"mean"``: the posterior mean.
        """
        from scipy.stats import norm

        mean, std = self._condition(observed)
        vals = [float(v) for m, v in observed.items() if m in self.index_ and v is not None and np.isfinite(v)]
        if self.acquisition_fn == "mean" or not vals:
            return pd.Series(mean, index=self.models_)
        best = max(vals)
        sd = np.maximum(std, 1e-9)
        z = (mean - best) / sd
        ei = (mean - best) * norm.cdf(z) + sd * norm.pdf(z)
        return pd.Series(ei, index=self.models_)

    def next_pick(self, observed: dict, exclude=()) -> str | None:
        """The untried model with the highest acquisition score (ties: model name)."""
        score = self.acquisition(observed)
        skip = set(observed) | set(exclude)
        left = score[[m not in skip for m in score.index]]
        if left.empty:
            return None
        best = left.max()
        return sorted(left.index[left == best])[0]
