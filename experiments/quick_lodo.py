"""Quick leave-one-dataset-out (LODO) measurement of the learned recommenders on
TransferGraph-image (``python -m experiments.quick_lodo [--recommenders lr,fm] [--features d,m;d,m,s]``).

For each held-out dataset X: fit on ``history.drop_targets(datasets=[X])``, predict every
model of X with the full history as context (its meta-features and MS scores, never its
targets), and compare with X's real accuracies: Pearson, Spearman, regret@1 (best real
accuracy minus the real accuracy of the top-1 recommendation, in accuracy points).
Prints one row per recommender x feature set, averaged over held-out datasets.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from features.history_frame import HistoryFrame
from history.store import HistoryStore
from recommender.registry import create_recommender, list_recommenders

DEFAULT_DATA = Path(os.environ.get("RECOMMENDER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_tg_image(data_dir: Path = DEFAULT_DATA) -> HistoryFrame:
    """TransferGraph-image as a HistoryFrame (through the transfergraph importer, temp SQLite store)."""
    from history.importers import get_importer

    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(f"sqlite:///{tmp}/h.db")
        get_importer("transfergraph").run(store, data_dir / "transfergraph-image")
        hf = HistoryFrame.from_store(store, source="transfergraph-image")
        store.dispose()
    return hf


def lodo(history: HistoryFrame, name: str, params: dict, datasets=None) -> pd.DataFrame:
    rows = []
    for d in datasets or history.target_datasets():
        truth = history.targets[history.targets["dataset"] == d]
        rec = create_recommender(name, **params)
        t0 = time.perf_counter()
        rec.fit(history.drop_targets(datasets=[d]))
        fit_s = time.perf_counter() - t0
        pred = rec.predict(truth[["model", "dataset"]], history=history)
        y = truth["value"].to_numpy()
        top = int(np.argmax(pred))
        rows.append({"dataset": d, "pearson": pearsonr(pred, y)[0], "spearman": spearmanr(pred, y)[0],
                     "regret@1": 100 * (y.max() - y[top]), "fit_s": fit_s})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recommenders", default=",".join(list_recommenders()))
    ap.add_argument("--features", default="d,m;d,m,s", help="feature sets separated by ';'")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--per-dataset", action="store_true")
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
    print(f"{'recommender':<10} {'features':<8} {'pearson':>8} {'spearman':>8} {'regret@1':>8} {'fit_s':>6}")
    for name in args.recommenders.split(","):
        for feats in args.features.split(";"):
            res = lodo(hist, name, {"features": feats, **extra})
            if args.per_dataset:
                print(res.round(3).to_string(index=False))
            print(f"{name:<10} {feats:<8} {res['pearson'].mean():8.3f} {res['spearman'].mean():8.3f} "
                  f"{res['regret@1'].mean():8.2f} {res['fit_s'].mean():6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
