"""``python -m recommender evaluate`` and ``python -m recommender report``.

Plugged into the CLI through the ``recommender.commands`` entry-point group (pyproject), so
the ``recommender`` package never imports ``experiments``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from history.errors import NotFoundError, RecommenderError
from recommender.acquisition import DEFAULT_STRATEGY
from recommender.commands import add_parser, open_store
from recommender.commands.flags import features_help, renamed
from recommender.defaults import DEFAULT_FEATURES, DEFAULT_RECOMMENDER
from recommender.protocols import FoldPlan, describe_plan, get_protocol, list_protocols
from recommender.tracking import MLFLOW_FAILED_EXIT_CODE

from . import budget, report
from .evaluate import (DEFAULT_RECOMMENDERS, LIFT_REFERENCE, NESTED_GRID, NESTED_INNER_FOLDS, evaluate, format_lift,
                       format_nested, format_per_dataset, format_summary, parse_feature_sets)
from .histories import load_history, load_pooled
from .mlflow_log import log_evaluation


def register_evaluate(sub) -> None:
    p = add_parser(sub, "evaluate", help="evaluate recommenders and baselines with a protocol (lodo, ...)",
                   description="Fit every recommender x feature set on the training folds of a protocol, "
                               "score the held-out pairs with ranking metrics, compare with baselines, print "
                               "per-dataset and summary tables, and log everything to MLflow.")
    p.add_argument("--source", help="history source to evaluate on (e.g. transfergraph-image, shift, parc-controlled,"
                                    " timm); required when the store holds several. Several, comma-separated "
                                    "(e.g. transfergraph-image,shift,parc; 'shift:vtab-1k' names a regime): pooled "
                                    "training, the first source's datasets are held out, the others only train "
                                    "(per-dataset standardized targets; docs/recommenders.md)")
    p.add_argument("--regime", help="training regime (e.g. vtab-1k for shift); required when the source has several")
    p.add_argument("--metric", help="target metric (default: the most frequent, e.g. accuracy)")
    renamed(p, "--rule", p.add_argument(
        "--target-rule", default="best", choices=["best", "mean", "latest"],
        help="how the jobs of one (model, dataset) become one target (default: best)"))
    p.add_argument("--protocol", default="lodo",
                   help=f"one of {', '.join(list_protocols())}, or budget (default lodo)")
    p.add_argument("--budget", type=int, default=10,
                   help="with --protocol budget: the largest number of fine-tunes b (default 10); each held-out "
                        "dataset replays strategies that pick models one at a time (experiments/budget.py)")
    renamed(p, "--recommenders", p.add_argument(
        "--recommender", "-r", default=",".join(DEFAULT_RECOMMENDERS),
        help="recommender name(s), comma-separated, or 'none' (default: the default recommender and the nested "
             f"grid, {','.join(DEFAULT_RECOMMENDERS)})"))
    p.add_argument("--features", action="append", default=None,
                   help=features_help("d,m and d,m,s if scores exist", repeatable=True))
    p.add_argument("--baselines", default="all",
                   help="'all', 'none' or comma-separated names (ms:<method>, source-accuracy, model-mean, "
                        "parc-heuristic, hybrid:<method>, parc-ensemble:<method>)")
    p.add_argument("--seeds", type=int, default=5, help="seeds for setting1 / coldstart (default 5)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out model fraction (setting1/coldstart)")
    p.add_argument("--min-models", type=int, default=3, help="skip held-out datasets with fewer models (default 3)")
    p.add_argument("--datasets", help="comma-separated subset of datasets to hold out (default all)")
    p.add_argument("--modality", help="keep only targets on datasets of this modality (image / text), e.g. the "
                                      "19 VTAB image tasks of shift")
    p.add_argument("--candidates", default="viable", choices=["viable", "all"],
                   help="candidate models the tables lead with: 'viable' (default; degenerate models -- at chance "
                        "on >= 80%% of their datasets -- left out) or 'all'; both are computed and saved in --json-out")
    p.add_argument("--select", default="none", choices=["none", "nested"],
                   help="'nested': add the method 'nested', the configuration chosen on inner folds of each outer "
                        "fold's training data (never the held-out dataset); the choice per fold is printed")
    p.add_argument("--nested-candidates", default=None,
                   help="comma-separated method labels nested selection chooses from (default: the grid of the "
                        f"report, {' and '.join(NESTED_GRID)} x the evaluated feature sets, and model-mean), e.g. "
                        "'lr[d,m],lgbm[d,m],model-mean'")
    p.add_argument("--inner-folds", type=int, default=NESTED_INNER_FOLDS,
                   help=f"inner dataset groups for nested selection (default {NESTED_INNER_FOLDS})")
    p.add_argument("--select-on", default="regret@1", help="inner metric nested selection minimises / maximises "
                                                           "(default regret@1)")
    renamed(p, "--json", p.add_argument(
        "--json-out", metavar="FILE", help="write machine-readable results (per fold/dataset/method metrics + "
                                           "config) to this file"))
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-plots", action="store_true", help="log no plots to MLflow")
    p.add_argument("--quiet-datasets", action="store_true", help="print only the summary table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate)


def register_report(sub) -> None:
    p = add_parser(sub, "report", help="rerun the headline benchmarks on the real histories and write RESULTS.md",
                   description="Same as `python -m experiments.report`.")
    report.add_arguments(p)
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    return report.run(args)


def _print_wall(t_start: float, log_s: float) -> None:
    wall = time.perf_counter() - t_start
    print(f"evaluate wall time {wall:.1f} s, of which MLflow logging {log_s:.1f} s "
          f"({100 * log_s / wall if wall > 0 else 0:.0f}%)")


def _run_budget(args) -> int:
    """``evaluate --protocol budget``: the budget protocol of experiments/budget.py on one history."""
    if args.budget < 1:
        raise RecommenderError(f"--budget must be >= 1, got {args.budget}")
    # the prior follows the project's default unless --recommender / --features name one
    recs = [r.strip() for r in str(args.recommender).split(",") if r.strip() and r.strip() != "none"]
    if args.recommender == ",".join(DEFAULT_RECOMMENDERS):
        recs = [DEFAULT_RECOMMENDER]
    feature_sets = parse_feature_sets(args.features) if args.features else [DEFAULT_FEATURES]
    rec, feats = (recs or [DEFAULT_RECOMMENDER])[0], feature_sets[0]
    if len(recs) > 1 or len(feature_sets) > 1:
        print(f"note: the budget protocol uses one recommender for its static and adaptive orders: {rec}[{feats}]",
              file=sys.stderr)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    rows, summary, source, regime = budget.run_on_store(
        open_store(args, write=False), source=args.source, regime=args.regime, rule=args.target_rule,
        metric=args.metric,
        modality=args.modality, budget=args.budget, recommender=rec, features=feats, datasets=datasets,
        progress=not args.no_progress, viable_only=args.candidates == "viable")
    print(f"{source}" + (f" / {regime}" if regime else "") + f" -- budget {args.budget}, "
          f"{args.candidates} candidates, {int(summary['datasets'].max())} held-out datasets "
          "(regret in accuracy points after b fine-tunes)")
    print(budget._table(summary, args.budget))
    print(f"strategy used per held-out dataset (default = {DEFAULT_STRATEGY}):")
    print(budget.per_dataset_table(rows, args.budget))
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": {"protocol": "budget", "budget": args.budget, "source": source,
                                               "regime": regime, "recommender": rec, "features": feats,
                                               "candidates": args.candidates},
                                    "per_dataset": rows.to_dict(orient="records"),
                                    "strategy_per_dataset":
                                        budget.per_dataset(rows, args.budget).to_dict(orient="records"),
                                    "default_strategy": DEFAULT_STRATEGY,
                                    "summary": summary.reset_index().to_dict(orient="records")},
                                   indent=1, default=str))
        print(f"results written to {path}")
    return 0


def run_evaluate(args) -> int:
    t_start = time.perf_counter()

    if args.protocol == "budget":
        return _run_budget(args)
    get_protocol(args.protocol)  # fail fast with the list of valid protocols
    if args.seeds < 1:
        raise RecommenderError(f"--seeds must be >= 1, got {args.seeds}")
    if not 0 < args.test_fraction < 1:
        raise RecommenderError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    feature_sets = parse_feature_sets(args.features) if args.features else None
    store = open_store(args, write=False)  # evaluate only reads the store

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    if args.source and "," in args.source:  # pooled: the first source is held out, the others only train
        history, source, regime, notes, primary = load_pooled(store, source=args.source, regime=args.regime,
                                                              rule=args.target_rule, metric=args.metric,
                                                              modality=args.modality)
        bad = sorted(set(datasets or ()) - set(primary))
        if bad:
            raise NotFoundError(f"--datasets {', '.join(bad)}: not datasets of the primary source {source!r} "
                                f"(with --source a,b,... only the first source's datasets are held out)")
        datasets = datasets or primary
    else:
        history, source, regime, notes = load_history(store, source=args.source, regime=args.regime,
                                                      rule=args.target_rule, metric=args.metric, modality=args.modality)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    config = {"source": source, "regime": regime, "rule": args.target_rule, "modality": args.modality, "notes": notes,
              "store": repr(store),
              "recommenders": args.recommender, "feature_sets": feature_sets, "baselines": args.baselines}
    result = evaluate(history, protocol=args.protocol, recommenders=args.recommender, feature_sets=feature_sets,
                      baselines=args.baselines, seeds=args.seeds, test_fraction=args.test_fraction,
                      min_models=args.min_models, datasets=datasets, progress=not args.no_progress,
                      config=config, candidates=args.candidates, select=args.select,
                      nested_candidates=args.nested_candidates, inner_folds=args.inner_folds,
                      select_on=args.select_on)
    title = f"{source}" + (f" / {regime}" if regime else "") + f" -- {args.protocol}"
    print_result(result, title, per_dataset=not args.quiet_datasets)
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=1, default=str))
        print(f"results written to {path}")
    rc = 0
    if result.config.get("failures"):
        print(f"error: {len(result.config['failures'])} method(s) raised an unexpected error on some folds "
              f"({', '.join(result.config['failures'])}); see 'failures' in the results (run with -vv for "
              "tracebacks).", file=sys.stderr)
        rc = 1
    if args.no_mlflow:
        _print_wall(t_start, 0.0)
        return rc

    t1 = time.perf_counter()
    info = log_evaluation(result, tracking_uri=args.tracking_uri, home=args.home,
                          experiment=f"evaluate/{source}",
                          run_name=f"{args.protocol}" + (f"-{regime}" if regime else ""),
                          plots_on=not args.no_plots, started_at=time.time() - (t1 - t_start))
    _print_wall(t_start, time.perf_counter() - t1)
    if not info["ok"]:
        print(f"error: MLflow logging failed ({info['error']}); the results above are complete"
              + (f" and saved to {args.json_out}" if args.json_out else "; rerun with --json-out FILE to keep them")
              + ". Fix --tracking-uri or pass --no-mlflow.", file=sys.stderr)
        return MLFLOW_FAILED_EXIT_CODE
    print(f"logged to MLflow {info['tracking_uri']} experiment 'evaluate/{source}' run {info['run_id']}")
    return rc


def print_result(result, title: str, per_dataset: bool = True, file=None) -> None:
    out = file or sys.stdout
    if per_dataset and len(result.rows):
        print(format_per_dataset(result), file=out)
        print(file=out)
    print(f"summary: {title} -- mean ± std over {result.config.get('n_folds')} fold(s) "
          f"({len(result.config.get('datasets', []))} held-out datasets)", file=out)
    print(format_summary(result), file=out)
    print(file=out)
    print(f"lift over {LIFT_REFERENCE} on {result.candidates} candidates: mean paired improvement per "
          f"{'held-out dataset' if result.config.get('unit') == 'dataset' else 'fold'} [95% bootstrap CI] "
          "wins/ties/losses (positive = better: regret points saved, tau gained)", file=out)
    print(format_lift(result), file=out)
    if result.nested:
        print(file=out)
        print(f"nested selection ({result.config['nested']['inner_protocol']} inner folds, "
              f"on {result.config['nested']['select_on']}): configuration chosen per outer fold", file=out)
        print(format_nested(result), file=out)
    for cs in result.other_rows:
        print(file=out)
        print(f"on {cs} candidates (the JSON holds every metric on both sets):", file=out)
        print(format_summary(result, candidates=cs), file=out)
    deg = result.config.get("degenerate_models") or []
    if deg:
        print(f"degenerate models (not among the viable candidates): {len(deg)} -- "
              + ", ".join(deg[:8]) + (" ..." if len(deg) > 8 else ""), file=out)
    if result.skipped:
        print(describe_plan(FoldPlan(result.config.get("protocol", ""), [], result.skipped)).split(", ", 1)[-1],
              file=out)
    for k, n in result.config.get("partially_unavailable", {}).items():
        print(f"note: {k} could not run on {n} fold(s)", file=out)
    for k, errs in result.config.get("failures", {}).items():
        print(f"FAILED: {k}: {errs[0]}", file=out)
    print(f"wall time {result.wall_s:.1f} s", file=out)
