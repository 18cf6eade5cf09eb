"""``python -m experiments.budget``'s output: the screen, BUDGET.md (with plots) and ``--json``."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.budget_protocol import REFERENCE, SEARCH_STRATEGIES, summarize, with_default
from experiments.budget_report import (LIFT_BUDGETS, _table, lift, lift_table, nested_section, per_dataset,
                                       per_dataset_table, plot, pooled_rows, pooled_table)
from recommender.acquisition import DEFAULT_STRATEGY, DEFAULT_STRATEGY_FIXED_ON
from recommender.defaults import DEFAULT_LABEL

#: the rule that fixed DEFAULT_STRATEGY (written before the development runs; BUDGET.md repeats it)
RULE = ("among `search`'s one-at-a-time strategies (`adaptive`, `portfolio`; both on the default "
        "recommender's prior), the one with the lowest mean regret over b = 1..5, averaged over the four "
        "development benchmarks with equal weight; a tie keeps `adaptive`, the earlier default")


def dev_scores(rows_by_bench: dict, dev) -> pd.Series:
    """Each search strategy's score under :data:`RULE` on the development benchmarks present."""
    out = {}
    for s in SEARCH_STRATEGIES:
        per = []
        for n in dev:
            if n in rows_by_bench:
                r = rows_by_bench[n]
                r = r[(r["strategy"] == s) & (r["na"].fillna("") == "")]
                per.append(r[[f"regret@{b}" for b in LIFT_BUDGETS if f"regret@{b}" in r]].mean().mean())
        out[s] = float(np.mean(per)) if per else np.nan
    return pd.Series(out)


def _targets(rows_by_bench: dict, summaries: dict) -> list[str]:
    lines = []
    below = [f"{n} b={b}" for n, rows in rows_by_bench.items() for b, d in lift(rows, "default").items()
             if np.isfinite(d["ci_high"]) and d["ci_high"] < 0]
    lines.append("default's lift CI over popularity-static entirely below 0 at: "
                 + (", ".join(below) if below else "nowhere (target met)"))
    if len(rows_by_bench) > 1:
        d = lift(pooled_rows(rows_by_bench), "default", (3,), pooled=True).get(3)
        if d:
            lines.append(f"pooled regret-after-3 lift {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]: "
                         + ("CI above 0 (target met)" if d["ci_low"] > 0 else "CI not above 0 (target missed)"))
    for name, limit in (("tg-lodo", 0.5), ("shift-vtab1k-lodo", 4.0)):
        if name in summaries and "default" in summaries[name].index and "regret@3" in summaries[name]:
            v = summaries[name].at["default", "regret@3"]
            ref = summaries[name].at[REFERENCE, "regret@3"]
            lines.append(f"{name} regret@3: default {v:.2f} (target <= {limit}; {REFERENCE} {ref:.2f}): "
                         + ("met" if v <= limit else "missed"))
    return lines


def _section(name, title, blob, rows, summary, budget, png) -> str:
    secs = blob["seconds"]
    n = int(summary["datasets"].max())
    return (f"### {title}\n\n{n} held-out datasets; {secs:.0f} s. ![regret vs budget]({png.name})\n\n"
            f"{_table(summary, budget)}\n\n"
            f"<details><summary>Strategy used per held-out dataset (default = {DEFAULT_STRATEGY})</summary>\n\n"
            f"{per_dataset_table(rows, budget)}\n\n</details>\n\n"
            + nested_section(rows, blob.get("choices"))
            + "".join(f"\nNote: {x}\n" for x in blob.get("notes", [])))


def render(args, blobs: dict, titles: dict, *, dev, left_out: dict, wall: float) -> int:
    budget = args.budget
    rows_by, summaries, sections = {}, {}, []
    for name, blob in blobs.items():
        rows = with_default(pd.DataFrame(blob["rows"]))
        rows["na"] = rows["na"].fillna("")
        rows_by[name], summaries[name] = rows, summarize(rows, budget)
        png = plot(summaries[name], Path(args.plots) / f"budget_{name}.png", titles[name], budget)
        how = f"read from {blob['cached']}, computed in" if blob.get("cached") else "computed in"
        print(f"\n## {titles[name]} ({int(summaries[name]['datasets'].max())} held-out datasets, {how} "
              f"{blob['seconds']:.0f} s)")
        print(_table(summaries[name], budget))
        print(f"strategy used per held-out dataset (default = {DEFAULT_STRATEGY}):")
        print(per_dataset_table(rows, budget))
        sections.append(_section(name, titles[name], blob, rows, summaries[name], budget, png))
    groups = {"all": list(rows_by), "development": [n for n in rows_by if n in dev],
              "test": [n for n in rows_by if n not in dev]}
    pooled = pooled_table(rows_by, groups)
    per_bench = lift_table(rows_by)
    scores = dev_scores(rows_by, dev)
    computed = sum(b["seconds"] for b in blobs.values())
    cached = sum(1 for b in blobs.values() if b.get("cached"))
    print(f"\n## Paired lift over {REFERENCE} (regret points saved; 95% bootstrap CI, stratified by benchmark)")
    print(pooled)
    print(f"\n## Lift of the default ({DEFAULT_STRATEGY}) over {REFERENCE} per benchmark")
    print(per_bench)
    targets = _targets(rows_by, summaries)
    print("\n" + "\n".join(targets))
    print(f"\nwall time {wall:.0f} s ({args.jobs} process(es)); {computed:.0f} s of computation in the benchmarks' "
          "own runs (cached ones: their original time)")
    if args.json:
        _write_json(args.json, rows_by, summaries, budget)
        print(f"wrote {args.json}")
    if args.out:
        Path(args.out).write_text(_markdown(args, pooled, per_bench, scores, targets, sections, left_out, wall,
                                            computed, cached, len(blobs)))
        print(f"wrote {args.out}")
    return 0


def _write_json(path, rows_by, summaries, budget) -> None:
    out = {"default_strategy": DEFAULT_STRATEGY, "fixed_on": DEFAULT_STRATEGY_FIXED_ON, "prior": DEFAULT_LABEL,
           "benchmarks": {}}
    for n, rows in rows_by.items():
        s = summaries[n].reset_index().rename(columns={"index": "strategy"})
        out["benchmarks"][n] = {
            "summary": s.to_dict(orient="records"),
            "per_dataset": per_dataset(rows, budget).to_dict(orient="records"),
            "lift_default": {str(b): d for b, d in lift(rows, "default").items()},
            "rows": rows.to_dict(orient="records")}
    if len(rows_by) > 1:
        out["pooled_lift_default"] = {str(b): d for b, d in lift(pooled_rows(rows_by), "default",
                                                                 pooled=True).items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1, default=lambda v: None if v != v else float(v)))


def _markdown(args, pooled, per_bench, scores, targets, sections, left_out, wall, computed, cached=0,
              total=0) -> str:
    chosen = scores.idxmin() if scores.notna().any() else None
    rule_line = ", ".join(f"`{k}` {v:.3f}" for k, v in scores.items() if np.isfinite(v))
    return (
        "# Fine-tuning within a budget: regret after b fine-tunes\n\n"
        f"Generated by `python -m experiments.budget --budget {args.budget}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: wall time {wall / 60:.1f} min with "
        f"{args.jobs} process(es)" + (f", {cached} of {total} benchmarks read from --cache" if cached else "")
        + f" ({computed / 60:.1f} min of computation in the benchmarks' own runs, summed). "
        + (f"{args.note} " if getattr(args, "note", "") else "")
        + f"Prior: the default recommender `{DEFAULT_LABEL}`. Regret in accuracy points, mean over held-out "
        "datasets; random = mean of 20 seeds.\n\n"
        f"## The default strategy: `{DEFAULT_STRATEGY}` (fixed {DEFAULT_STRATEGY_FIXED_ON})\n\n"
        f"`search` runs `{DEFAULT_STRATEGY}` by default (`recommender/acquisition.py`: `DEFAULT_STRATEGY`, "
        f"`DEFAULT_STRATEGY_FIXED_ON`), and the `default` rows below are that strategy. Rule, written before the "
        f"development runs: {RULE}. Scores (mean regret over b = 1..5 on the development benchmarks): "
        f"{rule_line or 'n/a (no development benchmark in this run)'}"
        + (f"; the rule picks `{chosen}`" if chosen else "") + ". Every other benchmark measures it unchanged.\n\n"
        f"## Pooled: paired lift over {REFERENCE}\n\nRegret points saved after b fine-tunes (positive = better "
        "than popularity), mean over held-out datasets with a 95% bootstrap CI stratified by benchmark.\n\n"
        f"{pooled}\n\n### Per benchmark: lift of the default over {REFERENCE}\n\n{per_bench}\n\n"
        "### Targets (reported as measured, never tuned on)\n\n" + "".join(f"* {t}\n" for t in targets)
        + "\n## Benchmarks\n\n" + "\n".join(sections) + _notes(left_out))


def _notes(left_out: dict) -> str:
    return ("\n## How to read this\n\n"
            "* All strategies see the same candidates: the held-out dataset's viable models (degenerate "
            "ones, judged on the training datasets only, are left out).\n"
            "* `adaptive` and `portfolio` are replayed with `search`'s own pick function "
            "(`recommender.acquisition.choose_next`); `portfolio` plans with the budget left, so its "
            "regret@b is that of a run with budget b (not a prefix of one long run).\n"
            "* \"within 1 pt by b <= B\" counts only within the budget: the share of held-out datasets that "
            "get within 1 point of the best by b = B, and the median first such b ('> B' when half do not).\n"
            "* A strategy that cannot run shows n/a with the reason (e.g. `hybrid` needs MS scores of the "
            "held-out dataset; `nested` is off unless `--nested`).\n"
            "* Left out: " + "; ".join(f"{k} ({v})" for k, v in left_out.items()) + ".\n")
