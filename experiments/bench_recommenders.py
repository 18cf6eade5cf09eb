"""Speed / memory benchmark of the learned recommenders
(``python -m experiments.bench_recommenders [--quick] [--recommenders lr,lgbm]``).

For each recommender: train time, predict time for every model on one dataset, and the
process peak RSS, on (1) the real TransferGraph-image history and (2) a synthetic
latent-factor history of 10^4 models x 10^2 datasets = 10^6 jobs (``--quick``: 10^3 x 10^2).
Targets: <= 120 s to train, <= 1 s to predict 10^4 models, <= 4 GB peak.
Each (recommender, history) runs in a fresh subprocess so peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import pandas as pd

from experiments.quick_lodo import load_tg_image
from features.history_frame import synthetic_history
from recommender.registry import create_recommender, list_recommenders


def _one(name: str, which: str, n_models: int, n_datasets: int) -> dict:
    warnings.filterwarnings("ignore")
    if which == "tg-image":
        h = load_tg_image()
    else:
        h = synthetic_history(n_models=n_models, n_datasets=n_datasets, seed=0)
    rec = create_recommender(name)
    t0 = time.perf_counter()
    rec.fit(h)
    fit_s = time.perf_counter() - t0
    d = h.target_datasets()[0]
    pairs = pd.DataFrame({"model": h.model_names(), "dataset": d})
    t0 = time.perf_counter()
    rec.predict(pairs, history=h)
    pred_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"recommender": name, "history": which, "jobs": len(h.targets), "models": len(pairs),
            "train_s": round(fit_s, 2), "predict_s": round(pred_s, 3), "peak_mb": round(rss)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="synthetic history of 10^3 models instead of 10^4")
    ap.add_argument("--recommenders", default=None)
    ap.add_argument("--histories", default="tg-image,synthetic")
    ap.add_argument("--_one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._one:
        name, which, nm, nd = args._one
        print(json.dumps(_one(name, which, int(nm), int(nd))))
        return 0
    names = args.recommenders.split(",") if args.recommenders else list_recommenders()
    nm, nd = (1000, 100) if args.quick else (10000, 100)
    rows = []
    print(f"{'recommender':<10} {'history':<10} {'jobs':>8} {'models':>6} {'train_s':>8} {'predict_s':>9} "
          f"{'peak_MB':>8}")
    for which in args.histories.split(","):
        for name in names:
            cmd = [sys.executable, "-m", "experiments.bench_recommenders", "--_one", name, which, str(nm), str(nd)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{name:<10} {which:<10} FAILED: {p.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{r['recommender']:<10} {r['history']:<10} {r['jobs']:>8} {r['models']:>6} {r['train_s']:>8.2f} "
                  f"{r['predict_s']:>9.3f} {r['peak_mb']:>8}", flush=True)
    print(f"# {time.strftime('%Y-%m-%d')}; targets: train <= 120 s, predict 10^4 models <= 1 s, peak <= 4096 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
