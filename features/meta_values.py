"""Model / dataset meta values as the featurizer reads them: numeric and categorical columns
of the meta tables (missing -> NaN / None), their transforms, merging saved with new meta, and
the scores that can rank models."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from history.util import is_missing


def _norm_name(x) -> str:
    return re.sub(r"[^a-z0-9]", "", str(x).lower().rsplit("/", 1)[-1])


def _tf(values: np.ndarray, how: str) -> np.ndarray:
    v = values.astype(float)
    if how == "log1p":
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(v >= 0, np.log1p(np.where(v >= 0, v, 0)), np.nan)
    return v


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _cat(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), None, dtype=object)
    s = df[col]
    return np.array([None if (is_missing(v) or str(v) == "")
                     else str(v).strip().lower() for v in s], dtype=object)


def _merge_meta(saved: pd.DataFrame, new: pd.DataFrame | None) -> pd.DataFrame:
    """Saved meta updated by the meta of a passed history (non-null new values win)."""
    if new is None or new is saved:
        return saved.set_index("name", drop=False)
    a = saved.set_index("name", drop=False)
    b = new.set_index("name", drop=False)
    cols = list(dict.fromkeys(list(a.columns) + list(b.columns)))
    b = b.reindex(columns=cols)
    a = a.reindex(columns=cols)
    out = b.combine_first(a)
    return out.reindex(columns=cols)


def _informative_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` without the (dataset, method) groups whose value is the same for every one
    of two or more models: such a score cannot rank models, so it is missing, not information
    (like a score flagged as degenerate when it was computed, see docs/scores.md)."""
    if scores.empty:
        return scores
    g = scores.groupby(["dataset", "method"])["value"]
    lo, hi, size = g.transform("min"), g.transform("max"), g.transform("size")
    const = (size >= 2) & ((hi - lo) <= 1e-9 * np.maximum(1.0, np.maximum(hi.abs(), lo.abs())))
    return scores[~const.to_numpy()]
