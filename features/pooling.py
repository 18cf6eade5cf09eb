"""Pooled multi-source training: several histories in one :class:`HistoryFrame`.

The first (``primary``) history keeps its dataset names; every other source's datasets are
renamed ``<dataset>@<source>`` so that the same task fine-tuned under another protocol (e.g.
``cifar100`` with 1,000 VTAB samples in SHiFT and with the full training set in
TransferGraph) stays a separate training dataset with its own accuracy scale. Each renamed row
records its original name and the registry's twins of it as aliases (``extra.aliases.pooled``),
so the protocols' twin-aware exclusion (:func:`recommender.protocols.twins_in`) holds a
held-out dataset out together with its copies from every other source.

The accuracy scales are pooled by the recommenders' per-dataset standardized target
(``target_norm="dataset"``: ``(acc - mean_t) / std_t`` per training dataset, the default)
and the per-dataset z-scores of the collaborative features; a held-out dataset is still
ranked and scored in its own units (its real accuracies). The other sources' targets are
extra training rows, never held out; they take the primary's regime label (the protocols
evaluate one regime), their own is recorded in ``counts`` and in the dataset's
``extra.pooled_from``. The same models rank differently under another regime (e.g. SHiFT's
VTAB-1k runs, 1,000 training examples): pooling those into
TransferGraph's full fine-tunings sank the TransferGraph ranking (docs/recommenders.md,
"Pooled training"), so pool the primary's regime where the other source has it
(:func:`pool_regime`, the rule ``train`` and ``evaluate`` pool by unless a regime is named).

One scale: every pooled source contributes one regime and its datasets are renamed per
source, so the per-dataset standardization is per dataset within each source and regime;
``train`` refuses a pooled frame for a recommender with ``target_norm="none"``. Viability
flags stay per source and regime: a model's row (with its ``degenerate`` flag, computed by
``HistoryFrame.from_store`` for its source) comes from the primary when the primary has it,
so another source never un-flags a candidate of the datasets ranked.
"""
from __future__ import annotations


import pandas as pd

from history.datasets_registry import twins
from history.errors import RecommenderError

from .history_frame import HistoryFrame

SEP = "@"


def pooled_name(dataset: str, source: str) -> str:
    return f"{dataset}{SEP}{source}"


def _twins(name: str) -> list[str]:
    try:
        return list(twins(name))
    except Exception:  # noqa: BLE001 - an unknown name is its own only twin
        return [name]


def pool_histories(frames, *, modalities=None) -> tuple[HistoryFrame, dict]:
    """One frame from ``[(source, HistoryFrame), ...]``; the first is the primary.

    ``modalities``: keep only the other sources' datasets of these modalities (default: the
    modalities of the primary's datasets). Returns (frame, counts per source: targets,
    datasets, models added, and datasets left out for another modality).
    """
    frames = list(frames)
    if not frames:
        raise RecommenderError("pool_histories needs at least one (source, history) pair")
    (src0, h0), rest = frames[0], frames[1:]
    t0 = h0.targets.dropna(subset=["value"])
    if t0.empty:
        raise RecommenderError(f"the primary source {src0!r} has no targets to pool with")
    regime = t0["regime"].mode().iloc[0]
    metric = t0["metric"].mode().iloc[0]
    dmod = h0.datasets.set_index("name")["modality"] if "modality" in h0.datasets else pd.Series(dtype=object)
    if modalities is None:
        modalities = {m for m in dmod.reindex(t0["dataset"].unique()).dropna().unique()}
    targets, models, datasets, scores = [h0.targets], [h0.models], [h0.datasets], [h0.scores]
    counts = {src0: {"targets": int(len(t0)), "datasets": int(t0["dataset"].nunique()), "primary": True}}
    for src, h in rest:
        if src == src0:
            continue
        t = h.targets.dropna(subset=["value"])
        if t.empty:
            raise RecommenderError(f"source {src!r} has no targets to pool with {src0!r}")
        # each source's own target metric (e.g. TransferGraph's test_accuracy, PARC's accuracy): the
        # per-dataset standardization makes them comparable; the rows take the primary's label
        own_metric = t["metric"].mode().iloc[0]
        t = t[t["metric"] == own_metric].assign(metric=metric)
        mod = h.datasets.set_index("name")["modality"]
        keep = [d for d in t["dataset"].unique() if not modalities or mod.get(d) in modalities]
        left = sorted(set(t["dataset"]) - set(keep))
        t = t[t["dataset"].isin(keep)].copy()
        ren = {d: pooled_name(d, src) for d in keep}
        t["dataset"] = t["dataset"].map(ren)
        own_regime = t["regime"].mode().iloc[0]
        t["regime"] = regime
        targets.append(t)
        dm = h.datasets[h.datasets["name"].isin(keep)].copy()
        extras = []
        for name, ex in zip(dm["name"], dm["extra"] if "extra" in dm.columns else [None] * len(dm)):
            ex = dict(ex) if isinstance(ex, dict) else {}
            al = dict(ex.get("aliases") or {})
            al["pooled"] = sorted(set(_twins(name)) | {name})
            ex["aliases"] = al
            ex["pooled_from"] = {"source": src, "dataset": name, "regime": own_regime}
            extras.append(ex)
        dm["extra"] = extras
        dm["name"] = dm["name"].map(ren)
        datasets.append(dm)
        models.append(h.models)
        sc = h.scores[h.scores["dataset"].isin(keep)].copy()
        sc["dataset"] = sc["dataset"].map(ren)
        scores.append(sc)
        counts[src] = {"targets": int(len(t)), "datasets": len(keep), "left_out_other_modality": len(left),
                       "metric": own_metric, "regime": own_regime, "same_regime": bool(own_regime == regime)}
    mm = pd.concat(models, ignore_index=True).drop_duplicates("name", keep="first")
    dd = pd.concat(datasets, ignore_index=True).drop_duplicates("name", keep="first")
    out = HistoryFrame(targets=pd.concat(targets, ignore_index=True), models=mm, datasets=dd,
                       scores=pd.concat(scores, ignore_index=True))
    return out, counts


def own_datasets(history: HistoryFrame) -> list[str]:
    """The datasets of ``history`` that are not another source's pooled copy (no ``pooled_from``
    mark): the primary's own datasets, or every dataset of an unpooled history."""
    d = history.datasets
    if "extra" not in d.columns:
        return sorted(d["name"].astype(str))
    pooled = [isinstance(ex, dict) and "pooled_from" in ex for ex in d["extra"]]
    return sorted(d.loc[[not p for p in pooled], "name"].astype(str))


def pool_regime(regimes, *, named=None, primary=None):
    """The regime of another source to pool with the primary: ``named`` (after a colon in
    ``--source``) if given, else the primary's regime when the source has it (the same
    fine-tuning protocol; another regime ranks the same models differently, e.g. SHiFT's
    VTAB-1k runs against TransferGraph's full fine-tunings), else its most frequent regime.
    ``regimes``: the source's job counts per regime (a value_counts Series)."""
    if named:
        return named
    if primary is not None and primary in regimes.index:
        return primary
    return regimes.index[0]


__all__ = ["parse_sources", "pool_histories", "pool_regime", "pooled_name", "own_datasets", "SEP"]


def parse_sources(spec) -> list[tuple[str, str | None]]:
    """The pooling syntax of ``--source`` (``train``, ``evaluate``): ``"transfergraph-image,shift:vtab-1k,parc"``
    -> ``[(source, regime or None), ...]``; empty parts are skipped."""
    out = []
    for part in str(spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        src, _, reg = part.partition(":")
        out.append((src.strip(), reg.strip() or None))
    return out
