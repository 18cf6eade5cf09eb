"""Evaluation protocols: how a history is split into (train frame, held-out test pairs) folds.

All protocols are grouped by dataset and never leak a held-out target into training:
every fold's ``train`` frame is built with :meth:`HistoryFrame.drop_targets` /
:meth:`HistoryFrame.keep_targets`, which remove fine-tuning targets but keep the
meta-features and model-selection (MS) scores (those are legitimately available for a
new dataset: a probe can be scored before any fine-tuning).

``setting1``   unseen models on a seen dataset (Li et al. 2023, setting 1): for each
               dataset (with enough models) and seed, 20% of its models are held out;
               training keeps the other 80% of that dataset plus every other dataset's
               targets; the held-out 20% are predicted. Used on timm ImageNet.
``setting2``   train on a single dataset's history, predict the known models (those with
               a target on the training dataset) on every other dataset.
``lodo``       leave one dataset out (the headline): train on all other datasets,
               predict every model of the held-out dataset.
``kfold``      leave a group of datasets out: the datasets (sorted by name) are dealt
               round robin into ``k`` groups; each group is held out once. ``train``'s
               cross-validation and the inner folds of nested selection use it.
``coldstart``  hold out a dataset AND a random 20% of its models together: their targets
               on *all* datasets are removed from training; predict the held-out models
               on the held-out dataset (new dataset x new models).

A held-out dataset with fewer than ``min_models`` models is skipped with a stated reason
(:class:`FoldPlan.skipped`), never silently.

Twins. A store filled from several sources may hold the same task under two names (an old store,
or a user's own import named ``pets`` next to the public ``oxford_iiit_pet``). Holding a dataset
out holds out every name the dataset registry gives the same task, and every alias the store
records for it (``history add-dataset --alias``; :func:`twins_in`), so no twin's
target stays in training; ``setting1`` drops the held-out models' targets on the twins too, and
``setting2`` never tests on a twin of its training dataset.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from history.datasets_registry import groups
from history.errors import NotFoundError, RecommenderError, unknown_name_error


@dataclass
class Fold:
    """One train/test split. ``test`` has columns model, dataset, value (the real targets)."""

    fold_id: str
    train: object  # features.history_frame.HistoryFrame
    test: pd.DataFrame
    held_out_datasets: list[str]
    held_out_models: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class FoldPlan:
    """The folds of a protocol plus what was skipped and why."""

    protocol: str
    folds: list[Fold]
    skipped: list[dict] = field(default_factory=list)  # {"dataset", "reason"}

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


@dataclass(frozen=True)
class ProtocolInfo:
    name: str
    description: str
    make: Callable[..., FoldPlan]
    uses_seeds: bool
    #: protocol of the inner folds that nested selection runs on an outer fold's training
    #: frame (that frame never holds the outer fold's held-out targets)
    inner: str = "kfold"


PROTOCOLS: dict[str, ProtocolInfo] = {}


def register_protocol(name: str, description: str, uses_seeds: bool = False, inner: str = "kfold"):
    """Register a fold maker ``fn(history, targets, held, all_datasets, **options) -> FoldPlan``.

    Options passed to every maker: seeds, test_fraction, min_models, base_seed, k (accept
    the ones you need and ``**_`` for the rest). ``inner`` names the protocol nested
    selection uses inside each outer fold.
    """
    def deco(fn):
        PROTOCOLS[name] = ProtocolInfo(name, description, fn, uses_seeds, inner)
        return fn

    return deco


def list_protocols() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str) -> ProtocolInfo:
    if name not in PROTOCOLS:
        raise unknown_name_error("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def check_single_target_kind(history) -> None:
    """Refuse a history mixing regimes or metrics: their targets must not be pooled silently."""
    t = history.targets
    for col, opt in (("regime", "--regime"), ("metric", "--metric")):
        vals = sorted(t[col].dropna().unique()) if col in t.columns else []
        if len(vals) > 1:
            raise RecommenderError(
                f"the history mixes {len(vals)} {col}s ({', '.join(map(str, vals))}); their targets are not "
                f"comparable -- choose one with {opt}.")


def _test_frame(targets: pd.DataFrame) -> pd.DataFrame:
    return (targets[["model", "dataset", "value"]].dropna(subset=["value"])
            .sort_values(["dataset", "model"], kind="mergesort").reset_index(drop=True))


def _models_of(targets: pd.DataFrame, dataset: str) -> list[str]:
    return sorted(targets.loc[targets["dataset"] == dataset, "model"].unique())


def twins_in(datasets, all_ds, aliases=None) -> list[str]:
    """``datasets`` plus every name in ``all_ds`` of the same task, sorted: the names the dataset
    registry gives one task (:func:`history.datasets_registry.groups`), joined with ``aliases``
    ({name: [other names]}, e.g. a user's ``history add-dataset --alias``; see
    :func:`store_aliases`). Unknown names are their own only twin."""
    names = sorted(set(all_ds) | set(datasets))
    parent = {n: n for n in names}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(a, b):
        parent[find(a)] = find(b)

    for group in groups(names).values():
        for n in group[1:]:
            union(group[0], n)
    for n, other in (aliases or {}).items():
        for a in other:
            if n in parent and a in parent:
                union(n, a)
    want = {find(d) for d in datasets}
    return sorted(n for n in names if find(n) in want)


def store_aliases(history) -> dict:
    """{dataset: [aliases]} recorded in the history's dataset meta (``extra.aliases`` of any source)."""
    ds = history.datasets
    if "extra" not in ds.columns:
        return {}
    out = {}
    for name, extra in zip(ds["name"], ds["extra"]):
        al = (extra or {}).get("aliases") if isinstance(extra, dict) else None
        if al:
            out[name] = sorted({a for v in al.values() for a in (v if isinstance(v, list) else [v])})
    return out


def _n_held(n: int, fraction: float, min_models: int) -> int:
    """Number of models to hold out: ``round(fraction * n)`` but at least ``min_models``."""
    return max(min_models, int(round(fraction * n)))


def make_folds(history, protocol: str, *, seeds: int = 5, test_fraction: float = 0.2, min_models: int = 3,
               datasets=None, base_seed: int = 0, k: int = 5, check_kind: bool = True) -> FoldPlan:
    """Folds of ``protocol`` over ``history`` (a HistoryFrame).

    ``datasets`` restricts which datasets are held out (default: every dataset with targets).
    ``check_kind=False`` skips the refusal of mixed regimes / metrics (``train`` checks
    that itself, per (model, dataset) pair).
    """
    info = get_protocol(protocol)
    if check_kind:
        check_single_target_kind(history)
    t = history.targets.dropna(subset=["value"])
    all_ds = sorted(t["dataset"].unique())
    if not all_ds:
        raise RecommenderError("the history has no fine-tuning targets to evaluate on; import a history first "
                               "(python -m recommender history import ...).")
    if datasets is not None:
        unknown = sorted(set(datasets) - set(all_ds))
        if unknown:
            raise NotFoundError(f"unknown held-out dataset(s) {', '.join(unknown)}; datasets with targets: "
                                f"{', '.join(all_ds)}")
        held = sorted(datasets)
    else:
        held = all_ds
    return info.make(history, t, held, all_ds, seeds=seeds, test_fraction=test_fraction,
                     min_models=min_models, base_seed=base_seed, k=k)


@register_protocol("lodo", "leave one dataset out: train on all other datasets, predict the held-out one")
def _lodo(history, t, held, all_ds, *, min_models, **_):
    if len(all_ds) < 2:
        raise RecommenderError(
            f"protocol lodo needs at least 2 datasets with targets, this history has only {all_ds[0]!r}; "
            "use --protocol setting1 (unseen models on a seen dataset) instead.")
    plan = FoldPlan("lodo", [])
    al = store_aliases(history)
    for d in held:
        models = _models_of(t, d)
        if len(models) < min_models:
            plan.skipped.append({"dataset": d, "reason": f"only {len(models)} model(s) with a target "
                                                         f"(need >= {min_models})"})
            continue
        train = history.drop_targets(datasets=twins_in([d], all_ds, al))
        plan.folds.append(Fold(f"lodo:{d}", train, _test_frame(t[t["dataset"] == d]), [d]))
    return plan


def _seeded(history, t, held, *, seeds, test_fraction, min_models, base_seed, name, cold, **_):
    plan = FoldPlan(name, [])
    all_ds, al = sorted(t["dataset"].unique()), store_aliases(history)
    for d in held:
        twins = twins_in([d], all_ds, al)
        models = _models_of(t, d)
        n_test = _n_held(len(models), test_fraction, min_models)
        if len(models) < min_models or n_test >= len(models):
            plan.skipped.append({"dataset": d, "reason": f"only {len(models)} model(s) with a target: cannot "
                                                         f"hold out >= {min_models} and keep some for training"})
            continue
        for s in range(seeds):
            seed = base_seed + s
            rng = np.random.default_rng([seed, _stable_hash(d)])
            test_models = sorted(rng.choice(models, size=n_test, replace=False).tolist())
            test = _test_frame(t[(t["dataset"] == d) & t["model"].isin(test_models)])
            if cold:
                train = history.drop_targets(datasets=twins, models=test_models)
            else:
                train = history.drop_targets(pairs=[(m, x) for m in test_models for x in twins])
            plan.folds.append(Fold(f"{name}:{d}:seed{seed}", train, test, [d], test_models, seed))
    return plan


def _stable_hash(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())


@register_protocol("setting1", "unseen models on a seen dataset: hold out 20% of a dataset's models", True,
                   inner="setting1")
def _setting1(history, t, held, all_ds, **kw):
    return _seeded(history, t, held, name="setting1", cold=False, **kw)


@register_protocol("coldstart", "hold out a dataset and 20% of models together (removed everywhere)", True)
def _coldstart(history, t, held, all_ds, **kw):
    if len(all_ds) < 2:
        raise RecommenderError(
            f"protocol coldstart needs at least 2 datasets with targets, this history has only {all_ds[0]!r}; "
            "use --protocol setting1 instead.")
    return _seeded(history, t, held, name="coldstart", cold=True, **kw)


@register_protocol("setting2", "train on one dataset's history, predict its models on every other dataset",
                   inner="setting1")
def _setting2(history, t, held, all_ds, *, min_models, **_):
    if len(all_ds) < 2:
        raise RecommenderError(
            f"protocol setting2 needs at least 2 datasets with targets, this history has only {all_ds[0]!r}.")
    plan = FoldPlan("setting2", [])
    al = store_aliases(history)
    for d in all_ds:  # d = the single training dataset
        known = _models_of(t, d)
        tests = []
        for other in held:
            if other in twins_in([d], all_ds, al):  # the training dataset itself, under any of its names
                continue
            rows = t[(t["dataset"] == other) & t["model"].isin(known)]
            if rows["model"].nunique() < min_models:
                plan.skipped.append({"dataset": other, "train_dataset": d,
                                     "reason": f"only {rows['model'].nunique()} model(s) known from {d} "
                                               f"(need >= {min_models})"})
                continue
            tests.append(rows)
        if not tests:
            continue
        train = history.keep_targets(datasets=[d])
        test = _test_frame(pd.concat(tests, ignore_index=True))
        plan.folds.append(Fold(f"setting2:{d}", train, test, sorted(test["dataset"].unique()), [], None))
    return plan


@register_protocol("kfold", "leave a group of datasets out: datasets dealt round robin into k groups")
def _kfold(history, t, held, all_ds, *, min_models, k=5, **_):
    if len(all_ds) < 2:
        raise RecommenderError(
            f"protocol kfold needs at least 2 datasets with targets, this history has only {all_ds[0]!r}; "
            "use --protocol setting1 instead.")
    k = max(2, min(int(k), len(held)))
    plan = FoldPlan("kfold", [])
    al = store_aliases(history)
    for i in range(k):
        group = held[i::k]
        tests, kept = [], []
        for d in group:
            rows = t[t["dataset"] == d]
            if rows["model"].nunique() < min_models:
                plan.skipped.append({"dataset": d, "reason": f"only {rows['model'].nunique()} model(s) with a "
                                                             f"target (need >= {min_models})"})
                continue
            tests.append(rows)
            kept.append(d)
        if not tests:
            continue
        train = history.drop_targets(datasets=twins_in(group, all_ds, al))
        plan.folds.append(Fold(f"kfold:{i}", train, _test_frame(pd.concat(tests, ignore_index=True)), kept))
    return plan


def describe_plan(plan: FoldPlan) -> str:
    msg = f"{plan.protocol}: {len(plan.folds)} fold(s)"
    if plan.skipped:
        why = "; ".join(f"{s['dataset']}" + (f" (train {s['train_dataset']})" if "train_dataset" in s else "")
                        + f": {s['reason']}" for s in plan.skipped)
        msg += f", {plan.n_skipped} held-out dataset(s) skipped -- {why}"
    return msg


__all__ = ["Fold", "FoldPlan", "ProtocolInfo", "PROTOCOLS", "make_folds", "list_protocols", "get_protocol",
           "describe_plan", "check_single_target_kind", "twins_in", "store_aliases"]
