"""Ablations of the similarity feature groups and of pooled training:
``python -m experiments.ablations [--benchmarks ...] [--variants ...] [--out experiments/ABLATIONS.md]``.

For each benchmark (leave one dataset out; the four of ``experiments.report`` that have a
``model-mean`` reference) and each variant, nested selection (inner folds that never see the
held-out dataset) chooses among ``lr`` and ``lgbm`` x the variant's feature sets and
``model-mean``; the table gives the nested recommender on viable candidates and its paired lift
over ``model-mean`` with a 95% bootstrap CI (the engine's ``paired_lift``). Variants:

* ``base``   -- feature sets d,m (and d,m,s where MS scores exist): today's report;
* ``+t`` / ``+k`` / ``+x`` / ``+p`` -- each base feature set with one new group added
  (t = text similarity, k = rich collaborative kernel, x = model x dataset interactions,
  p = specialists: source-target task match and resolution x native image size);
* ``+tkx``   -- the base feature sets and the base sets with t,k,x, in one candidate set;
* ``pooled`` -- the base candidate set trained on the benchmark's history pooled with the other
  public sources' runs of its regime where they have them (``features.pooling``); only the
  benchmark's own datasets are held out, and the lift reference (and nested popularity
  candidate) is ``model-mean-own``: ``model-mean`` over the benchmark's own training datasets.

Each store is imported and enriched (``history enrich``) once, so every variant sees the same
model meta-features. Writes a markdown file and ``results_ablations.png`` next to it; the report
(``experiments.report``) quotes that file in RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from features.pooling import own_datasets
from history.enrich import enrich
from history.importers import get_importer
from history.store import HistoryStore

from .baselines import BASELINES, model_mean, register_baseline
from .benchmarks import BENCHMARKS as REPORT
from .benchmarks import default_data_dir
from .evaluate import NESTED_INNER_FOLDS, evaluate
from .histories import load_history, load_pooled

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "+tkx", "pooled", "+k", "+t", "+x", "+p")
BENCHMARKS = ("tg-lodo", "parc-controlled-lodo", "parc-all-lodo", "shift-vtab1k-lodo")
#: the other public sources pooled into each benchmark ("source[:regime]")
#: (no regime named: each source's runs of the benchmark's own regime where it has them -- SHiFT's
#: ``full`` runs for TransferGraph and PARC, not its VTAB-1k ones; see features.pooling.pool_regime)
POOL_WITH = {
    "tg-lodo": "shift,parc",
    "shift-vtab1k-lodo": "transfergraph-image,parc",
    "parc-controlled-lodo": "transfergraph-image,shift",
    "parc-all-lodo": "transfergraph-image,shift",
}
#: the popularity reference of the pooled rows: model-mean over the benchmark's own training
#: datasets only (the same reference as the base rows; the other sources' raw accuracies are on
#: other scales and, under another regime, rank the same models differently)
POOLED_REFERENCE = "model-mean-own"
RECOMMENDERS = ("lr", "lgbm")
LIFT_METRICS = ("regret@1", "weighted_tau")
DEFAULT_OUT = REPO / "experiments" / "ABLATIONS.md"


def feature_sets(variant: str, has_scores: bool) -> list[str]:
    base = ["d,m", "d,m,s"] if has_scores else ["d,m"]
    if variant in ("base", "pooled"):
        return base
    if variant == "+tkx":
        return base + [f"{b},t,k,x" for b in base]
    if variant in ("+t", "+k", "+x", "+p"):
        return [f"{b},{variant[1]}" for b in base]
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


def model_mean_own(train, test_pairs, full, method=None):
    """``model-mean`` over the training datasets that are not another source's pooled copy
    (:func:`features.pooling.own_datasets`); on an unpooled history it is ``model-mean``."""
    return model_mean(train.keep_targets(datasets=own_datasets(train)), test_pairs, full)


def _register_reference():
    if POOLED_REFERENCE not in BASELINES:
        register_baseline(POOLED_REFERENCE, "model-mean over the benchmark's own training datasets (pooled "
                          "histories: the other sources' copies left out)",
                          "training targets of the candidate models")(model_mean_own)


def import_store(bench, data: Path, store_dir: Path, *, pooled: bool):
    """A fresh, enriched SQLite store with the benchmark's history (plus the pooled sources')."""
    db = store_dir / f"{bench.name}{'-pooled' if pooled else ''}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    store = HistoryStore(f"sqlite:///{db}")
    importers = [(bench.importer, bench.folder)]
    if pooled:
        by_source = {b.source: b for b in REPORT.values()}
        for spec in POOL_WITH[bench.name].split(","):
            b = by_source[spec.split(":")[0]]
            if (b.importer, b.folder) not in importers:
                importers.append((b.importer, b.folder))
    for imp, folder in importers:
        get_importer(imp).run(store, data / folder)
    enrich(store)
    return store


def run_variant(bench, store, variant: str, *, progress: bool):
    if variant == "pooled":
        history, _, _, notes, primary = load_pooled(
            store, source=f"{bench.source},{POOL_WITH[bench.name]}", regime=bench.regime, modality=bench.modality)
    else:
        history, _, _, notes = load_history(store, source=bench.source, regime=bench.regime,
                                            modality=bench.modality)
        primary = None
    fsets = feature_sets(variant, bool(len(history.scores)))
    ref = reference(variant)
    if ref != "model-mean":
        _register_reference()
    grid = [f"{r}[{f}]" for r in RECOMMENDERS for f in fsets] + [ref]
    baselines = "model-mean" if ref == "model-mean" else f"model-mean,{ref}"
    return evaluate(history, protocol="lodo", recommenders=",".join(RECOMMENDERS), feature_sets=fsets,
                    baselines=baselines, progress=progress, candidates="viable", select="nested",
                    nested_candidates=grid, inner_folds=NESTED_INNER_FOLDS, datasets=primary,
                    config={"benchmark": bench.name, "variant": variant}), notes


def reference(variant: str) -> str:
    """The lift reference (and nested popularity candidate) of a variant."""
    return POOLED_REFERENCE if variant == "pooled" else "model-mean"


def summarize(result, ref: str = "model-mean") -> dict:
    """Nested method's means and lifts over ``ref`` (viable candidates)."""
    s = result.summary().set_index("method")
    out = {"reference": ref}
    if "nested" in s.index:
        for m in ("regret@1", "regret@3", "weighted_tau", "pearson"):
            out[m] = float(s.loc["nested", f"{m}_mean"])
    for lab in dict.fromkeys(["model-mean", ref]):  # the references' own figures
        if lab in s.index:
            out[f"ref:{lab}"] = {m: float(s.loc[lab, f"{m}_mean"]) for m in ("regret@1", "weighted_tau")}
    lf = result.lift(reference=ref)
    lf = lf[lf["method"] == "nested"].set_index("metric")
    for m in LIFT_METRICS:
        if m in lf.index:
            r = lf.loc[m]
            out[f"lift:{m}"] = {k: (float(r[k]) if k in ("mean", "ci_low", "ci_high") else int(r[k]))
                                for k in ("mean", "ci_low", "ci_high", "wins", "ties", "losses", "n")}
    from collections import Counter

    out["choices"] = dict(Counter(ch["chosen"] for ch in result.nested).most_common())
    out["wall_s"] = float(result.wall_s)
    return out


def _lift_cell(v, metric) -> str:
    if not v or v["n"] == 0:
        return "n/a"
    f = ".2f" if metric.startswith("regret") else ".3f"
    star = " **>0**" if v["ci_low"] > 0 else ""
    return f"{v['mean']:+{f}} [{v['ci_low']:+{f}}, {v['ci_high']:+{f}}]{star}"


def markdown(rows: list, cmd: str, total_s: float) -> str:
    lines = [
        "# Ablations: similarity feature groups and pooled training", "",
        f"Generated by `{cmd}` on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; wall time "
        f"{total_s / 60:.1f} min. Leave one dataset out, viable candidates, nested selection among "
        f"{' and '.join(RECOMMENDERS)} x the variant's feature sets and model-mean (3 inner folds, inner regret@1). "
        "Lift = mean paired improvement of the nested recommender over `model-mean` per held-out dataset "
        "[95% bootstrap CI]; positive = better; **>0** marks a CI above zero. Stores imported and enriched "
        "(`history enrich`) once per benchmark.", "",
        "Groups: t = text similarity (dataset text-embedding components, cosine between the dataset and the "
        "model's source dataset), k = collaborative kernel over the rich dataset similarity (text + size + "
        "classes + domain), x = model x dataset interactions. pooled = the base candidates trained with the "
        "other public sources' targets added (only the benchmark's datasets held out).", "",
        "| benchmark | variant | regret@1 | regret@3 | weighted tau | Pearson | lift regret@1 [CI] | "
        "lift weighted tau [CI] | nested choices |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['benchmark']} | {r['variant']} | FAILED: {r['error']} | | | | | | |")
            continue
        ch = ", ".join(f"{k} x{n}" for k, n in r.get("choices", {}).items())
        g = lambda m, f: format(r[m], f) if m in r and r[m] == r[m] else "n/a"  # noqa: E731
        lines.append(
            f"| {r['benchmark']} | {r['variant']} | {g('regret@1', '.2f')} | {g('regret@3', '.2f')} | "
            f"{g('weighted_tau', '.3f')} | {g('pearson', '.3f')} | {_lift_cell(r.get('lift:regret@1'), 'regret@1')} | "
            f"{_lift_cell(r.get('lift:weighted_tau'), 'weighted_tau')} | {ch} |")
    mm = []  # the pooled rows' lift reference: model-mean over the benchmark's own datasets
    for r in rows:
        if r["variant"] != "pooled" or "error" in r:
            continue
        own, raw = r.get(f"ref:{POOLED_REFERENCE}"), r.get("ref:model-mean")
        if own and raw:
            mm.append(f"{r['benchmark']} {own['regret@1']:.2f} (own datasets) vs {raw['regret@1']:.2f} (pooled)")
    if any(r["variant"] == "pooled" for r in rows):
        lines += ["", "Pooled rows: each other source contributes its runs of the benchmark's own regime where it "
                  "has them (SHiFT's `full` runs for TransferGraph and PARC; TransferGraph and PARC have only "
                  "`full` runs for SHiFT's VTAB-1k benchmark). Their lift reference is `model-mean` over the "
                  "benchmark's own training datasets (`model-mean-own`, also the nested popularity candidate): "
                  "the same reference as the base rows, since the other sources' raw accuracies are on other "
                  "scales."
                  + (" `model-mean` regret@1, own datasets vs fitted on the pooled history: " + "; ".join(mm) + "."
                     if mm else "")]
    have = {(r["benchmark"], r["variant"]) for r in rows}
    benches = list(dict.fromkeys([r["benchmark"] for r in rows]))
    missing = [f"{b} {v}" for b in benches for v in VARIANTS if (b, v) not in have]
    if missing:
        lines += ["", f"Not run (stopped for time): {', '.join(missing)}."]
    lines += ["", "![ablations](results_ablations.png)", ""]
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if "error" not in r]
    benches = list(dict.fromkeys(r["benchmark"] for r in ok))
    variants = list(dict.fromkeys(r["variant"] for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric in zip(axes, LIFT_METRICS):
        w = 0.8 / max(len(variants), 1)
        for j, v in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for i, b in enumerate(benches):
                r = next((r for r in ok if r["benchmark"] == b and r["variant"] == v), None)
                lf = (r or {}).get(f"lift:{metric}")
                if not lf or not lf["n"]:
                    continue
                xs.append(i + (j - (len(variants) - 1) / 2) * w)
                ys.append(lf["mean"]); lo.append(lf["mean"] - lf["ci_low"]); hi.append(lf["ci_high"] - lf["mean"])
            ax.bar(xs, ys, w, yerr=[lo, hi], capsize=2, label=v)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(benches)))
        ax.set_xticklabels(benches, rotation=15, fontsize=8)
        ax.set_title(f"lift over model-mean: {metric} (95% CI)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BEGIN, END = "<!-- ablations:begin -->", "<!-- ablations:end -->"


def results_section(ablations_md: Path) -> str:
    """The ablation table of ``ablations_md`` as a RESULTS.md section between markers."""
    body = ablations_md.read_text().split("\n", 1)[1].strip() if ablations_md.exists() else \
        "Not run yet: `python -m experiments.ablations`."
    return f"{BEGIN}\n## Ablations: similarity feature groups and pooled training\n\n" \
           f"Quoted from `{ablations_md.name}` (written by `python -m experiments.ablations`).\n\n{body}\n{END}\n"


def update_results(results_md: Path, ablations_md: Path) -> None:
    """Put (or replace) the ablation section in RESULTS.md without rerunning the report."""
    text = results_md.read_text() if results_md.exists() else ""
    sec = results_section(ablations_md)
    if BEGIN in text and END in text:
        a, rest = text.split(BEGIN, 1)
        _, b = rest.split(END, 1)
        text = a + sec + b.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + sec
    results_md.write_text(text)


def main(argv=None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    p = argparse.ArgumentParser(prog="python -m experiments.ablations", description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    p.add_argument("--data", default=None, help="folder of the real histories (default ../shared/data)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file to write (results_ablations.png beside it)")
    p.add_argument("--json", dest="json_file", default=None, help="also write the figures as JSON")
    p.add_argument("--results", default=str(REPO / "experiments" / "RESULTS.md"),
                   help="RESULTS.md whose ablation section is replaced by the new table ('' = leave it)")
    p.add_argument("--from-json", nargs="+", default=None,
                   help="render the table, plot and RESULTS.md section from the --json files of earlier runs "
                        "(e.g. benchmarks run as separate processes) instead of running")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [b for b in benches if b not in BENCHMARKS] + [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"error: unknown benchmark(s)/variant(s) {', '.join(bad)}; benchmarks: {', '.join(BENCHMARKS)}; "
              f"variants: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    data = Path(args.data).resolve() if args.data else default_data_dir()
    out = Path(args.out).resolve()
    if args.from_json:
        import json

        rows = list({(r["benchmark"], r["variant"]): r  # a later file's row replaces an earlier one
                     for f in args.from_json for r in json.loads(Path(f).read_text())}.values())
        order = {b: i for i, b in enumerate(BENCHMARKS)}
        rows.sort(key=lambda r: (order.get(r["benchmark"], 99), VARIANTS.index(r["variant"])
                                 if r["variant"] in VARIANTS else 99))
        total = sum(r.get("wall_s", 0.0) for r in rows)
        out.write_text(markdown(rows, "python -m experiments.ablations (benchmarks as separate processes; "
                                "evaluation time summed)", total))
        plot(rows, out.parent / "results_ablations.png")
        if args.results:
            update_results(Path(args.results), out)
        print(f"wrote {out} from {len(rows)} rows")
        return 0
    rows = []
    t0 = time.perf_counter()
    cmd = "python -m experiments.ablations" + (f" --benchmarks {args.benchmarks}" if args.benchmarks != ",".join(
        BENCHMARKS) else "") + (f" --variants {args.variants}" if args.variants != ",".join(VARIANTS) else "")

    def write(rows, total):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(rows, cmd, total))
        if any("error" not in r for r in rows):
            plot(rows, out.parent / "results_ablations.png")
        if args.json_file:
            import json

            Path(args.json_file).write_text(json.dumps(rows, indent=1))
    with tempfile.TemporaryDirectory(prefix="recommender-ablations-") as tmp:
        for name in benches:
            bench = REPORT[name]
            stores = {}
            for v in variants:
                pooled = v == "pooled"
                try:
                    if pooled not in stores:
                        stores[pooled] = import_store(bench, data, Path(tmp), pooled=pooled)
                    t1 = time.perf_counter()
                    result, _ = run_variant(bench, stores[pooled], v, progress=not args.no_progress)
                    row = {"benchmark": name, "variant": v, **summarize(result, reference(v))}
                    print(f"{name} {v}: regret@1 {row.get('regret@1', float('nan')):.2f}, "
                          f"w-tau {row.get('weighted_tau', float('nan')):.3f}, "
                          f"lift r@1 {_lift_cell(row.get('lift:regret@1'), 'regret@1')}, lift w-tau "
                          f"{_lift_cell(row.get('lift:weighted_tau'), 'weighted_tau')} "
                          f"({time.perf_counter() - t1:.0f} s)", flush=True)
                except Exception as exc:  # noqa: BLE001 - one failed variant must not lose the others
                    row = {"benchmark": name, "variant": v, "error": f"{type(exc).__name__}: {exc}"}
                    print(f"{name} {v}: FAILED {row['error']}", flush=True)
                rows.append(row)
                write(rows, time.perf_counter() - t0)  # after every variant: a long run keeps what it has
            for st in stores.values():
                st.dispose()
    total = time.perf_counter() - t0
    write(rows, total)
    print(f"wrote {out} ({total:.0f} s)")
    if args.results:
        update_results(Path(args.results), out)
        print(f"updated the ablation section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
