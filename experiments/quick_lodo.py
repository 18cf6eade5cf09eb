"""Quick leave-one-dataset-out (LODO) measurement of the learned recommenders on
TransferGraph-image (``python -m experiments.quick_lodo [--recommenders lr,fm] [--features d,m;d,m,s]``).

A thin front end over the evaluation engine (:func:`experiments.evaluate.evaluate`,
protocol ``lodo``, no baselines): the same folds, the same metric code and conventions as
``python -m recommender evaluate`` (regret in accuracy points, ties broken against the
method), on viable candidates by default (``--candidates all`` keeps degenerate models).
Prints one row per recommender x feature set, averaged over held-out datasets.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from experiments.evaluate import evaluate
from features.history_frame import HistoryFrame
from history.importers import get_importer
from history.store import HistoryStore
from recommender.registry import list_recommenders

DEFAULT_DATA = Path(os.environ.get("RECOMMENDER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_tg_image(data_dir: Path = DEFAULT_DATA) -> HistoryFrame:
    """TransferGraph-image as a HistoryFrame (through the transfergraph importer, temp SQLite store)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(f"sqlite:///{tmp}/h.db")
        get_importer("transfergraph").run(store, data_dir / "transfergraph-image")
        hf = HistoryFrame.from_store(store, source="transfergraph-image")
        store.dispose()
    return hf


def lodo(history: HistoryFrame, name: str, params: dict, datasets=None, candidates: str = "viable") -> pd.DataFrame:
    """Per held-out dataset metrics of one recommender configuration (the engine's rows)."""
    params = dict(params)
    feats = params.pop("features", "d,m")
    res = evaluate(history, protocol="lodo", recommenders=[name], feature_sets=[feats], baselines="none",
                   datasets=datasets, rec_params=params, progress=False, keep_predictions=False)
    rows = res.rows_for(candidates)
    if res.unavailable:
        raise SystemExit(f"{name}[{feats}]: {next(iter(res.unavailable.values()))}")
    rows = rows.copy()
    rows["fit_s"] = res.timings.get(f"{name}[{feats}]", float("nan")) / max(len(rows), 1)
    return rows[["dataset", "pearson", "spearman", "weighted_tau", "regret@1", "regret@3", "fit_s"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recommenders", default=",".join(list_recommenders()))
    ap.add_argument("--features", default="d,m;d,m,s", help="feature sets separated by ';'")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--per-dataset", action="store_true")
    ap.add_argument("--candidates", default="viable", choices=["viable", "all"],
                    help="viable (default: degenerate models left out) or all candidate models")
    ap.add_argument("--param", action="append", default=[], help="extra param k=v (applied to all)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    hist = load_tg_image(Path(args.data))
    print(f"# {hist!r}")
    extra = {}
    for kv in args.param:
        k, v = kv.split("=", 1)
        try:
            v = float(v) if "." in v or "e" in v else int(v)
        except ValueError:
            pass
        extra[k] = v
    print(f"{'recommender':<10} {'features':<8} {'pearson':>8} {'spearman':>8} {'w.tau':>7} {'regret@1':>8} "
          f"{'regret@3':>8} {'fit_s':>6}")
    for name in args.recommenders.split(","):
        for feats in args.features.split(";"):
            res = lodo(hist, name, {"features": feats, **extra}, candidates=args.candidates)
            if args.per_dataset:
                print(res.round(3).to_string(index=False))
            print(f"{name:<10} {feats:<8} {res['pearson'].mean():8.3f} {res['spearman'].mean():8.3f} "
                  f"{res['weighted_tau'].mean():7.3f} {res['regret@1'].mean():8.2f} {res['regret@3'].mean():8.2f} "
                  f"{res['fit_s'].mean():6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
