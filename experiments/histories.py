"""Loading one evaluable history from a store (shared by ``evaluate`` and the report)."""
from __future__ import annotations

from features.history_frame import HistoryFrame
from features.pooling import parse_sources, pool_histories, pool_regime
from history.errors import NotFoundError, RecommenderError, unknown_name_error


def load_history(store, *, source=None, regime=None, rule="best", metric=None, modality=None):
    """A HistoryFrame for ``source`` / ``regime``, validating both against the store."""
    sources = store.sources()
    if not sources:
        raise RecommenderError(f"the history store {store!r} has no fine-tuning jobs; import one first "
                               "(python -m recommender history import ...)")
    if source is None:
        if len(sources) > 1:
            raise RecommenderError(f"the store holds several sources; choose one with --source: {', '.join(sources)}")
        source = sources[0]
    if source not in sources:
        raise unknown_name_error("source", source, sources)
    regimes = sorted(store.jobs_frame(source=source)["regime"].dropna().unique())
    if regime is not None and regime not in regimes:
        raise unknown_name_error("regime", regime, regimes, where=f" for source {source!r}",
                                 plural=f"regimes of {source!r}")
    if regime is None and len(regimes) > 1:
        raise RecommenderError(f"source {source!r} has {len(regimes)} regimes ({', '.join(regimes)}); their "
                               "targets must not be pooled -- choose one with --regime")
    h = HistoryFrame.from_store(store, source=source, regime=regime, rule=rule, metric=metric, dataset_scope="source")
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


def load_pooled(store, *, source, regime=None, rule="best", metric=None, modality=None):
    """A pooled HistoryFrame (:func:`features.pooling.pool_histories`) for ``source`` =
    ``"primary,other[:regime],..."``. The primary is loaded like :func:`load_history`
    (``regime`` / ``modality`` apply to it); another source with several regimes uses the one
    named after a colon, else the primary's regime when it has it, else its most frequent
    regime (:func:`pool_regime`).
    Returns (frame, primary source, regime, notes, primary's datasets)."""
    specs = parse_sources(source)
    if not specs:
        raise RecommenderError("--source is empty; name one or more sources, e.g. transfergraph-image,shift")
    (src0, reg0), rest = specs[0], specs[1:]
    h0, src0, reg0, notes = load_history(store, source=src0, regime=reg0 or regime, rule=rule, metric=metric,
                                         modality=modality)
    frames = [(src0, h0)]
    for src, reg in rest:
        if src not in store.sources():
            load_history(store, source=src)  # the unknown-source error, with suggestions
        regimes = store.jobs_frame(source=src)["regime"].value_counts()
        reg = pool_regime(regimes, named=reg, primary=reg0 or h0.targets["regime"].mode().iloc[0])
        h, _, reg, _ = load_history(store, source=src, regime=reg, rule=rule, metric=metric)
        frames.append((src, h))
        notes.append(f"pooled: {src} (regime {reg}) adds training targets under '<dataset>@{src}'")
        # the note's count follows pooling below
    pooled, counts = pool_histories(frames)
    for src, c in counts.items():
        if not c.get("primary") and not c["targets"]:
            raise RecommenderError(f"source {src!r} adds no training target to the pool (no dataset of "
                                   f"{src0!r}'s modality); leave it out of --source")
        if not c.get("primary") and not c.get("same_regime", True):
            notes.append(f"pooled: {src}'s regime {c['regime']} differs from {src0}'s; its rows are training "
                         "rows under another fine-tuning protocol (the same models may rank differently)")
        if c.get("left_out_other_modality"):
            notes.append(f"pooled: {c['left_out_other_modality']} dataset(s) of {src} left out (another modality "
                         f"than {src0}'s)")
    primary = sorted(h0.targets.dropna(subset=["value"])["dataset"].unique())
    return pooled, src0, reg0, notes, primary
