"""``HistoryFrame``: the in-memory view of a history that recommenders are trained on.

It holds four tables:

* ``targets``  -- one training target per (model, dataset, regime): columns ``model``,
  ``dataset``, ``regime``, ``metric``, ``value`` (+ ``n_jobs``). Built from the store's jobs
  with a target rule (``best`` / ``mean`` / ``latest``, see ``history.store.TARGET_RULES``).
* ``models``   -- one row per model: ``name`` + ``history.schema.MODEL_FIELDS`` (+ ``extra``).
* ``datasets`` -- one row per dataset: ``name`` + ``history.schema.DATASET_FIELDS`` (+ ``extra``).
* ``scores``   -- model-selection (MS) scores ``model, dataset, method, value``, averaged over
  seeds / probe sets / sources.

Only ``targets`` are fine-tuning results. Meta-features and MS scores are not targets, so
``drop_targets`` (used to hold a dataset out) keeps them: a recommender may use the LogME
score of a held-out dataset, never its fine-tuning accuracies.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from history import schema as S
from history.errors import RecommenderError
from history.schema import DATASET_FIELDS, MODEL_FIELDS
from history.store.targets import TARGET_RULES, aggregate_targets
from history.viability import flags_for_jobs

TARGET_COLUMNS = ["model", "dataset", "regime", "metric", "value", "n_jobs"]
SCORE_COLUMNS = ["model", "dataset", "method", "value"]
MODEL_COLUMNS = ["name", *MODEL_FIELDS]
DATASET_COLUMNS = ["name", *DATASET_FIELDS]


def _as_set(x):
    if x is None:
        return None
    if isinstance(x, str):
        return {x}
    return {str(v) for v in x}


@dataclass
class HistoryFrame:
    targets: pd.DataFrame
    models: pd.DataFrame
    datasets: pd.DataFrame
    scores: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCORE_COLUMNS))

    def __post_init__(self):
        self.targets = _normalize_targets(self.targets)
        self.models = _normalize_meta(self.models, MODEL_COLUMNS, "models")
        self.datasets = _normalize_meta(self.datasets, DATASET_COLUMNS, "datasets")
        self.scores = _normalize_scores(self.scores)
        # every model / dataset referenced by targets or scores has a meta row (maybe empty)
        for attr, cols, key in (("models", MODEL_COLUMNS, "model"), ("datasets", DATASET_COLUMNS, "dataset")):
            meta = getattr(self, attr)
            used = pd.Index(self.targets[key]).union(pd.Index(self.scores[key])).unique()
            missing = used.difference(pd.Index(meta["name"]))
            if len(missing):
                add = pd.DataFrame({"name": list(missing)})
                meta = pd.concat([meta, add], ignore_index=True)
                meta = meta.reindex(columns=list(dict.fromkeys(cols + list(meta.columns))))
            setattr(self, attr, meta.sort_values("name", kind="mergesort").reset_index(drop=True))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_store(cls, store, *, source=None, regime=None, rule: str = "best", metric=None,
                   dataset_scope: str = "all") -> HistoryFrame:
        """Build the frame from a :class:`history.store.HistoryStore`.

        ``source`` / ``regime`` filter the jobs (a name or a list). ``metric`` selects the
        target metric; by default the most frequent one (``accuracy`` on ties). When a
        source filter is given, the candidate models are those of that source (models with
        a job or a score in it); otherwise every model in the store.

        ``dataset_scope="source"`` (with a source filter; what ``train`` and ``evaluate`` read)
        also keeps the frame to that source: the datasets with a job or a score of the source
        plus the datasets no source has a job on (registered with ``history add-dataset``),
        and the scores of the source plus those of no job source (``score-cli``). Another
        source's datasets would otherwise add categories (e.g. ``d:domain=medical``) to the
        featurizer's vocabulary and change the fit. ``"all"`` (default, e.g. ``predict``, which
        may rank a dataset only another source ran) keeps every dataset and score.

        The models' ``degenerate`` / ``degenerate_reason`` are computed on read from the jobs
        read, per source and regime (:func:`history.viability.flags_for_jobs`): the flags of
        the source and regime asked for, never un-set by another source's runs.
        """
        if rule not in TARGET_RULES:
            raise ValueError(f"unknown target rule {rule!r}; valid: {', '.join(TARGET_RULES)}")
        jobs = store.jobs_frame(source=source, regime=regime)  # what store.targets() aggregates
        jobs = jobs[jobs["value"].notna()]
        targets = aggregate_targets(jobs, rule)
        if not targets.empty:
            if metric is None:
                counts = targets["metric"].value_counts()
                top = counts[counts == counts.max()].index
                metric = "accuracy" if "accuracy" in top else sorted(top)[0]
            targets = targets[targets["metric"] == metric]
        scores = store.scores_frame()
        if source is not None:
            srcs = _as_set(source)
            scores_src = scores[scores["source"].isin(srcs)]
            keep_models = set(targets["model"]) | set(scores_src["model"])
        else:
            keep_models = None
        models = store.models_frame().drop(columns=["id"], errors="ignore")
        if keep_models is not None:
            models = models[models["name"].isin(keep_models)]
            scores = scores[scores["model"].isin(keep_models)]
        datasets = store.datasets_frame().drop(columns=["id"], errors="ignore")
        models = _with_flags(models, flags_for_jobs(jobs, datasets))
        if dataset_scope not in ("all", "source"):
            raise ValueError(f"unknown dataset_scope {dataset_scope!r}; valid: all, source")
        if dataset_scope == "source" and source is not None:
            datasets, scores = _source_scope(store, _as_set(source), datasets, scores)
        if "flag" in scores:  # a degenerate score (flagged when computed) is missing, not information
            scores = scores[scores["flag"].isna()]
        if not scores.empty:
            scores = (scores.groupby(["model", "dataset", "method"], sort=True)["value"].mean().reset_index())
        return cls(targets=targets, models=models, datasets=datasets, scores=scores)

    # ------------------------------------------------------------------ views
    def model_names(self) -> list[str]:
        return list(self.models["name"])

    def dataset_names(self) -> list[str]:
        return list(self.datasets["name"])

    def target_datasets(self) -> list[str]:
        """Datasets that have at least one training target."""
        return sorted(self.targets["dataset"].unique())

    def target_models(self) -> list[str]:
        return sorted(self.targets["model"].unique())

    def drop_targets(self, *, datasets=None, models=None, pairs=None) -> HistoryFrame:
        """A copy without the targets of ``datasets`` / ``models`` / (model, dataset) ``pairs``.

        Meta-features and MS scores are kept: they are not fine-tuning results.
        """
        t = self.targets
        mask = pd.Series(False, index=t.index)
        ds, ms = _as_set(datasets), _as_set(models)
        if ds is not None:
            mask |= t["dataset"].isin(ds)
        if ms is not None:
            mask |= t["model"].isin(ms)
        if pairs is not None:
            p = pd.DataFrame(pairs, columns=["model", "dataset"]) if not isinstance(pairs, pd.DataFrame) else pairs
            key = set(zip(p["model"].astype(str), p["dataset"].astype(str)))
            mask |= pd.Series([(a, b) in key for a, b in zip(t["model"], t["dataset"])], index=t.index)
        return replace(self, targets=t[~mask].reset_index(drop=True))

    def keep_targets(self, *, datasets=None, models=None) -> HistoryFrame:
        """A copy keeping only the targets of ``datasets`` and/or ``models``."""
        t = self.targets
        mask = pd.Series(True, index=t.index)
        ds, ms = _as_set(datasets), _as_set(models)
        if ds is not None:
            mask &= t["dataset"].isin(ds)
        if ms is not None:
            mask &= t["model"].isin(ms)
        return replace(self, targets=t[mask].reset_index(drop=True))

    def summary(self) -> dict:
        return {
            "targets": int(len(self.targets)),
            "models": int(self.targets["model"].nunique()),
            "datasets": int(self.targets["dataset"].nunique()),
            "candidate_models": int(len(self.models)),
            "score_methods": sorted(self.scores["method"].unique().tolist()),
        }

    def __repr__(self):
        s = self.summary()
        return (f"HistoryFrame(targets={s['targets']}, models={s['models']}, datasets={s['datasets']}, "
                f"score_methods={s['score_methods']})")


def _job_sources(store) -> dict:
    """dataset name -> the sources with a job on it (one small distinct query)."""
    from sqlalchemy import select

    q = (select(S.datasets.c.name, S.jobs.c.source).join(S.jobs, S.jobs.c.dataset_id == S.datasets.c.id)
         .distinct())
    out: dict = {}
    with store.read() as conn:
        for name, src in conn.execute(q).all():
            out.setdefault(name, set()).add(src)
    return out


def _source_scope(store, srcs: set, datasets: pd.DataFrame, scores: pd.DataFrame):
    """The datasets and scores of ``srcs`` (``from_store(dataset_scope="source")``)."""
    by_ds = _job_sources(store)
    job_sources = set().union(*by_ds.values()) if by_ds else set()
    scores = scores[scores["source"].isin(srcs) | ~scores["source"].isin(job_sources)]
    own = set(scores["dataset"])
    keep = [n for n in datasets["name"] if n in own or not by_ds.get(n) or by_ds[n] & srcs]
    datasets = datasets[datasets["name"].isin(keep)]
    return datasets, scores[scores["dataset"].isin(set(keep))]


def _with_flags(models: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """``models`` with the viability flags of the jobs read (models without an assessed job
    are not degenerate)."""
    models = models.copy()
    flag = flags.set_index("model") if len(flags) else None
    names = models["name"].astype(str)
    models["degenerate"] = (names.map(flag["degenerate"]).fillna(False).astype(bool) if flag is not None
                            else False)
    models["degenerate_reason"] = names.map(flag["reason"]) if flag is not None else None
    models.loc[~models["degenerate"], "degenerate_reason"] = None
    return models


def _normalize_targets(t) -> pd.DataFrame:
    t = pd.DataFrame(t).copy()
    for c in ("model", "dataset", "value"):
        if c not in t.columns:
            raise RecommenderError(f"history targets need columns model, dataset, value; missing {c!r} "
                                   f"(have {list(t.columns)})")
    if "regime" not in t.columns:
        t["regime"] = "full"
    if "metric" not in t.columns:
        t["metric"] = "accuracy"
    if "n_jobs" not in t.columns:
        t["n_jobs"] = 1
    t["model"] = t["model"].astype(str)
    t["dataset"] = t["dataset"].astype(str)
    t["regime"] = t["regime"].fillna("full").astype(str)
    t["value"] = pd.to_numeric(t["value"], errors="coerce").astype(float)
    extra = [c for c in t.columns if c not in TARGET_COLUMNS]
    return t[TARGET_COLUMNS + extra].reset_index(drop=True)


def _normalize_meta(df, cols, what) -> pd.DataFrame:
    df = pd.DataFrame(df).copy() if df is not None else pd.DataFrame(columns=cols)
    if "name" not in df.columns:
        raise RecommenderError(f"history {what} table needs a 'name' column (have {list(df.columns)})")
    df = df.drop(columns=["id"], errors="ignore")
    df["name"] = df["name"].astype(str)
    df = df.drop_duplicates("name", keep="last")
    return df.reindex(columns=list(dict.fromkeys(cols + list(df.columns))))


def _normalize_scores(s) -> pd.DataFrame:
    s = pd.DataFrame(s).copy() if s is not None else pd.DataFrame(columns=SCORE_COLUMNS)
    if s.empty:
        return pd.DataFrame({"model": pd.Series(dtype=str), "dataset": pd.Series(dtype=str),
                             "method": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
    for c in SCORE_COLUMNS:
        if c not in s.columns:
            raise RecommenderError(f"history scores need columns {SCORE_COLUMNS}; missing {c!r}")
    if "flag" in s.columns:  # flagged (degenerate) scores are missing, not information
        s = s[s["flag"].isna()]
    s = s[SCORE_COLUMNS].copy()
    s["model"] = s["model"].astype(str)
    s["dataset"] = s["dataset"].astype(str)
    s["method"] = s["method"].astype(str)
    s["value"] = pd.to_numeric(s["value"], errors="coerce").astype(float)
    s = s[s["value"].notna()]
    if s.duplicated(["model", "dataset", "method"]).any():
        s = s.groupby(["model", "dataset", "method"], sort=True)["value"].mean().reset_index()
    return s.reset_index(drop=True)


def synthetic_history(n_models: int = 40, n_datasets: int = 6, *, rank: int = 3, noise: float = 0.01,
                      seed: int = 0, with_scores: bool = True, density: float = 1.0) -> HistoryFrame:
    """A latent-factor history for tests and benchmarks (NOT real data).

    ``acc(m, d) = sigmoid(a_d + b_m + <u_m, v_d>) + eps``: ``b_m`` (model quality) is
    reflected in the model's ``params``, ``v_d`` in the dataset's ``num_classes``; an MS
    score ``proxy`` is the accuracy plus noise. ``density`` < 1 drops pairs at random.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    b = rng.normal(0, 1.0, n_models)
    u = rng.normal(0, 0.5, (n_models, rank))
    a = rng.normal(1.0, 0.5, n_datasets)
    v = rng.normal(0, 0.5, (n_datasets, rank))
    logits = a[None, :] + b[:, None] + u @ v.T
    acc = 1 / (1 + np.exp(-logits)) + rng.normal(0, noise, logits.shape)
    acc = np.clip(acc, 0.0, 1.0)
    mi, di = np.meshgrid(np.arange(n_models), np.arange(n_datasets), indexing="ij")
    mi, di = mi.ravel(), di.ravel()
    keep = rng.random(len(mi)) < density if density < 1 else np.ones(len(mi), bool)
    mnames = np.array([f"model_{i:05d}" for i in range(n_models)])
    dnames = np.array([f"dataset_{j:03d}" for j in range(n_datasets)])
    targets = pd.DataFrame({"model": mnames[mi[keep]], "dataset": dnames[di[keep]],
                            "value": acc[mi[keep], di[keep]]})
    fam = np.array(["vit", "resnet", "convnext"])[rng.integers(0, 3, n_models)]
    models = pd.DataFrame({"name": mnames, "modality": "image", "family": fam,
                           "params": np.exp(17 + b + rng.normal(0, 0.3, n_models)),
                           "input_size": rng.choice([224, 384], n_models),
                           "feature_dim": rng.choice([512, 768, 1024], n_models),
                           "source_accuracy": np.clip(0.75 + 0.05 * b, 0, 1),
                           "pretrain_dataset": rng.choice(["imagenet", "imagenet-21k"], n_models)})
    models.loc[rng.random(n_models) < 0.1, "source_accuracy"] = np.nan  # some missing meta
    datasets = pd.DataFrame({"name": dnames, "modality": "image",
                             "num_samples": rng.integers(1000, 50000, n_datasets),
                             "num_classes": np.maximum(2, np.round(np.exp(2 + 2 * (v[:, 0] - v[:, 0].min()))))
                             .astype(int)})
    scores = None
    if with_scores:
        scores = pd.DataFrame({"model": mnames[mi], "dataset": dnames[di], "method": "proxy",
                               "value": acc[mi, di] * 10 + rng.normal(0, 0.5, len(mi))})
    return HistoryFrame(targets=targets, models=models, datasets=datasets, scores=scores)
