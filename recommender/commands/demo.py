"""``python -m recommender demo``: the README's main job, end to end on the TransferGraph history
(``--zoo``: offline, on a tiny zoo built on the spot; :mod:`.demo_zoo`).

1. import the TransferGraph image-classification history (from the local mirror ``--from``,
   or downloaded by ``history pull`` when no mirror exists); re-running adds nothing;
2. train the recommenders on it (saved under ``<home>/models``, logged to MLflow);
3. hold one dataset out (``--holdout``, default ``pets``): refit each recommender without
   that dataset's fine-tuning results and rank the models that do have a result on it,
   printing the top 5 next to their real accuracies;
4. print the store statistics.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from history.config import resolve_home

from history.datasets_registry import resolve_name

from history.errors import NotFoundError, RecommenderError, closest

from history.pull import pull

from recommender.tracking import MLFLOW_FAILED_EXIT_CODE

from recommender.training import build_history, resolve_names, train_recommenders

from ..defaults import DEFAULT_RECOMMENDER
from . import add_parser, fmt_pct, open_store
from .demo_zoo import run_zoo
from .flags import renamed

HELP = "import the TransferGraph image history, train, and recommend for a held-out dataset"
HISTORY = "transfergraph-image"


def register(sub):
    p = add_parser(sub, "demo", help=HELP, description=HELP + ". Idempotent: re-running re-uses the store.")
    renamed(p, "--data", p.add_argument(
        "--from", dest="from_dir", default=None, metavar="DIR",
        help="read the public histories from this local folder (default: $RECOMMENDER_DATA or ../shared/data); "
             f"without {HISTORY}/ there, the history is downloaded"))
    p.add_argument("--holdout", default="pets", help="dataset to hold out and recommend for (default: pets)")
    p.add_argument("--recommender", "-r", default=DEFAULT_RECOMMENDER,
                   help=f"recommenders to train, comma-separated, or 'all' (default: {DEFAULT_RECOMMENDER})")
    p.add_argument("--top", "-k", type=int, default=5, help="models to show (default 5)")
    p.add_argument("--cv-folds", type=int, default=0,
                   help="leave-datasets-out CV folds while training (default 0: skip, the demo holds one out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the training runs to MLflow")
    p.add_argument("--zoo", action="store_true",
                   help="offline instead: build a tiny zoo of small CNNs and a history of real fine-tunes, then "
                        "train, score and search --budget 3 on a new task (no download; under 2 minutes)")
    p.add_argument("--zoo-dir", default=None, help="with --zoo: where the zoo lives (default <home>/demo-zoo)")
    p.set_defaults(func=run)
    return p


def find_data(data) -> Path | None:
    """The history mirror folder: --from, $RECOMMENDER_DATA, ../shared/data (from cwd or the checkout)."""
    cands = [data] if data else [os.environ.get("RECOMMENDER_DATA"), "../shared/data",
                                 Path(__file__).resolve().parents[3] / "shared" / "data"]
    for c in cands:
        if c and (Path(c) / HISTORY).is_dir():
            return Path(c).resolve()
    if data:
        raise RecommenderError(f"--from {data}: no {HISTORY}/ folder there (expected {Path(data) / HISTORY}); "
                               "point --from at the folder holding the public histories, or leave it out "
                               "to download the history.")
    return None


def _pull(store, data: Path | None):
    progress = sys.stderr.isatty()
    if data is not None:
        return pull(store, HISTORY, from_dir=data / HISTORY, progress=progress)
    return pull(store, HISTORY, progress=progress)


def _report_line(rep) -> str:
    reps = rep if isinstance(rep, (list, tuple)) else [rep]
    added = existing = dropped = 0
    for r in reps:
        d = r.to_dict() if hasattr(r, "to_dict") else dict(r) if isinstance(r, dict) else {}
        added += int(d.get("jobs_added", 0) or 0)
        existing += int(d.get("jobs_existing", 0) or 0)
        dropped += int(d.get("rows_dropped", 0) or 0)
    return f"{added:,} jobs added, {existing:,} already in the store, {dropped:,} rows dropped (see `history stats`)"


def run(args) -> int:
    if getattr(args, "zoo", False):
        return run_zoo(args)
    import numpy as np

    home = resolve_home(args.home)
    names = resolve_names(args.recommender)
    data = find_data(args.from_dir)
    store = open_store(args)
    try:
        print(f"[1/4] importing the {HISTORY} history from {data / HISTORY if data else 'its public origin'}")
        t0 = time.perf_counter()
        rep = _pull(store, data)
        print(f"      {_report_line(rep)} ({time.perf_counter() - t0:.1f} s)")

        hist = build_history(store, source=HISTORY)

        args.holdout = resolve_name(args.holdout, hist.targets["dataset"]) or args.holdout  # pets -> oxford_iiit_pet
        if args.holdout not in set(hist.targets["dataset"]):
            ds = hist.target_datasets()
            hint = closest(args.holdout, ds)
            raise NotFoundError(f"--holdout {args.holdout!r} has no {HISTORY} results."
                                f"{' Did you mean: ' + ', '.join(hint) + '?' if hint else ''} "
                                f"Datasets: {', '.join(ds)}")
        print(f"[2/4] training {', '.join(names)} on {len(hist.targets):,} (model, dataset) targets "
              f"of {hist.targets['dataset'].nunique()} datasets")
        results = train_recommenders(store, names, source=HISTORY, home=home, tracking_uri=args.tracking_uri,
                                     mlflow=not args.no_mlflow, cv_folds=args.cv_folds,
                                     progress=sys.stderr.isatty(), history=hist)
        mlflow_failed = False
        for r in results:
            ml = r.mlflow
            where = ("MLflow skipped" if ml is None else
                     f"MLflow {ml['registered_name']} v{ml['model_version']}" if ml.get("ok") else
                     f"MLflow FAILED: {ml.get('error')}")
            mlflow_failed |= ml is not None and not ml.get("ok")
            print(f"      {r.name:<10} fit {r.fit_seconds:5.1f} s  in-sample Pearson "
                  f"{r.metrics.get('train_pearson', float('nan')):.3f}  saved {r.path}  ({where})")

        ho = args.holdout
        print(f"[3/4] holding out {ho!r}: each recommender is refit without its fine-tuning results")
        train = hist.drop_targets(datasets=[ho])
        real = hist.targets[hist.targets["dataset"] == ho].groupby("model")["value"].max()
        real_rank = real.rank(ascending=False, method="min").astype(int)
        best_model, best = str(real.idxmax()), float(real.max())
        print(f"      {len(real)} models have a real result on {ho!r}; the best is {best_model} at {fmt_pct(best)}")
        summary = []
        for r in results:
            rec = r.recommender.clone().fit(train)
            top = rec.recommend(ho, k=None, history=train, models=list(real.index))
            top["real"] = top["model"].map(real)
            top["real_rank"] = top["model"].map(real_rank)
            k = max(1, args.top)
            head = top.head(k)
            print(f"\n  {r.name}: top {k} for {ho!r} (trained without it)")
            w = max(len("model"), *(len(m) for m in head["model"]))
            print(f"  {'rank':>4}  {'model':<{w}}  {'predicted':>9}  {'real':>6}  {'real rank':>9}")
            for row in head.itertuples(index=False):
                print(f"  {row.rank:>4}  {row.model:<{w}}  {fmt_pct(row.predicted):>9}  {fmt_pct(row.real):>6}  "
                      f"{row.real_rank:>9}")
            regret = best - float(head["real"].iloc[0])
            best_k = float(head["real"].max())
            rho = float(np.corrcoef(top["predicted"], top["real"])[0, 1]) if len(top) > 2 else float("nan")
            summary.append((r.name, regret, best - best_k, rho))
        print(f"\n  {'recommender':<12} {'regret@1':>9} {'regret@' + str(max(1, args.top)):>9} {'Pearson':>8}"
              "   (regret: accuracy points lost against the best model)")
        for name, r1, rk, rho in summary:
            print(f"  {name:<12} {100 * r1:>9.1f} {100 * rk:>9.1f} {rho:>8.3f}")

        st = store.stats()
        tot = st["totals"]
        print(f"\n[4/4] store {st['store']}: {tot['jobs']:,} jobs, {tot['pairs']:,} pairs, {tot['models']:,} models, "
              f"{tot['datasets']} datasets, {tot['scores']:,} MS scores")
        for src, v in st["by_source"].items():
            print(f"      {src}: {v['jobs']:,} jobs, {v['models']} models, {v['datasets']} datasets")
        for meth, v in st["scores_by_method"].items():
            print(f"      scores {meth}: {v['scores']:,} ({v['pairs']:,} pairs)")
        print(f"\nNext: `python -m recommender predict --dataset {ho} --top 5` ranks the models not yet "
              f"fine-tuned on {ho}; `python -m recommender ui` shows the MLflow runs.")
    finally:
        store.dispose()
    if mlflow_failed:
        print("warning: MLflow logging failed (see above); the models were saved.", file=sys.stderr)
        return MLFLOW_FAILED_EXIT_CODE
    return 0
