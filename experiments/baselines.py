"""Baselines evaluated on the same folds as the recommenders.

A baseline is a function ``fn(train, test_pairs, full) -> np.ndarray`` returning one score
per row of ``test_pairs`` (columns model, dataset); higher means "recommend first". NaN
marks a pair the baseline has no score for (counted and reported by the evaluation).
``train`` is the fold's training HistoryFrame (targets of held-out pairs removed), ``full``
the frame with every meta-feature and MS score (its targets are never read here).
A baseline that cannot run on a source at all raises :class:`BaselineUnavailable` with the
reason; the evaluation reports it as n/a.

Registry (``BASELINES``; ``<method>`` is any MS score method stored for the source):

``ms:<method>``            the stored MS score alone (LogME, H-score, ...).
``source-accuracy``        task-agnostic: the model's accuracy on its source / pre-training
                           task (``models.source_accuracy``). Models without one get the
                           median of the known values (counted in ``imputed``).
``model-size``             task-agnostic: log of the parameter count (``models.params``),
                           median-imputed like source accuracy.
``model-mean``             the model's mean fine-tuned accuracy over the training datasets
                           (a strong collaborative baseline); NaN for models never seen.
``model-additive``         the model effect ``a_m`` of the two-way additive fit
                           ``acc(m, t) ~ a_m + b_t`` of the observed training cells
                           (:func:`features.popularity.additive_effects`, raw accuracies):
                           popularity corrected for which datasets each model was run on;
                           NaN for models never seen.
``parc-heuristic``         PARC's hand-made heuristic (Bolya et al., NeurIPS 2021, as in its
                           public code): :math:`\\ell_s + \\log|D_s| - \\log|D_t|` with
                           :math:`\\ell_s` the number of layers of the model and
                           :math:`|D_s|`, :math:`|D_t|` the numbers of training images of the
                           source and target datasets (the target term is constant within
                           one held-out dataset, so it does not change the ranking).
``hybrid:<method>``        Renggli et al. (CVPR 2022): keep the top k=5 models by the
                           task-agnostic signal, then re-rank those k by the MS score; the
                           rest follow in task-agnostic order. The task-agnostic signal is
                           the upstream accuracy (``models.source_accuracy``) only when it
                           is one: every candidate with a source accuracy names the same
                           pre-training dataset (``models.pretrain_dataset``); otherwise
                           (e.g. TransferGraph, where it is each checkpoint's accuracy on its
                           own fine-tuning task) ``model-mean`` is used. On a held-out
                           dataset where no candidate has the MS score the baseline is n/a
                           (NaN predictions, so that dataset's metrics are n/a).
``parc-ensemble:<method>`` PARC's "plasticity" ensemble: z-scored MS score (within the
                           held-out dataset) plus :math:`\\ell_s / \\ell_{max}` (depth over the
                           deepest candidate; PARC's code divides by a fixed 50).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.popularity import additive_effects
from history.errors import NotFoundError, unknown_name_error

HYBRID_K = 5


class BaselineUnavailable(Exception):
    """The baseline cannot run on this data (the message says why); reported as n/a."""


@dataclass(frozen=True)
class BaselineInfo:
    name: str  # registry name; "ms", "hybrid", "parc-ensemble" take ":<method>"
    description: str
    fn: Callable  # fn(train, test_pairs, full, method=None) -> np.ndarray
    needs: str  # what data it needs, for the n/a reason
    per_method: bool = False


BASELINES: dict[str, BaselineInfo] = {}


def register_baseline(name, description, needs, per_method=False):
    def deco(fn):
        BASELINES[name] = BaselineInfo(name, description, fn, needs, per_method)
        return fn

    return deco


# ---------------------------------------------------------------------- helpers
def _model_meta(full, column: str, models) -> pd.Series:
    m = full.models.set_index("name")
    if column not in m.columns:
        return pd.Series(np.nan, index=list(models), dtype=float)
    return pd.to_numeric(m[column], errors="coerce").reindex(list(models)).astype(float)


def _extra(v) -> dict:
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip().startswith("{"):
        try:
            return json.loads(v)
        except ValueError:
            return {}
    return {}


_SOURCE_SIZE_KEYS = ("source_num_samples", "pretrain_num_samples", "source_dataset_size", "source_images",
                     "pretrain_dataset_size")


def source_sizes(full, models) -> pd.Series:
    """Number of training images of each model's source dataset.

    Looked up in ``models.extra`` (keys ``source_num_samples`` and similar), then through
    ``models.pretrain_dataset`` in the datasets table (``num_samples``).
    """
    m = full.models.set_index("name")
    ds = full.datasets.set_index("name")
    ds_size = pd.to_numeric(ds["num_samples"], errors="coerce") if "num_samples" in ds.columns else pd.Series()
    out = {}
    for name in models:
        val = np.nan
        if name in m.index:
            ex = _extra(m.at[name, "extra"]) if "extra" in m.columns else {}
            for k in _SOURCE_SIZE_KEYS:
                if ex.get(k) is not None:
                    val = float(ex[k])
                    break
            if not np.isfinite(val) and "pretrain_dataset" in m.columns:
                src = m.at[name, "pretrain_dataset"]
                if isinstance(src, str) and src in ds_size.index and np.isfinite(ds_size.get(src, np.nan)):
                    val = float(ds_size[src])
        out[name] = val
    return pd.Series(out, dtype=float)


def _impute_median(s: pd.Series, what: str) -> pd.Series:
    if s.notna().sum() == 0:
        raise BaselineUnavailable(f"no candidate model has {what}")
    return s.fillna(s.median())


def ms_scores(full, test_pairs: pd.DataFrame, method: str) -> np.ndarray:
    sc = full.scores
    sc = sc[sc["method"] == method].set_index(["model", "dataset"])["value"]
    if sc.empty:
        raise BaselineUnavailable(f"no {method!r} scores stored")
    keys = list(zip(test_pairs["model"], test_pairs["dataset"]))
    return sc.reindex(keys).to_numpy(dtype=float)


def _per_dataset(test_pairs, fn) -> np.ndarray:
    """Apply ``fn(sub_pairs) -> array`` per dataset (scores that are normalised within a dataset)."""
    out = np.full(len(test_pairs), np.nan)
    for _, idx in test_pairs.groupby("dataset", sort=False).indices.items():
        out[idx] = fn(test_pairs.iloc[idx])
    return out


def _rank01(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (NaN stays NaN, ties get their mean rank)."""
    s = pd.Series(x, dtype=float)
    r = s.rank(method="average")
    n = s.notna().sum()
    return ((r - 1) / max(n - 1, 1)).to_numpy()


# ---------------------------------------------------------------------- baselines
@register_baseline("ms", "a stored model-selection score alone", "MS scores", per_method=True)
def ms_baseline(train, test_pairs, full, method=None):
    return ms_scores(full, test_pairs, method)


@register_baseline("source-accuracy", "task-agnostic: accuracy on the source / pre-training task",
                   "models.source_accuracy")
def source_accuracy(train, test_pairs, full, method=None):
    acc = _model_meta(full, "source_accuracy", test_pairs["model"].unique())
    acc = _impute_median(acc, "a source accuracy (models.source_accuracy)")
    return test_pairs["model"].map(acc).to_numpy(dtype=float)


@register_baseline("model-mean", "mean fine-tuned accuracy of the model over the training datasets",
                   "training targets of the candidate models")
def model_mean(train, test_pairs, full, method=None):
    t = train.targets.dropna(subset=["value"])
    means = t.groupby("model")["value"].mean()
    if not means.index.isin(test_pairs["model"]).any():
        raise BaselineUnavailable("none of the held-out models has a training target (cold-start models)")
    return test_pairs["model"].map(means).to_numpy(dtype=float)


@register_baseline("model-additive", "model effect of a two-way additive fit (model + dataset) of the training "
                   "accuracies", "training targets of the candidate models")
def model_additive(train, test_pairs, full, method=None):
    effects, _ = additive_effects(train.targets, standardize=False)
    if not effects.index.isin(test_pairs["model"]).any():
        raise BaselineUnavailable("none of the held-out models has a training target (cold-start models)")
    return test_pairs["model"].map(effects).to_numpy(dtype=float)


@register_baseline("model-size", "task-agnostic: bigger models first (models.params, log scale)", "models.params")
def model_size(train, test_pairs, full, method=None):
    p = _model_meta(full, "params", test_pairs["model"].unique())
    p = _impute_median(p.where(p > 0), "a parameter count (models.params)")
    return test_pairs["model"].map(np.log(p)).to_numpy(dtype=float)


def upstream_source_accuracy(full, models) -> bool:
    """Whether ``models.source_accuracy`` is an upstream accuracy comparable across ``models``:
    some candidates have one, and all of those name one and the same pre-training dataset."""
    acc = _model_meta(full, "source_accuracy", models)
    known = acc.dropna().index
    if len(known) == 0:
        return False
    m = full.models.set_index("name")
    if "pretrain_dataset" not in m.columns:
        return True
    src = m["pretrain_dataset"].reindex(known)
    return src.dropna().astype(str).str.lower().nunique() <= 1


def _agnostic(train, test_pairs, full) -> np.ndarray:
    if upstream_source_accuracy(full, test_pairs["model"].unique()):
        return source_accuracy(train, test_pairs, full)
    return model_mean(train, test_pairs, full)


def _dataset_size(full, name) -> float:
    ds = full.datasets.set_index("name")
    if "num_samples" not in ds.columns or name not in ds.index:
        return np.nan
    return float(pd.to_numeric(pd.Series([ds.at[name, "num_samples"]]), errors="coerce").iloc[0])


@register_baseline("parc-heuristic", "PARC heuristic: layers + log|D_s| - log|D_t|",
                   "model depth (models.depth) and source dataset sizes")
def parc_heuristic(train, test_pairs, full, method=None):
    models = test_pairs["model"].unique()
    depth = _impute_median(_model_meta(full, "depth", models), "a depth (models.depth)")
    size = _impute_median(source_sizes(full, models), "a known source dataset size")
    score = depth + np.log(size)
    tsize = test_pairs["dataset"].map(lambda d: _dataset_size(full, d)).to_numpy(dtype=float)
    tlog = np.where(np.isfinite(tsize) & (tsize > 0), np.log(np.where(tsize > 0, tsize, 1.0)), 0.0)
    return test_pairs["model"].map(score).to_numpy(dtype=float) - tlog


@register_baseline("hybrid", f"Renggli et al.: top-{HYBRID_K} by source accuracy, re-ranked by an MS score",
                   "MS scores (and source accuracy or training targets)", per_method=True)
def hybrid(train, test_pairs, full, method=None, k: int = HYBRID_K):
    ms = ms_scores(full, test_pairs, method)
    agn = _agnostic(train, test_pairs, full)

    def one(sub):
        idx = sub.index.to_numpy()
        a, m = agn[idx], ms[idx]
        if not np.isfinite(m).any():  # no MS score on this held-out dataset: n/a there
            return np.full(len(idx), np.nan)
        a_filled = np.where(np.isfinite(a), a, -np.inf)
        order = np.lexsort((np.arange(len(a)), -a_filled))
        top = order[: min(k, len(a))]
        score = 0.99 * _rank01(np.where(np.isfinite(a), a, np.nanmin(a) if np.isfinite(a).any() else 0.0))
        m_top = np.where(np.isfinite(m[top]), m[top], -np.inf)
        top_rank = pd.Series(m_top).rank(method="average").to_numpy()
        score[top] = 2.0 + top_rank / len(top)
        return score

    return _per_dataset(test_pairs.reset_index(drop=True), one)


@register_baseline("parc-ensemble", "PARC ensemble: z-scored MS score + depth / max depth",
                   "MS scores and model depth (models.depth)", per_method=True)
def parc_ensemble(train, test_pairs, full, method=None, weight: float = 1.0):
    ms = ms_scores(full, test_pairs, method)
    depth = _impute_median(_model_meta(full, "depth", test_pairs["model"].unique()), "a depth (models.depth)")
    d = test_pairs["model"].map(depth).to_numpy(dtype=float)
    tp = test_pairs.reset_index(drop=True)

    def one(sub):
        idx = sub.index.to_numpy()
        m = ms[idx]
        sd = np.nanstd(m)
        z = (m - np.nanmean(m)) / sd if sd > 0 else np.zeros_like(m)
        return z + weight * d[idx] / np.nanmax(d[idx])

    return _per_dataset(tp, one)


# ---------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class BaselineSpec:
    """A concrete baseline to run: registry entry + MS method (or None)."""

    label: str
    info: BaselineInfo
    method: str | None = None
    unavailable: str | None = None  # a reason known before running (e.g. no scores at all)

    def __call__(self, train, test_pairs, full) -> np.ndarray:
        if self.unavailable:
            raise BaselineUnavailable(self.unavailable)
        tp = test_pairs[["model", "dataset"]].reset_index(drop=True)
        return np.asarray(self.info.fn(train, tp, full, method=self.method), dtype=float)


def list_baselines() -> list[str]:
    return [f"{n}:<method>" if b.per_method else n for n, b in BASELINES.items()]


def resolve_baselines(spec, full) -> list[BaselineSpec]:
    """Turn ``all`` / ``none`` / ``"ms:logme,model-mean"`` into runnable specs.

    ``all`` expands every per-method baseline over the MS methods stored in ``full``; with no
    stored scores, one n/a entry per such baseline is kept (with the reason), not dropped.
    Unknown names raise :class:`NotFoundError` listing the valid ones.
    """
    if spec is None:
        spec = "all"
    if isinstance(spec, str):
        names = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = [str(s).strip() for s in spec]
    methods = sorted(full.scores["method"].unique()) if len(full.scores) else []
    if names in (["none"], []):
        return []
    if names == ["all"]:
        out = []
        for n, b in BASELINES.items():
            if not b.per_method:
                out.append(BaselineSpec(n, b))
            elif methods:
                out.extend(BaselineSpec(f"{n}:{m}", b, m) for m in methods)
            else:
                out.append(BaselineSpec(f"{n}:*", b, None, "no MS scores stored for this history"))
        return out
    out = []
    valid = ", ".join(["all", "none"] + list_baselines())
    for name in names:
        base, _, method = name.partition(":")
        if base not in BASELINES:
            raise unknown_name_error("baseline", name, ["all", "none"] + list_baselines(),
                                     extra=f"Stored MS methods: {', '.join(methods)}." if methods else "")
        b = BASELINES[base]
        if b.per_method:
            if not method:
                if not methods:
                    out.append(BaselineSpec(f"{base}:*", b, None, "no MS scores stored for this history"))
                else:
                    out.extend(BaselineSpec(f"{base}:{m}", b, m) for m in methods)
                continue
            if method not in methods:
                raise NotFoundError(f"baseline {name!r}: no MS scores with method {method!r}; stored methods: "
                                    f"{', '.join(methods) or 'none'}")
            out.append(BaselineSpec(name, b, method))
        else:
            if method:
                raise NotFoundError(f"baseline {base!r} takes no ':<method>'; valid baselines: {valid}")
            out.append(BaselineSpec(base, b))
    return out
