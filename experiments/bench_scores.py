"""Speed benchmark of the MS score library.

    python -m experiments.bench_scores           # n=500, d=2048, C=100, 1000 source classes
    python -m experiments.bench_scores --quick   # fewer repeats, smaller naive-LogME run

Prints, per registered score, the median wall time over a few repeats and whether it meets
the target (<= 50 ms; inherently iterative scores are exempt, see docs/scores.md), then the
LogME fast-path vs per-class (naive) speed-up (target >= 5x). Figures only, no assertions.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

import numpy as np

from features.scores import SCORES, compute_score, list_scores, logme_naive


def make_inputs(n: int, d: int, C: int, Z: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rng.shuffle(y)
    centers = rng.standard_normal((C, d))
    X = (centers[y] + 2.0 * rng.standard_normal((n, d))).astype(np.float32)
    logits = X[:, :64] @ rng.standard_normal((64, Z)).astype(np.float32)
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    R = (np.eye(C)[y] @ rng.standard_normal((C, 64)) + rng.standard_normal((n, 64))).astype(np.float32)
    return X, y, P, R


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_scores", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repeats, naive LogME timed once")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--source-classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per score (default 7, --quick 3)")
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=None,
                    help="limit BLAS threads (threadpoolctl); 1 is steadier on a busy machine")
    ap.add_argument("--scores", nargs="*", default=None, help="subset of score names")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    names = args.scores or list_scores()

    X, y, P, R = make_inputs(args.n, args.d, args.classes, args.source_classes)
    print(f"bench_scores {date.today().isoformat()}  n={args.n} d={args.d} C={args.classes} "
          f"Z={args.source_classes} repeats={repeats}  python {platform.python_version()} "
          f"numpy {np.__version__}  cpus={os.cpu_count()} "
          f"BLAS threads={args.threads or os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    print(f"{'score':<12}{'median ms':>11}  {'value':>12}  target")
    misses = []
    for name in names:
        spec = SCORES[name]
        kw = dict(probs=P if spec.needs_probs else None, reference=R if spec.needs_reference else None)
        value = compute_score(name, X, y, **kw)
        ms = time_ms(lambda: compute_score(name, X, y, **kw), repeats)
        if spec.iterative:
            verdict = "iterative (exempt)"
        elif ms <= args.target_ms:
            verdict = f"ok (<= {args.target_ms:g})"
        else:
            verdict = f"MISS (> {args.target_ms:g})"
            misses.append(name)
        print(f"{name:<12}{ms:>11.1f}  {value:>12.5g}  {verdict}")

    X64 = X.astype(np.float64)
    fast = time_ms(lambda: compute_score("logme", X64, y), repeats)
    naive_reps = 1 if args.quick else 3
    naive = time_ms(lambda: logme_naive(X64, y), naive_reps)
    same = abs(compute_score("logme", X64, y) - logme_naive(X64, y))
    print(f"logme fast {fast:.1f} ms vs naive per-class {naive:.1f} ms: speed-up {naive / fast:.1f}x "
          f"(target >= 5x), |difference| {same:.2e}")
    print("misses: " + (", ".join(misses) if misses else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
