"""Loading one evaluable history from a store (shared by ``evaluate`` and the report)."""
from __future__ import annotations

from history.errors import NotFoundError, RecommenderError


def load_history(store, *, source=None, regime=None, rule="best", metric=None, modality=None):
    """A HistoryFrame for ``source`` / ``regime``, validating both against the store."""
    from features.history_frame import HistoryFrame

    sources = store.sources()
    if not sources:
        raise RecommenderError(f"the history store {store!r} has no fine-tuning jobs; import one first "
                               "(python -m recommender history import ...)")
    if source is None:
        if len(sources) > 1:
            raise RecommenderError(f"the store holds several sources; choose one with --source: {', '.join(sources)}")
        source = sources[0]
    if source not in sources:
        from history.errors import closest

        hint = closest(source, sources)
        raise NotFoundError(f"unknown source {source!r}; valid sources: {', '.join(sources)}"
                            + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
    regimes = sorted(store.jobs_frame(source=source)["regime"].dropna().unique())
    if regime is not None and regime not in regimes:
        raise NotFoundError(f"source {source!r} has no regime {regime!r}; its regimes: {', '.join(regimes)}")
    if regime is None and len(regimes) > 1:
        raise RecommenderError(f"source {source!r} has {len(regimes)} regimes ({', '.join(regimes)}); their "
                               "targets must not be pooled -- choose one with --regime")
    h = HistoryFrame.from_store(store, source=source, regime=regime, rule=rule, metric=metric)
    notes = []
    all_t = store.targets(rule, source=source, regime=regime)
    other = all_t[~all_t["metric"].isin(h.targets["metric"].unique())]
    if len(other):
        notes.append(f"{len(other)} target(s) with metric {', '.join(sorted(other['metric'].unique()))} on "
                     f"{', '.join(sorted(other['dataset'].unique()))} are not evaluated (metric "
                     f"{', '.join(sorted(h.targets['metric'].unique()))} selected; use --metric to choose)")
    if modality is not None:
        mod = h.datasets.set_index("name")["modality"]
        known = sorted(mod.dropna().unique())
        if modality not in known:
            raise NotFoundError(f"no dataset of modality {modality!r} in source {source!r}; modalities: "
                                f"{', '.join(known) or 'none recorded'}")
        keep = [d for d in h.targets["dataset"].unique() if mod.get(d) == modality]
        dropped = sorted(set(h.targets["dataset"]) - set(keep))
        h = h.keep_targets(datasets=keep)
        if dropped:
            notes.append(f"--modality {modality}: {len(dropped)} dataset(s) of another modality not evaluated "
                         f"({', '.join(dropped)})")
    return h, source, regime, notes
