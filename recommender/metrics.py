"""Ranking and correlation metrics for one held-out dataset, and their aggregation.

Every function takes ``y_true`` (the real fine-tuned accuracies, fractions in [0, 1]) and
``y_pred`` (any score where higher means "recommended first") for the candidate models of
ONE target dataset. Results are computed per held-out dataset, then summarised as
mean +- std across datasets (:func:`aggregate`).

Ties in the predicted score are broken *against* the method (the model with the lower
real accuracy is ranked first among tied ones), so a constant predictor cannot look good
by the luck of the input order.

This module is the one metric implementation of the project: ``experiments.evaluate``
(and so ``python -m recommender evaluate`` and ``experiments.report``),
``experiments.quick_lodo``, ``experiments.nested_lodo`` and ``train``'s grouped
cross-validation (:func:`recommender.training.grouped_cv`) all score a held-out dataset
with :func:`score_dataset`. Regret is in accuracy points everywhere. Metrics use the raw
predicted values (a regressor may predict slightly outside [0, 1]); only what is shown to
a user or exported is clipped to [0, 1] (:func:`clip_accuracy`).

Pure numpy / scipy; every formula is written in the docstring and tested against an
independent computation in ``tests/recommender/test_metrics.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("metrics need finite values; drop (and count) missing predictions first")
    return t, p


def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


def pearson(y_true, y_pred) -> float:
    r"""Pearson's linear correlation.

    .. math:: r = \frac{\sum_i (t_i-\bar t)(p_i-\bar p)}{\sqrt{\sum_i (t_i-\bar t)^2}\sqrt{\sum_i (p_i-\bar p)^2}}

    NaN when fewer than 2 values or either side is constant (undefined).
    """
    t, p = _pair(y_true, y_pred)
    if _constant(t) or _constant(p):
        return float("nan")
    tc, pc = t - t.mean(), p - p.mean()
    return float(np.clip((tc @ pc) / np.sqrt((tc @ tc) * (pc @ pc)), -1.0, 1.0))


def spearman(y_true, y_pred) -> float:
    r"""Spearman's rank correlation: Pearson's r of the average ranks (ties share their mean rank)."""
    t, p = _pair(y_true, y_pred)
    if _constant(t) or _constant(p):
        return float("nan")
    from scipy import stats  # imported on use: scipy.stats costs ~1 s at import (predict never needs it)

    return pearson(stats.rankdata(t), stats.rankdata(p))


def kendall_tau(y_true, y_pred) -> float:
    r"""Kendall's :math:`\tau_b` (tie-corrected).

    .. math:: \tau_b = \frac{C - D}{\sqrt{(C + D + T_t)(C + D + T_p)}}

    with C / D the concordant / discordant pairs and :math:`T_t` (:math:`T_p`) the pairs
    tied only in ``y_true`` (only in ``y_pred``).
    """
    t, p = _pair(y_true, y_pred)
    if _constant(t) or _constant(p):
        return float("nan")
    from scipy import stats

    return float(stats.kendalltau(t, p).statistic)


def weighted_tau(y_true, y_pred) -> float:
    r"""Weighted Kendall tau (Vigna 2015) as LogME / SFDA report it: ``scipy.stats.weightedtau(y_true, y_pred)``.

    Hyperbolic weights :math:`w(r) = 1/(r+1)` on the zero-based decreasing rank r of an
    element; a pair's weight is :math:`w_{ij} = w(r_i) + w(r_j)` (additive), so swaps among
    the top models cost more than swaps in the tail. Without ties

    .. math:: \tau_w = \frac{\sum_{i<j} w_{ij}\,\mathrm{sgn}(t_i-t_j)\,\mathrm{sgn}(p_i-p_j)}{\sum_{i<j} w_{ij}}

    and the result is the mean of the values obtained with the ranks taken by
    ``y_true`` (ties broken by ``y_pred``) and by ``y_pred`` (ties broken by ``y_true``).
    """
    t, p = _pair(y_true, y_pred)
    if _constant(t) or _constant(p):
        return float("nan")
    from scipy import stats

    return float(stats.weightedtau(t, p).statistic)


def ranked_against_method(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Indices sorted by decreasing prediction, ties broken against the method (lower truth first)."""
    return np.lexsort((t, -p))


def regret_at_k(y_true, y_pred, k: int = 1, scale: float = 100.0) -> float:
    r"""Regret@k in accuracy points (Renggli et al., 2022).

    .. math:: \mathrm{regret@}k = s\,\big(\max_i t_i - \max_{i \in \mathrm{top}_k(p)} t_i\big)

    the best real accuracy of the zoo minus the best real accuracy among the k recommended
    models; ``s = 100`` turns fractions into points. 0 means the best model was among the
    top k. Defined for any number of candidates (k is capped at the number of models).
    """
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    top = ranked_against_method(t, p)[: max(1, int(k))]
    return float(scale * (t.max() - t[top].max()))


def ndcg_at_k(y_true, y_pred, k: int = 5, gain: str = "minmax") -> float:
    r"""Normalised discounted cumulative gain of the top k.

    .. math:: \mathrm{DCG@}k = \sum_{r=1}^{k} \frac{g_{(r)}}{\log_2(r+1)},\qquad
              \mathrm{NDCG@}k = \frac{\mathrm{DCG@}k}{\mathrm{IDCG@}k}

    where :math:`g_{(r)}` is the gain of the model ranked r-th by ``y_pred`` and IDCG the
    DCG of the ideal order. ``gain="minmax"`` (default) uses
    :math:`g = (t - \min t)/(\max t - \min t)`: raw accuracies of a zoo are all close
    (e.g. 0.85-0.95), which makes every ranking score ~0.99; rescaling within the
    dataset makes the metric discriminative (worst model: gain 0, best: 1).
    ``gain="accuracy"`` uses :math:`g = t` as is.
    """
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    if gain == "minmax":
        if _constant(t):
            return float("nan")
        g = (t - t.min()) / (t.max() - t.min())
    elif gain == "accuracy":
        g = t
    else:
        raise ValueError(f"unknown NDCG gain {gain!r}; valid: minmax, accuracy")
    k = max(1, min(int(k), t.size))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(g[ranked_against_method(t, p)[:k]] @ disc)
    idcg = float(np.sort(g)[::-1][:k] @ disc)
    return float("nan") if idcg <= 0 else dcg / idcg


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: ``fn(y_true, y_pred) -> float``; ``higher_is_better`` for plots/summaries."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("pearson", pearson, True, "Pearson correlation of predicted vs real accuracy"),
        MetricInfo("spearman", spearman, True, "Spearman rank correlation"),
        MetricInfo("kendall", kendall_tau, True, "Kendall tau-b"),
        MetricInfo("weighted_tau", weighted_tau, True, "weighted Kendall tau (hyperbolic, scipy.weightedtau)"),
        MetricInfo("regret@1", lambda t, p: regret_at_k(t, p, 1), False,
                   "best accuracy minus accuracy of the top-1 recommendation, in points"),
        MetricInfo("regret@3", lambda t, p: regret_at_k(t, p, 3), False,
                   "best accuracy minus best accuracy among the top-3 recommendations, in points"),
        MetricInfo("ndcg@5", lambda t, p: ndcg_at_k(t, p, 5), True, "NDCG@5 with min-max rescaled accuracy gain"),
    ]
}


def compute_all(y_true, y_pred, metrics=None) -> dict[str, float]:
    """All (or the named) metrics for one held-out dataset."""
    names = list(METRICS) if metrics is None else list(metrics)
    return {n: METRICS[n].fn(y_true, y_pred) for n in names}


def aggregate(values) -> tuple[float, float, int]:
    r"""Mean and (population, ddof=0) standard deviation across datasets, ignoring NaN.

    Returns ``(mean, std, n)`` where n is the number of finite values; ``(nan, nan, 0)`` if none.
    """
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


#: Correlation metrics use the covered models only; ranking metrics rank uncovered models last.
CORRELATION_METRICS = ("pearson", "spearman", "kendall", "weighted_tau")


def score_dataset(y_true, y_pred, metrics=None) -> dict:
    """Every (or the named) metric for ONE held-out dataset, with missing predictions handled.

    A NaN prediction (a baseline without a score for some model) is never dropped silently:
    ``n_missing`` counts them; correlations use the covered models (NaN with fewer than 2),
    regret / NDCG rank the uncovered models last (below every covered one, so they can only
    hurt the method). ``n_test`` is the number of candidate models.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    ok = np.isfinite(p)
    out: dict[str, float] = {"n_test": int(t.size), "n_missing": int((~ok).sum())}
    for name in (list(METRICS) if metrics is None else list(metrics)):
        info = METRICS[name]
        if name in CORRELATION_METRICS:
            out[name] = info.fn(t[ok], p[ok]) if ok.sum() >= 2 else float("nan")
        elif not ok.any():
            out[name] = float("nan")
        else:
            out[name] = info.fn(t, np.where(ok, p, np.nanmin(p[ok]) - 1.0))
    return out


def clip_accuracy(x):
    """Predicted accuracies as shown or exported: clipped to [0, 1] (NaN stays NaN).

    Metrics are computed on the raw values; clipping only changes what a user reads.
    """
    return np.clip(np.asarray(x, dtype=float), 0.0, 1.0)


def improvement(method_values, reference_values, metric: str) -> np.ndarray:
    """Paired per-dataset improvement of a method over a reference on ``metric``.

    Positive means the method is better: ``reference - method`` for metrics where lower
    is better (regret), ``method - reference`` otherwise.
    """
    a = np.asarray(method_values, dtype=float)
    b = np.asarray(reference_values, dtype=float)
    return (b - a) if not METRICS[metric].higher_is_better else (a - b)


def bootstrap_ci(diffs, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 strata=None) -> tuple[float, float]:
    r"""Percentile bootstrap confidence interval of the mean of ``diffs`` (NaN dropped).

    ``n_boot`` resamples of the held-out datasets with replacement (numpy
    ``default_rng(seed)``, so the interval is reproducible); the interval is the
    :math:`(1-\text{level})/2` and :math:`(1+\text{level})/2` quantiles of the resampled
    means. With ``strata`` (one label per value, e.g. the benchmark of each held-out
    dataset) each resample draws within every stratum as many values as it has, so every
    benchmark keeps its share of the pooled mean. ``(nan, nan)`` with fewer than 2 values.
    """
    d = np.asarray(diffs, dtype=float)
    ok = np.isfinite(d)
    if d[ok].size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if strata is None:
        d = d[ok]
        idx = rng.integers(0, d.size, size=(int(n_boot), d.size))
    else:
        labels = np.asarray(strata, dtype=object)
        if labels.shape != d.shape:
            raise ValueError(f"strata has {labels.size} labels for {d.size} values")
        d, labels = d[ok], labels[ok]
        parts = []
        for lab in sorted(set(labels.tolist()), key=str):
            members = np.nonzero(labels == lab)[0]
            parts.append(members[rng.integers(0, members.size, size=(int(n_boot), members.size))])
        idx = np.concatenate(parts, axis=1)
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_lift(method_values, reference_values, metric: str, *, tol: float = 1e-9, n_boot: int = 2000,
                seed: int = 0, strata=None) -> dict:
    """Lift of a method over a reference on one metric, paired by held-out dataset.

    Inputs are aligned per-dataset values; a dataset where either side is NaN is left out
    (``n`` counts the pairs used). Returns ``mean`` (mean improvement, see
    :func:`improvement`), ``ci_low`` / ``ci_high`` (:func:`bootstrap_ci`, stratified by
    ``strata`` when given: pooling several benchmarks), and ``wins`` / ``ties`` / ``losses``
    (improvement > tol, within tol, < -tol).
    """
    d = improvement(method_values, reference_values, metric)
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, strata=strata)
    d = d[np.isfinite(d)]
    return {"n": int(d.size), "mean": float(d.mean()) if d.size else float("nan"), "ci_low": lo, "ci_high": hi,
            "wins": int((d > tol).sum()), "ties": int((np.abs(d) <= tol).sum()), "losses": int((d < -tol).sum())}
