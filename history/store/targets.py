"""Training targets: one value per (model, dataset, regime, metric) from a store's jobs."""
from __future__ import annotations

import json

import pandas as pd

#: How the training target of a (model, dataset, regime) is derived from its jobs.
TARGET_RULES = {
    "best": "the best configuration: completed jobs with identical hyper-parameters (repeats, e.g. seeds) are "
            "averaged first, then the configuration with the highest mean is taken -- chosen on the reported "
            "metric itself, as the published histories do",
    "mean": "the mean over completed jobs (e.g. over seeds)",
    "latest": "the most recently created completed job",
}


def aggregate_targets(jobs: pd.DataFrame, rule: str = "best") -> pd.DataFrame:
    """Collapse a jobs frame to one target per (model, dataset, regime, metric)."""
    if rule not in TARGET_RULES:
        raise ValueError(f"unknown target rule {rule!r}; valid: {', '.join(TARGET_RULES)}")
    keys = ["model", "dataset", "regime", "metric"]
    cols = keys + ["value", "n_jobs", "sources"]
    if jobs.empty:
        return pd.DataFrame(columns=cols)
    g = jobs.groupby(keys, sort=True)
    n = g["value"].size().rename("n_jobs")
    srcs = g["source"].agg(lambda x: ",".join(sorted(set(x)))).rename("sources")
    if rule == "best":
        val = _best_configuration(jobs, keys)
    elif rule == "mean":
        val = g["value"].mean()
    else:
        ordered = jobs.sort_values(["created_at", "job_id"]) if "job_id" in jobs else jobs.sort_values("created_at")
        val = ordered.groupby(keys, sort=True)["value"].last()
    out = pd.concat([val.rename("value"), n, srcs], axis=1).reset_index()
    return out[cols]


#: hyper-parameter keys that identify a repeat, not a configuration
REPEAT_KEYS = frozenset({"seed", "random_state", "run", "repeat", "trial"})


def _config_key(hp) -> str:
    if isinstance(hp, str):
        try:
            hp = json.loads(hp)
        except ValueError:
            return hp
    if not isinstance(hp, dict):
        return "" if hp is None else str(hp)
    return json.dumps({k: v for k, v in hp.items() if k not in REPEAT_KEYS}, sort_keys=True, default=str)


def _best_configuration(jobs: pd.DataFrame, keys: list) -> pd.Series:
    """Rule ``best``: mean over repeats of one configuration (same hyper-parameters, ignoring
    :data:`REPEAT_KEYS`), then the maximum over configurations, per ``keys`` group."""
    hp = jobs["hparams"] if "hparams" in jobs.columns else pd.Series(None, index=jobs.index)
    cfg = hp.map(_config_key)
    per_cfg = jobs.assign(_cfg=cfg).groupby(keys + ["_cfg"], sort=True)["value"].mean()
    return per_cfg.groupby(level=list(range(len(keys))), sort=True).max()

