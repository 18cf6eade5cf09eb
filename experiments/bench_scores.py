"""Speed benchmark of the MS score library, with agreement and speed against references.

    python -m experiments.bench_scores --threads 1              # n=500, d=2048, C=100, Z=1000
    python -m experiments.bench_scores --threads 1 --n 5000     # the n > d shape
    python -m experiments.bench_scores --threads 1 --agreement 10   # + references, 10 feature sets
    python -m experiments.bench_scores --quick                  # fewer repeats

Prints, per registered score, the median wall time over a few repeats and whether it meets
the target (<= 50 ms at n=500; inherently iterative scores are exempt, see docs/scores.md).
When ``tests/features/score_references.py`` is present (a checkout, not an install; never
a runtime dependency) each score with a reference (a port of the official code, or a
direct formula where there is none) is also timed, interleaved with ours, and the line
shows the reference's median, the speed ratio (reference / ours), the relative difference
of the values and, with ``--agreement K``, the Spearman correlation of both over K feature
sets of rising quality. ``--naive`` adds the LogME fast-path vs per-class speed-up (target
>= 5x; on by default at n <= 1000). Figures only, no assertions.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from features.scores import SCORES, compute_score, list_scores, logme_naive

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "tests" / "features" / "score_references.py"


#: scores benchmarked on their own (d, C): the official configuration cannot run on the main one
SHAPES = {"nleep": (64, 10)}
SHAPES_WHY = {"nleep": "the official mixture has 5 C full-covariance components; at C = 100 that is "
                       "500 components on 500 samples in ~400 PCA dims, hours per call"}


#: options the bench passes (printed in the header): split_lr's official call splits in the
#: given order (the bench's samples are already in random order)
OPTIONS = {"split_lr": {"seed": None}}


def load_references():
    """``(REFERENCES, EXTRA_REFERENCES)`` from the checkout's benchmark references, or None."""
    if not REFERENCE_FILE.exists():
        return None
    spec = importlib.util.spec_from_file_location("score_references", REFERENCE_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.REFERENCES, getattr(mod, "EXTRA_REFERENCES", {})


def make_inputs(n: int, d: int, C: int, Z: int, seed: int = 0, quality: float = 1.0):
    """Gaussian-mixture features (class centers scaled by ``quality``, noise sd 2), labels with
    every class present, source probabilities from a random head, reference features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rng.shuffle(y)
    centers = rng.standard_normal((C, d))
    X = (quality * centers[y] + 2.0 * rng.standard_normal((n, d))).astype(np.float32)
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


def _interleaved(fns, repeats):
    """Median ms of each function, timed in turns (one warm-up call each first)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def _spearman(a, b) -> str:
    """Spearman of two score lists; "const" when either is constant (e.g. a saturated H-score)."""
    from scipy.stats import spearmanr

    def const(v):
        v = np.asarray(v, dtype=float)
        return float(v.max() - v.min()) <= 1e-9 * max(1.0, float(np.abs(v).max()))

    if len(a) < 3:
        return "-"
    if const(a) or const(b):
        return "const"
    return f"{float(spearmanr(a, b)[0]):.3f}"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_scores", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repeats, naive LogME timed once")
    ap.add_argument("--n", type=int, default=500, help="samples (500; 5000 for the n > d shape)")
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--source-classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per score (default 7, --quick 3)")
    ap.add_argument("--ref-repeats", type=int, default=None,
                    help="timed repeats of references (default: --repeats at n <= 1000, else 1)")
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=None,
                    help="limit BLAS threads (threadpoolctl); 1 is steadier on a busy machine")
    ap.add_argument("--scores", nargs="*", default=None, help="subset of score names")
    ap.add_argument("--no-references", action="store_true", help="do not time the reference implementations")
    ap.add_argument("--agreement", type=int, nargs="?", const=5, default=0, metavar="K",
                    help="also compute ours and the reference on K (default 5) feature sets of rising "
                         "quality (Spearman of the two over the sets)")
    ap.add_argument("--naive", action="store_true", help="time the per-class LogME (default only at n <= 1000)")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    ref_repeats = max(1, args.ref_repeats or (repeats if args.n <= 1000 else 1))
    # import what the scores and the references use before timing them, and before limiting
    # threads: threadpoolctl limits only the pools already loaded (scikit-learn's OpenMP
    # runtime, used by KMeans in nleep, comes with its compiled modules)
    import sklearn.cluster, sklearn.covariance, sklearn.decomposition, sklearn.linear_model  # noqa: F401,E401
    import sklearn.metrics, sklearn.mixture, sklearn.preprocessing  # noqa: F401,E401
    if args.threads:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(args.threads)
        pools = sorted({p["internal_api"] for p in threadpool_info()})
    names = args.scores or list_scores()
    refs = None if args.no_references else load_references()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    X, y, P, R = make_inputs(args.n, args.d, args.classes, args.source_classes)
    print(f"bench_scores {date.today().isoformat()}  n={args.n} d={args.d} C={args.classes} "
          f"Z={args.source_classes} repeats={repeats} ref-repeats={ref_repeats}  python "
          f"{platform.python_version()} numpy {np.__version__}  cpus={os.cpu_count()} "
          f"threads={args.threads or os.environ.get('OPENBLAS_NUM_THREADS', 'default')}"
          + (f" ({', '.join(pools)})" if args.threads else "") + "  "
          f"load average {load:.2f}")
    if refs is None:
        print("references: none (tests/features/score_references.py not found or --no-references)")
    print(f"{'score':<12}{'median ms':>11}  {'value':>12}  {'target':<20}"
          + (f"{'ref ms':>11}  {'ref/ours':>8}  {'rel.diff':>9}  {'spearman':>8}  reference" if refs else ""))
    print("options: " + ", ".join(f"{k} {v}" for k, v in OPTIONS.items()))
    if refs and args.agreement:
        print(f"(rel.diff: the largest |ours - ref| / |ref| over the main set and the {args.agreement} "
              "agreement sets; spearman: of ours and ref over the agreement sets)")
    sets = []
    if refs and args.agreement:
        sets = [make_inputs(args.n, args.d, args.classes, args.source_classes, seed=1 + k, quality=q)
                for k, q in enumerate(np.linspace(0.1, 1.0, args.agreement))]
    misses = []
    main_inputs, main_sets = (X, y, P, R), sets
    for name in names:
        spec = SCORES[name]
        X, y, P, R = main_inputs
        sets = main_sets
        if name in SHAPES:  # the official configuration cannot run on the main shape
            d_, C_ = SHAPES[name]
            X, y, P, R = make_inputs(args.n, d_, C_, args.source_classes)
            if sets:
                sets = [make_inputs(args.n, d_, C_, args.source_classes, seed=1 + k, quality=q)
                        for k, q in enumerate(np.linspace(0.1, 1.0, args.agreement))]
            print(f"  ({name}: d={d_}, C={C_}; {SHAPES_WHY[name]})")

        def kw(P=P, R=R):
            return dict(probs=P if spec.needs_probs else None, reference=R if spec.needs_reference else None,
                        **OPTIONS.get(name, {}))

        value = compute_score(name, X, y, **kw())
        lines = [(name, None)]
        if refs and name in refs[0]:
            lines = [(name, refs[0][name])] + [(f"  {name}", r) for r in refs[1].get(name, [])]
        for label, ref in lines:
            if ref is None:
                ms = _interleaved([lambda: compute_score(name, X, y, **kw())], repeats)[0]
                tail = ""
            else:
                what, fn64 = ref

                def fn(X, y, P, R, fn64=fn64):  # same float32 inputs; cast to float64 inside the timing
                    return fn64(X.astype(np.float64), y, P.astype(np.float64), R.astype(np.float64))

                ours_t, ref_t = [], []
                compute_score(name, X, y, **kw())  # warm-up of ours (references can take minutes: none)
                for r in range(max(repeats, ref_repeats)):  # interleaved: same load for both
                    if r < repeats:
                        t0 = time.perf_counter()
                        compute_score(name, X, y, **kw())
                        ours_t.append((time.perf_counter() - t0) * 1e3)
                    if r < ref_repeats:
                        t0 = time.perf_counter()
                        rv = float(fn(X, y, P, R))
                        ref_t.append((time.perf_counter() - t0) * 1e3)
                ms, rms = statistics.median(ours_t), statistics.median(ref_t)
                rel = abs(value - rv) / max(abs(rv), 1e-300)
                rho = "-"
                if sets:
                    ours = [compute_score(name, Xk, yk, **kw(Pk, Rk)) for Xk, yk, Pk, Rk in sets]
                    theirs = [fn(Xk, yk, Pk, Rk) for Xk, yk, Pk, Rk in sets]
                    rels = [abs(a - b) / max(abs(b), 1e-300) for a, b in zip(ours, theirs)]
                    rel = max([rel] + rels)  # the worst over the main set and the agreement sets
                    rho = _spearman(ours, theirs)
                tail = f"{rms:>11.1f}  {rms / ms:>7.1f}x  {rel:>9.2e}  {rho:>8}  {what}"
            if label != name:  # an extra reference row: no target verdict of its own
                print(f"{label:<12}{'':>11}  {'':>12}  {'':<20}{tail}")
                continue
            if spec.iterative:
                verdict = "iterative (exempt)"
            elif ms <= args.target_ms:
                verdict = f"ok (<= {args.target_ms:g})"
            else:
                verdict = f"MISS (> {args.target_ms:g})"
                misses.append(name)
            print(f"{name:<12}{ms:>11.1f}  {value:>12.5g}  {verdict:<20}{tail}", flush=True)

    if args.naive or args.n <= 1000:
        X64 = X.astype(np.float64)
        fast = time_ms(lambda: compute_score("logme", X64, y), repeats)
        naive_reps = 1 if args.quick else 3
        naive = time_ms(lambda: logme_naive(X64, y), naive_reps)
        same = abs(compute_score("logme", X64, y) - logme_naive(X64, y))
        print(f"logme fast {fast:.1f} ms vs naive per-class {naive:.1f} ms: speed-up {naive / fast:.1f}x "
              f"(target >= 5x), |difference| {same:.2e}")
    print(f"misses of the {args.target_ms:g} ms target: " + (", ".join(misses) if misses else "none"))
    print(f"load average after: {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
