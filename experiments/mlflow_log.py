"""Log an evaluation to MLflow: one parent run, one child run per method.

Tracking URI: ``history.config.resolve_tracking_uri`` (``--tracking-uri`` / env /
``sqlite:///<home>/mlflow.db``); experiment ``evaluate/<source>``. The parent run holds the
config, the summary means, the results CSV, the markdown tables and a bar chart comparing
methods. Each child run (a recommender with a feature set, or a baseline) holds its
per-dataset metrics (``pearson__<dataset>``), the means (``pearson_mean``), a
predicted-vs-real scatter grid (one panel per held-out dataset) and, where the recommender
exposes them, feature importances / weights (CSV + chart).

Failures never raise: they are collected by :class:`recommender.tracking.SafeLogger` and
returned, so the evaluation still prints its results (the CLI then exits non-zero).
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from recommender.tracking import SafeLogger, setup_tracking

from . import plots
from .evaluate import EvaluationResult, format_lift, format_per_dataset, format_summary


def _key(s: str) -> str:
    """MLflow metric keys allow alphanumerics, _ - . / and space."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(s))


def _finite(d: dict) -> dict:
    return {_key(k): float(v) for k, v in d.items() if v is not None and np.isfinite(v)}


def _batch(client, run_id, metrics=None, params=None):
    import time as _t

    from mlflow.entities import Metric, Param

    ts = int(_t.time() * 1000)
    ms = [Metric(k, v, ts, 0) for k, v in _finite(metrics or {}).items()]
    ps = [Param(str(k), str(v)[:500]) for k, v in (params or {}).items()]
    for i in range(0, max(len(ms), 1), 900):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=ms[i:i + 900], params=ps if i == 0 else [])


def log_evaluation(result: EvaluationResult, *, tracking_uri=None, home=None, experiment: str,
                   run_name: str | None = None, plots_on: bool = True, started_at: float | None = None) -> dict:
    """Log ``result``; returns ``{"ok", "error", "run_id", "tracking_uri", "experiment"}``.

    Uses an explicit ``MlflowClient`` (no global MLflow state is touched). Run times: the
    parent run starts at ``started_at`` (seconds since the epoch, when the evaluation began;
    default now) and ends when logging is done. Each child run lasts its method's fit and
    predict time over all folds (``result.timings``), laid end to end from the parent's
    start, so durations in the MLflow UI are the methods' real costs.
    """
    sl = SafeLogger()
    out = {"ok": False, "error": None, "run_id": None, "tracking_uri": None, "experiment": experiment}
    tracking = sl.call("set up MLflow tracking", setup_tracking, tracking_uri, home, experiment)
    if tracking is None:
        out["error"] = sl.message()
        return out
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri)
    out["tracking_uri"] = tracking.tracking_uri
    summary = result.summary()
    cfg = result.config
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = int((time.time() if started_at is None else started_at) * 1000)
        parent = sl.call("start parent run", client.create_run, tracking.experiment_id, start_time=t0,
                         run_name=run_name or f"evaluate-{cfg.get('protocol')}")
        if parent is None:
            out["error"] = sl.message()
            return out
        pid = parent.info.run_id
        out["run_id"] = pid
        try:
            params = {k: (json.dumps(v, default=str) if isinstance(v, (list, dict)) else v) for k, v in cfg.items()
                      if k not in ("methods", "method_kinds", "datasets", "failures", "notes")}
            params["n_methods"] = len(cfg.get("methods", []))
            means = {}
            for _, r in summary.iterrows():
                if r["n"] > 0:
                    for m in ("pearson", "weighted_tau", "regret@1"):
                        means[f"{r['method']}__{m.replace('@', '_at_')}_mean"] = r[f"{m}_mean"]
            sl.call("log params and summary metrics", _batch, client, pid, means, params)
            result.rows.to_csv(tmp / "results.csv", index=False)
            summary.to_csv(tmp / "summary.csv", index=False)
            (tmp / "summary.md").write_text(format_summary(result, markdown=True) + "\n")
            (tmp / "per_dataset.txt").write_text(format_per_dataset(result) + "\n")
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
            (tmp / "lift.md").write_text(format_lift(result, markdown=True) + "\n")
            result.lift().to_csv(tmp / "lift.csv", index=False)
            if result.nested:
                (tmp / "nested_choices.json").write_text(json.dumps(result.nested, indent=1, default=str))
            if plots_on and len(summary):
                with sl.step("bar chart"):
                    plots.bar_chart(summary, tmp / "methods.png", title=run_name or "")
            # one upload for the whole parent folder (batch, not one call per file)
            sl.call("log parent artifacts", client.log_artifacts, pid, str(tmp))
            pdf = result.per_dataset()
            at = t0
            for meth in result.methods():
                child_dir = tmp / "children" / _key(meth).replace("/", "_").replace(" ", "_")
                child_dir.mkdir(parents=True, exist_ok=True)
                took = int(1000 * float(result.timings.get(meth) or 0.0))
                _log_child(sl, client, result, meth, tracking.experiment_id, pid, child_dir, plots_on,
                           summary=summary, pdf=pdf, span=(at, at + took) if took else None)
                at += took
        finally:
            with sl.step("end parent run"):
                client.set_terminated(pid, status="FINISHED" if sl.ok else "FAILED")
    out["ok"] = sl.ok
    out["error"] = None if sl.ok else sl.message()
    return out


METRIC_NAMES = ("pearson", "spearman", "kendall", "weighted_tau", "regret@1", "regret@3", "ndcg@5")


def _log_child(sl, client, result, meth, experiment_id, parent_id, tmp, plots_on, summary=None, pdf=None,
               span=None):
    """One method's run; ``span``: its (start, end) in ms since the epoch (default: now, when logged)."""
    if sl.errors:
        return
    sub = result.rows[result.rows["method"] == meth]
    kind = sub["kind"].iloc[0]
    child = sl.call(f"start run {meth}", client.create_run, experiment_id, run_name=meth,
                    start_time=None if span is None else span[0],
                    tags={"mlflow.parentRunId": parent_id, "kind": kind})
    if child is None:
        return
    cid = child.info.run_id
    try:
        params = {"method": meth, "kind": kind}
        if kind == "recommender":
            params["recommender"] = meth.split("[")[0]
            params["features"] = sub["features"].iloc[0]
        pdf = result.per_dataset() if pdf is None else pdf
        pdf = pdf[pdf["method"] == meth]
        vals = {}
        for _, r in pdf.iterrows():
            for m in METRIC_NAMES:
                vals[f"{m.replace('@', '_at_')}__{r['dataset']}"] = r[m]
        s = (result.summary() if summary is None else summary).set_index("method").loc[meth]
        for m in METRIC_NAMES:
            vals[f"{m.replace('@', '_at_')}_mean"] = s[f"{m}_mean"]
            vals[f"{m.replace('@', '_at_')}_std"] = s[f"{m}_std"]
        sl.call(f"log metrics {meth}", _batch, client, cid, vals, params)
        safe = _key(meth).replace("/", "_").replace(" ", "_")
        (tmp / "plots").mkdir(exist_ok=True)
        preds = result.predictions[result.predictions["method"] == meth] if len(result.predictions) else None
        if plots_on and preds is not None and len(preds):
            with sl.step(f"scatter {meth}"):
                plots.scatter_grid(preds, tmp / "plots" / f"scatter_{safe}.png", title=f"{meth}: predicted vs real")
        fi = result.importances.get(meth)
        if fi is not None and len(fi):
            fi.to_csv(tmp / f"importance_{safe}.csv", index=False)
            if plots_on:
                with sl.step(f"importance chart {meth}"):
                    plots.importance_chart(fi, tmp / "plots" / f"importance_{safe}.png", title=f"{meth} importances")
        if any(tmp.rglob("*.*")):
            sl.call(f"log artifacts {meth}", client.log_artifacts, cid, str(tmp))
    finally:
        with sl.step(f"end run {meth}"):
            client.set_terminated(cid, status="FINISHED" if sl.ok else "FAILED",
                                  end_time=None if span is None else span[1])
