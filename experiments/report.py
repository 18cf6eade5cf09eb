"""The reproducible benchmark report: ``python -m experiments.report [--quick] [--out experiments/RESULTS.md]``.

Imports the real public histories (``../shared/data`` or ``RECOMMENDER_DATA``) with the
project's importers -- each benchmark into its own fresh SQLite store, so that no source's
scores or models leak into another benchmark -- reruns the headline evaluations, and
regenerates ``RESULTS.md`` (tables, date, machine, package versions, wall time per
benchmark) plus one bar chart per benchmark next to it.

Benchmarks (:data:`experiments.benchmarks.BENCHMARKS`): the four development benchmarks the
default was chosen on (TransferGraph-image, SHiFT VTAB-1k, PARC controlled, PARC all) and the
test benchmarks it is only measured on (SHiFT full, VTAB-1k, VTAB full, two-phase-selection
image and text, open_clip zero-shot, timm setting 1). Each runs the default recommender and
the nested grid (:data:`experiments.evaluate.DEFAULT_RECOMMENDERS`) with feature sets d,m (and
d,m,s where MS scores exist), every baseline, and nested selection.

The headline is the **default recommender** (:mod:`recommender.defaults`, the same for
``train``, ``predict``, ``search`` and ``evaluate``) on **viable candidates**, per benchmark and
pooled over benchmarks (:mod:`experiments.headline`): regret@1, regret@3, weighted tau,
Pearson, and its paired lift over ``model-mean`` and ``model-additive`` with bootstrap 95% CIs
(stratified by benchmark when pooled). Nested selection stays as a row of its own. No row is
picked by looking at held-out results. ``--jobs N`` runs N benchmarks at once in separate
processes. ``--quick`` runs the default and lr only, with 2 seeds for setting 1.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from history.errors import NotFoundError, RecommenderError
from recommender.commands.flags import renamed
from recommender.defaults import DEFAULT_FIXED_ON, DEFAULT_LABEL

from . import plots
from .ablations import results_section
from .benchmarks import BENCHMARKS, REPO, Benchmark, default_data_dir, load_benchmark
from .evaluate import DEFAULT_RECOMMENDERS as _EVAL_DEFAULTS
from .evaluate import NESTED_GRID, NESTED_INNER_FOLDS, evaluate, format_lift, format_summary
from .headline import (HEADLINE_METRICS, best_model_ranks, default_rows, lift_cell, markdown_table, pooled_rows,
                       ranks_table, targets_rows, value_cell)

#: the default recommender and the nested grid; fm and lgbm-rank are left out to keep the report
#: within its time budget (--recommender blend,lr,fm,lgbm,lgbm-rank adds them)
DEFAULT_RECOMMENDERS = ",".join(_EVAL_DEFAULTS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller variant: the default and lr only; 2 seeds")
    p.add_argument("--out", default=str(REPO / "experiments" / "RESULTS.md"), help="markdown file to (re)write")
    renamed(p, "--data", p.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                                        help="read the real histories from this local folder (default "
                                             "../shared/data or RECOMMENDER_DATA)"))
    p.add_argument("--benchmarks", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    renamed(p, "--recommenders", p.add_argument("--recommender", "-r", default=None,
                                                help=f"recommender name(s), comma-separated (default "
                                                     f"{DEFAULT_RECOMMENDERS})"))
    p.add_argument("--jobs", type=int, default=1, help="benchmarks evaluated at once, in separate processes "
                                                       "(default 1)")
    p.add_argument("--seeds", type=int, default=None, help="seeds for setting 1 (default 5, --quick 2)")
    p.add_argument("--store-dir", default=None, help="keep the imported stores in this folder (default: a "
                                                     "temporary folder, deleted afterwards)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("numpy", "pandas", "scipy", "scikit-learn", "lightgbm", "myfm", "torch", "mlflow", "matplotlib"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def _cpu() -> str:
    n = os.cpu_count()
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        avail = n
    return f"{avail} usable of {n} logical CPUs"


def run_benchmark(bench: Benchmark, data: Path, store_dir: Path, *, recommenders: str, seeds: int,
                  progress: bool):
    """Import ``bench``'s history into a fresh store and evaluate it; returns (result, notes, import_s)."""
    history, notes, import_s = load_benchmark(bench, data, store_dir)
    fsets = ["d,m", "d,m,s"] if len(history.scores) else ["d,m"]
    result = evaluate(history, protocol=bench.protocol, recommenders=recommenders, feature_sets=fsets,
                      baselines="all", seeds=seeds, progress=progress, candidates="viable", select="nested",
                      inner_folds=NESTED_INNER_FOLDS,
                      config={"benchmark": bench.name, "source": bench.source,
                              "regime": bench.regime, "modality": bench.modality})
    return result, notes, import_s


def _choices(result) -> str:
    from collections import Counter

    c = Counter(ch["chosen"] for ch in result.nested)
    return ", ".join(f"{k} x{n}" for k, n in c.most_common())


def _nested_row(bench: Benchmark, result) -> list[str]:
    """Nested-selected recommender on viable candidates, its lift over model-mean (a secondary row)."""
    s = result.summary().set_index("method")
    if "nested" not in s.index or not s.loc["nested", "n"]:
        return [bench.name, "n/a (nested selection could not run)"] + ["n/a"] * 6
    cells = [value_cell(s.loc["nested", f"{m}_mean"], m) for m in HEADLINE_METRICS]
    lf = result.lift()
    lf = {r["metric"]: r for r in lf[lf["method"] == "nested"].to_dict("records")}
    return [bench.name, _choices(result), *cells, *(lift_cell(lf.get(m), m) for m in ("regret@1", "weighted_tau"))]


def _best_baselines(bench: Benchmark, result) -> list[str]:
    """The best baseline per headline metric (on viable candidates), with its value."""
    s = result.summary()
    base = s[(s["kind"] == "baseline") & (s["n"] > 0)]
    cells = []
    for m in HEADLINE_METRICS:
        col = base[f"{m}_mean"].dropna()
        if col.empty:
            cells.append("n/a")
            continue
        i = col.idxmin() if m.startswith("regret") else col.idxmax()
        cells.append(f"{base.loc[i, 'method']} {value_cell(col[i], m)}")
    return [bench.name, *cells]


def _one(name: str, data: Path, store_dir: Path, recommenders: str, seeds: int, progress: bool):
    """Evaluate one benchmark: (name, result or None, notes, import s, wall s, error message)."""
    bench = BENCHMARKS[name]
    print(f"== {bench.name}: {bench.title}", flush=True)
    t0 = time.perf_counter()
    try:
        result, notes, import_s = run_benchmark(bench, data, store_dir, recommenders=recommenders, seeds=seeds,
                                                progress=progress)
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others
        print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
        return name, None, [], 0.0, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    return name, result, notes, import_s, time.perf_counter() - t0, None


def _run_all(names, data, store_dir, recommenders, seeds, progress, jobs: int) -> list:
    if jobs <= 1 or len(names) <= 1:
        return [_one(n, data, store_dir, recommenders, seeds, progress) for n in names]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_one, n, data, store_dir, recommenders, seeds, False) for n in names]
        return [f.result() for f in futures]


def run(args) -> int:
    data, names, recommenders, seeds, out = _options(args)
    tmp = None
    if args.store_dir:
        store_dir = Path(args.store_dir).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="recommender-report-")
        store_dir = Path(tmp.name)
    t_all = time.perf_counter()
    try:
        outcomes = _run_all(names, data, store_dir, recommenders, seeds, not args.no_progress, args.jobs)
    finally:
        if tmp is not None:
            tmp.cleanup()
    sections, nested, timing, baselines, results = [], [], [], [], {}
    for name, result, notes, import_s, wall, error in outcomes:
        bench = BENCHMARKS[name]
        if result is None:
            sections.append(f"## {bench.title} (`{bench.name}`)\n\n**FAILED** after {wall:.0f} s: {error}\n")
            timing.append([bench.name, f"{wall:.1f}", "failed"])
            continue
        results[name] = result
        sections.append(_section(bench, result, notes, import_s, wall, out))
        nested.append(_nested_row(bench, result))
        baselines.append(_best_baselines(bench, result))
        timing.append([bench.name, f"{wall:.1f}", "ok"])
    total = time.perf_counter() - t_all
    header = _header(args, total, recommenders, results, nested, baselines, timing)
    out.write_text("\n".join(header) + "\n" + "\n".join(sections) + "\n"
                   + results_section(out.parent / "ABLATIONS.md"))
    print("\n".join(header[:header.index("<!-- end of headline -->")]), flush=True)
    print(f"wrote {out} ({total:.0f} s)")
    return 1 if len(results) < len(names) else 0


def _options(args) -> tuple:
    """(data folder, benchmark names, recommenders, seeds, output file) of the command line."""
    data = Path(args.from_dir).resolve() if args.from_dir else default_data_dir()
    if not data.is_dir():
        raise RecommenderError(f"real histories not found at {data}; pass --from or set RECOMMENDER_DATA")
    names = [n.strip() for n in args.benchmarks.split(",")] if args.benchmarks else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise NotFoundError(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    recommenders = args.recommender or ("blend,lr" if args.quick else DEFAULT_RECOMMENDERS)
    seeds = args.seeds or (2 if args.quick else 5)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    return data, names, recommenders, seeds, out


def _section(bench: Benchmark, result, notes, import_s: float, wall: float, out: Path) -> str:
    """One benchmark's section of RESULTS.md (its bar chart written next to ``out``)."""
    png = out.parent / f"results_{bench.name}.png"
    summary = result.summary()
    plots.bar_chart(summary, png, title=bench.title)
    table = format_summary(result, markdown=True)
    table_all = format_summary(result, markdown=True, candidates="all")
    lift = format_lift(result, markdown=True)
    deg = result.config.get("degenerate_models") or []
    print(format_summary(result), flush=True)
    print(f"   {wall:.1f} s", flush=True)
    lines = [f"## {bench.title} (`{bench.name}`)", "",
             f"Source `{bench.source}`" + (f", regime `{bench.regime}`" if bench.regime else "")
             + (f", {bench.modality} datasets only" if bench.modality else "")
             + f"; protocol `{bench.protocol}`; {result.config['n_folds']} folds over "
             f"{len(result.config['datasets'])} held-out datasets; mean ± std over "
             + ("held-out datasets." if bench.protocol in ("lodo", "setting2") else "datasets x seeds."), ""]
    if bench.note:
        lines += [bench.note, ""]
    for n in notes:
        lines += [f"Note: {n}.", ""]
    lines += [f"Viable candidates ({len(deg)} degenerate model(s) left out"
              + (f": {', '.join(deg[:6])}{' ...' if len(deg) > 6 else ''}" if deg else "") + "):", "",
              table, "",
              "Lift over `model-mean` (mean paired improvement per "
              + ("held-out dataset" if result.config.get("unit") == "dataset" else "fold")
              + ", [95% bootstrap CI], wins/ties/losses; positive = better):", "", lift, "",
              f"Nested selection (inner protocol `{result.config['nested']['inner_protocol']}`, "
              f"{NESTED_INNER_FOLDS} inner folds, on inner regret@1) chose: {_choices(result)}.", "",
              "All candidates:", "", table_all, ""]
    if result.skipped:
        lines += ["Skipped held-out datasets: " + "; ".join(f"{s['dataset']} ({s['reason']})"
                                                            for s in result.skipped), ""]
    for k, v in result.config.get("failures", {}).items():
        lines += [f"**{k} failed**: {v[0]}", ""]
    ranks = best_model_ranks(result)
    if len(ranks):
        lines += [f"Where the best model ranks under the default `{DEFAULT_LABEL}` (viable candidates):", "",
                  *ranks_table(ranks), ""]
    lines += [f"![{bench.name}]({png.name})", "",
              f"Wall time {wall:.1f} s (import {import_s:.1f} s, evaluation {result.wall_s:.1f} s).", ""]
    return "\n".join(lines)


def _header(args, total: float, recommenders: str, results: dict, nested: list, baselines: list,
            timing: list) -> list[str]:
    """The head of RESULTS.md: how it was made, the default's table (per benchmark and pooled),
    the targets as measured, nested selection, the best baselines, wall times."""
    cmd = "python -m experiments.report" + (" --quick" if args.quick else "")
    roles = {n: BENCHMARKS[n].role for n in results}
    pooled, raw = pooled_rows(results, roles)
    dev = ", ".join(n for n in results if roles[n] == "dev")
    return [
        "# Benchmark results", "",
        f"Generated by `{cmd}` on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"total wall time {total / 60:.1f} min" + (f" ({args.jobs} benchmarks at a time)" if args.jobs > 1 else "")
        + ".", "",
        f"Machine: {platform.platform()}, {_cpu()}; Python {platform.python_version()}; {_versions()}.", "",
        f"Recommenders: {recommenders}; feature sets d,m and d,m,s (where MS scores exist); every baseline "
        f"(n/a rows say why). Metrics per held-out dataset (see docs/evaluation.md): Pearson, Spearman, "
        "weighted Kendall tau, regret@k in accuracy points (lower is better), NDCG@5 (min-max gain).", "",
        "Targets are reported as measured, not tuned for: 'NOT met' rows are real results. Viable candidates "
        "leave out degenerate models (at chance on >= 80% of their datasets; docs/evaluation.md); every "
        "section also shows all candidates.", "",
        f"## Headline: the default recommender `{DEFAULT_LABEL}` on viable candidates", "",
        f"The default of `train`, `predict`, `search` and `evaluate` (recommender/defaults.py), fixed on "
        f"{DEFAULT_FIXED_ON} on the development benchmarks only ({dev or 'none run'}; "
        "experiments/DEFAULT.md); every other benchmark is a test benchmark, measured and never tuned on. "
        "Lift = mean paired improvement per held-out dataset over the reference [95% bootstrap CI] "
        "(wins/ties/losses), positive = better.", "",
        *markdown_table(["benchmark", "datasets", "regret@1", "regret@3", "weighted tau", "Pearson",
                         "lift regret@1 vs model-mean", "lift w.tau vs model-mean", "lift w.tau vs model-additive"],
                        default_rows(results)), "",
        "Pooled over benchmarks (every held-out dataset counts once; bootstrap stratified by benchmark):", "",
        *markdown_table(["pool", "lift regret@1 vs model-mean", "lift regret@3 vs model-mean",
                         "lift w.tau vs model-mean", "lift w.tau vs model-additive"], pooled), "",
        "Targets (issue 19), as measured:", "",
        *markdown_table(["target", "measured", "status"], targets_rows(results, raw)), "",
        "<!-- end of headline -->", "",
        "## Nested selection (a secondary row)", "",
        "The configuration chosen per held-out dataset on inner folds that never see it (among "
        f"{', '.join(NESTED_GRID)} x feature sets and model-mean; {NESTED_INNER_FOLDS} inner folds, the same "
        "grid as `evaluate --select nested`).", "",
        *markdown_table(["benchmark", "nested choices", "regret@1", "regret@3", "weighted tau", "Pearson",
                         "lift regret@1", "lift weighted tau"], nested), "",
        "Best baseline per metric (viable candidates):", "",
        *markdown_table(["benchmark", "regret@1", "regret@3", "weighted tau", "Pearson"], baselines), "",
        *markdown_table(["benchmark", "wall time (s)", "status"], timing), "",
    ]


def main(argv=None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)

    try:
        return run(args)
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
