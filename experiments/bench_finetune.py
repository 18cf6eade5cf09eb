"""Runner overhead on the tiny zoo (``python -m experiments.bench_finetune``).

Fine-tunes every model of the offline zoo (:mod:`experiments.tinyzoo`) on one generated
image task and splits each trial's wall time into training + validation passes and
everything else: loading the model, decoding the images, writing the job to the store
(start and finish), saving the weights, logging the MLflow run. Target: the rest is < 5% of
a trial's time. Prints one row per trial and the share over all trials.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600, help="images in the task (default 600)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    ap.add_argument("--mode", default="full", choices=["full", "linear"])
    ap.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)

    import torch

    from experiments.tinyzoo import build_zoo, write_image_folder
    from history.store import HistoryStore
    from recommender.finetune import TrialConfig, load_task, run_trial

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        specs = build_zoo(tmp / "zoo")
        write_image_folder(tmp / "task", "digits-all", args.images, seed=5)
        data = load_task(tmp / "task")
        store = HistoryStore(f"sqlite:///{tmp / 'h.db'}")
        cfg = TrialConfig(lr=3e-3, epochs=args.epochs, mode=args.mode, patience=args.epochs)
        # one warm-up trial (imports, MLflow database creation) is not counted
        run_trial(store, specs["cnn-shapes"], "warmup", data, TrialConfig(lr=3e-3, epochs=1, mode=args.mode),
                  home=tmp / "home", mlflow=not args.no_mlflow)
        print(f"{'model':<16} {'total s':>8} {'train+eval s':>12} {'other s':>8} {'other %':>8}  biggest other parts")
        tot = work = 0.0
        t0 = time.perf_counter()
        for name, spec in specs.items():
            r = run_trial(store, spec, "task", data, cfg, home=tmp / "home", mlflow=not args.no_mlflow)
            tm = r.timings
            w = tm["train_s"] + tm["eval_s"]
            other = r.duration_s - w
            parts = sorted(((k, v) for k, v in tm.items() if k not in ("train_s", "eval_s", "total_s")),
                           key=lambda kv: -kv[1])[:3]
            print(f"{name:<16} {r.duration_s:8.2f} {w:12.2f} {other:8.3f} {100 * other / r.duration_s:7.1f}%  "
                  + ", ".join(f"{k} {v:.3f}" for k, v in parts))
            tot += r.duration_s
            work += w
        store.dispose()
    print(f"all trials: {tot:.1f} s, of which {100 * (tot - work) / tot:.1f}% outside training and validation "
          f"({args.mode}, {args.epochs} epochs, {args.images} images, MLflow {'off' if args.no_mlflow else 'on'}; "
          f"{time.perf_counter() - t0:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
