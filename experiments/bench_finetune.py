"""Runner overhead on the tiny zoo (``python -m experiments.bench_finetune``).

Fine-tunes every model of the offline zoo (:mod:`experiments.tinyzoo`) on one generated
image task with :func:`recommender.finetune.run_trials` (as ``search`` and ``finetune`` run
them) and splits the wall time of the whole call (from the call until it returns) into
training + validation passes and everything else. Counted as training: the forward /
backward passes and optimizer steps of every epoch, and the head's set-up (``train_s``);
as validation: the validation passes (``eval_s``). Everything else is overhead: starting
the jobs in the store, loading the models, decoding the images, seeding, copying the best
epoch's weights, saving them, the MLflow runs and the final job writes. Work done on the
call's other threads (the MLflow runs and store writes on the bookkeeping thread, the next
model's load on the preloading thread) counts where the main thread waits for it (e.g. the
last trial's recording before the call returns); while it overlaps training, it slows
training (2 cores, the GIL) and that slowdown is inside train + eval. Target: the rest is
< 5% of the wall time. Prints one row per trial ("in line": the trial's time outside
training and validation until its result is ready; "other threads": its MLflow run, store
writes, weight saving and model preload, done alongside) and the share over the whole call,
and the CPU time of the whole process during the call (all threads: less sensitive than
the wall time to other load on the machine, for A/B comparisons of the runner's code).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from experiments.tinyzoo import build_zoo, write_image_folder
from history.store import HistoryStore
from recommender.executor import LocalExecutor
from recommender.finetune import TrialConfig, load_task, run_trials, wait_background, warm_tracking


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600, help="images in the task (default 600)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    ap.add_argument("--mode", default="full", choices=["full", "linear"])
    ap.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--per-model", action="store_true",
                    help="one run_trials call per model, as `search` (local executor) and `finetune` make them, "
                         "instead of one call for all six; counted until everything is recorded")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    help="with --per-model: do not prefetch the next model during each call")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    mlflow = not args.no_mlflow
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        specs = build_zoo(tmp / "zoo")
        write_image_folder(tmp / "task", "digits-all", args.images, seed=5)
        data = load_task(tmp / "task")
        store = HistoryStore(f"sqlite:///{tmp / 'h.db'}")
        cfg = TrialConfig(lr=3e-3, epochs=args.epochs, mode=args.mode, patience=args.epochs)
        kw = dict(home=tmp / "home", mlflow=mlflow)
        # one warm-up trial (imports, MLflow database creation) is not counted
        if mlflow:
            warm_tracking(None, tmp / "home")
        run_trials(store, LocalExecutor(), [(specs["cnn-shapes"], TrialConfig(lr=3e-3, epochs=1, mode=args.mode))],
                   "warmup", data, **kw)
        # one run_trials call: MLflow runs and final store writes on the bookkeeping thread, all written
        # before it returns. --per-model: one call per model, as search and finetune make them (one data
        # snapshot, each call's last recording overlapping the next call's training); the clock stops
        # once everything is written
        t0, c0 = time.perf_counter(), time.process_time()
        if args.per_model:
            res, recording = [], []
            data = data.snapshot()
            order = list(specs.values())
            for k, spec in enumerate(order):  # each call prefetches the next model, as search does its likely pick
                res += run_trials(store, LocalExecutor(), [(spec, cfg)], "task", data, **kw, background=recording,
                                  prefetch=order[k + 1:k + 2] if args.prefetch else None)
            wait_background(recording)
        else:
            res = run_trials(store, LocalExecutor(), [(spec, cfg) for spec in specs.values()], "task", data, **kw)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.dispose()
    print(f"{'model':<16} {'train+eval s':>12} {'in line s':>9} {'other threads s':>15}  "
          "biggest parts outside training")
    work = beside = 0.0
    threads = ("mlflow_s", "store_s", "save_s", "preload_s")
    for name, r in zip(specs, res):
        tm = r.timings
        w = tm["train_s"] + tm["eval_s"]
        work += w
        side = sum(tm.get(k, 0.0) for k in threads)
        beside += side
        parts = sorted(((k, v) for k, v in tm.items() if k not in ("train_s", "eval_s", "total_s")),
                       key=lambda kv: -kv[1])[:4]
        print(f"{name:<16} {w:12.3f} {tm['total_s'] - w:9.3f} {side:15.3f}  "
              + ", ".join(f"{k} {v:.3f}" for k, v in parts))
    other = wall - work
    print(f"{len(res)} trials in {wall:.2f} s wall, {work:.2f} s in training and validation passes: "
          f"{100 * other / wall:.1f}% of the wall time outside them ({other / len(res):.3f} s per trial; "
          f"{beside:.2f} s of work on the other threads; process CPU {cpu:.2f} s; "
          f"{args.mode}, {args.epochs} epochs, {args.images} images, MLflow {'on' if mlflow else 'off'}, "
          f"{'one call per model' if args.per_model else 'one call'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
