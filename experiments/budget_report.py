"""What ``python -m experiments.budget`` prints and writes: per-benchmark tables (every strategy,
n/a with its reason), the strategy used on each held-out dataset, paired lifts over
popularity-static (per benchmark, and pooled with a bootstrap stratified by benchmark), plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.budget_protocol import REFERENCE
from experiments.plots import _plt, save_figure
from recommender.acquisition import DEFAULT_STRATEGY
from recommender.metrics import paired_lift

#: budgets of the lift tables (the issue's b = 1..5)
LIFT_BUDGETS = (1, 2, 3, 4, 5)
#: strategies given a pooled lift row (the default first)
POOLED = ("default", "adaptive", "portfolio", "static", "adaptive-mm", "adaptive-ei", "hybrid")


def _show(budget: int) -> list[int]:
    return list(dict.fromkeys([b for b in (1, 2, 3, 4, 5, budget) if b <= budget]))


def _table(summary: pd.DataFrame, budget: int) -> str:
    """One line per strategy: regret@b, how often 1 point is reached within the budget, or n/a and why."""
    show = _show(budget)
    head = ("| strategy | " + " | ".join(f"regret@{b}" for b in show)
            + f" | within 1 pt by b <= {budget} (datasets / median b) |")
    lines = [head, "|" + "---|" * (len(show) + 2)]
    for s, r in summary.iterrows():
        label = f"default (= {DEFAULT_STRATEGY})" if s == "default" else s
        if int(r.get("datasets", 0) or 0) == 0:
            lines.append(f"| {label} | n/a: {r['na']} |" + " |" * len(show))
            continue
        cells = [f"{r[f'regret@{b}']:.2f}" for b in show]
        med = r["within1_median"]
        reach = f"{r['reached']:.0%} / {med:.0f}" if np.isfinite(med) else f"{r['reached']:.0%} / > {budget}"
        part = (f" (on {int(r['datasets'])} of {int(r['total'])}; n/a elsewhere: {r['na']})"
                if r.get("na") else "")
        lines.append(f"| {label}{part} | " + " | ".join(cells) + f" | {reach} |")
    return "\n".join(lines)


def per_dataset(rows: pd.DataFrame, budget: int, strategy: str = "default") -> pd.DataFrame:
    """The strategy used on each held-out dataset by ``strategy``, its first picks and regrets."""
    d = rows[rows["strategy"] == strategy]
    cols = ["dataset", "chosen", "picks"] + [f"regret@{b}" for b in _show(budget)]
    return d[[c for c in cols if c in d.columns]].reset_index(drop=True)


def per_dataset_table(rows: pd.DataFrame, budget: int) -> str:
    d = per_dataset(rows, budget)
    show = _show(budget)
    pop = rows[rows["strategy"] == REFERENCE].set_index("dataset")
    lines = ["| held-out dataset | strategy used | first picks | " + " | ".join(f"regret@{b}" for b in show)
             + f" | {REFERENCE} regret@3 |", "|" + "---|" * (len(show) + 4)]
    for _, r in d.iterrows():
        ref = pop["regret@3"].get(r["dataset"], np.nan) if "regret@3" in pop else np.nan
        lines.append(f"| {r['dataset']} | {r['chosen']} | {r['picks']} | "
                     + " | ".join(f"{r[f'regret@{b}']:.2f}" for b in show) + f" | {ref:.2f} |")
    return "\n".join(lines)


def _paired(rows: pd.DataFrame, strategy: str, b: int, labels=None):
    """(method values, reference values, strata) over the held-out datasets where both ran."""
    col = f"regret@{b}"
    key = ["bench", "dataset"] if "bench" in rows else ["dataset"]
    ok = rows[rows["na"].fillna("") == ""] if "na" in rows else rows
    a = ok[ok["strategy"] == strategy].set_index(key)[col]
    r = ok[ok["strategy"] == REFERENCE].set_index(key)[col]
    both = a.index.intersection(r.index)
    strata = [k[0] for k in both] if "bench" in rows else None
    return a.reindex(both).to_numpy(float), r.reindex(both).to_numpy(float), strata


def lift(rows: pd.DataFrame, strategy: str = "default", budgets=LIFT_BUDGETS, pooled: bool = False) -> dict:
    """Paired lift (points of regret saved) of ``strategy`` over popularity-static at each b:
    ``{b: paired_lift dict}``; ``pooled`` (rows with a ``bench`` column): the bootstrap is
    stratified by benchmark."""
    out = {}
    for b in budgets:
        if f"regret@{b}" not in rows:
            continue
        a, r, strata = _paired(rows, strategy, b)
        if len(a) == 0:
            continue
        out[b] = paired_lift(a, r, "regret@1", strata=strata if pooled else None)
    return out


def _cell(d: dict) -> str:
    if not d or not np.isfinite(d.get("mean", np.nan)):
        return "n/a"
    lo, hi = d["ci_low"], d["ci_high"]
    flag = " **below 0**" if np.isfinite(hi) and hi < 0 else ""
    return f"{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]{flag}"


def lift_table(rows_by_bench: dict, strategy: str = "default", budgets=LIFT_BUDGETS) -> str:
    """Per benchmark: the lift of ``strategy`` over popularity-static at each b, with its 95% CI."""
    head = "| benchmark | n | " + " | ".join(f"b={b}" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (len(budgets) + 2)]
    for name, rows in rows_by_bench.items():
        lf = lift(rows, strategy, budgets)
        n = max((d["n"] for d in lf.values()), default=0)
        lines.append(f"| {name} | {n} | " + " | ".join(_cell(lf.get(b, {})) for b in budgets) + " |")
    return "\n".join(lines)


def pooled_rows(rows_by_bench: dict) -> pd.DataFrame:
    return pd.concat([r.assign(bench=name) for name, r in rows_by_bench.items()], ignore_index=True)


def pooled_table(rows_by_bench: dict, groups: dict, strategies=POOLED, budgets=LIFT_BUDGETS) -> str:
    """Pooled lift over popularity-static (mean over every held-out dataset; bootstrap CI
    stratified by benchmark), one row per (pool, strategy)."""
    head = "| pool | strategy | datasets | " + " | ".join(f"b={b}" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (len(budgets) + 3)]
    seen = []
    for pool, names in groups.items():
        sub = {n: rows_by_bench[n] for n in names if n in rows_by_bench}
        if not sub or sorted(sub) in seen:  # empty, or the same benchmarks as a pool above
            continue
        seen.append(sorted(sub))
        allr = pooled_rows(sub)
        for s in strategies:
            if s not in set(allr["strategy"]):
                continue
            lf = lift(allr, s, budgets, pooled=True)
            if not lf:
                continue
            n = max(d["n"] for d in lf.values())
            lines.append(f"| {pool} ({len(sub)} benchmarks) | {s} | {n} | "
                         + " | ".join(_cell(lf.get(b, {})) for b in budgets) + " |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path, title: str, budget: int) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    b = np.arange(1, budget + 1)
    for s, r in summary.iterrows():
        if int(r.get("datasets", 0) or 0) == 0 or s == "default":
            continue
        ax.plot(b, [r[f"regret@{i}"] for i in b], marker="o", ms=3, label=s,
                lw=2.2 if s in ("adaptive", "portfolio") else 1.2, ls="--" if s == "random" else "-")
    ax.set_xlabel("fine-tunes (budget b)")
    ax.set_ylabel("regret after b fine-tunes (accuracy points)")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(b)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def nested_section(rows: pd.DataFrame, choices: list) -> str:
    """With ``--nested``: how often each configuration was chosen on the inner folds."""
    if not choices:
        return ""
    counts = pd.Series([c["choice"] for c in choices]).value_counts()
    return ("Nested choices (inner leave-one-out on the training datasets, lowest mean regret over "
            "b = 1..3): " + ", ".join(f"`{k}` x{v}" for k, v in counts.items()) + ".\n")
