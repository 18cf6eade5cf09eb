"""The report's headline: the default recommender per benchmark and pooled over benchmarks.

Every figure is on viable candidates. Regret is in accuracy points (lower is better); a lift is
the mean paired improvement over a reference (positive = better) with a 95% bootstrap CI,
wins/ties/losses. The pooled rows pair every held-out dataset of every benchmark that has the
reference, with a bootstrap stratified by benchmark (:mod:`experiments.pooled`).
"""
from __future__ import annotations

import pandas as pd

from recommender.defaults import DEFAULT_LABEL

from .pooled import pooled_lift

__all__ = ["HEADLINE_METRICS", "lift_cell", "value_cell", "default_rows", "pooled_rows", "targets_rows",
           "best_model_ranks"]

HEADLINE_METRICS = ("regret@1", "regret@3", "weighted_tau", "pearson")
REFERENCES = ("model-mean", "model-additive")


def value_cell(v, metric) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.2f}" if metric.startswith("regret") else f"{v:.3f}"


def lift_cell(r, metric) -> str:
    if r is None or not r.get("n"):
        return "n/a"
    fmt = ".2f" if metric.startswith("regret") else ".3f"
    ci = "" if r["ci_low"] != r["ci_low"] else f" [{r['ci_low']:+{fmt}}, {r['ci_high']:+{fmt}}]"
    return f"{r['mean']:+{fmt}}{ci} ({int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])})"


def _lifts(result, method: str) -> dict:
    """``{(reference, metric): lift row}`` of ``method`` in one benchmark's result."""
    out = {}
    for ref in REFERENCES:
        lf = result.lift(reference=ref, metric_names=("regret@1", "weighted_tau"))
        for r in lf[lf["method"] == method].to_dict("records"):
            out[(ref, r["metric"])] = r
    return out


def default_rows(results: dict, method: str = DEFAULT_LABEL) -> list[list[str]]:
    """One row per benchmark: the default's metrics and its lifts over model-mean and model-additive."""
    rows = []
    for name, res in results.items():
        s = res.summary().set_index("method")
        if method not in s.index or not s.loc[method, "n"]:
            rows.append([name, "n/a"] + ["n/a"] * 7)
            continue
        cells = [value_cell(s.loc[method, f"{m}_mean"], m) for m in HEADLINE_METRICS]
        lf = _lifts(res, method)
        why = res.unavailable.get("model-mean")
        lifts = [lift_cell(lf.get(k), k[1]) + (f" (model-mean: {why})" if why and k[0] == "model-mean" else "")
                 for k in (("model-mean", "regret@1"), ("model-mean", "weighted_tau"),
                           ("model-additive", "weighted_tau"))]
        rows.append([name, str(int(s.loc[method, "n"])), *cells, *lifts])
    return rows


def pooled_rows(results: dict, roles: dict, method: str = DEFAULT_LABEL) -> tuple[list[list[str]], dict]:
    """Pooled rows (all benchmarks, dev only, test only) and the raw pooled lifts of "all"."""
    groups = {"all benchmarks": list(results),
              "dev benchmarks": [n for n in results if roles.get(n) == "dev"],
              "test benchmarks": [n for n in results if roles.get(n) != "dev"]}
    rows, raw = [], {}
    for label, names in groups.items():
        sub = {n: results[n] for n in names}
        if not sub:
            continue
        lifts = {ref: pooled_lift(sub, method, ref, ("regret@1", "regret@3", "weighted_tau")).set_index("metric")
                 for ref in REFERENCES}
        mm = lifts["model-mean"]
        if label == "all benchmarks":
            raw = {ref: lf.to_dict("index") for ref, lf in lifts.items()}
        nb = int(mm.loc["weighted_tau", "benchmarks"])
        rows.append([f"{label} ({nb} with model-mean, {int(mm.loc['weighted_tau', 'n'])} datasets)",
                     lift_cell(mm.loc["regret@1"].to_dict(), "regret@1"),
                     lift_cell(mm.loc["regret@3"].to_dict(), "regret@3"),
                     lift_cell(mm.loc["weighted_tau"].to_dict(), "weighted_tau"),
                     lift_cell(lifts["model-additive"].loc["weighted_tau"].to_dict(), "weighted_tau")])
    return rows, raw


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets_rows(results: dict, pooled: dict, method: str = DEFAULT_LABEL) -> list[list[str]]:
    """The issue's targets for the default, each with the measured value and met / NOT met."""
    rows = []
    mm, ma = pooled.get("model-mean", {}), pooled.get("model-additive", {})
    if mm:
        n_b = int(mm["weighted_tau"]["benchmarks"])
        w, r1 = mm["weighted_tau"], mm["regret@1"]
        rows.append([f"pooled weighted-tau lift over model-mean, CI above 0 ({n_b} benchmarks; >= 9 asked)",
                     lift_cell(w, "weighted_tau"), _met(w["ci_low"] > 0 and n_b >= 9)])
        rows.append(["pooled regret@1 lift over model-mean: mean > 0, CI low >= -0.25", lift_cell(r1, "regret@1"),
                     _met(r1["mean"] > 0 and r1["ci_low"] >= -0.25)])
    if ma:
        w = ma["weighted_tau"]
        rows.append(["pooled weighted-tau lift over model-additive, CI above 0", lift_cell(w, "weighted_tau"),
                     _met(w["ci_low"] > 0)])
    worse = []
    for name, res in results.items():
        lf = _lifts(res, method)
        for k in (("model-mean", "regret@1"), ("model-mean", "weighted_tau")):
            r = lf.get(k)
            if r and r["n"] and r["ci_high"] == r["ci_high"] and r["ci_high"] < 0:
                worse.append(f"{name} {k[1]}")
    rows.append(["no benchmark significantly worse than model-mean (CI entirely below 0)",
                 ", ".join(worse) or "none", _met(not worse)])
    for name, metric, thr in (("tg-lodo", "regret@1", 0.9), ("shift-vtab1k-lodo", "regret@1", 8.0)):
        if name in results:
            s = results[name].summary().set_index("method")
            v = s.loc[method, f"{metric}_mean"] if method in s.index else float("nan")
            rows.append([f"{name} {metric} <= {thr}", value_cell(v, metric), _met(v == v and v <= thr)])
    if "openclip-lodo" in results:
        r = _lifts(results["openclip-lodo"], method).get(("model-mean", "regret@1"))
        rows.append(["openclip-lodo regret@1 lift over model-mean, CI above 0", lift_cell(r, "regret@1"),
                     _met(bool(r) and r["ci_low"] > 0)])
    return rows


def best_model_ranks(result, method: str = DEFAULT_LABEL) -> pd.DataFrame:
    """Per held-out dataset: the best model (measured), its rank under ``method``, and the model
    ``method`` put first -- where a specialist is missed, this shows it."""
    p = result.predictions
    if p is None or p.empty or method not in set(p["method"]):
        return pd.DataFrame(columns=["dataset", "best model", "best acc", "rank", "top-1 pick", "pick acc"])
    deg = set(result.config.get("degenerate_models") or [])
    p = p[(p["method"] == method) & ~p["model"].isin(deg)]
    out = []
    for ds, g in p.groupby("dataset", sort=True):
        g = g.assign(rank=g["predicted_raw"].rank(ascending=False, method="min"))
        best = g.loc[g["real"].idxmax()]
        pick = g.loc[g["predicted_raw"].idxmax()]
        out.append({"dataset": ds, "best model": best["model"], "best acc": float(best["real"]),
                    "rank": int(best["rank"]), "top-1 pick": pick["model"], "pick acc": float(pick["real"]),
                    "candidates": int(len(g))})
    return pd.DataFrame(out)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c) for c in r) + " |" for r in rows]]


def ranks_table(df: pd.DataFrame) -> list[str]:
    rows = [[r["dataset"], f"`{r['best model']}`", f"{100 * r['best acc']:.2f}", f"{r['rank']} of {r['candidates']}",
             f"`{r['top-1 pick']}`", f"{100 * r['pick acc']:.2f}"] for r in df.to_dict("records")]
    return markdown_table(["held-out dataset", "best model", "best acc %", "its rank (default)", "default's top-1",
                           "top-1 acc %"], rows)
