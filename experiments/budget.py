"""Budget protocol: how many fine-tunes does each strategy need? (``python -m experiments.budget``)

For every held-out dataset of a benchmark, a strategy picks models one at a time and
*observes* their real accuracy from the history (as if it had fine-tuned them). Reported
per budget ``b = 1..B``:

* **regret@b** (accuracy points): best accuracy on the dataset minus the best accuracy
  among the first ``b`` picks, averaged over held-out datasets;
* **within 1 point by b <= B**: the share of held-out datasets where some b <= B gets within
  1 point of the best, and the median such b (counted only within the budget);
* **lift over popularity-static** at b = 1..5: regret saved, paired by held-out dataset, with
  a bootstrap 95% CI, per benchmark and pooled over benchmarks (stratified by benchmark).

Strategies (everything is fitted without the held-out dataset's targets; its meta-features
and MS scores may be used). The prior is the project's default recommender
(:data:`recommender.defaults.DEFAULT_LABEL`, blend on d,m):

``default``            what ``search`` runs by default (:data:`recommender.acquisition.DEFAULT_STRATEGY`,
                       fixed on the development benchmarks; see BUDGET.md), a copy of its row;
``popularity-static``  the models' mean accuracy over the training datasets, a fixed order;
``static``             the default recommender's order;
``adaptive``           ``search --strategy adaptive``: GP update of the recommender's predictions
                       (:class:`recommender.adaptive.AdaptiveRanker`), next = highest posterior mean;
``portfolio``          ``search --strategy portfolio``: the same posterior; with r fine-tunes left,
                       the greedy set of r models of highest expected best (Monte-Carlo draws of the
                       joint posterior), its top model first (:mod:`recommender.acquisition`);
                       regret@b is that of a run with budget b;
``adaptive-ei``        the same update, next = highest expected improvement;
``adaptive-mm``        the GP update with the popularity prior;
``nested``             (``--nested`` only) the earlier nested choice among 18 configurations;
``hybrid``             Renggli et al.: top-5 by source accuracy re-ranked by an MS score (n/a, with
                       the reason, where the held-out dataset has no MS scores);
``random``             uniformly random order, mean over 20 seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from experiments.benchmarks import BENCHMARKS as REPORT
from experiments.benchmarks import Benchmark, default_data_dir
from experiments.budget_protocol import (  # noqa: F401  (the protocol's API, re-exported)
    CANDIDATES, STRATEGIES, nested_choice, prefit, regret_curve, run_protocol, summarize, with_default, within)
from experiments.budget_report import (  # noqa: F401
    _table, lift, lift_table, nested_section, per_dataset, per_dataset_table, plot, pooled_table)
from experiments.budget_render import render
from experiments.histories import load_history
from history.errors import RecommenderError
from history.importers import get_importer
from history.store import HistoryStore
from recommender.acquisition import DEFAULT_STRATEGY
from recommender.defaults import DEFAULT_FEATURES, DEFAULT_RECOMMENDER

REPO = Path(__file__).resolve().parents[1]
#: the development benchmarks: the default strategy was fixed on these only
DEV = ("tg-lodo", "shift-vtab1k-lodo", "parc-controlled-lodo", "parc-all-lodo")
#: the other public histories that can hold out at least 5 datasets (measured, never tuned on)
TEST = {b.name: b for b in [
    Benchmark("vtab1k-lodo", "VTAB-1k (16 upstream models), leave one dataset out", "vtab", "vtab", "vtab",
              "lodo", regime="vtab-1k"),
    Benchmark("vtab-full-lodo", "VTAB full training sets (16 upstream models), leave one dataset out", "vtab",
              "vtab", "vtab", "lodo", regime="full"),
    Benchmark("two-phase-cv-lodo", "Two-phase selection, CV (30 models), leave one dataset out", "two-phase",
              "two-phase-selection", "two-phase-selection", "lodo", modality="image"),
    Benchmark("two-phase-nlp-lodo", "Two-phase selection, NLP (39 models), leave one dataset out", "two-phase",
              "two-phase-selection", "two-phase-selection", "lodo", modality="text"),
    Benchmark("openclip-zs-lodo", "OpenCLIP zero-shot (121 CLIP models), leave one dataset out", "openclip",
              "openclip", "openclip", "lodo", regime="zero-shot"),
    Benchmark("shift-vtab1k-text-lodo", "SHiFT VTAB-1k regime, text tasks, leave one dataset out", "shift",
              "shift", "shift", "lodo", regime="vtab-1k", modality="text"),
    Benchmark("shift-full-text-lodo", "SHiFT full training sets, text tasks, leave one dataset out", "shift",
              "shift", "shift", "lodo", regime="full", modality="text"),
    Benchmark("shift-80-image-lodo", "SHiFT 80% slice, image tasks, leave one dataset out", "shift", "shift",
              "shift", "lodo", regime="slice-80%", modality="image"),
    Benchmark("shift-80-text-lodo", "SHiFT 80% slice, text tasks, leave one dataset out", "shift", "shift",
              "shift", "lodo", regime="slice-80%", modality="text"),
]}
BENCHMARKS = DEV + tuple(TEST)
#: left out, and why (fewer than 5 held-out datasets, or one dataset)
LEFT_OUT = {"timm-setting1": "one dataset (ImageNet-1k): nothing to hold out",
            "shift full, image": "3 image tasks in the full regime (fewer than 5)"}


def benchmark(name: str) -> Benchmark:
    return {**TEST, **REPORT}[name]


def load_benchmark(name: str, data: Path, store_dir: Path):
    bench = benchmark(name)
    store = HistoryStore(f"sqlite:///{store_dir / (name + '.db')}")
    try:
        get_importer(bench.importer).run(store, data / bench.folder)
        hist, _, _, notes = load_history(store, source=bench.source, regime=bench.regime, modality=bench.modality)
    finally:
        store.dispose()
    return bench, hist, notes


def compute(name: str, opts: dict) -> dict:
    """One benchmark's rows (read from ``opts['cache']`` when there, else computed and written).
    One BLAS thread: the benchmarks run as parallel processes on few cores."""
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    threadpool_limits(1)
    budget = opts["budget"]
    cached = Path(opts["cache"]) / f"{name}-b{budget}.json" if opts.get("cache") else None
    if cached is not None and cached.exists():
        blob = json.loads(cached.read_text())
        if blob.get("config") == _config(opts):
            return {**blob, "cached": str(cached)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, hist, notes = load_benchmark(name, Path(opts["data"]), Path(tmp))
        choices: list = []
        rows = run_protocol(hist, budget=budget, recommender=opts["recommender"], features=opts["features"],
                            ms_method=opts["ms_method"], progress=opts["progress"], nested=opts["nested"],
                            choices=choices,
                            prior_cache=Path(opts["prior_cache"]) / name if opts.get("prior_cache") else None)
    blob = {"config": _config(opts), "rows": rows.to_dict(orient="records"), "choices": choices,
            "notes": list(notes), "seconds": time.perf_counter() - t0}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(blob, default=float))
    return blob


def _config(opts: dict) -> dict:
    return {k: opts[k] for k in ("budget", "recommender", "features", "ms_method", "nested")}


def compute_all(names, opts: dict, jobs: int) -> dict:
    """``{name: blob}``; with ``jobs`` > 1 the benchmarks run as that many processes."""
    if jobs <= 1 or len(names) <= 1:
        return {n: compute(n, opts) for n in names}
    from concurrent.futures import ProcessPoolExecutor

    opts = {**opts, "progress": False}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = {n: pool.submit(compute, n, opts) for n in names}
        return {n: futs[n].result() for n in names}


def _parser():
    ap = argparse.ArgumentParser(prog="python -m experiments.budget", description=__doc__.splitlines()[0])
    ap.add_argument("--benchmarks", default="all",
                    help=f"comma-separated subset of {', '.join(BENCHMARKS)}; 'dev' or 'test' for those groups "
                         "(default all)")
    ap.add_argument("--budget", type=int, default=10, help="largest budget b (default 10)")
    ap.add_argument("--recommender", default=DEFAULT_RECOMMENDER, help=f"prior (default {DEFAULT_RECOMMENDER})")
    ap.add_argument("--features", default=DEFAULT_FEATURES, help=f"its features (default {DEFAULT_FEATURES})")
    ap.add_argument("--ms-method", default="logme", help="MS score of the hybrid strategy (default logme)")
    ap.add_argument("--nested", action="store_true", help="also the nested choice (a recommender fit per pair "
                                                          "of datasets: slow)")
    ap.add_argument("--data", default=None, help="folder of the real histories (default ../shared/data)")
    ap.add_argument("--out", default=str(REPO / "experiments" / "BUDGET.md"), help="markdown summary to write")
    ap.add_argument("--plots", default=str(REPO / "experiments"), help="folder for budget_<benchmark>.png")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every row, the strategy used per "
                                                                 "held-out dataset and the lifts as JSON")
    ap.add_argument("--store", default=None, help="evaluate this history store instead of the benchmarks "
                                                 "(SQLAlchemy URL or SQLite path; with --source / --regime)")
    ap.add_argument("--source", default=None, help="source of the jobs in --store")
    ap.add_argument("--regime", default=None, help="regime of the jobs in --store")
    ap.add_argument("--cache", default=None, help="folder for each benchmark's rows (<benchmark>-b<budget>.json): "
                                                 "read when present, written when computed (delete to recompute)")
    ap.add_argument("--jobs", type=int, default=1, help="benchmarks computed as this many processes (default 1)")
    ap.add_argument("--prior-cache", default=None, help="folder for the recommender's fits per excluded set "
                                                       "(shared by processes; see --prefit)")
    ap.add_argument("--prefit", default=None, metavar="K/N",
                    help="only fit the recommender for shard K of N of the excluded sets into --prior-cache "
                         "(run N processes, then the protocol reads the fits)")
    ap.add_argument("--note", default="", help="a sentence for BUDGET.md's header (e.g. how the cached rows were made)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _names(spec: str):
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        out += list(BENCHMARKS) if part == "all" else list(DEV) if part == "dev" else list(TEST) if part == "test" \
            else [part]
    return list(dict.fromkeys(out))


def _prefit(args, names, data) -> int:
    try:
        k, n = (int(x) for x in args.prefit.split("/"))
        assert 0 <= k < n and args.prior_cache
    except (ValueError, AssertionError):
        print(f"error: --prefit wants K/N with 0 <= K < N and --prior-cache, got {args.prefit!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            _, hist, _ = load_benchmark(name, data, Path(tmp))
            done = prefit(hist, Path(args.prior_cache) / name, shard=k, shards=n, recommender=args.recommender,
                          features=args.features, progress=not args.no_progress, nested=args.nested)
            print(f"{name}: {done} fit(s) in shard {k}/{n}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.budget < 1:
        print(f"error: --budget must be >= 1, got {args.budget}", file=sys.stderr)
        return 2
    if args.store:
        return _run_store(args)
    names = _names(args.benchmarks)
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        print(f"error: unknown benchmark(s) {bad}; valid: {', '.join(BENCHMARKS)}, dev, test, all", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    data = Path(args.data) if args.data else default_data_dir()
    if args.prefit:
        return _prefit(args, names, data)
    opts = {"budget": args.budget, "recommender": args.recommender, "features": args.features,
            "ms_method": args.ms_method, "nested": args.nested, "data": str(data), "cache": args.cache,
            "prior_cache": args.prior_cache, "progress": not args.no_progress}
    t0 = time.perf_counter()
    blobs = compute_all(names, opts, max(1, args.jobs))
    titles = {n: benchmark(n).title for n in names}
    return render(args, blobs, titles, dev=DEV, left_out=LEFT_OUT, wall=time.perf_counter() - t0)


def run_on_store(store, *, source=None, regime=None, rule: str = "best", metric=None, modality=None,
                 budget: int = 10, recommender: str = DEFAULT_RECOMMENDER, features: str = DEFAULT_FEATURES,
                 ms_method: str = "logme", datasets=None, progress: bool = True, viable_only: bool = True):
    """The budget protocol on one history of ``store``: ``(rows, summary, source, regime)``.

    Notes about the history go to stderr; a history where no held-out dataset has two
    candidate models raises :class:`RecommenderError`. Shared by ``--store`` here and by
    ``python -m recommender evaluate --protocol budget``.
    """
    hist, source, regime, notes = load_history(store, source=source, regime=regime, rule=rule, metric=metric,
                                               modality=modality)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    rows = run_protocol(hist, budget=budget, recommender=recommender, features=features, ms_method=ms_method,
                        datasets=datasets, progress=progress, viable_only=viable_only)
    if rows.empty:
        raise RecommenderError("no held-out dataset has at least 2 candidate models with results")
    return rows, summarize(rows, budget), source, regime


def _run_store(args) -> int:
    try:
        store = HistoryStore(args.store)
        try:
            rows, summary, source, regime = run_on_store(
                store, source=args.source, regime=args.regime, budget=args.budget, recommender=args.recommender,
                features=args.features, ms_method=args.ms_method, progress=not args.no_progress)
        finally:
            store.dispose()
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"## {source}" + (f" / {regime}" if regime else "") + f" ({int(summary['datasets'].max())} datasets)")
    print(_table(summary, args.budget))
    print(f"\nstrategy used per held-out dataset (default = {DEFAULT_STRATEGY}):")
    print(per_dataset_table(rows, args.budget))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows.to_dict(orient="records"),
                                               "per_dataset": per_dataset(rows, args.budget).to_dict("records")},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
