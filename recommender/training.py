"""Training behind ``python -m recommender train``.

Training (:func:`train_recommenders`)

1. build a :class:`features.history_frame.HistoryFrame` from the store (``source``,
   ``regime``, target rule), refusing when fewer than :data:`MIN_DATASETS` datasets have
   targets or when one (model, dataset) pair has targets in several regimes;
2. fit each recommender (``create_recommender(name, features=...)``);
3. measure it: in-sample RMSE / Pearson, and a grouped (leave-datasets-out) CV with
   ``cv_folds`` folds: per held-out dataset, the Pearson correlation between predicted and
   real accuracies over its models, averaged over datasets (``cv_pearson``), the pooled
   ``cv_rmse``, weighted tau, and regret@1 / @3 in accuracy points (``cv_regret1``,
   ``cv_regret3``), all with the evaluation engine's metric code (:func:`grouped_cv`);
4. save it *atomically* under ``<home>/models/<name>/`` (written to a temporary folder,
   checked by loading it back, then swapped in; a failure leaves the previous model
   untouched; :mod:`recommender.model_io`), with ``training.json`` recording store, source, regime, features, target
   rule, counts and metrics; ``<home>/models/index.json`` lists the latest of each;
5. log the run to MLflow (:func:`recommender.tracking.log_training_run`); a failure there
   is reported, never loses the saved model.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history_frame import HistoryFrame
from history.errors import NotFoundError, RecommenderError, unknown_name_error
from history.store import TARGET_RULES

from .metrics import aggregate, pearson, score_dataset
from .model_io import TRAINING_INFO, _clean_floats, _json_default, _write_json_atomic, models_root, save_atomic, \
    update_index
from .protocols import make_folds
from .registry import RECOMMENDERS, create_recommender, list_recommenders
from .tracking import log_training_run

#: A recommender learns across datasets: fewer than this many datasets with targets is refused.
MIN_DATASETS = 2


class InsufficientHistoryError(RecommenderError):
    """The store does not hold enough fine-tuning results to train on."""


# ------------------------------------------------------------------------------ registry
def available_recommenders() -> list[str]:
    return list(list_recommenders())


def resolve_names(spec) -> list[str]:
    """``"all"`` / ``"lr,fm"`` / ``["lr"]`` -> validated recommender names."""
    valid = available_recommenders()
    if spec is None or spec == "all" or spec == ["all"]:
        return valid
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names:
        raise NotFoundError(f"no recommender named; valid: {', '.join(valid)}, or 'all'")
    for n in names:
        if n not in valid:
            raise unknown_name_error("recommender", n, valid, extra="Or 'all' for every one.")
    return list(dict.fromkeys(names))


def _recommender_info(name: str):
    return RECOMMENDERS[name]


# ------------------------------------------------------------------------------ history
def check_source(store, source=None) -> None:
    """Refuse to train on a store of several sources without ``--source``: their histories
    (other protocols, other accuracy scales, other viability flags) are never mixed silently.
    One source -> train on it; ``--source a,b`` pools them on purpose (:mod:`features.pooling`)."""
    if source is not None:
        return
    sources = store.sources()
    if len(sources) < 2:
        return
    try:
        by = store.stats()["by_source"]
    except Exception:  # noqa: BLE001 - the counts only decorate the message
        by = {}
    listing = ", ".join(f"{s} ({by[s]['datasets']} datasets)" if s in by else s for s in sources)
    raise RecommenderError(
        f"the store holds {len(sources)} sources: {listing}; train on one with --source NAME (e.g. --source "
        f"{sources[0]}), or pool them on purpose with --source A,B (the first source's datasets are the "
        "ones ranked; docs/recommenders.md, 'Several sources in one store')")


def trained_on(hist) -> dict:
    """The sources and regimes of a training frame's targets (pooled rows count under their own
    source and regime, ``extra.pooled_from``)."""
    t = hist.targets
    srcs = sorted({s for v in t["sources"].dropna() for s in str(v).split(",")}) if "sources" in t else []
    pooled = {}
    if "extra" in hist.datasets.columns:
        for ex in hist.datasets["extra"]:
            if isinstance(ex, dict) and isinstance(ex.get("pooled_from"), dict):
                pf = ex["pooled_from"]
                pooled[str(pf.get("source"))] = str(pf.get("regime"))
    return {"sources": srcs, "regimes": sorted(map(str, t["regime"].unique())), "pooled": pooled}


def build_history(store, *, source=None, regime=None, target_rule: str = "best", metric=None,
                  min_datasets: int = MIN_DATASETS):
    """The training :class:`HistoryFrame`, or a clear refusal when it cannot be trained on."""
    if target_rule not in TARGET_RULES:
        raise RecommenderError(f"unknown target rule {target_rule!r}; valid: {', '.join(TARGET_RULES)}")
    check_source(store, source)
    hist = HistoryFrame.from_store(store, source=source, regime=regime, rule=target_rule, metric=metric,
                                   dataset_scope="source")
    t = hist.targets
    n_ds = int(t["dataset"].nunique()) if len(t) else 0
    if n_ds < min_datasets:
        filt = ", ".join(f"{k}={v}" for k, v in (("source", source), ("regime", regime)) if v)
        where = f" matching {filt}" if filt else ""
        have = store.stats()
        srcs = ", ".join(f"{s} ({v['datasets']} datasets)" for s, v in have["by_source"].items()) or "none"
        regimes = ", ".join(f"{r} ({n} jobs)" for r, n in have["by_regime"].items()) or "none"
        raise InsufficientHistoryError(
            f"cannot train: {n_ds} dataset(s) have completed fine-tuning jobs{where} in the store "
            f"{have['store']}, a recommender learns across datasets and needs at least {min_datasets}. "
            f"Sources in the store: {srcs}; regimes: {regimes}. Import a history first, e.g. "
            "`python -m recommender history pull transfergraph-image`, or relax --source/--regime."
        )
    dup = t.groupby(["model", "dataset"])["regime"].nunique()
    if (dup > 1).any():
        counts = t["regime"].value_counts()
        listing = ", ".join(f"{r} ({n} targets)" for r, n in counts.items())
        raise RecommenderError(
            f"{int((dup > 1).sum())} (model, dataset) pairs have results in several regimes ({listing}); "
            "results of different regimes must not be pooled. Pick one with --regime "
            f"(e.g. --regime {counts.index[0]}) or restrict --source."
        )
    return hist


def default_regime(store, *, source=None, regime=None):
    """The regime to train on when none was asked for.

    A store holding several regimes of the same (model, dataset) pairs (e.g. SHiFT's
    VTAB-1k and full runs) must not pool them; without ``--regime`` the recommender is
    trained on ``full`` fine-tuning (or, if absent, the most common regime) and says so.
    Returns ``regime`` unchanged when given or when no pair has several regimes.
    """
    if regime is not None:
        return regime
    t = store.targets(source=source)
    if t.empty or not (t.groupby(["model", "dataset"])["regime"].nunique() > 1).any():
        return None
    counts = t["regime"].value_counts()
    chosen = "full" if "full" in counts.index else str(counts.index[0])
    listing = ", ".join(f"{r}: {n} targets" for r, n in counts.items())
    print(f"note: the store holds several fine-tuning regimes ({listing}); training on regime "
          f"{chosen!r}. Pass --regime to choose another.", file=sys.stderr)
    return chosen


def history_counts(hist) -> dict:
    t = hist.targets
    return {
        "jobs": int(t["n_jobs"].fillna(1).sum()) if len(t) else 0,
        "pairs": int(len(t)),
        "datasets": int(t["dataset"].nunique()),
        "models": int(t["model"].nunique()),
        "candidate_models": int(len(hist.models)),
        "score_methods": sorted(map(str, hist.scores["method"].unique())),
    }


# ------------------------------------------------------------------------------ metrics
def _pearson(a, b) -> float:
    """Pooled Pearson over finite pairs (:func:`recommender.metrics.pearson`; NaN if undefined)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return pearson(a[ok], b[ok])


def _rmse(a, b) -> float:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d**2))) if len(d) else float("nan")


def in_sample_metrics(rec, hist) -> dict:
    t = hist.targets
    pred = np.asarray(rec.predict(t[["model", "dataset"]], history=hist), dtype=float)
    return {"train_rmse": _rmse(pred, t["value"]), "train_pearson": _pearson(pred, t["value"])}


def grouped_cv(make, hist, folds: int = 5, progress: bool = False, desc: str = "cv") -> dict:
    """Leave-datasets-out CV with the evaluation engine: ``make()`` returns an unfitted recommender.

    The folds are those of protocol ``kfold`` (:mod:`recommender.protocols`: datasets sorted
    by name, dealt round robin into ``min(folds, n_datasets)`` groups); each group's targets
    are dropped, the recommender is fitted on the rest and predicts the dropped pairs with
    the training frame as context (meta-features and MS scores of held-out datasets stay
    available). Each held-out dataset is scored with :func:`recommender.metrics.score_dataset`
    -- the same code and conventions as ``evaluate``: regret in accuracy points, ties broken
    against the method. ``cv_<metric>`` is the mean over held-out datasets; ``cv_rmse`` is
    pooled over all held-out pairs.
    """
    from tqdm.auto import tqdm

    ds = sorted(hist.targets["dataset"].unique())
    k = min(int(folds), len(ds))
    if k < 2:
        return {}
    plan = make_folds(hist, "kfold", k=k, min_models=2, check_kind=False)
    rows, per_ds = [], []
    for fold in tqdm(plan.folds, desc=desc, disable=not progress, leave=False):
        rec = make().fit(fold.train)
        test = fold.test.reset_index(drop=True)
        pred = np.asarray(rec.predict(test[["model", "dataset"]], history=fold.train), dtype=float)
        rows.append(test.assign(pred=pred))
        for _, idx in test.groupby("dataset", sort=True).indices.items():
            per_ds.append(score_dataset(test["value"].to_numpy()[idx], pred[idx],
                                        ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3")))
    if not rows:
        return {}
    cv = pd.concat(rows, ignore_index=True)
    out = {f"cv_{m.replace('@', '')}": aggregate(r[m] for r in per_ds)[0]
           for m in ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3")}
    out.update({"cv_rmse": _rmse(cv["pred"], cv["value"]), "cv_folds": float(len(plan.folds))})
    return out


# ------------------------------------------------------------------------------ training
@dataclass
class TrainResult:
    name: str
    path: Path | None
    counts: dict
    fit_seconds: float
    metrics: dict
    info: dict
    mlflow: dict | None = None
    recommender: Any = field(default=None, repr=False)  # the fitted BaseRecommender

    @property
    def mlflow_ok(self) -> bool:
        return self.mlflow is None or bool(self.mlflow.get("ok"))


def _feature_schema(rec, features) -> dict:
    """The feature schema of a fitted recommender (``featurizer_.schema()`` where available)."""
    schema = {"features": features}
    fz = getattr(rec, "featurizer_", None)
    if fz is not None and hasattr(fz, "schema"):
        try:
            schema.update(fz.schema())
        except Exception as exc:  # noqa: BLE001 - the schema is informative only
            schema["schema_error"] = f"{type(exc).__name__}: {exc}"
    return json.loads(json.dumps(schema, default=_json_default))


def _safe_store_url(store) -> str:
    try:
        return store.stats()["store"]
    except Exception:  # noqa: BLE001
        return "?"


def train_recommenders(store, names="all", *, features: str | None = None, source=None, regime=None,
                       target_rule: str = "best", metric=None, home=None, tracking_uri=None,
                       mlflow: bool = True, cv_folds: int = 5, params: dict | None = None,
                       progress: bool = True, register: bool = True, history=None) -> list[TrainResult]:
    """Fit, evaluate, save (atomically) and log each recommender of ``names``.

    ``features`` (e.g. ``"d,m,s"``) is passed to every recommender; ``params`` maps a
    recommender name to extra constructor parameters. Returns one :class:`TrainResult`
    per recommender; MLflow failures are in ``result.mlflow["error"]``, never raised.
    """
    from tqdm.auto import tqdm

    names = resolve_names(names)
    if history is None:
        check_source(store, source)
        regime = default_regime(store, source=source, regime=regime)
    hist = history if history is not None else build_history(
        store, source=source, regime=regime, target_rule=target_rule, metric=metric)
    counts = history_counts(hist)
    on = trained_on(hist)
    root = models_root(home)
    store_url = _safe_store_url(store)
    t = hist.targets
    check = t[["model", "dataset"]].drop_duplicates().head(50).reset_index(drop=True)
    results = []
    for name in tqdm(names, desc="train", disable=not progress or len(names) < 2):
        kw = dict((params or {}).get(name, {}))
        if features is not None:
            kw.setdefault("features", features)
        if "target_rule" in _recommender_info(name).cls._param_names():
            kw.setdefault("target_rule", target_rule)

        def make(name=name, kw=kw):
            return create_recommender(name, **kw)

        rec = make()
        if on["pooled"] and rec.get_params().get("target_norm", "dataset") != "dataset":
            raise RecommenderError(f"{name}: pooled sources need target_norm='dataset' (each source's accuracies "
                                   "standardized per dataset); got target_norm="
                                   f"{rec.get_params().get('target_norm')!r}")
        t0, started = time.perf_counter(), time.time()  # started: the MLflow run's start (it spans the fit)
        rec.fit(hist)
        fit_s = time.perf_counter() - t0
        metrics = in_sample_metrics(rec, hist)
        if cv_folds and cv_folds > 1:
            t1 = time.perf_counter()
            metrics.update(grouped_cv(make, hist, cv_folds, progress=progress, desc=f"cv {name}"))
            metrics["cv_seconds"] = time.perf_counter() - t1
        metrics["fit_seconds"] = fit_s
        metrics = _clean_floats(metrics)
        rparams = {k: v for k, v in rec.get_params().items()}
        info = {
            "name": name,
            "class": type(rec).__name__,
            "params": json.loads(json.dumps(rparams, default=_json_default)),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "store": store_url,
            "source": source,
            "regime": regime,
            "trained_on": on,
            "target_rule": target_rule,
            "metric": str(t["metric"].iloc[0]) if len(t) and "metric" in t else metric,
            "features": rparams.get("features", features),
            "counts": counts,
            "datasets": sorted(map(str, t["dataset"].unique())),
            "metrics": metrics,
            "has_uncertainty": bool(getattr(rec, "has_uncertainty", False)),
        }
        path = save_atomic(rec, root, name, info, check_pairs=check, check_history=hist)
        ml = None
        if mlflow:
            schema = _feature_schema(rec, info["features"])
            ml = log_training_run(
                tracking_uri=tracking_uri, home=home, name=name, model_dir=path,
                params={"recommender": name, **{f"param.{k}": v for k, v in rparams.items()},
                        "source": source, "regime": regime, "target_rule": target_rule,
                        "metric": info["metric"], "store": store_url},
                metrics={**metrics, **{f"n_{k}": v for k, v in counts.items() if isinstance(v, int)}},
                tags={"recommender": name, "features": info["features"], "store": store_url},
                schema=schema, register=register, start_time=started,
            )
            info["mlflow"] = {k: ml.get(k) for k in ("ok", "run_id", "model_uri", "registered_name",
                                                     "model_version", "tracking_uri", "error")}
            _write_json_atomic(path / TRAINING_INFO, info)
        update_index(root, name, info)
        results.append(TrainResult(name, path, counts, fit_s, metrics, info, ml, rec))
    return results
