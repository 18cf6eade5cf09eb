"""Speed and memory benchmark of a large generic-format import.

    python -m experiments.bench_import              # 1.5M rows (target: <= 60 s, <= 1 GB peak)
    python -m experiments.bench_import --rows 200000

Writes a synthetic CSV (model, dataset, accuracy, lr, epochs, seed, provenance: the columns
of a typical sweep log) into a temporary folder, then runs
``python -m recommender history import FILE`` in a child process against a fresh SQLite
store and prints the wall time, the child's peak resident memory (ru_maxrss) and whether
both meet the targets. Figures only, no assertions.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    chunk = 250_000
    with open(path, "w") as f:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            i = np.arange(start, start + n)
            pd.DataFrame({
                "model": [f"org/model-{k}" for k in i % 3000],
                "dataset": [f"dataset-{k}" for k in (i // 3000) % 500],
                "accuracy": rng.random(n).round(6),
                "lr": rng.choice([1e-4, 1e-3, 1e-2], n),
                "epochs": rng.choice([10, 30], n),
                "seed": i % 7,
                "provenance": [f"run-{k}" for k in i],
            }).to_csv(f, index=False, header=start == 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_import", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_500_000, help="rows in the synthetic CSV (default 1.5M)")
    ap.add_argument("--target-s", type=float, default=60.0)
    ap.add_argument("--target-mb", type=float, default=1024.0)
    ap.add_argument("--keep", default=None, help="write the CSV and store into this folder and keep them")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / "bench.csv"
        t0 = time.perf_counter()
        make_csv(csv, args.rows)
        print(f"wrote {args.rows:,} rows ({csv.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
        db = folder / "bench.db"
        if db.exists():
            db.unlink()
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "recommender", "--store", f"sqlite:///{db}", "history", "import",
                            str(csv), "--json"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb, cpu = ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return r.returncode
        import json

        rep = json.loads(r.stdout)
        print(f"imported {rep['jobs_added']:,} jobs of {rep['rows_read']:,} rows "
              f"({rep['rows_dropped']:,} dropped)")
    print(f"date {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    ok_t, ok_m = wall <= args.target_s, peak_mb <= args.target_mb
    print(f"wall time  {wall:7.1f} s   target <= {args.target_s:g} s   {'met' if ok_t else 'NOT met'}")
    print(f"peak RSS   {peak_mb:7.0f} MB  target <= {args.target_mb:g} MB  {'met' if ok_m else 'NOT met'}")
    print(f"CPU time   {cpu:7.1f} s   (user + system of the import; wall time above includes waiting for a "
          f"busy machine, load average {os.getloadavg()[0]:.1f})")
    print(f"per row    {wall / max(args.rows, 1) * 1e6:7.1f} us, {peak_mb * 1024 / max(args.rows, 1):.2f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
