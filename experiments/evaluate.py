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

from features.featurizer import GROUP_HELP
from history.errors import NotFoundError, RecommenderError, unknown_name_error
from history.viability import assess_groups, degenerate_models
from recommender import metrics as M
from recommender import registry
from recommender.defaults import DEFAULT_RECOMMENDER
from recommender.protocols import FoldPlan, describe_plan, get_protocol, make_folds

from .baselines import BaselineSpec, BaselineUnavailable, resolve_baselines

log = logging.getLogger(__name__)

CORRELATION_METRICS = M.CORRELATION_METRICS
#: recommenders nested selection chooses among (x the evaluated feature sets), with model-mean; the same
#: grid for ``evaluate --select nested`` and the report (docs/evaluation.md)
NESTED_GRID = ("lr", "lgbm")
#: inner dataset folds of nested selection (CLI and report)
NESTED_INNER_FOLDS = 3
#: what ``evaluate`` measures by default: the default recommender and the nested grid
DEFAULT_RECOMMENDERS = (DEFAULT_RECOMMENDER, *NESTED_GRID)
HEADLINE_METRICS = ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3", "ndcg@5")
#: the popularity baseline every method is compared with (paired, per unit)
LIFT_REFERENCE = "model-mean"
LIFT_METRICS = ("regret@1", "regret@3", "weighted_tau", "spearman")
CANDIDATE_SETS = ("viable", "all")
SELECTIONS = ("none", "nested")


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
    rows: pd.DataFrame  # one row per (fold, dataset, method) on the primary candidate set
    predictions: pd.DataFrame  # fold, dataset, model, method, real, predicted (clipped), predicted_raw
    skipped: list = field(default_factory=list)
    unavailable: dict = field(default_factory=dict)  # method label -> reason (n/a everywhere)
    importances: dict = field(default_factory=dict)  # method label -> DataFrame(feature, importance)
    timings: dict = field(default_factory=dict)  # method label -> seconds (fit + predict, all folds)
    wall_s: float = 0.0
    other_rows: dict = field(default_factory=dict)  # other candidate set name -> rows like ``rows``
    nested: list = field(default_factory=list)  # per outer fold: the configuration nested selection chose

    @property
    def candidates(self) -> str:
        return self.config.get("candidates", "all")

    def rows_for(self, candidates=None) -> pd.DataFrame:
        if candidates is None or candidates == self.candidates:
            return self.rows
        if candidates not in self.other_rows:
            raise KeyError(f"no results on candidate set {candidates!r}; have {self.candidates}, "
                           f"{', '.join(self.other_rows)}")
        return self.other_rows[candidates]

    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.rows["method"])) if len(self.rows) else []

    def units(self, metric_names=None, candidates=None) -> pd.DataFrame:
        """Metrics per evaluation unit and method: the unit is the held-out dataset for
        dataset-level protocols (lodo, setting2, kfold: folds of one dataset are averaged
        first, so n = number of held-out datasets) and the (dataset, seed) fold for seeded
        protocols (setting1, coldstart)."""
        names = list(metric_names or M.METRICS)
        rows = self.rows_for(candidates)
        if rows.empty:
            return pd.DataFrame(columns=["unit", "method", *names])
        by_fold = self.config.get("unit") == "fold"
        key = rows["fold"].astype(str) + "|" + rows["dataset"].astype(str) if by_fold else rows["dataset"].astype(str)
        g = rows.assign(unit=key).groupby(["unit", "method"], sort=False)[names].mean()
        return g.reset_index()

    def summary(self, metric_names=None, candidates=None) -> pd.DataFrame:
        """Rows: methods (evaluation order). Columns: ``<metric>_mean``, ``<metric>_std`` over
        units (:meth:`units`), ``n`` (units with a value), ``n_missing`` and ``coverage``
        (share of candidate pairs the method scored)."""
        names = list(metric_names or M.METRICS)
        rows = self.rows_for(candidates)
        units = self.units(names, candidates)
        out = []
        for meth in (list(dict.fromkeys(rows["method"])) if len(rows) else []):
            sub = rows[(rows["method"] == meth)]
            usub = units[units["method"] == meth]
            rec = {"method": meth, "kind": sub["kind"].iloc[0], "features": sub["features"].iloc[0]}
            n = 0
            for m in names:
                mean, std, k = M.aggregate(usub[m])
                rec[f"{m}_mean"], rec[f"{m}_std"] = mean, std
                n = max(n, k)
            rec["n"] = n
            rec["n_missing"] = int(sub["n_missing"].sum())
            tot = int(sub["n_test"].sum())
            rec["coverage"] = 1.0 - rec["n_missing"] / tot if tot else math.nan
            out.append(rec)
        for meth, reason in self.unavailable.items():
            out.append({"method": meth, "kind": self.config.get("method_kinds", {}).get(meth, "baseline"),
                        "features": None, "n": 0, "n_missing": 0, "coverage": 0.0,
                        "note": reason if reason.startswith("FAILED") else f"n/a: {reason}",
                        **{f"{m}_{s}": math.nan for m in names for s in ("mean", "std")}})
        df = pd.DataFrame(out)
        if "note" not in df.columns:
            df["note"] = None
        order = {m: i for i, m in enumerate(self.config.get("methods", []))}
        if len(df):
            df = df.iloc[np.argsort([order.get(m, len(order)) for m in df["method"]], kind="stable")]
        return df.reset_index(drop=True)

    def per_dataset(self, metric_names=None, candidates=None) -> pd.DataFrame:
        """Metrics averaged over the folds of each held-out dataset: rows (dataset, method)."""
        names = list(metric_names or M.METRICS)
        rows = self.rows_for(candidates)
        if rows.empty:
            return pd.DataFrame(columns=["dataset", "method", *names])
        g = rows.groupby(["dataset", "method"], sort=False)[names].mean()
        return g.reset_index()

    def lift(self, reference: str = LIFT_REFERENCE, metric_names=LIFT_METRICS, candidates=None,
             n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Paired lift of every method over ``reference`` (default ``model-mean``), per unit.

        One row per (method, metric): ``n`` paired units, ``mean`` improvement (positive =
        better than the reference: lower regret, higher tau / Spearman), its percentile
        bootstrap 95% CI over units (:func:`recommender.metrics.bootstrap_ci`), and
        win / tie / loss counts. Empty when the reference did not run.
        """
        names = list(metric_names)
        units = self.units(names, candidates)
        cols = ["method", "metric", "n", "mean", "ci_low", "ci_high", "wins", "ties", "losses"]
        ref = units[units["method"] == reference].set_index("unit")
        if ref.empty:
            return pd.DataFrame(columns=cols)
        out = []
        for meth in dict.fromkeys(units["method"]):
            if meth == reference:
                continue
            sub = units[units["method"] == meth].set_index("unit")
            common = sub.index.intersection(ref.index)
            for m in names:
                r = M.paired_lift(sub.loc[common, m].to_numpy(), ref.loc[common, m].to_numpy(), m,
                                  n_boot=n_boot, seed=seed)
                out.append({"method": meth, "metric": m, **r})
        return pd.DataFrame(out, columns=cols)

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
            "candidates": self.candidates,
            "results": records(self.rows),
            "summary": records(self.summary()),
            "lift": records(self.lift()),
            "nested_choices": [{k: clean(v) for k, v in c.items()} for c in self.nested],
            "other_candidates": {cs: {"summary": records(self.summary(candidates=cs)),
                                      "lift": records(self.lift(candidates=cs))} for cs in self.other_rows},
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
                    if x not in GROUP_HELP:
                        raise RecommenderError(
                            f"unknown feature group {x!r} in --features {part!r}; groups: "
                            + ", ".join(f"{k} ({v})" for k, v in GROUP_HELP.items()) + ", e.g. --features 'd,m;d,m,s'")
                if fs not in out:
                    out.append(fs)
    return out


def list_recommender_names() -> list[str]:
    names = registry.list_recommenders()
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
                raise unknown_name_error("recommender", r, valid)
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
    params = dict(spec.params)
    params["features"] = spec.features
    rec = registry.create_recommender(spec.name, **params)
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


def _predict(spec: MethodSpec, fold, seed, test=None):
    """Scores of ``spec`` for ``test`` (default: the fold's held-out pairs), fitted on ``fold.train``."""
    test = fold.test if test is None else test
    pairs = test[["model", "dataset"]].reset_index(drop=True)
    if spec.kind == "baseline":
        return spec.baseline(fold.train, pairs, fold.train), None
    rec = _make_recommender(spec, seed)
    rec.fit(fold.train)
    pred = np.asarray(rec.predict(pairs, history=fold.train), dtype=float).ravel()
    if pred.size != len(pairs):
        raise RecommenderError(f"{spec.label} returned {pred.size} predictions for {len(pairs)} pairs")
    return pred, rec


def _degenerate(history) -> set:
    return degenerate_models(history.models, history.targets, history.datasets)


def _candidate_masks(test: pd.DataFrame, degenerate: set) -> dict:
    """Boolean masks over ``test`` rows: ``all`` candidates and ``viable`` ones (not degenerate)."""
    return {"viable": ~test["model"].isin(degenerate).to_numpy(), "all": np.ones(len(test), dtype=bool)}


def _score_rows(fold, spec, test: pd.DataFrame, pred: np.ndarray, candidates: str) -> list[dict]:
    rows = []
    for ds, idx in test.groupby("dataset", sort=True).indices.items():
        sc = M.score_dataset(test["value"].to_numpy()[idx], pred[idx])
        rows.append({"fold": fold.fold_id, "dataset": ds, "seed": fold.seed, "method": spec.label,
                     "kind": spec.kind, "features": spec.features, "candidates": candidates, **sc})
    return rows


def _fold_scores(spec, fold, masks: dict, seed) -> tuple[dict, object]:
    """``{candidate set: (test frame, predictions)}`` for one method on one fold.

    A recommender predicts each pair on its own, so it is fitted once and its predictions
    are subset; a baseline (whose scores may depend on the other candidates, e.g. hybrid's
    top-k) is run on each candidate set separately.
    """
    test = fold.test.reset_index(drop=True)
    out, rec = {}, None
    if spec.kind == "recommender":
        pred, rec = _predict(spec, fold, seed, test)
        for cs, mask in masks.items():
            out[cs] = (test[mask].reset_index(drop=True), pred[mask])
        return out, rec
    full = None
    for cs, mask in masks.items():
        sub = test[mask].reset_index(drop=True)
        if mask.all():
            if full is None:
                full = _predict(spec, fold, seed, sub)[0]
            out[cs] = (sub, full)
        else:
            out[cs] = (sub, _predict(spec, fold, seed, sub)[0] if len(sub) else np.zeros(0))
    return out, rec


@dataclass
class _Tally:
    """What the folds of one evaluation produce, method by method."""

    timings: dict  # method -> seconds spent fitting and predicting
    rows: dict = field(default_factory=lambda: {cs: [] for cs in CANDIDATE_SETS})
    preds: list = field(default_factory=list)
    imps: dict = field(default_factory=dict)  # method -> feature importance frames
    choices: list = field(default_factory=list)  # nested selection, one per outer fold
    fold_reasons: dict = field(default_factory=dict)  # method -> why it could not run on a fold
    failures: dict = field(default_factory=dict)  # method -> crashes


def evaluate(history, *, protocol: str = "lodo", recommenders=DEFAULT_RECOMMENDERS, feature_sets=None,
             baselines="all", seeds: int = 5, test_fraction: float = 0.2, min_models: int = 3, datasets=None,
             rec_params=None, progress: bool = True, config: dict | None = None,
             keep_predictions: bool = True, candidates: str = "viable", select: str = "none",
             nested_candidates=None, inner_folds: int = NESTED_INNER_FOLDS,
             select_on: str = "regret@1") -> EvaluationResult:
    """Evaluate methods over the folds of ``protocol`` on ``history`` (a HistoryFrame).

    ``candidates`` (``viable`` | ``all``) is the candidate set the summary leads with; both
    are always scored (the other one is in ``result.other_rows``). ``select="nested"`` adds
    the method ``nested``: on every outer fold, the configuration among
    ``nested_candidates`` (default: every recommender x feature set, and ``model-mean``)
    chosen on inner folds of the outer fold's training frame (:func:`nested_choice`).
    """
    if candidates not in CANDIDATE_SETS:
        raise RecommenderError(f"unknown candidate set {candidates!r}; valid: {', '.join(CANDIDATE_SETS)}")
    if select not in SELECTIONS:
        raise RecommenderError(f"unknown selection {select!r}; valid: {', '.join(SELECTIONS)}")
    if select_on not in M.METRICS:
        raise RecommenderError(f"unknown selection metric {select_on!r}; valid: {', '.join(M.METRICS)}")
    t0 = time.perf_counter()
    info = get_protocol(protocol)
    plan: FoldPlan = make_folds(history, protocol, seeds=seeds, test_fraction=test_fraction,
                                min_models=min_models, datasets=datasets)
    methods = build_methods(history, recommenders=recommenders, feature_sets=feature_sets,
                            baselines=baselines, rec_params=rec_params)
    if not plan.folds:
        raise RecommenderError(f"no fold to evaluate: {describe_plan(plan)}")
    degenerate = _degenerate(history)
    cfg = dict(config or {})
    cfg.update({"protocol": protocol, "seeds": seeds, "test_fraction": test_fraction, "min_models": min_models,
                "methods": [m.label for m in methods] + (["nested"] if select == "nested" else []),
                "n_folds": len(plan.folds), "unit": "fold" if info.uses_seeds else "dataset",
                "method_kinds": {m.label: m.kind for m in methods}, "candidates": candidates, "select": select,
                "degenerate_models": sorted(degenerate),
                "datasets": sorted({d for f in plan.folds for d in f.held_out_datasets})})
    unavailable = {m.label: m.unavailable for m in methods if m.unavailable}
    runnable = [m for m in methods if not m.unavailable]
    nested_specs = []
    if select == "nested":
        nested_specs = _nested_specs(runnable, nested_candidates)
        cfg["nested"] = {"candidates": [m.label for m in nested_specs], "inner_protocol": info.inner,
                         "inner_folds": inner_folds, "select_on": select_on}
    tally = _Tally(timings={m.label: 0.0 for m in runnable})

    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan.folds) * max(len(runnable), 1), desc=f"evaluate {protocol}", unit="fit",
               disable=not progress, leave=False)
    try:
        for fold in plan.folds:
            masks = _candidate_masks(fold.test.reset_index(drop=True), degenerate)
            for spec in runnable:
                bar.set_postfix_str(f"{fold.fold_id} {spec.label}", refresh=False)
                _run_method(tally, spec, fold, masks, candidates=candidates, keep_predictions=keep_predictions)
                bar.update(1)
            if nested_specs:
                choice = nested_choice(fold, nested_specs, protocol=info.inner, inner_folds=inner_folds,
                                       min_models=min_models, select_on=select_on,
                                       viable_only=(candidates == "viable"))
                tally.choices.append(choice)
    finally:
        bar.close()
    frames = _result_frames(tally, cfg)
    pred_df = (pd.concat(tally.preds, ignore_index=True) if tally.preds else
               pd.DataFrame(columns=["fold", "dataset", "model", "method", "real", "predicted", "predicted_raw"]))
    importances = {}
    for label, frames_ in tally.imps.items():
        cat = pd.concat(frames_, ignore_index=True)
        importances[label] = (cat.groupby("feature")["importance"].mean().sort_values(ascending=False)
                              .reset_index())
    _note_unavailable(tally, unavailable, cfg, candidates)
    other = {cs: df for cs, df in frames.items() if cs != candidates}
    return EvaluationResult(cfg, frames[candidates], pred_df, plan.skipped, unavailable, importances,
                            {k: round(v, 3) for k, v in tally.timings.items()}, time.perf_counter() - t0, other,
                            tally.choices)


def _run_method(tally: _Tally, spec: MethodSpec, fold, masks: dict, *, candidates: str,
                keep_predictions: bool) -> None:
    """Fit / run one method on one fold and add its scored rows (or why it could not run) to ``tally``."""
    ts = time.perf_counter()
    try:
        scored, rec = _fold_scores(spec, fold, masks, fold.seed)
    except (BaselineUnavailable, RecommenderError) as exc:
        # a method that cannot run on this fold (e.g. a recommender that needs >= 2
        # training datasets): recorded with its reason, reported as n/a
        tally.fold_reasons.setdefault(spec.label, []).append(f"{fold.fold_id}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - a crashing method must not lose the others
        log.debug("%s failed on %s", spec.label, fold.fold_id, exc_info=True)
        tally.failures.setdefault(spec.label, []).append(f"{fold.fold_id}: {type(exc).__name__}: {exc}")
        return
    tally.timings[spec.label] += time.perf_counter() - ts
    if rec is not None:
        fi = feature_importances(rec)
        if fi is not None:
            tally.imps.setdefault(spec.label, []).append(fi)
    for cs, (test, pred) in scored.items():
        tally.rows[cs].extend(_score_rows(fold, spec, test, pred, cs))
    if keep_predictions:
        test, pred = scored[candidates]
        shown = M.clip_accuracy(pred) if spec.kind == "recommender" else pred
        tally.preds.append(pd.DataFrame({"fold": fold.fold_id, "dataset": test["dataset"],
                                         "model": test["model"], "method": spec.label,
                                         "real": test["value"], "predicted": shown, "predicted_raw": pred}))


def _result_frames(tally: _Tally, cfg: dict) -> dict:
    """{candidate set: rows frame}, with the nested method's rows (the chosen method's) added."""
    cols = ["fold", "dataset", "seed", "method", "kind", "features", "candidates", "n_test", "n_missing",
            *M.METRICS]
    frames = {cs: pd.DataFrame(r, columns=cols) for cs, r in tally.rows.items()}
    if tally.choices:
        for cs, df in frames.items():
            picked = []
            for c in tally.choices:
                sel = df[(df["fold"] == c["fold"]) & (df["method"] == c["chosen"])]
                picked.append(sel.assign(method="nested", kind="nested", features=c["chosen"]))
            frames[cs] = pd.concat([df, *picked], ignore_index=True)
        cfg["method_kinds"]["nested"] = "nested"
    return frames


def _note_unavailable(tally: _Tally, unavailable: dict, cfg: dict, candidates: str) -> None:
    """Methods that scored no row: unavailable with the first reason (or failure); the others'
    failures and partly unavailable folds go to ``cfg``."""
    rows = tally.rows[candidates]
    for label, reasons in tally.fold_reasons.items():
        if not any(r["method"] == label for r in rows):
            unavailable[label] = reasons[0].split(": ", 1)[1] if reasons else "not available"
    for label, errs in tally.failures.items():
        if not any(r["method"] == label for r in rows):
            unavailable[label] = f"FAILED ({len(errs)} fold(s)): {errs[0].split(': ', 1)[1]}"
    failures = tally.failures
    if failures:
        cfg["failures"] = {k: v[:3] + ([f"... {len(v) - 3} more"] if len(v) > 3 else []) for k, v in failures.items()}
    partial = {k: v for k, v in tally.fold_reasons.items() if k not in unavailable}
    if partial:
        cfg["partially_unavailable"] = {k: len(v) for k, v in partial.items()}


# ---------------------------------------------------------------------- nested selection
def split_labels(text: str) -> list[str]:
    """Method labels from a comma-separated string, splitting only on commas outside brackets:
    ``"lr[d,m],model-mean"`` -> ``["lr[d,m]", "model-mean"]``."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [x for x in out if x]


def _nested_specs(runnable, labels=None) -> list[MethodSpec]:
    """The configurations nested selection chooses from. Default: the evaluated recommenders of
    :data:`NESTED_GRID` (every evaluated recommender when none of them is) x their feature sets,
    and model-mean."""
    by_label = {m.label: m for m in runnable}
    if labels is None:
        recs = [m for m in runnable if m.kind == "recommender"]
        labels = [m.label for m in recs if m.name in NESTED_GRID] or [m.label for m in recs]
        labels += [LIFT_REFERENCE] if LIFT_REFERENCE in by_label else []
    elif isinstance(labels, str):
        labels = split_labels(labels)
    unknown = [x for x in labels if x not in by_label]
    if unknown:
        raise NotFoundError(f"nested candidate(s) {', '.join(unknown)} are not among the evaluated methods "
                            f"({', '.join(by_label)})")
    if not labels:
        raise RecommenderError("nested selection needs at least one candidate configuration")
    return [by_label[x] for x in labels]


def nested_choice(fold, specs, *, protocol: str = "kfold", inner_folds: int = NESTED_INNER_FOLDS, min_models: int = 3,
                  select_on: str = "regret@1", viable_only: bool = True) -> dict:
    """Choose one of ``specs`` for the outer ``fold`` using ``fold.train`` only.

    Inner folds are protocol ``protocol`` (the outer protocol's ``inner``: ``kfold`` over
    the training datasets for lodo / coldstart, ``setting1`` for setting1 / setting2) built
    on the outer training frame, which never holds the outer held-out targets. Every
    candidate is fitted and scored on each inner fold (on the candidates viable *in the
    training frame* when ``viable_only``); the one with the best mean ``select_on`` wins,
    ties going to the higher mean Pearson, then to the earlier candidate. When no inner
    fold can be built, the first candidate is chosen and the reason recorded.
    """
    train = fold.train
    lower = not M.METRICS[select_on].higher_is_better
    out = {"fold": fold.fold_id, "held_out": ",".join(fold.held_out_datasets), "inner_protocol": protocol}
    try:
        inner = make_folds(train, protocol, seeds=1, k=inner_folds, min_models=min_models, check_kind=False)
    except RecommenderError as exc:
        inner = None
        out["note"] = f"no inner folds ({exc}); first candidate chosen"
    if inner is not None and not inner.folds:
        out["note"] = f"no inner folds ({describe_plan(inner)}); first candidate chosen"
        inner = None
    if inner is None:
        return {**out, "chosen": specs[0].label, "inner_n": 0, f"inner_{select_on}": math.nan}
    degenerate = set()
    if viable_only:
        nc = (pd.to_numeric(train.datasets.set_index("name")["num_classes"], errors="coerce")
              if "num_classes" in train.datasets.columns else pd.Series(dtype=float))
        # per source (pooled rows keep their own ``sources``) and regime: another source never un-flags
        res = assess_groups(train.targets, nc, by=("sources", "regime"))
        degenerate = set(res.loc[res["degenerate"], "model"].astype(str))
    scores = {s.label: {select_on: [], "pearson": []} for s in specs}
    for f in inner.folds:
        test = f.test.reset_index(drop=True)
        test = test[~test["model"].isin(degenerate)].reset_index(drop=True)
        if test.empty:
            continue
        for spec in specs:
            try:
                pred, _ = _predict(spec, f, f.seed, test)
            except (BaselineUnavailable, RecommenderError):
                continue
            for _, idx in test.groupby("dataset", sort=True).indices.items():
                sc = M.score_dataset(test["value"].to_numpy()[idx], pred[idx], (select_on, "pearson"))
                scores[spec.label][select_on].append(sc[select_on])
                scores[spec.label]["pearson"].append(sc["pearson"])
    keyed = []
    for i, spec in enumerate(specs):
        v = M.aggregate(scores[spec.label][select_on])[0]
        pr = M.aggregate(scores[spec.label]["pearson"])[0]
        if not np.isfinite(v):
            continue
        keyed.append(((v if lower else -v), -(pr if np.isfinite(pr) else -np.inf), i, spec.label, v))
    if not keyed:
        return {**out, "chosen": specs[0].label, "inner_n": len(inner.folds), f"inner_{select_on}": math.nan,
                "note": "no candidate could be scored on the inner folds; first candidate chosen"}
    best = min(keyed)
    return {**out, "chosen": best[3], "inner_n": len(inner.folds), f"inner_{select_on}": best[4],
            "inner_table": {k[3]: k[4] for k in sorted(keyed, key=lambda k: k[2])}}


# ---------------------------------------------------------------------- text output
def _fmt(mean, std) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"


def format_summary(result: EvaluationResult, metric_names=HEADLINE_METRICS, markdown: bool = False,
                   candidates=None) -> str:
    """The summary table (mean ± std per method), plain text or markdown."""
    s = result.summary(candidates=candidates)
    header = ["method", *metric_names, "n"]
    body = []
    for _, r in s.iterrows():
        if isinstance(r.get("note"), str) and r["note"]:
            body.append([r["method"], *(["n/a"] * len(metric_names)), r["note"]])
            continue
        body.append([r["method"], *[_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metric_names],
                     str(int(r["n"])) + (f" (coverage {100 * r['coverage']:.0f}%: {int(r['n_missing'])} pairs "
                                         "unscored)" if r["n_missing"] else "")])
    return _table(header, body, markdown)


_LIFT_LABEL = {"regret@1": "Δregret@1", "regret@3": "Δregret@3", "weighted_tau": "Δw.tau", "spearman": "Δspearman"}


def format_lift(result: EvaluationResult, markdown: bool = False, candidates=None,
                reference: str = LIFT_REFERENCE) -> str:
    """Lift over the popularity baseline: mean paired improvement [95% bootstrap CI] W/T/L.

    Positive = better than ``reference`` (regret: points saved; tau / Spearman: gain)."""
    lf = result.lift(reference=reference, candidates=candidates)
    if lf.empty:
        return f"(no lift table: {reference} did not run)"
    metrics = list(dict.fromkeys(lf["metric"]))
    body = []
    for meth, sub in lf.groupby("method", sort=False):
        cells = []
        for m in metrics:
            r = sub[sub["metric"] == m].iloc[0]
            if not r["n"]:
                cells.append("n/a")
                continue
            fmt = ".2f" if m.startswith("regret") else ".3f"
            ci = ("" if not np.isfinite(r["ci_low"]) else f" [{r['ci_low']:+{fmt}}, {r['ci_high']:+{fmt}}]")
            cells.append(f"{r['mean']:+{fmt}}{ci} {int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])}")
        body.append([meth, *cells, str(int(sub["n"].max()))])
    header = ["method", *[_LIFT_LABEL.get(m, m) for m in metrics], "n"]
    return _table(header, body, markdown)


def format_nested(result: EvaluationResult) -> str:
    """The configuration nested selection chose on each outer fold."""
    if not result.nested:
        return ""
    key = next((k for k in result.nested[0] if k.startswith("inner_") and k not in ("inner_n", "inner_protocol",
                                                                                   "inner_table")), None)
    body = [[c["fold"], c["chosen"], "n/a" if key is None or not np.isfinite(c.get(key, math.nan))
             else f"{c[key]:.3f}", str(c.get("inner_n", 0)), c.get("note", "")] for c in result.nested]
    return _table(["outer fold", "chosen", key or "inner score", "inner folds", "note"], body, False)


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
