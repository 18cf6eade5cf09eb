"""Viable candidates: which models are degenerate (score at chance nearly everywhere).

Rule (documented in docs/evaluation.md):

* only accuracy-like metrics (``accuracy``, ``test_accuracy``, ``top1``, any name
  containing ``acc``) on datasets with a known class count C >= 2 are assessed, with a
  model's best completed result per dataset;
* a result is **at chance** when it is at or below ``CHANCE_FACTOR`` (1.5) x 1/C, **or**
  when it sits on the dataset's *constant-predictor floor*: at least ``FLOOR_MODELS`` (2)
  different models are within ``FLOOR_TOL`` (0.5 accuracy points) of the dataset's lowest
  accuracy, and this result is one of them. On an imbalanced test set a model that
  predicts one class scores the majority share, far above 1/C (TransferGraph: eurosat
  0.873, svhn 0.190, diabetic retinopathy 0.736); two unrelated models tied at the very
  bottom are the signature of that;
* a model is **degenerate** when it is at chance on at least ``MIN_SHARE`` (80%) of the
  assessed datasets it was run on. Models with no assessed dataset are not flagged.

Flags are per **source and regime**: the rule runs on each (source, regime) group of jobs on
its own (its own chance floors, its own share of datasets), so another source's runs never
un-flag a model of this one (SHiFT's runs of ``lysandre/tiny-vit-random`` do not make it
viable in TransferGraph, whose full fine-tunings have it at chance on 10 of 12 datasets).

Where they live (backward compatible, no schema change):

* ``HistoryFrame.from_store`` computes the flags **on read** (:func:`flags_for_jobs`) from
  the jobs it reads, i.e. for the source and regime it was asked for; evaluate, train and
  predict use those. A store written by an older version (flags pooled over every source)
  therefore gives the same per-source flags without a migration;
* the stored column (``models.degenerate``, ``models.degenerate_reason``) is the summary
  over the whole store: flagged when degenerate in **at least one** (source, regime) where
  it was assessed, recomputed by :meth:`history.store.HistoryStore.commit` whenever a commit
  adds jobs or dataset facts (import summaries, ``history`` listings). An unfiltered read
  (several sources or regimes) applies the same "any group" rule.

``evaluate --candidates viable`` and ``predict`` leave flagged models out of the ranking.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema as S

CHANCE_FACTOR = 1.5
MIN_SHARE = 0.8
FLOOR_MODELS = 2
FLOOR_TOL = 0.005


def is_accuracy_metric(name) -> bool:
    n = str(name or "").lower()
    return "acc" in n or n in ("top1", "top-1", "top_1")


def assess(results: pd.DataFrame, num_classes) -> pd.DataFrame:
    """Apply the rule to ``results`` (columns model, dataset, metric, value: jobs or targets).

    ``num_classes`` maps dataset -> class count (dict or Series). Returns one row per model
    of ``results``: ``model, n_assessed, n_at_chance, degenerate, reason``.
    """
    cols = ["model", "n_assessed", "n_at_chance", "degenerate", "reason"]
    if results is None or len(results) == 0:
        return pd.DataFrame(columns=cols)
    r = results[["model", "dataset", "metric", "value"]].copy()
    r["value"] = pd.to_numeric(r["value"], errors="coerce")
    nc = pd.Series(num_classes, dtype=float) if not isinstance(num_classes, pd.Series) else num_classes.astype(float)
    r["classes"] = r["dataset"].map(nc).astype(float)
    is_acc = {m: is_accuracy_metric(m) for m in pd.unique(r["metric"])}  # a few names, many rows
    ok = r["metric"].map(is_acc).astype(bool) & r["value"].notna() & (r["classes"] >= 2)
    best = r[ok].groupby(["model", "dataset"]).agg(value=("value", "max"), classes=("classes", "first"))
    best["chance"] = 1.0 / best["classes"]
    low = best.groupby(level="dataset")["value"].transform("min")
    on_floor = best["value"] <= low + FLOOR_TOL + 1e-12
    n_floor = on_floor.groupby(level="dataset").transform("sum")
    best["at_chance"] = (best["value"] <= CHANCE_FACTOR * best["chance"] + 1e-12) | (
        on_floor & (n_floor >= FLOOR_MODELS))
    per = best.groupby(level="model").agg(n_assessed=("at_chance", "size"), n_at_chance=("at_chance", "sum"))
    out = pd.DataFrame({"model": sorted(r["model"].astype(str).unique())})
    out = out.merge(per.reset_index(), on="model", how="left")
    out["n_assessed"] = out["n_assessed"].fillna(0).astype(int)
    out["n_at_chance"] = out["n_at_chance"].fillna(0).astype(int)
    share = np.where(out["n_assessed"] > 0, out["n_at_chance"] / out["n_assessed"].clip(lower=1), 0.0)
    out["degenerate"] = (out["n_assessed"] > 0) & (share >= MIN_SHARE - 1e-12)
    out["reason"] = [
        (f"at chance (<= {CHANCE_FACTOR:g}/classes or on the constant-predictor floor) on {a} of {n} datasets"
         if d else None)
        for d, a, n in zip(out["degenerate"], out["n_at_chance"], out["n_assessed"])]
    return out[cols]


#: the columns a group of jobs is assessed by on its own
GROUP_KEYS = ("source", "regime")


def assess_groups(results: pd.DataFrame, num_classes, by=GROUP_KEYS) -> pd.DataFrame:
    """:func:`assess` on each ``by`` group of ``results`` (default per source and regime) on its
    own; a model is degenerate when it is degenerate in at least one group where it was
    assessed. One row per model, :func:`assess`'s columns plus ``group`` (the flagging
    group, else the group with the most assessed datasets; ``"source/regime"``)."""
    cols = ["model", "n_assessed", "n_at_chance", "degenerate", "reason", "group"]
    keys = [k for k in by if results is not None and k in results.columns]
    if results is None or len(results) == 0:
        return pd.DataFrame(columns=cols)
    if not keys:
        return assess(results, num_classes).assign(group=None)[cols]
    parts = []
    for key, g in results.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        parts.append(assess(g, num_classes).assign(group="/".join(map(str, key))))
    res = pd.concat(parts, ignore_index=True)
    res = res.sort_values(["degenerate", "n_assessed", "group"], ascending=[False, False, True], kind="mergesort")
    flagged = res[res["degenerate"]].groupby("model")["group"].agg(list)
    out = res.drop_duplicates("model", keep="first").set_index("model")
    for m, groups in flagged.items():
        out.loc[m, "reason"] = f"{out.loc[m, 'reason']} (jobs of {', '.join(groups)})"
    return out.reset_index().sort_values("model", kind="mergesort").reset_index(drop=True)[cols]


def flags_for_jobs(jobs: pd.DataFrame, datasets: pd.DataFrame) -> pd.DataFrame:
    """The flags of the models in ``jobs`` (completed jobs: model, dataset, metric, value,
    source, regime) per source and regime (:func:`assess_groups`), with ``datasets``'
    class counts: columns ``model, degenerate, reason``."""
    if jobs is None or jobs.empty or datasets is None or "num_classes" not in datasets.columns:
        return pd.DataFrame(columns=["model", "degenerate", "reason"])
    nc = pd.to_numeric(datasets.drop_duplicates("name").set_index("name")["num_classes"], errors="coerce")
    res = assess_groups(jobs[jobs["value"].notna()], nc)
    return res[["model", "degenerate", "reason"]]


def update_models(conn) -> dict:
    """Recompute and store the flag of every model inside ``conn``'s transaction (the floor
    of a dataset depends on all its models), per source and regime (:func:`assess_groups`:
    flagged when degenerate in one of them). Returns ``{"assessed": models updated,
    "degenerate": how many are flagged}``."""
    from sqlalchemy import bindparam, select, update

    j, m, d = S.jobs, S.models, S.datasets
    # best value per (model id, dataset id, metric), from jobs read in parts into compact columns (ids as
    # integers, one shared string per metric, names joined from the small tables): a store of
    # 1.5M pairs needs ~100 MB here instead of ~900 MB of row objects
    q = (select(j.c.model_id, j.c.dataset_id, j.c.metric, j.c.value, j.c.source, j.c.regime)
         .where(j.c.status == "completed").where(j.c.value.is_not(None)))
    cur, parts = conn.execute(q), []
    texts: dict = {}
    while rows := cur.fetchmany(100_000):
        mids, dids, mets, vals, srcs, regs = zip(*rows)
        parts.append(pd.DataFrame({"model_id": np.array(mids, dtype=np.int64),
                                   "dataset_id": np.array(dids, dtype=np.int64),
                                   "metric": [texts.setdefault(x, x) for x in mets],
                                   "value": np.array(vals, dtype=float),
                                   "source": [texts.setdefault(x, x) for x in srcs],
                                   "regime": [texts.setdefault(x, x) for x in regs]}))
        del rows, mids, dids, mets, vals, srcs, regs
    if not parts:
        return {"assessed": 0, "degenerate": 0}
    df = pd.concat(parts, ignore_index=True)
    del parts
    df = df.groupby(["model_id", "dataset_id", "metric", *GROUP_KEYS], sort=False, as_index=False,
                    dropna=False)["value"].max()
    names = dict(conn.execute(select(m.c.id, m.c.name)).all())
    dsets = {i: (n, c) for i, n, c in conn.execute(select(d.c.id, d.c.name, d.c.num_classes)).all()}
    df["model"] = df["model_id"].map(names)
    df["dataset"] = df["dataset_id"].map({i: n for i, (n, _) in dsets.items()})
    used = set(df["dataset_id"].unique().tolist())
    nc = pd.Series({n: c for i, (n, c) in dsets.items() if i in used}, dtype=object)
    res = assess_groups(df, pd.to_numeric(nc, errors="coerce"))
    mid = pd.Series({names[i]: i for i in df["model_id"].unique().tolist()})
    rows = [{"mid": int(mid[r.model]), "deg": bool(r.degenerate), "why": r.reason}
            for r in res.itertuples(index=False)]
    stmt = update(m).where(m.c.id == bindparam("mid")).values(degenerate=bindparam("deg"),
                                                              degenerate_reason=bindparam("why"))
    for i in range(0, len(rows), 5000):
        conn.execute(stmt, rows[i:i + 5000])
    return {"assessed": len(rows), "degenerate": int(res["degenerate"].sum())}


def degenerate_models(models: pd.DataFrame, targets: pd.DataFrame | None = None,
                      datasets: pd.DataFrame | None = None) -> set:
    """Names of flagged models in a models frame (``degenerate`` column, as stored).

    When the frame carries no stored flag at all (an in-memory or older history), the rule
    is applied to ``targets`` with ``datasets.num_classes`` instead.
    """
    if "degenerate" in models.columns and models["degenerate"].notna().any():
        flag = models["degenerate"].fillna(False).astype(bool)
        return set(models.loc[flag, "name"].astype(str))
    if targets is None or datasets is None or "num_classes" not in datasets.columns:
        return set()
    nc = pd.to_numeric(datasets.set_index("name")["num_classes"], errors="coerce")
    res = assess_groups(targets, nc)
    return set(res.loc[res["degenerate"], "model"].astype(str))
