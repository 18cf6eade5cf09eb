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
accuracy of every model not tried yet, with a posterior variance. The next pick is the
highest posterior mean (``acquisition_fn="mean"``, the default); ``"ei"`` maximises the
expected improvement over the best accuracy found so far instead (it explores more);
``"ucb"`` the mean plus ``beta`` standard deviations. The budget protocol
(``experiments/budget.py``) chooses among them on inner folds. With no observation the
ranking is the recommender's. The kernel weights (shared, independent, dataset level, and
a term for the prior's unknown scale) are chosen by the marginal likelihood of the
*training* datasets; no result of the target dataset is used to choose them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

#: observation noise (accuracy, fraction): about one point, the seed-to-seed spread of a fine-tune
NOISE = 0.01
#: independent prior variance, as a fraction of the mean per-model variance across datasets
INDEPENDENT = 0.1
#: acquisitions: posterior mean, expected improvement, upper confidence bound
ACQUISITIONS = ("mean", "ei", "ucb")
#: standard deviations added by the ``ucb`` acquisition
BETA = 1.0


def history_matrix(targets: pd.DataFrame, exclude=()) -> pd.DataFrame:
    """Best accuracy per (model, dataset) as a wide frame (models x datasets), without ``exclude``.

    The rankers' :meth:`~AdaptiveRanker.fit` accepts it in place of the long targets (built
    once, it saves the pivot when many rankers are fitted on one history)."""
    t = targets[~targets["dataset"].isin(set(exclude)) & targets["value"].notna()]
    return t.pivot_table(index="model", columns="dataset", values="value", aggfunc="max")


def _matrix(targets: pd.DataFrame, models, exclude=()) -> pd.DataFrame:
    if "dataset" not in targets.columns:  # already wide
        wide = targets.drop(columns=[c for c in exclude if c in targets.columns])
        return wide.reindex(list(models))
    t = targets[~targets["dataset"].isin(set(exclude))]
    t = t[t["value"].notna()]
    if t.empty:
        return pd.DataFrame(index=list(models), dtype=float)
    return t.pivot_table(index="model", columns="dataset", values="value", aggfunc="max").reindex(list(models))


def _cov(mat: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Covariance of the rows of ``mat`` (models x datasets) after centring per dataset and per model."""
    n = len(mat)
    if mat.shape[1] == 0:
        return np.zeros((n, n)), 0.0
    means = mat.mean(axis=0)
    z = mat - means
    z = z.sub(z.mean(axis=1), axis=0).fillna(0.0).to_numpy(float)
    return z @ z.T / max(z.shape[1], 1), float(means.var(ddof=0)) if len(means) > 1 else 0.0


def model_covariance(targets: pd.DataFrame, models, exclude=()) -> tuple[np.ndarray, float]:
    """(covariance [n, n] of ``models`` across the datasets of ``targets``, variance of dataset means).

    ``targets``: columns model, dataset, value. Datasets in ``exclude`` are left out.
    """
    return _cov(_matrix(targets, models, exclude))


#: kernel weights tried by the marginal-likelihood calibration (see AdaptiveRanker.fit)
GRID = {"shared": (0.25, 1.0, 4.0), "independent": (0.03, 0.1, 0.3), "level": (0.25, 1.0, 4.0),
        "scale": (0.0, 0.5, 2.0)}


CALIBRATION_MODELS = 60
_CALIBRATED: dict = {}


def _components(cov, level, prior):
    n = len(prior)
    diag = np.diag(cov)
    base = float(diag[diag > 0].mean()) if (diag > 0).any() else 1e-3
    p = prior - prior.mean()
    pp = np.outer(p, p) / max(float(np.mean(p**2)), 1e-12) * base
    return {"shared": cov, "independent": base * np.eye(n), "level": np.full((n, n), max(level, 1e-6)),
            "scale": pp}


def _loglik(resid, K, noise):
    try:
        L = np.linalg.cholesky(K + noise**2 * np.eye(len(resid)))
    except np.linalg.LinAlgError:
        return -np.inf
    a = np.linalg.solve(L, resid)
    return float(-0.5 * a @ a - np.log(np.diag(L)).sum())


def update_rule(prior: pd.Series, targets: pd.DataFrame, dataset: str) -> AdaptiveRanker:
    """THE rule that updates predictions with a dataset's own results, shared by ``search`` and
    ``predict``: an :class:`AdaptiveRanker` (default parameters, kernel weights calibrated on the
    history's other datasets) with ``prior`` as its mean, fitted on ``targets`` without ``dataset``.
    ``update_rule(...).posterior(observed)`` is the updated prediction of every model."""
    return AdaptiveRanker().fit(prior, targets, exclude=[dataset])


def update_predictions(prior: pd.Series, targets: pd.DataFrame, dataset: str, observed: dict) -> pd.Series:
    """``prior`` updated with ``observed`` ``{model: accuracy}`` on ``dataset`` by :func:`update_rule`.

    With no usable observation (none, or none among ``prior``'s models) the prior itself is
    returned, unchanged (same object values, bit for bit)."""
    usable = {m: v for m, v in observed.items() if m in prior.index and v is not None and np.isfinite(v)}
    if not usable:
        return prior
    return update_rule(prior, targets, dataset).posterior(usable)


class AdaptiveRanker:
    """Posterior predicted accuracies of ``models`` given observed fine-tunes (see module doc).

    Parameters are set in ``__init__``; :meth:`fit` reads the history and the prior,
    :meth:`posterior` conditions on observations ``{model: accuracy}``.
    ``calibrate=True`` chooses the kernel weights by the marginal likelihood of the
    training datasets (each one treated as a new dataset: prior = the models' mean over the
    other training datasets, covariance from the other training datasets); no target
    dataset result is used.
    """

    def __init__(self, noise: float = NOISE, independent: float = INDEPENDENT, acquisition_fn: str = "mean",
                 calibrate: bool = True, beta: float = BETA):
        self.beta = beta
        self.noise = noise
        self.independent = independent
        self.acquisition_fn = acquisition_fn
        self.calibrate = calibrate

    def fit(self, prior: pd.Series, targets: pd.DataFrame, exclude=()) -> AdaptiveRanker:
        """``prior``: predicted accuracy per model (index = model); ``targets``: the history
        (long: columns model, dataset, value; or wide: :func:`history_matrix`)."""
        self.models_ = list(prior.index)
        self.prior_ = prior.astype(float).to_numpy()
        fill = np.nanmean(self.prior_) if np.isfinite(self.prior_).any() else 0.0
        self.prior_ = np.where(np.isfinite(self.prior_), self.prior_, fill)
        mat = _matrix(targets, self.models_, exclude)
        cov, level = _cov(mat)
        weights = {"shared": 1.0, "independent": self.independent, "level": 1.0, "scale": 0.0}
        if self.calibrate and mat.shape[1] >= 3:
            weights = self._calibrate(mat)
        self.weights_ = weights
        comp = _components(cov, level, self.prior_)
        self.cov_ = sum(w * comp[k] for k, w in weights.items())
        self.index_ = {m: i for i, m in enumerate(self.models_)}
        return self

    def _calibrate(self, mat: pd.DataFrame) -> dict:
        import hashlib
        import itertools

        # the picks happen among the strongest models: calibrate on the CALIBRATION_MODELS
        # models with the best mean over the training datasets (cheap, and the part that matters)
        top = mat.mean(axis=1).sort_values(ascending=False, kind="mergesort").index[:CALIBRATION_MODELS]
        mat = mat.loc[top]
        key = hashlib.sha256(pd.util.hash_pandas_object(mat.fillna(-1), index=True).to_numpy().tobytes()
                             + str(list(mat.columns)).encode() + str(self.noise).encode()).hexdigest()
        if key in _CALIBRATED:
            return dict(_CALIBRATED[key])
        keys = list(GRID)
        combos = list(itertools.product(*(GRID[k] for k in keys)))
        total = np.zeros(len(combos))
        vals = mat.to_numpy(float)
        for j, d in enumerate(mat.columns):
            obs = np.flatnonzero(np.isfinite(vals[:, j]))
            if len(obs) < 3:
                continue
            rest = mat.drop(columns=[d])
            cov, level = _cov(rest)
            mu = rest.mean(axis=1).to_numpy(float)
            mu = np.where(np.isfinite(mu), mu, np.nanmean(mu) if np.isfinite(mu).any() else 0.0)
            comp = _components(cov, level, mu)
            comp = {k: v[np.ix_(obs, obs)] for k, v in comp.items()}
            resid = vals[obs, j] - mu[obs] - 0.0
            for i, c in enumerate(combos):
                K = sum(w * comp[k] for k, w in zip(keys, c))
                total[i] += _loglik(resid, K, self.noise)
        best = dict(zip(keys, combos[int(np.argmax(total))]))
        _CALIBRATED[key] = best
        return dict(best)

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
        ``"ucb"``: posterior mean plus ``beta`` (default :data:`BETA`) posterior standard deviations.
        """
        return pd.Series(self._scores(observed), index=self.models_)

    def _scores(self, observed: dict) -> np.ndarray:
        from scipy.stats import norm

        mean, std = self._condition(observed)
        vals = [float(v) for m, v in observed.items() if m in self.index_ and v is not None and np.isfinite(v)]
        if self.acquisition_fn == "ucb":
            return mean + getattr(self, "beta", BETA) * std
        if self.acquisition_fn == "mean" or not vals:
            return mean
        best = max(vals)
        sd = np.maximum(std, 1e-9)
        z = (mean - best) / sd
        return (mean - best) * norm.cdf(z) + sd * norm.pdf(z)

    def next_pick(self, observed: dict, exclude=()) -> str | None:
        """The untried model with the highest acquisition score (ties: model name)."""
        score = self._scores(observed)
        skip = set(observed) | set(exclude)
        left = np.array([m not in skip for m in self.models_], dtype=bool)
        if not left.any():
            return None
        best = score[left].max()
        return min(m for m, ok, v in zip(self.models_, left, score) if ok and v == best)


class ConditionalRanker(AdaptiveRanker):
    """Gaussian conditional over models with the history's empirical model x model covariance.

    The accuracies of the target dataset are modelled as one Gaussian vector: mean = the
    prior (a recommender's predictions or the models' mean accuracy), covariance = how the
    models' *standardized* accuracies co-vary across the training datasets, shrunk toward
    its diagonal, in accuracy units:

    * ``Z``: accuracies standardized per training dataset (``(acc - mean_d) / sd_d``, so that
      a dataset with a wide spread does not dominate), then centred per model (the prior
      mean holds a model's overall strength); a missing pair counts as 0;
    * ``S = Z Z^T / D``; ``Sigma = sd^2 ((1 - shrinkage) S + shrinkage diag(S)) + c 1 1^T``
      with ``sd`` the median within-dataset spread, ``c`` the variance of the dataset means
      (the unknown level of the new dataset); models absent from the history get the mean
      diagonal.

    After fine-tunes ``{model: accuracy}`` the posterior of the others is the usual Gaussian
    conditional (noise ``noise``); :meth:`next_pick` takes the highest acquisition
    (``"mean"``, ``"ei"`` or ``"ucb"``). No kernel weight is fitted: ``shrinkage`` is the
    only constant, and the budget protocol chooses it on inner folds.
    """

    def __init__(self, shrinkage: float = 0.2, acquisition_fn: str = "mean", noise: float = NOISE,
                 beta: float = BETA):
        self.shrinkage = shrinkage
        self.acquisition_fn = acquisition_fn
        self.noise = noise
        self.beta = beta

    def fit(self, prior: pd.Series, targets: pd.DataFrame, exclude=()) -> ConditionalRanker:
        if not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        if self.acquisition_fn not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {self.acquisition_fn!r}; valid: {', '.join(ACQUISITIONS)}")
        self.models_ = list(prior.index)
        p = prior.astype(float).to_numpy()
        fill = np.nanmean(p) if np.isfinite(p).any() else 0.0
        self.prior_ = np.where(np.isfinite(p), p, fill)
        self.index_ = {m: i for i, m in enumerate(self.models_)}
        mat = _matrix(targets, self.models_, exclude)
        n = len(self.models_)
        if mat.shape[1] == 0:
            self.cov_ = (0.1**2) * np.eye(n)
            return self
        means, sds = mat.mean(axis=0), mat.std(axis=0, ddof=0)
        ok = sds > 1e-9
        z = mat.loc[:, ok].sub(means[ok], axis=1).div(sds[ok], axis=1)
        z = z.sub(z.mean(axis=1), axis=0).fillna(0.0).to_numpy(float)
        s = z @ z.T / max(z.shape[1], 1)
        diag = np.diag(s).copy()
        floor = float(diag[diag > 0].mean()) if (diag > 0).any() else 1.0
        diag = np.where(diag > 0, diag, floor)
        lam = float(self.shrinkage)
        s = (1 - lam) * s + lam * np.diag(diag)
        s[np.diag_indices(n)] = diag
        scale = float(np.median(sds[ok])) if ok.any() else 0.1
        level = float(means.var(ddof=0)) if len(means) > 1 else 0.0
        self.cov_ = scale**2 * s + level * np.ones((n, n))
        self.weights_ = {"shrinkage": lam, "scale": scale, "level": level}
        return self
