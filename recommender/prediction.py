"""Prediction behind ``python -m recommender predict``.

:func:`recommend_for_dataset` loads a saved recommender and ranks every model of the *current*
store for a dataset (so datasets registered and MS scores stored after training are used).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from typing import Any

from features.history_frame import HistoryFrame
from history import schema as S
from history.errors import NotFoundError, closest

from . import adaptive
from .model_io import load_saved
from .predict_cache import (
    cached_context, load_calibrations, load_prior, peek_saved, prior_key, save_calibrations, save_prior,
)


def check_dataset(store, dataset: str) -> None:
    """Raise a NotFoundError naming close matches and the add-dataset command."""
    if store.has_dataset(dataset):
        return
    try:
        store.get_dataset(dataset)
        return
    except NotFoundError as exc:
        raise NotFoundError(
            f"{exc} To rank models for a new dataset, register it first: "
            f"`python -m recommender history add-dataset {dataset} --num-samples N --num-classes C` "
            "(N training images, C classes), then predict again."
        ) from None


def _in_context(frame: pd.DataFrame, source, regime, metric) -> pd.Series:
    """Rows of a jobs frame that belong to the history context (source(s), regime, metric)."""
    ok = pd.Series(True, index=frame.index)
    if source is not None:
        ok &= frame["source"].isin([source] if isinstance(source, str) else list(source))
    if regime is not None:
        ok &= frame["regime"] == regime
    if metric is not None:
        ok &= frame["metric"] == metric
    return ok


def history_context(store, info: dict, *, source=None, regime=None, home=None):
    """``(hist, ctx)``: the history context of a saved recommender's predictions.

    The context is the source and regime the recommender was trained on (``info``, from
    ``training.json``) unless ``source`` / ``regime`` override them; ``source=None`` means
    every source (the recommender was trained on all of them). ``ctx`` says which: ``source``,
    ``regime``, ``metric``, ``rule``, ``sources`` (the sources with results in it), ``origin``
    (``training`` or ``asked``), ``outside_models`` (models with results only outside it) and
    ``cached`` (whether the context came from ``<home>/cache/predict``).
    """
    _check_asked(store, source, regime)
    src = source if source is not None else info.get("source")
    reg = regime if regime is not None else info.get("regime")
    rule, metric = info.get("target_rule") or "best", info.get("metric")

    def build():
        hist = HistoryFrame.from_store(store, source=src, regime=reg, rule=rule, metric=metric)
        jobs = store.jobs_frame()
        jobs = jobs[jobs["value"].notna()]
        used_metric = str(hist.targets["metric"].iloc[0]) if len(hist.targets) else metric
        inside = _in_context(jobs, src, reg, used_metric)
        evidence = set(hist.targets["model"]) | set(hist.scores["model"])
        outside = sorted(set(jobs.loc[~inside, "model"]) - evidence)
        cols = ["model", "dataset", "source", "regime", "metric"]
        elsewhere = (jobs.loc[~inside].groupby(cols, sort=True)["value"].max().reset_index() if (~inside).any()
                     else pd.DataFrame({c: pd.Series(dtype=str) for c in cols} | {"value": pd.Series(dtype=float)}))
        return hist, {"outside_models": outside, "sources": sorted(set(jobs.loc[inside, "source"])),
                      "regimes": sorted(map(str, set(jobs.loc[inside, "regime"].dropna()))),
                      "metric": used_metric, "uninformed": sorted(uninformed_models(hist)), "elsewhere": elsewhere}

    hist, derived, hit = cached_context(store, build, source=src, regime=reg, rule=rule, metric=metric, home=home)
    origin = "asked" if (source is not None or regime is not None) else "training"
    ctx = {"source": src, "regime": reg, "metric": derived["metric"], "rule": rule, "sources": derived["sources"],
           "regimes": derived.get("regimes", []),
           "origin": origin, "outside_models": derived["outside_models"], "cached": hit,
           "uninformed": set(derived["uninformed"]), "elsewhere": derived["elsewhere"]}
    return hist, ctx


def _check_asked(store, source, regime) -> None:
    """An asked source / regime the store has no result for is an error, not an empty ranking."""
    for what, value, have in (("source", source, lambda: store.sources()),
                              ("regime", regime, lambda: list(store.stats()["by_regime"]))):
        if value is None:
            continue
        names = sorted(map(str, have()))
        for v in [value] if isinstance(value, str) else list(value):
            if v not in names:
                hint = closest(v, names)
                raise NotFoundError(f"no results of {what} {v!r} in the store"
                                    + (f"; did you mean: {', '.join(hint)}?" if hint else ".")
                                    + f" {what.capitalize()}s with results: {', '.join(names) or 'none'}.")


def describe_context(ctx: dict) -> str:
    """One line: which source and regime the numbers refer to."""
    src, regimes = ctx["source"], ctx.get("regimes") or []
    if src is None and len(ctx["sources"]) == 1:
        where = f"source {ctx['sources'][0]} (the store's only source)"
    elif src is None:
        where = "all sources pooled" + (f" ({', '.join(ctx['sources'])})" if ctx["sources"] else "")
    else:
        where = "source " + (src if isinstance(src, str) else ", ".join(src))
    if ctx["regime"] is not None:
        reg = ctx["regime"]
    else:
        reg = regimes[0] if len(regimes) == 1 else "all regimes" + (f" ({', '.join(regimes)})" if regimes else "")
    why = "the recommender's training context" if ctx["origin"] == "training" else "asked with --source/--regime"
    return f"context: {where}; regime {reg}; metric {ctx['metric']} ({why})"


def _candidates(hist, dataset: str, outside, include_degenerate: bool):
    """(models to rank, counts of the models left out and why)."""
    models = hist.model_names()
    out = set(outside)
    keep = [m for m in models if m not in out]
    # with a source, HistoryFrame has already left most of them out
    counts: dict[str, Any] = {"outside_context": len(out)}
    models = keep
    # an image dataset is not a candidate for a text model (and vice versa); models or
    # datasets whose modality is unknown are kept
    ds_mod = hist.datasets.set_index("name")["modality"].get(dataset) if len(hist.datasets) else None
    counts["other_modality"] = 0
    if isinstance(ds_mod, str) and ds_mod:
        mods = hist.models.set_index("name")["modality"]
        keep = [m for m in models if not isinstance(mods.get(m), str) or mods.get(m) in ("", ds_mod)]
        counts["other_modality"] = len(models) - len(keep)
        models = keep
    counts["degenerate_excluded"] = 0
    if not include_degenerate and "degenerate" in hist.models.columns:
        # models flagged by history.viability (stored with the model) are not ranked unless asked
        flagged = set(hist.models.loc[hist.models["degenerate"].fillna(False).astype(bool), "name"].astype(str))
        keep = [m for m in models if m not in flagged]
        counts["degenerate_excluded"] = len(models) - len(keep)
        models = keep
    counts["modality"] = ds_mod if isinstance(ds_mod, str) else None
    return models, counts


def measured_elsewhere(ctx: dict, dataset: str) -> pd.DataFrame:
    """Results on ``dataset`` outside the context (another source, regime or metric): best per
    (model, source, regime, metric). Shown beside the ranking, never used by it."""
    e = ctx["elsewhere"]
    return e[e["dataset"] == dataset].drop(columns="dataset").reset_index(drop=True)


def recommend_for_dataset(store, dataset: str, *, name: str | None = None, home=None, k: int | None = None,
                          regime=None, source=None, include_finetuned: bool = False,
                          include_degenerate: bool = False, ignore_own_results: bool = False):
    """Rank the candidate models of the history context for ``dataset`` with a saved recommender.

    Returns ``(frame, meta)``. Columns: ``rank, model, predicted, std, real, guess, prior,
    measured, elsewhere``. ``prior`` is the recommender's prediction; ``predicted`` is the
    prior updated with the dataset's own results in the context (``real``, ``measured`` True)
    by :func:`recommender.adaptive.update_rule`, the rule ``search`` uses; with
    ``ignore_own_results`` (or no own result) ``predicted`` is ``prior``, bit for bit. Measured
    models are left out of the ranking unless ``include_finetuned`` (they then rank by their
    measured value). ``elsewhere``: results on the dataset from other sources / regimes, shown
    only. ``meta`` describes the run: context, own results used, cold-start notes, counts.
    """
    check_dataset(store, dataset)
    with _one_blas_thread():  # small matrices: threads only wait for each other (20x slower on a busy machine)
        return _recommend(store, dataset, name=name, home=home, k=k, regime=regime, source=source,
                          include_finetuned=include_finetuned, include_degenerate=include_degenerate,
                          ignore_own_results=ignore_own_results)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _recommend(store, dataset, *, name, home, k, regime, source, include_finetuned, include_degenerate,
               ignore_own_results):
    rec, peek = None, peek_saved(name, home)  # the prior may be cached: load the model only when needed
    if peek is None:
        rec, info, name = load_saved(name, home)
    else:
        name, info = peek
    hist, ctx = history_context(store, info, source=source, regime=regime, home=home)
    t = hist.targets
    own = t[t["dataset"] == dataset].groupby("model")["value"].max()
    models, counts = _candidates(hist, dataset, ctx["outside_models"], include_degenerate)
    cand = set(models)
    pool = models + [m for m in own.index if m not in cand]  # every own result conditions the others
    pairs = pd.DataFrame({"model": pool, "dataset": dataset})
    # the recommender's features never read the context's targets: the prior ignores own results
    key = prior_key(store, name, home, ctx, dataset, pool)
    got = load_prior(key, home)
    if got is None:
        if rec is None:
            rec, info, name = load_saved(name, home)
        got = (np.asarray(rec.predict(pairs, history=hist), dtype=float), rec.predict_std(pairs, history=hist))
        save_prior(key, *got, home=home)
    prior, std = pd.Series(got[0], index=pool), got[1]
    has_uncertainty = bool(getattr(rec, "has_uncertainty", False)) if rec is not None \
        else bool(info.get("has_uncertainty"))
    used = {} if ignore_own_results else {m: float(v) for m, v in own.items()}
    known = None
    if used:
        load_calibrations(home)

        known = set(adaptive._CALIBRATED)
    post = adaptive.update_predictions(prior, t, dataset, used)
    if known is not None:
        save_calibrations(home, known=known)
    out = pd.DataFrame({"model": pool, "predicted": post.to_numpy(dtype=float),
                        "std": np.nan if std is None else np.asarray(std, dtype=float),
                        "prior": prior.to_numpy(dtype=float)})
    out["real"] = out["model"].map(own).astype(float)
    out["measured"] = out["real"].notna()
    out = out[out["model"].isin(cand) & (include_finetuned | ~out["measured"])]
    out = out.sort_values(["predicted", "model"], ascending=[False, True], kind="mergesort")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out["guess"] = out["model"].isin(ctx["uninformed"])
    for col in ("predicted", "std", "prior"):  # shown / exported accuracies are clipped; metrics use raw values
        out[col] = np.clip(out[col].astype(float), 0.0, 1.0)
    else_ = measured_elsewhere(ctx, dataset)
    tags = else_.assign(tag=[f"{v:.4f} {s}/{r}" + ("" if m == ctx["metric"] else f" ({m})") for v, s, r, m in
                             zip(else_["value"], else_["source"], else_["regime"], else_["metric"])])
    out["elsewhere"] = out["model"].map(tags.groupby("model")["tag"].agg("; ".join))
    if k is not None:
        out = out.head(int(k))
    out = out[["rank", "model", "predicted", "std", "real", "guess", "prior", "measured", "elsewhere"]]
    meta = _meta(dataset, name, info, ctx, hist, has_uncertainty, counts, own, used, prior, else_, out,
                 include_finetuned, n_candidates=len(models))
    return out.reset_index(drop=True), meta


def _meta(dataset, name, info, ctx, hist, has_uncertainty, counts, own, used, prior, else_, out, include_finetuned,
          n_candidates) -> dict:
    own_rows = [{"model": str(m), "real": float(v), "prior": float(np.clip(prior[m], 0.0, 1.0))}
                for m, v in own.sort_values(ascending=False, kind="mergesort").items()]
    return {
        "dataset": dataset,
        "recommender": name,
        "trained_at": info.get("trained_at"),
        "features": info.get("features"),
        "source": ctx["source"],
        "regime": ctx["regime"],
        "context": {k: ctx[k] for k in ("source", "regime", "metric", "rule", "sources", "origin", "cached")}
        | {"line": describe_context(ctx)},
        "candidates": n_candidates,
        "outside_context": counts["outside_context"],
        "other_modality": counts["other_modality"],
        "degenerate_excluded": counts["degenerate_excluded"],
        "modality": counts["modality"],
        "finetuned": int(len(own)),
        "excluded_finetuned": 0 if include_finetuned else int(len(own)),
        "best_finetuned": None if own.empty else {"model": str(own.idxmax()), "real": float(own.max())},
        "own_results": int(len(own)),
        "conditioned_on": int(len(used)),
        "conditioning": ("update_rule (Gaussian-process posterior, as search)" if used else
                         "off (--ignore-own-results): the prior" if len(own) else "none: no own result"),
        "measured": own_rows,
        "measured_elsewhere": [{"model": r.model, "source": r.source, "regime": r.regime, "metric": r.metric,
                                "value": float(r.value)} for r in else_.itertuples(index=False)],
        "notes": cold_start_notes(dataset, hist, info, own, else_),
        "cold_start": bool(own.empty),
        "has_uncertainty": has_uncertainty,
        "guesses": int(out["guess"].sum()),
    }


def cold_start_notes(dataset: str, hist, info: dict, own, else_) -> list[str]:
    """What the ranking rests on when the dataset has no result in the context, or no meta-features."""
    groups = str(info.get("features") or "")
    notes = []
    if own.empty:
        rests = ["popularity (the models' standing across the history's datasets)"] \
            if (info.get("name") or info.get("class", "")).lower().startswith("blend") else []
        rests += [label for g, label in (("m", "model meta-features"), ("d", "dataset meta-features"),
                                         ("s", "MS scores")) if g in groups.split(",")]
        more = f"; {len(else_)} results from other sources/regimes are shown, not used" if len(else_) else ""
        notes.append(f"cold start: no fine-tune on {dataset!r} in this context yet; the ranking rests on "
                     f"{', '.join(rests) or 'the recommender alone'}{more}")
    if "d" in groups.split(","):
        row = hist.datasets.set_index("name").reindex([dataset]).iloc[0]
        fields = [f for f in S.DATASET_FIELDS if f != "modality"]
        missing = [f for f in fields if f not in row.index or row[f] is None or row[f] != row[f]]
        if len(missing) == len(fields):
            notes.append(f"no meta-features for {dataset!r}: dataset features imputed (the training datasets' "
                         "typical values); add them with `history add-dataset` or a generic import")
        elif {"num_samples", "num_classes"} & set(missing):
            notes.append(f"{dataset!r} lacks meta-features "
                         f"{', '.join(f for f in missing if f in ('num_samples', 'num_classes'))}: imputed")
    return notes


#: Model fields that say nothing about how well a model fine-tunes (``score`` fills feature_dim).
_NON_DESCRIPTIVE = {"modality", "feature_dim"}


def uninformed_models(hist) -> set:
    """Models the recommender knows nothing about: no fine-tuning job in the history and no
    descriptive meta-feature (e.g. added only by ``score``). Their predictions are guesses."""
    with_jobs = set(hist.targets["model"]) if len(hist.targets) else set()
    fields = [f for f in S.MODEL_FIELDS if f not in _NON_DESCRIPTIVE and f in hist.models.columns]
    out = set()
    for r in hist.models.to_dict("records"):
        if r["name"] in with_jobs:
            continue
        if not any(r.get(f) is not None and r.get(f) == r.get(f) for f in fields):
            out.add(r["name"])
    return out
