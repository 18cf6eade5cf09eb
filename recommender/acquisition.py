"""Acquisition: which model a budgeted search fine-tunes next, given the posterior of
:mod:`recommender.adaptive` (the update rule lives there; this module only chooses).

Two acquisitions over the fitted ranker's posterior:

``mean``       the untried model with the highest posterior mean (the ``adaptive`` strategy);
``portfolio``  spend part of the remaining budget where the target may deviate from the
               prior: with ``r`` fine-tunes left, build greedily the set of ``r`` untried
               models that maximises the *expected best accuracy* of the search,
               ``E[max(best so far, f(m) for m in the set)]``, the expectation taken over
               :data:`SAMPLES` Monte-Carlo draws of the joint GP posterior (so two models
               that always move together are worth little more than one, while a model that
               the history says is good exactly where the favourites are not is a hedge);
               then fine-tune the member of that set with the highest posterior mean first
               (its result updates the posterior before the hedges are spent). With one
               fine-tune left this is the pick that maximises the expected improvement
               over the best so far; with nothing observed and one fine-tune, the top model.

Both are deterministic (the draws use a fixed seed), ties go to the model name, and both
only read the ranker's prior mean, covariance and noise (``prior_``, ``cov_``, ``noise``,
``models_``) and its :meth:`posterior`.
"""
from __future__ import annotations

import numpy as np

#: the strategies of ``search`` (recommender/search.py runs them)
STRATEGIES = ("adaptive", "portfolio", "static", "halving")
#: the strategy ``search`` runs by default, and the one ``python -m experiments.budget`` measures as
#: ``default``: fixed on the development benchmarks (TransferGraph-image, SHiFT VTAB-1k, PARC
#: controlled, PARC all) by the rule written in experiments/BUDGET.md, then measured unchanged on
#: every other benchmark; a change here is a change of the default (rerun the budget protocol)
DEFAULT_STRATEGY = "adaptive"
#: when :data:`DEFAULT_STRATEGY` was fixed
DEFAULT_STRATEGY_FIXED_ON = "2026-12-06"
#: the acquisition (:func:`recommender.acquisition.choose_next`) of each one-at-a-time strategy
ACQUISITION = {"adaptive": "mean", "portfolio": "portfolio"}
#: the acquisitions :func:`choose_next` knows
ACQUISITIONS = ("mean", "portfolio")
#: Monte-Carlo draws of the joint posterior for the expected best of a portfolio
SAMPLES = 512
#: models considered for a portfolio: the untried ones with the highest mean + 2 sd
TOP = 40


def _observed(ranker, observed: dict):
    idx = getattr(ranker, "index_", {m: i for i, m in enumerate(ranker.models_)})
    return [(idx[m], float(v)) for m, v in observed.items() if m in idx and v is not None and np.isfinite(v)]


def joint_posterior(ranker, observed: dict, rows) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and covariance of the models at positions ``rows`` of ``ranker.models_``."""
    rows = np.asarray(rows, dtype=int)
    mean = ranker.posterior(observed).to_numpy(float)[rows]
    cov = ranker.cov_
    obs = _observed(ranker, observed)
    k_rr = cov[np.ix_(rows, rows)]
    if not obs:
        return mean, k_rr
    o = np.array([i for i, _ in obs])
    k_oo = cov[np.ix_(o, o)] + ranker.noise**2 * np.eye(len(o))
    k_ro = cov[np.ix_(rows, o)]
    return mean, k_rr - k_ro @ np.linalg.solve(k_oo, k_ro.T)


def _draws(mean: np.ndarray, cov: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """``samples`` x len(mean) draws of N(mean, cov) (eigen-decomposition: cov may be singular)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    root = v * np.sqrt(np.clip(w, 0.0, None))
    z = np.random.default_rng(seed).standard_normal((samples, len(mean)))
    return mean + z @ root.T


def portfolio(mean: np.ndarray, cov: np.ndarray, best: float, size: int, *, samples: int = SAMPLES,
              seed: int = 0) -> list[int]:
    """Greedy set of ``size`` positions maximising the Monte-Carlo expected max of
    ``max(best, f[set])`` with ``f ~ N(mean, cov)`` (ties: the lower position)."""
    f = _draws(mean, cov, samples, seed)
    run = np.full(samples, best if np.isfinite(best) else -np.inf)
    chosen: list[int] = []
    for _ in range(min(size, len(mean))):
        gain = np.maximum(f, run[:, None]).mean(axis=0)
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        run = np.maximum(run, f[:, j])
    return chosen


def choose_next(acquisition: str, ranker, observed: dict, remaining: int = 1, exclude=()) -> tuple:
    """``(model, predicted accuracy)`` to fine-tune next, or ``(None, None)`` when none is left.

    ``ranker``: a fitted :class:`~recommender.adaptive.AdaptiveRanker` (or
    :class:`~recommender.adaptive.ConditionalRanker`); ``observed``: ``{model: accuracy}``;
    ``remaining``: fine-tunes left in the budget, this one included (``portfolio`` only);
    ``exclude``: models never to pick (e.g. failed ones)."""
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; valid: {', '.join(ACQUISITIONS)}")
    post = ranker.posterior(observed)
    skip = set(observed) | set(exclude)
    left = [i for i, m in enumerate(ranker.models_) if m not in skip]
    if not left:
        return None, None
    mean_all = post.to_numpy(float)
    if acquisition == "mean" or int(remaining) <= 1 and not _observed(ranker, observed):
        top = max(mean_all[i] for i in left)
        m = min(ranker.models_[i] for i in left if mean_all[i] == top)
        return m, float(post[m])
    sd = np.sqrt(np.clip(np.diag(joint_posterior(ranker, observed, left)[1]), 0.0, None))
    ucb = mean_all[left] + 2 * sd
    # the TOP most promising by mean + 2 sd (ties: model name), in name order for determinism
    order = sorted(range(len(left)), key=lambda k: (-ucb[k], ranker.models_[left[k]]))[:TOP]
    rows = sorted((left[k] for k in order), key=lambda i: ranker.models_[i])
    mean, cov = joint_posterior(ranker, observed, rows)
    vals = [v for _, v in _observed(ranker, observed)]
    chosen = portfolio(mean, cov, max(vals) if vals else -np.inf, int(remaining))
    pick = max(chosen, key=lambda j: (mean[j], -j)) if len(chosen) > 1 else chosen[0]
    m = ranker.models_[rows[pick]]
    return m, float(post[m])
