"""How the default recommender was chosen: ``python -m experiments.choose_default``.

Evaluates the candidate defaults (:data:`CANDIDATES`) on the development benchmarks only
(:data:`experiments.benchmarks.DEV_BENCHMARKS`: TransferGraph-image, SHiFT VTAB-1k, PARC
controlled, PARC all), leave one dataset out, on viable candidates, and pools their paired
lift over ``model-mean`` across the benchmarks (bootstrap stratified by benchmark,
:mod:`experiments.pooled`). The rule, fixed before the run:

1. keep the candidates whose pooled regret@1 lift over ``model-mean`` has a mean >= 0;
2. among them, take the highest pooled weighted-tau lift (a smooth ranking objective);
   ties (within 0.005) go to the simpler candidate, earlier in :data:`CANDIDATES`.

It writes ``experiments/DEFAULT.md`` (date, machine, every candidate's pooled and per-benchmark
figures, the rule and the choice). The choice itself is a constant in
:mod:`recommender.defaults`; this module never changes it. The test benchmarks are never read.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .benchmarks import BENCHMARKS, DEV_BENCHMARKS, REPO, default_data_dir, load_benchmark
from .evaluate import evaluate
from .pooled import pooled_lift

#: candidate defaults, simplest first: (recommender, feature set); baselines are always evaluated
CANDIDATES = (("blend", "d,m"), ("blend", "d,m,p"), ("lr", "d,m"), ("lr", "d,m,p"))
REFERENCE = "model-mean"
BASELINES = "model-mean,model-additive"
METRICS = ("regret@1", "regret@3", "weighted_tau")


def _label(rec: str, fs: str) -> str:
    return f"{rec}[{fs}]"


def run(data: Path, store_dir: Path, progress: bool = False) -> dict:
    """``{benchmark: EvaluationResult}`` of every candidate and baseline on the dev benchmarks."""
    results = {}
    recs = ",".join(dict.fromkeys(r for r, _ in CANDIDATES))
    fsets = list(dict.fromkeys(f for _, f in CANDIDATES))
    for name in DEV_BENCHMARKS:
        bench = BENCHMARKS[name]
        history, _, _ = load_benchmark(bench, data, store_dir)
        t0 = time.perf_counter()
        results[name] = evaluate(history, protocol=bench.protocol, recommenders=recs, feature_sets=fsets,
                                 baselines=BASELINES, progress=progress, candidates="viable",
                                 config={"benchmark": name})
        print(f"[choose_default] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def choose(results: dict) -> tuple[str, pd.DataFrame]:
    """(chosen label, table of pooled lifts per candidate) by the rule of the module docstring."""
    rows = []
    for rec, fs in CANDIDATES + (("model-additive", None),):
        label = _label(rec, fs) if fs else rec
        pl = pooled_lift(results, label, REFERENCE, METRICS).set_index("metric")
        rows.append({"candidate": label, **{f"{m} {k}": pl.loc[m, k] for m in METRICS
                                            for k in ("mean", "ci_low", "ci_high")},
                     "n": int(pl.loc["weighted_tau", "n"])})
    table = pd.DataFrame(rows)
    ok = table[(table["regret@1 mean"] >= 0) & table["candidate"].isin([_label(r, f) for r, f in CANDIDATES])]
    if ok.empty:
        return "none (no candidate keeps the pooled regret@1 lift >= 0)", table
    best = ok["weighted_tau mean"].max()
    chosen = ok[ok["weighted_tau mean"] >= best - 0.005].iloc[0]["candidate"]
    return chosen, table


def _fmt(v, metric) -> str:
    return "n/a" if v != v else (f"{v:+.2f}" if metric.startswith("regret") else f"{v:+.3f}")


def render(results: dict, chosen: str, table: pd.DataFrame, wall_s: float) -> str:
    lines = [f"# How the default was chosen ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             "Written by `python -m experiments.choose_default` (the docstring holds the rule, fixed before the "
             f"run). Development benchmarks only: {', '.join(DEV_BENCHMARKS)}; leave one dataset out, viable "
             f"candidates. Lift over `{REFERENCE}`: positive = better; 95% bootstrap CI stratified by benchmark. "
             f"Wall time {wall_s / 60:.1f} min.", "",
             f"**Chosen: `{chosen}`** (rule: pooled regret@1 lift mean >= 0, then the highest pooled weighted-tau "
             "lift; ties within 0.005 to the simpler candidate).", "",
             "| candidate | datasets | lift regret@1 | lift regret@3 | lift weighted tau |", "|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        cells = [f"{_fmt(r[f'{m} mean'], m)} [{_fmt(r[f'{m} ci_low'], m)}, {_fmt(r[f'{m} ci_high'], m)}]"
                 for m in METRICS]
        lines.append(f"| {r['candidate']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Per benchmark (mean over held-out datasets, viable candidates):", "",
              "| benchmark | method | regret@1 | regret@3 | weighted tau | pearson |", "|---|---|---|---|---|---|"]
    for name, res in results.items():
        s = res.summary().set_index("method")
        for meth in s.index:
            if s.loc[meth, "n"]:
                lines.append(f"| {name} | {meth} | {s.loc[meth, 'regret@1_mean']:.2f} | "
                             f"{s.loc[meth, 'regret@3_mean']:.2f} | {s.loc[meth, 'weighted_tau_mean']:.3f} | "
                             f"{s.loc[meth, 'pearson_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.choose_default", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="folder of the public histories (default ../shared/data)")
    p.add_argument("--out", default=str(REPO / "experiments" / "DEFAULT.md"), help="markdown file to write")
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else default_data_dir()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(data, Path(tmp))
    chosen, table = choose(results)
    text = render(results, chosen, table, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
