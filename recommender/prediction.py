"""Prediction behind ``python -m recommender predict``.

:func:`recommend_for_dataset` loads a saved recommender and ranks every model of the *current*
store for a dataset (so datasets registered and MS scores stored after training are used).
"""
from __future__ import annotations

import numpy as np

from history.errors import NotFoundError

from .model_io import load_saved


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


def recommend_for_dataset(store, dataset: str, *, name: str | None = None, home=None, k: int | None = None,
                          regime=None, source=None, include_finetuned: bool = False,
                          include_degenerate: bool = False):
    """Rank every model of the current store for ``dataset`` with a saved recommender.

    Returns ``(frame, meta)``: columns ``rank, model, predicted, std, real`` (``real`` is the
    stored accuracy where ``dataset`` already has a job for that model; those models are
    left out of the ranking unless ``include_finetuned``); ``meta`` describes the run.
    """
    from features.history_frame import HistoryFrame

    check_dataset(store, dataset)
    rec, info, name = load_saved(name, home)
    src = source if source is not None else info.get("source")
    reg = regime if regime is not None else info.get("regime")
    hist = HistoryFrame.from_store(store, source=src, regime=reg, rule=info.get("target_rule") or "best",
                                   metric=info.get("metric"))
    t = hist.targets
    real = t[t["dataset"] == dataset].groupby("model")["value"].max()
    models = hist.model_names()
    # an image dataset is not a candidate for a text model (and vice versa); models or
    # datasets whose modality is unknown are kept
    ds_mod = hist.datasets.set_index("name")["modality"].get(dataset) if len(hist.datasets) else None
    other_modality = 0
    if isinstance(ds_mod, str) and ds_mod:
        mods = hist.models.set_index("name")["modality"]
        keep = [m for m in models if not isinstance(mods.get(m), str) or mods.get(m) in ("", ds_mod)]
        other_modality = len(models) - len(keep)
        models = keep
    degenerate_excluded = 0
    if not include_degenerate and "degenerate" in hist.models.columns:
        # models flagged by history.viability (stored with the model) are not ranked unless asked
        flagged = set(hist.models.loc[hist.models["degenerate"].fillna(False).astype(bool), "name"].astype(str))
        keep = [m for m in models if m not in flagged]
        degenerate_excluded = len(models) - len(keep)
        models = keep
    exclude = () if include_finetuned else tuple(real.index)
    ranked = rec.recommend(dataset, k=None, history=hist, models=models, exclude=exclude)
    ranked["real"] = ranked["model"].map(real).astype(float)
    ranked["guess"] = ranked["model"].isin(uninformed_models(hist))
    for col in ("predicted", "std"):  # shown / exported accuracies are clipped; metrics use raw values
        if col in ranked.columns:
            ranked[col] = np.clip(ranked[col].astype(float), 0.0, 1.0)
    if k is not None:
        ranked = ranked.head(int(k))
    meta = {
        "dataset": dataset,
        "recommender": name,
        "trained_at": info.get("trained_at"),
        "features": info.get("features"),
        "source": src,
        "regime": reg,
        "candidates": len(models),
        "other_modality": other_modality,
        "degenerate_excluded": degenerate_excluded,
        "modality": ds_mod if isinstance(ds_mod, str) else None,
        "finetuned": int(len(real)),
        "excluded_finetuned": 0 if include_finetuned else int(len(real)),
        "best_finetuned": None if real.empty else {"model": str(real.idxmax()), "real": float(real.max())},
        "has_uncertainty": bool(getattr(rec, "has_uncertainty", False)),
        "guesses": int(ranked["guess"].sum()),
    }
    return ranked.reset_index(drop=True), meta


#: Model fields that say nothing about how well a model fine-tunes (``score`` fills feature_dim).
_NON_DESCRIPTIVE = {"modality", "feature_dim"}


def uninformed_models(hist) -> set:
    """Models the recommender knows nothing about: no fine-tuning job in the history and no
    descriptive meta-feature (e.g. added only by ``score``). Their predictions are guesses."""
    from history import schema as S

    with_jobs = set(hist.targets["model"]) if len(hist.targets) else set()
    fields = [f for f in S.MODEL_FIELDS if f not in _NON_DESCRIPTIVE and f in hist.models.columns]
    out = set()
    for r in hist.models.to_dict("records"):
        if r["name"] in with_jobs:
            continue
        if not any(r.get(f) is not None and r.get(f) == r.get(f) for f in fields):
            out.add(r["name"])
    return out
