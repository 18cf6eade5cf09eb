"""Run recommenders x feature sets and baselines over the folds of a protocol and score them.

:func:`evaluate` is the logic behind ``python -m recommender evaluate``. For every fold of
the protocol (see :mod:`recommender.protocols`) each recommender is fitted on the fold's
training frame and predicts the held-out pairs, with the training frame as its context
(it carries every meta-feature and MS score but none of the held-out targets). Each
baseline (:mod:`experiments.baselines`) scores the same pairs. Metrics
(:mod:`recommender.metrics`) are computed per (fold, held-out dataset); the summary is
mean +- std over those units (= across held-out datasets for lodo / setting2; across
datasets x seeds for setting1 / coldstart).

Missing predictions (a baseline without a score for some model) are never dropped
silently: correlations use the covered models, the ranking metrics (regret, NDCG) rank
uncovered models last, and ``n_missing`` counts them per row.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from history.errors import NotFoundError, RecommenderError

from recommender import metrics as M
from .baselines import BaselineSpec, BaselineUnavailable, resolve_baselines
from recommender.protocols import FoldPlan, describe_plan, make_folds

log = logging.getLogger(__name__)

CORRELATION_METRICS = M.CORRELATION_METRICS
DEFAULT_RECOMMENDERS = ("lr", "fm", "lgbm", "lgbm-rank")
HEADLINE_METRICS = ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3", "ndcg@5")


@dataclass
class MethodSpec:
    """One evaluated method: a recommender with a feature set, or a baseline."""

    label: str
    kind: str  # "recommender" | "baseline"
    name: str
    features: str | None = None
    baseline: BaselineSpec | None = None
    unavailable: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class EvaluationResult:
    config: dict
    rows: pd.DataFrame  # one row per (fold, dataset, method): metrics + n_test, n_missing, status
    predictions: pd.DataFrame  # fold, dataset, model, method, real, predicted
    skipped: list = field(default_factory=list)
    unavailable: dict = field(default_factory=dict)  # method label -> reason (n/a everywhere)
    importances: dict = field(default_factory=dict)  # method label -> DataFrame(feature, importance)
    timings: dict = field(default_factory=dict)  # method label -> seconds (fit + predict, all folds)
    wall_s: float = 0.0

    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.rows["method"])) if len(self.rows) else []

    def summary(self, metric_names=None) -> pd.DataFrame:
        """Rows: methods (evaluation order). Columns: ``<metric>_mean``, ``<metric>_std``, ``n``."""
        names = list(metric_names or M.METRICS)
        out = []
        for meth in self.methods():
            sub = self.rows[(self.rows["method"] == meth)]
            rec = {"method": meth, "kind": sub["kind"].iloc[0], "features": sub["features"].iloc[0]}
            n = 0
            for m in names:
                mean, std, k = M.aggregate(sub[m])
                rec[f"{m}_mean"], rec[f"{m}_std"] = mean, std
                n = max(n, k)
            rec["n"] = n
            rec["n_missing"] = int(sub["n_missing"].sum())
            out.append(rec)
        for meth, reason in self.unavailable.items():
            out.append({"method": meth, "kind": self.config.get("method_kinds", {}).get(meth, "baseline"),
                        "features": None, "n": 0, "n_missing": 0,
                        "note": reason if reason.startswith("FAILED") else f"n/a: {reason}",
                        **{f"{m}_{s}": math.nan for m in names for s in ("mean", "std")}})
        df = pd.DataFrame(out)
        if "note" not in df.columns:
            df["note"] = None
        order = {m: i for i, m in enumerate(self.config.get("methods", []))}
        if len(df):
            df = df.iloc[np.argsort([order.get(m, len(order)) for m in df["method"]], kind="stable")]
        return df.reset_index(drop=True)

    def per_dataset(self, metric_names=None) -> pd.DataFrame:
        """Metrics averaged over the folds of each held-out dataset: rows (dataset, method)."""
        names = list(metric_names or M.METRICS)
        if self.rows.empty:
            return pd.DataFrame(columns=["dataset", "method", *names])
        g = self.rows.groupby(["dataset", "method"], sort=False)[names].mean()
        return g.reset_index()

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (np.floating, np.integer)):
                return clean(v.item())
            return v

        def records(df):
            return [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]

        return {
            "config": self.config,
            "wall_s": self.wall_s,
            "results": records(self.rows),
            "summary": records(self.summary()),
            "skipped": self.skipped,
            "unavailable": self.unavailable,
            "timings_s": self.timings,
            "feature_importances": {k: records(v) for k, v in self.importances.items()},
        }


# ---------------------------------------------------------------------- method specs
def parse_feature_sets(values) -> list[str]:
    """``["d,m", "d,m,s"]`` from repeatable and/or ';'-separated ``--features`` values."""
    out = []
    for v in values or []:
        for part in str(v).split(";"):
            fs = ",".join(x.strip() for x in part.split(",") if x.strip())
            if fs:
                for x in fs.split(","):
                    if x not in ("d", "m", "s"):
                        raise RecommenderError(
                            f"unknown feature group {x!r} in --features {part!r}; groups: d (dataset meta), "
                            "m (model meta), s (MS scores), e.g. --features 'd,m;d,m,s'")
                if fs not in out:
                    out.append(fs)
    return out


def _registry():
    try:
        from recommender import registry
    except ModuleNotFoundError as exc:  # pragma: no cover - recommender package incomplete
        raise RecommenderError(f"the recommender registry is not available ({exc})") from None
    return registry


def list_recommender_names() -> list[str]:
    reg = _registry()
    names = reg.list_recommenders()
    return [n if isinstance(n, str) else getattr(n, "name", str(n)) for n in names]


def build_methods(full, *, recommenders=DEFAULT_RECOMMENDERS, feature_sets=None, baselines="all",
                  rec_params=None) -> list[MethodSpec]:
    """The methods to evaluate, validated (unknown names -> NotFoundError listing valid ones)."""
    has_scores = len(full.scores) > 0
    if feature_sets is None:
        feature_sets = ["d,m", "d,m,s"] if has_scores else ["d,m"]
    recs = [r.strip() for r in (recommenders.split(",") if isinstance(recommenders, str) else recommenders or [])
            if r and r.strip() and r.strip() != "none"]
    out = []
    if recs:
        valid = list_recommender_names()
        for r in recs:
            if r not in valid:
                from history.errors import closest

                hint = closest(r, valid)
                raise NotFoundError(f"unknown recommender {r!r}; valid recommenders: {', '.join(valid)}"
                                    + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
        for r in recs:
            for fs in feature_sets:
                why = None
                if "s" in fs.split(",") and not has_scores:
                    why = "no MS scores stored for this history (feature group s)"
                out.append(MethodSpec(f"{r}[{fs}]", "recommender", r, fs, None, why, dict(rec_params or {})))
    for b in resolve_baselines(baselines, full):
        out.append(MethodSpec(b.label, "baseline", b.label, None, b, b.unavailable))
    return out


def _make_recommender(spec: MethodSpec, seed: int | None):
    reg = _registry()
    params = dict(spec.params)
    params["features"] = spec.features
    rec = reg.create_recommender(spec.name, **params)
    if seed is not None:
        names = rec.get_params() if hasattr(rec, "get_params") else {}
        for k in ("random_state", "seed"):
            if k in names:
                rec.set_params(**{k: int(seed)})
    return rec


def feature_importances(rec) -> pd.DataFrame | None:
    """Feature importances / weights a fitted recommender exposes, as (feature, importance).

    LightGBM: total split gain per feature (``booster_.feature_importance("gain")``);
    linear models: ``coef_``; factorization machines: the linear weights ``w_`` averaged
    over ensemble members. A ``feature_importances()`` method, if a recommender has one, wins.
    Feature names come from the recommender's featurizer (``featurizer_.feature_names_``).
    """
    fn = getattr(rec, "feature_importances", None)
    if callable(fn):
        try:
            obj = fn()
        except Exception:  # noqa: BLE001 - optional introspection only
            obj = None
        if isinstance(obj, pd.DataFrame) and {"feature", "importance"} <= set(obj.columns):
            return obj[["feature", "importance"]].copy()
        if isinstance(obj, (pd.Series, dict)):
            s = pd.Series(obj)
            return pd.DataFrame({"feature": s.index.astype(str), "importance": s.to_numpy(dtype=float)})
    names = getattr(getattr(rec, "featurizer_", None), "feature_names_", None)
    names = names if names is not None else getattr(rec, "feature_names_", None)
    arr = None
    booster = getattr(rec, "booster_", None)
    try:
        if booster is not None:
            arr = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
        elif getattr(rec, "coef_", None) is not None:
            arr = np.asarray(rec.coef_, dtype=float).ravel()
        elif getattr(rec, "w_", None) is not None:
            w = np.asarray(rec.w_, dtype=float)
            arr = w.mean(0) if w.ndim == 2 else w.ravel()
    except Exception:  # noqa: BLE001
        arr = None
    if arr is None:
        return None
    if names is None or len(names) != arr.size:
        names = [f"f{i}" for i in range(arr.size)]
    return pd.DataFrame({"feature": [str(n) for n in names], "importance": arr})


# ---------------------------------------------------------------------- scoring
score_dataset = M.score_dataset  # the one implementation, shared with train's CV


def _predict(spec: MethodSpec, fold, seed):
    pairs = fold.test[["model", "dataset"]].reset_index(drop=True)
    if spec.kind == "baseline":
        return spec.baseline(fold.train, pairs, fold.train), None
    rec = _make_recommender(spec, seed)
    rec.fit(fold.train)
    pred = np.asarray(rec.predict(pairs, history=fold.train), dtype=float).ravel()
    if pred.size != len(pairs):
        raise RecommenderError(f"{spec.label} returned {pred.size} predictions for {len(pairs)} pairs")
    return pred, rec


def evaluate(history, *, protocol: str = "lodo", recommenders=DEFAULT_RECOMMENDERS, feature_sets=None,
             baselines="all", seeds: int = 5, test_fraction: float = 0.2, min_models: int = 3, datasets=None,
             rec_params=None, progress: bool = True, config: dict | None = None,
             keep_predictions: bool = True) -> EvaluationResult:
    """Evaluate methods over the folds of ``protocol`` on ``history`` (a HistoryFrame)."""
    t0 = time.perf_counter()
    plan: FoldPlan = make_folds(history, protocol, seeds=seeds, test_fraction=test_fraction,
                                min_models=min_models, datasets=datasets)
    methods = build_methods(history, recommenders=recommenders, feature_sets=feature_sets,
                            baselines=baselines, rec_params=rec_params)
    if not plan.folds:
        raise RecommenderError(f"no fold to evaluate: {describe_plan(plan)}")
    cfg = dict(config or {})
    cfg.update({"protocol": protocol, "seeds": seeds, "test_fraction": test_fraction, "min_models": min_models,
                "methods": [m.label for m in methods], "n_folds": len(plan.folds),
                "method_kinds": {m.label: m.kind for m in methods},
                "datasets": sorted({d for f in plan.folds for d in f.held_out_datasets})})
    unavailable = {m.label: m.unavailable for m in methods if m.unavailable}
    runnable = [m for m in methods if not m.unavailable]
    rows, preds, imps = [], [], {}
    timings = {m.label: 0.0 for m in runnable}
    fold_reasons: dict[str, list] = {}
    failures: dict[str, list] = {}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan.folds) * max(len(runnable), 1), desc=f"evaluate {protocol}", unit="fit",
               disable=not progress, leave=False)
    try:
        for fold in plan.folds:
            for spec in runnable:
                bar.set_postfix_str(f"{fold.fold_id} {spec.label}", refresh=False)
                ts = time.perf_counter()
                try:
                    pred, rec = _predict(spec, fold, fold.seed)
                except (BaselineUnavailable, RecommenderError) as exc:
                    # a method that cannot run on this fold (e.g. a recommender that needs >= 2
                    # training datasets): recorded with its reason, reported as n/a
                    fold_reasons.setdefault(spec.label, []).append(f"{fold.fold_id}: {exc}")
                    bar.update(1)
                    continue
                except Exception as exc:  # noqa: BLE001 - a crashing method must not lose the others
                    log.debug("%s failed on %s", spec.label, fold.fold_id, exc_info=True)
                    failures.setdefault(spec.label, []).append(f"{fold.fold_id}: {type(exc).__name__}: {exc}")
                    bar.update(1)
                    continue
                timings[spec.label] += time.perf_counter() - ts
                if rec is not None:
                    fi = feature_importances(rec)
                    if fi is not None:
                        imps.setdefault(spec.label, []).append(fi)
                test = fold.test.reset_index(drop=True)
                for ds, idx in test.groupby("dataset", sort=True).indices.items():
                    sc = score_dataset(test["value"].to_numpy()[idx], pred[idx])
                    rows.append({"fold": fold.fold_id, "dataset": ds, "seed": fold.seed, "method": spec.label,
                                 "kind": spec.kind, "features": spec.features, **sc})
                if keep_predictions:
                    preds.append(pd.DataFrame({"fold": fold.fold_id, "dataset": test["dataset"],
                                               "model": test["model"], "method": spec.label,
                                               "real": test["value"], "predicted": pred}))
                bar.update(1)
    finally:
        bar.close()
    for label, reasons in fold_reasons.items():
        if not any(r["method"] == label for r in rows):
            unavailable[label] = reasons[0].split(": ", 1)[1] if reasons else "not available"
    cols = ["fold", "dataset", "seed", "method", "kind", "features", "n_test", "n_missing", *M.METRICS]
    rows_df = pd.DataFrame(rows, columns=cols)
    pred_df = (pd.concat(preds, ignore_index=True) if preds else
               pd.DataFrame(columns=["fold", "dataset", "model", "method", "real", "predicted"]))
    importances = {}
    for label, frames in imps.items():
        cat = pd.concat(frames, ignore_index=True)
        importances[label] = (cat.groupby("feature")["importance"].mean().sort_values(ascending=False)
                              .reset_index())
    for label, errs in failures.items():
        if not any(r["method"] == label for r in rows):
            unavailable[label] = f"FAILED ({len(errs)} fold(s)): {errs[0].split(': ', 1)[1]}"
    if failures:
        cfg["failures"] = {k: v[:3] + ([f"... {len(v) - 3} more"] if len(v) > 3 else []) for k, v in failures.items()}
    partial = {k: v for k, v in fold_reasons.items() if k not in unavailable}
    if partial:
        cfg["partially_unavailable"] = {k: len(v) for k, v in partial.items()}
    return EvaluationResult(cfg, rows_df, pred_df, plan.skipped, unavailable, importances,
                            {k: round(v, 3) for k, v in timings.items()}, time.perf_counter() - t0)


# ---------------------------------------------------------------------- text output
def _fmt(mean, std) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"


def format_summary(result: EvaluationResult, metric_names=HEADLINE_METRICS, markdown: bool = False) -> str:
    """The summary table (mean ± std per method), plain text or markdown."""
    s = result.summary()
    header = ["method", *metric_names, "n"]
    body = []
    for _, r in s.iterrows():
        if isinstance(r.get("note"), str) and r["note"]:
            body.append([r["method"], *(["n/a"] * len(metric_names)), r["note"]])
            continue
        body.append([r["method"], *[_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metric_names],
                     str(int(r["n"])) + (f" ({int(r['n_missing'])} missing)" if r["n_missing"] else "")])
    return _table(header, body, markdown)


def format_per_dataset(result: EvaluationResult, metric_names=HEADLINE_METRICS) -> str:
    pdf = result.per_dataset(metric_names)
    blocks = []
    for ds, sub in pdf.groupby("dataset", sort=True):
        body = [[r["method"], *[("n/a" if not np.isfinite(r[m]) else f"{r[m]:.3f}") for m in metric_names]]
                for _, r in sub.iterrows()]
        n = int(result.rows.loc[result.rows["dataset"] == ds, "n_test"].max())
        blocks.append(f"held-out dataset {ds} ({n} models)\n" + _table(["method", *metric_names], body, False))
    return "\n\n".join(blocks)


def _table(header, body, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(c) for c in row]) for row in body]
    return "\n".join(lines)
