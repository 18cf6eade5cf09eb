"""Latency benchmark of ``python -m recommender predict`` on a store holding every public source.

    python -m experiments.bench_predict        # pull all --from ../shared/data; train --source transfergraph-image
    python -m experiments.bench_predict --calls 5 --recommender lgbm

Imports every public history into a fresh home (``history pull all``), trains the default
recommender (``--no-mlflow``; ``--recommender`` for another), then times one first ``predict``
process (it fills ``<home>/cache/predict``) and ``--calls`` more complete processes
(interpreter start, imports, store, ranking, output) and prints the median and the worst
against the target (<= 1.5 s per call), the CPU time per call, the date and the load
average, plus the import time of the command's modules (``-X importtime``). Figures only,
no assertions.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from recommender.defaults import DEFAULT_RECOMMENDER

REPO = Path(__file__).resolve().parents[1]


def _cli(home: Path, *args: str, extra=()) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RECOMMENDER_HOME": str(home)}
    env.pop("RECOMMENDER_STORE", None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *extra, "-m", "recommender", "--home", str(home), *args], env=env,
                       capture_output=True, text=True)
    return time.perf_counter() - t0, r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the public histories")
    ap.add_argument("--recommender", default=None, help="default: the default recommender (recommender.defaults)")
    ap.add_argument("--dataset", default="cifar100", help="dataset to rank models for")
    ap.add_argument("--source", default="transfergraph-image",
                    help="the source train reads (the store holds every public source; default transfergraph-image)")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=1.5)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        args.recommender = args.recommender or DEFAULT_RECOMMENDER
        for step in (["history", "pull", "all", "--from", args.data],
                     ["train", "-r", args.recommender, "--source", args.source, "--no-mlflow", "--cv-folds", "0"]):
            dt, r = _cli(home, *step)
            if r.returncode:
                print(r.stderr[-2000:])
                return r.returncode
            print(f"setup: {' '.join(step[:2])} {dt:.1f} s")
        import resource

        first, r = _cli(home, "predict", "--dataset", args.dataset, "--recommender", args.recommender)
        if r.returncode:
            print(r.stderr[-2000:])
            return r.returncode
        print(f"first predict (fills the cache): {first:.2f} s")
        times, cpus = [], []
        load0 = os.getloadavg()[0]
        for _ in range(args.calls):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            dt, r = _cli(home, "predict", "--dataset", args.dataset, "--recommender", args.recommender)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if r.returncode:
                print(r.stderr[-2000:])
                return r.returncode
            times.append(dt)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        _, r = _cli(home, "predict", "--dataset", args.dataset, "--recommender", args.recommender,
                    extra=("-X", "importtime"))
    cum = {}
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line[len("import time:"):].split("|")]
            try:
                cum[parts[2].strip()] = int(parts[1]) / 1e6
            except ValueError:
                continue
    top = sorted(((v, k) for k, v in cum.items() if "." not in k), reverse=True)[:8]
    med, worst = statistics.median(times), max(times)
    print(f"date {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (before the calls: {load0:.1f}), python {platform.python_version()}")
    print("per-call wall time (s): " + ", ".join(f"{t:.2f}" for t in times))
    print(f"predict ({args.recommender}, {args.dataset}): median {med:.2f} s, worst {worst:.2f} s over "
          f"{len(times)} calls; target <= {args.target_s:g} s: {'met' if med <= args.target_s else 'NOT met'}")
    print(f"CPU time per call (user + system): median {statistics.median(cpus):.2f} s -- the wall time on an "
          "idle machine; the wall time above includes waiting for a busy one")
    print("slowest top-level imports: " + ", ".join(f"{k} {v:.2f} s" for v, k in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
