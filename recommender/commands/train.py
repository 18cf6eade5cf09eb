"""``python -m recommender train``: fit recommenders on the store, save them, log them to MLflow."""
from __future__ import annotations

import sys

from features.pooling import parse_sources, pool_histories, pool_regime

from history.config import resolve_home

from history.errors import unknown_name_error

from recommender.tracking import MLFLOW_FAILED_EXIT_CODE

from recommender.training import build_history, default_regime, train_recommenders

from ..defaults import DEFAULT_FEATURES, DEFAULT_RECOMMENDER
from . import add_parser, open_store
from .flags import features_help

HELP = "fit recommenders on the stored history, save them and log them to MLflow"


def register(sub):
    p = add_parser(sub, "train", help=HELP, description=HELP + ". Saves to <home>/models/<name>/ "
                   "(the latest of each recommender) and registers 'recommender-<name>' in the MLflow "
                   "model registry. Exit code 3: saved, but MLflow logging failed.")
    p.add_argument("--recommender", "-r", default=DEFAULT_RECOMMENDER,
                   help=f"recommender name(s), comma-separated, or 'all' (default: {DEFAULT_RECOMMENDER}, the "
                        "default of every command, docs/recommenders.md)")
    p.add_argument("--source", default=None,
                   help="train only on jobs of this source (e.g. transfergraph-image); several, comma-separated "
                        "(e.g. transfergraph-image,shift,parc; 'shift:vtab-1k' names a regime), pool them: the other "
                        "sources' datasets are renamed <dataset>@<source> and every dataset's target is "
                        "standardized on its own (docs/recommenders.md)")
    p.add_argument("--regime", default=None, help="train only on jobs of this regime (e.g. full, vtab-1k)")
    p.add_argument("--features", default=None, help=features_help(DEFAULT_FEATURES))
    p.add_argument("--target-rule", default="best", choices=["best", "mean", "latest"],
                   help="how the jobs of one (model, dataset) become one target (default: best)")
    p.add_argument("--metric", default=None, help="target metric (default: the most frequent, accuracy)")
    p.add_argument("--cv-folds", type=int, default=5,
                   help="leave-datasets-out CV folds for the logged cv_* metrics (0: skip; default 5)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (just save the model)")
    p.set_defaults(func=run)
    return p


def pooled_history(store, spec: str, *, regime=None, rule="best", metric=None):
    """The pooled training frame of ``--source a,b[:regime],...`` (:mod:`features.pooling`): the first
    source keeps its dataset names (``--regime`` applies to it), the others become
    ``<dataset>@<source>``. The first source with several regimes and none named trains on
    ``full`` (or its most common regime), as for one source; each other source uses the regime
    named after its colon, else the first source's regime when it has it, else its most
    frequent one (:func:`features.pooling.pool_regime`, the rule ``evaluate`` pools by)."""
    frames = []
    known = store.sources()
    primary = None
    for i, (src, reg) in enumerate(parse_sources(spec)):
        if src not in known:
            raise unknown_name_error("source", src, known, where=f" in --source {spec!r}",
                                     plural="sources in the store")
        if i == 0:
            reg = default_regime(store, source=src, regime=reg or regime)
            if reg is None:  # one regime per pair: the most common one names the primary's protocol
                counts = store.targets(source=src)["regime"].value_counts()
                primary = counts.index[0] if len(counts) else None
            else:
                primary = reg
        else:
            counts = store.targets(source=src)["regime"].value_counts()
            if len(counts):
                reg = pool_regime(counts, named=reg, primary=primary)
        frames.append((src, build_history(store, source=src, regime=reg, target_rule=rule, metric=metric)))
    pooled, counts = pool_histories(frames)
    added = ", ".join(f"{s}: {c['targets']:,} targets on {c['datasets']} datasets" for s, c in counts.items())
    print(f"pooled training history: {added}", file=sys.stderr)
    return pooled


def _on(info) -> str:
    """``source transfergraph-image, regime full`` (pooled: ``... + pooled shift (regime vtab-1k)``)."""
    on = info.get("trained_on") or {}
    pooled = on.get("pooled") or {}
    own = [s for s in on.get("sources") or [] if s not in pooled] or [info.get("source") or "?"]
    regimes = on.get("regimes") or [info.get("regime") or "?"]
    text = f"source {', '.join(own)}, regime {', '.join(regimes)}"
    for src, reg in sorted(pooled.items()):
        text += f" + pooled {src} (regime {reg})"
    return text


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def run(args) -> int:
    home = resolve_home(args.home, create=False)  # created when a model is saved, not before
    store = open_store(args, write=False)
    try:
        history = None
        if args.source and "," in args.source:
            history = pooled_history(store, args.source, regime=args.regime, rule=args.target_rule,
                                     metric=args.metric)
        results = train_recommenders(
            store, args.recommender, features=args.features, source=args.source, regime=args.regime,
            target_rule=args.target_rule, metric=args.metric, home=home, tracking_uri=args.tracking_uri,
            mlflow=not args.no_mlflow, cv_folds=args.cv_folds, progress=sys.stderr.isatty(), history=history,
        )
    finally:
        store.dispose()
    failed = []
    for r in results:
        c, m = r.counts, r.metrics
        print(f"trained {r.name} on {_on(r.info)}: {c['pairs']:,} (model, dataset) targets from {c['jobs']:,} jobs, "
              f"{c['datasets']} datasets x {c['models']} models, features={r.info.get('features')}, "
              f"fit {r.fit_seconds:.1f} s")
        line = f"  in-sample RMSE {_fmt(m.get('train_rmse'))}, Pearson {_fmt(m.get('train_pearson'))}"
        if "cv_pearson" in m:
            line += (f"; {int(m['cv_folds'])}-fold leave-datasets-out CV: Pearson per dataset "
                     f"{_fmt(m.get('cv_pearson'))}, RMSE {_fmt(m.get('cv_rmse'))}, "
                     f"weighted tau {_fmt(m.get('cv_weighted_tau'))}, regret@1 {_fmt(m.get('cv_regret1'))} / "
                     f"@3 {_fmt(m.get('cv_regret3'))} points ({m.get('cv_seconds', 0):.1f} s)")
        print(line)
        print(f"  saved to {r.path}")
        if r.mlflow is None:
            print("  MLflow: skipped (--no-mlflow)")
        elif r.mlflow.get("ok"):
            ver = r.mlflow.get("model_version")
            reg = f", registered {r.mlflow['registered_name']} version {ver}" if ver else ""
            print(f"  MLflow run {r.mlflow['run_id']} in {r.mlflow['tracking_uri']}{reg}")
        else:
            failed.append(r)
            print(f"warning: MLflow logging failed for {r.name}: {r.mlflow.get('error')}. The model was saved "
                  f"at {r.path} and `predict` can use it; fix --tracking-uri / MLFLOW_TRACKING_URI (tried "
                  f"{r.mlflow.get('tracking_uri') or args.tracking_uri or 'the default'}) and re-run train to "
                  "log it.", file=sys.stderr)
    return MLFLOW_FAILED_EXIT_CODE if failed else 0
