"""Pooling evaluations of several benchmarks: one paired lift over every held-out dataset.

A benchmark holds out 6 to 35 datasets, so its lift intervals are several points wide. Pooling
pairs every held-out dataset of every benchmark (method vs reference on the same dataset) and
bootstraps the mean improvement *stratified by benchmark*: each resample draws, within every
benchmark, as many datasets as it has, so no benchmark's share of the pooled mean changes
between resamples (:func:`recommender.metrics.bootstrap_ci`). The pooled mean weighs every
held-out dataset equally.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recommender import metrics as M

__all__ = ["paired_units", "pooled_lift"]


def paired_units(results: dict, method: str, reference: str, metric: str, candidates=None) -> pd.DataFrame:
    """Rows (benchmark, unit, method value, reference value) of every benchmark where both ran."""
    out = []
    for bench, res in results.items():
        units = res.units([metric], candidates)
        a = units[units["method"] == method].set_index("unit")[metric]
        b = units[units["method"] == reference].set_index("unit")[metric]
        common = a.index.intersection(b.index)
        out += [{"benchmark": bench, "unit": u, "value": float(a[u]), "reference": float(b[u])} for u in common]
    return pd.DataFrame(out, columns=["benchmark", "unit", "value", "reference"])


def pooled_lift(results: dict, method: str, reference: str, metric_names=("regret@1", "regret@3", "weighted_tau"),
                candidates=None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Lift of ``method`` over ``reference`` pooled over the benchmarks of ``results``
    (``{benchmark: EvaluationResult}``), one row per metric: ``benchmarks`` (how many took
    part), ``n`` datasets, ``mean``, stratified bootstrap ``ci_low`` / ``ci_high``, wins / ties / losses."""
    rows = []
    for metric in metric_names:
        u = paired_units(results, method, reference, metric, candidates)
        ok = np.isfinite(u["value"].to_numpy()) & np.isfinite(u["reference"].to_numpy()) if len(u) else []
        u = u[ok] if len(u) else u
        lift = M.paired_lift(u["value"].to_numpy(), u["reference"].to_numpy(), metric, n_boot=n_boot, seed=seed,
                             strata=u["benchmark"].to_numpy()) if len(u) else \
            {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "wins": 0, "ties": 0,
             "losses": 0}
        rows.append({"metric": metric, "benchmarks": int(u["benchmark"].nunique()) if len(u) else 0, **lift})
    return pd.DataFrame(rows)
