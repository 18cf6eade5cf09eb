"""``score``: compute model-selection scores of models on a dataset and store them.

    python -m recommender score --dataset X (--data PATH | --features-file FILE.npz) \\
        --models M1,M2,... [--methods logme,parc,...] [--probe-size 500] [--seed 0] \\
        [--batch-size 64] [--device auto] [--reference-model SPEC] [--format table|json]

Steps: draw a seeded, class-stratified probe of the dataset (recorded in the ``probes``
table), extract each model's penultimate features and source-class probabilities on it
(cached), compute every method, and write one row per (model, method) to the ``scores``
table with source ``score-cli`` (re-running replaces the values). ``runtime_s`` is the time
of the score computation alone; feature extraction time is printed per model. A score that
is degenerate for its input (H-score at n <= d, or one value for every model of the run)
is stored with a ``flag``, and the command warns; each row also records its ``params``.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from features.data import load_data, load_features_npz
from features.extract import (
    ExtractionError, extract_features, load_adapter, parse_model_spec, probe_inputs, resolve_device,
)
from features.probe import record_probe, sample_probe
from features.scores import constant_flag, get_score, list_scores, score_with_flag
from history.errors import NotFoundError, RecommenderError
from recommender.executor import Task, add_executor_args, executor_from_args

from . import add_parser, open_store
from .flags import renamed

SOURCE = "score-cli"


def register(sub):
    p = add_parser(sub, "score", help="compute model-selection scores (LogME, PARC, LEEP, ...) and store them",
                   description="Draw a seeded probe of the dataset, extract each model's features on it, "
                               "compute model-selection scores and store them (source score-cli).")
    p.add_argument("--dataset", "-d", required=True, help="dataset name in the history store (created if new)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="image folder (root/<class>/<image>), .csv of texts, or .npz of features")
    renamed(src, "--features", src.add_argument(
        "--features-file", metavar="FILE.npz",
        help=".npz of precomputed arrays: labels, features/<model>, probs/<model>"))
    p.add_argument("--models", "-m", help="comma-separated model specs: [name=]torchscript:PATH | timm:NAME | hf:ID | "
                                    "sentence:PATH_OR_ID; with --features-file: model names in the npz (default all)")
    p.add_argument("--methods", help="comma-separated score names (default: all registered)")
    p.add_argument("--probe-size", type=int, default=500, help="probe set size (default 500)")
    p.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--reference-model", help="model spec of the fixed reference model for rsa/dds "
                                             "(with --features-file: a model name in the npz)")
    p.add_argument("--image-size", type=int, help="resize images to this size (overrides the model's own)")
    p.add_argument("--text-column", default="text", help="text column of a CSV (default text)")
    p.add_argument("--label-column", default="label", help="label column of a CSV (default label)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--format", "-f", choices=["table", "json"], default="table", help="output format")

    add_executor_args(p, what="model")
    p.set_defaults(func=run)
    return p


def _split(s):
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def _methods(arg):
    names = _split(arg) or list_scores()
    if not names:
        raise NotFoundError("no model-selection scores are registered (features.scores is empty)")
    return [get_score(n) for n in dict.fromkeys(names)]  # NotFoundError lists valid names


def _check_args(args):
    if args.probe_size < 1:
        raise RecommenderError(f"--probe-size must be >= 1, got {args.probe_size}")
    if args.batch_size < 1:
        raise RecommenderError(f"--batch-size must be >= 1, got {args.batch_size}")


def run(args) -> int:
    _check_args(args)
    methods = _methods(args.methods)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.format == "json" else print
    notes: list[str] = []
    data, models, ref_spec = _data_and_models(args, methods, notes)  # all validated before anything is written
    executor, resources = executor_from_args(args)
    if not executor.in_process:
        log(f"executor: {executor.describe()}")  # an unreachable cluster is an error before anything is written
    store = open_store(args)
    probe = _record_probe(args, store, data, notes, log)
    reference, ref_reason = _reference(args, data, probe, methods, ref_spec, notes)
    by_model = _score_models(args, data, probe, models, methods, reference, ref_reason, executor, resources)
    got = _collect(args, models, by_model, probe, notes, log)
    warnings = _flag_degenerate(got.rows, got.results)
    res = store.commit(models=got.model_meta, scores=got.rows) if got.rows else None
    store.dispose()
    return _report(args, store, probe, models, methods, got, res, notes, warnings)


def _data_and_models(args, methods, notes: list):
    """The data, the ``(name, spec)`` of every model (spec None with precomputed features) and the
    reference model's spec; every argument is checked before anything is written."""
    data = load_features_npz(args.features_file) if args.features_file else load_data(
        args.data, text_column=args.text_column, label_column=args.label_column)
    precomputed = data.kind == "features"
    specs = _split(args.models)
    if precomputed:
        names = specs or sorted(data.features)
        missing = [m for m in names if m not in data.features]
        if missing:
            raise NotFoundError(f"model(s) {missing} not in {data.ref}; it has features for: "
                                f"{', '.join(sorted(data.features))}")
        models = [(m, None) for m in names]
    else:
        if not specs:
            raise RecommenderError("--models is required with --data (e.g. --models cnn=torchscript:model.pt)")
        models = []
        for s in specs:
            ms = parse_model_spec(s)
            _check_model(ms, load_adapter(ms))  # a bad spec or a missing file: an error before anything is written
            models.append((ms.name, s))
        dup = sorted({n for n, _ in models if [m for m, _ in models].count(n) > 1})
        if dup:
            raise RecommenderError(f"model name(s) {dup} given twice in --models; use NAME=SPEC to tell them apart")
    notes += data.notes
    ref_spec = None
    if args.reference_model and any(m.needs_reference for m in methods):
        if precomputed and args.reference_model not in data.features:
            raise NotFoundError(f"reference model {args.reference_model!r} not in {data.ref}; it has: "
                                f"{', '.join(sorted(data.features))}")
        if not precomputed:
            ref_spec = parse_model_spec(args.reference_model)
            _check_model(ref_spec, load_adapter(ref_spec), what="--reference-model")
    if not precomputed:
        resolve_device(args.device)  # a bad --device is a user error before anything is written
    return data, models, ref_spec


def _check_model(ms, adapter, what: str = "--models") -> None:
    """Refuse a model that cannot be loaded here before anything is written: a TorchScript file is
    read (missing, not TorchScript, bad metadata); a target that names a local path must exist.
    Hub ids (timm:NAME, hf:ID) are resolved when the model is scored."""
    from pathlib import Path

    if ms.prefix == "torchscript":
        try:
            adapter.configure("cpu")
        except ExtractionError as exc:
            raise ExtractionError(f"{what} {ms.name}={ms.prefix}:{ms.target}: {exc}") from None
        adapter.module = None  # loaded again on the device that scores it
        return
    t = ms.target
    if t.startswith(("/", "./", "../", "~")) and not Path(t).expanduser().exists():
        raise ExtractionError(f"{what} {ms.name}={ms.prefix}:{t}: {Path(t).expanduser()} does not exist")


def _record_probe(args, store, data, notes: list, log):
    """Register the dataset (warning where the data contradict it), draw the probe and record it."""
    if not store.has_dataset(args.dataset):
        notes.append(f"dataset {args.dataset!r} was not in the store: created")
    else:
        for w in dataset_mismatches(store.get_dataset(args.dataset), args.dataset, len(data), data.num_classes):
            print(f"warning: {w}", file=sys.stderr)
            notes.append(f"warning: {w}")
    probe = sample_probe(data.labels, args.probe_size, seed=args.seed)
    notes += list(probe.notes)
    store.commit(datasets=[{"name": args.dataset, "num_samples": len(data), "num_classes": data.num_classes,
                            "modality": {"images": "image", "text": "text"}.get(data.kind)}])
    record_probe(store, args.dataset, probe, data_ref=data.ref)
    log(f"probe: {probe.size} of {len(data)} samples, {probe.num_classes} of {probe.num_classes_total} classes, "
        f"seed {probe.seed}")
    return probe


def _reference(args, data, probe, methods, ref_spec, notes: list):
    """The reference model's probe features for rsa / dds (or None), and why there are none."""
    precomputed = data.kind == "features"

    def features_of(name, adapter):
        if precomputed:
            p = data.probs.get(name)
            return data.features[name][probe.indices], (None if p is None else p[probe.indices]), 0.0, True
        if args.image_size:
            adapter.override_size = args.image_size
        inputs, kind = probe_inputs(data, probe.indices)
        r = extract_features(adapter, inputs, dataset=args.dataset, probe_hash=probe.hash, data_kind=kind,
                             batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                             cache=not args.no_cache, home=args.home)
        notes.extend(f"{name}: {n}" for n in r.notes)
        return r.features, r.probs, r.seconds, r.cached

    reference = None
    ref_reason = None
    if any(m.needs_reference for m in methods):
        if args.reference_model:
            try:
                reference = (data.features[args.reference_model][probe.indices] if precomputed
                             else features_of(ref_spec.name, load_adapter(ref_spec))[0])
            except RecommenderError as exc:
                ref_reason = f"reference model failed: {exc}"
        else:
            ref_reason = "needs a reference model: pass --reference-model SPEC"
    return reference, ref_reason


def _score_models(args, data, probe, models, methods, reference, ref_reason, executor, resources) -> dict:
    """One task per model (feature extraction + every method), run by the executor; the outcomes by model."""
    precomputed = data.kind == "features"
    y = data.labels[probe.indices]
    inputs = None if precomputed else probe_inputs(data, probe.indices)
    opts = {"dataset": args.dataset, "probe_hash": probe.hash, "batch_size": args.batch_size, "device": args.device,
            "cache": not args.no_cache, "home": str(args.home) if args.home else None,
            "image_size": args.image_size, "progress": not args.no_progress and executor.in_process}
    tasks = []
    for name, spec in models:
        x = (data.features[name][probe.indices], None if data.probs.get(name) is None
             else data.probs[name][probe.indices]) if precomputed else inputs
        tasks.append(Task(name, score_model, (name, spec, x, y, [m.name for m in methods], reference, ref_reason,
                                              opts), resources=resources))
    by_model = {}
    try:
        for o in executor.map(tasks, progress=not args.no_progress and not executor.in_process, desc="models"):
            by_model[o.key] = o
    finally:
        executor.shutdown()
    return by_model


class _Collected:
    """The score rows to store and what the report shows of them."""

    def __init__(self):
        self.rows, self.results, self.skipped, self.failed, self.model_meta = [], [], [], [], []


def _collect(args, models, by_model: dict, probe, notes: list, log) -> _Collected:
    got = _Collected()
    for name, _ in models:  # the order of --models, whatever order the tasks finished in
        o = by_model[name]
        if not o.ok:
            got.failed.append({"model": name, "method": "*", "error": f"task failed: {o.error}"})
            continue
        r = o.value
        notes.extend(r["notes"])
        got.skipped.extend(r["skipped"])
        got.failed.extend(r["failed"])
        if r["error"]:
            got.failed.append({"model": name, "method": "*", "error": r["error"]})
            continue
        log(r["log"])
        got.model_meta.append({"name": name, "feature_dim": r["feature_dim"]})
        for method, v, dt, flag, params in r["scores"]:
            got.rows.append({"model": name, "dataset": args.dataset, "method": method, "value": v,
                             "probe_size": probe.size, "seed": probe.seed, "runtime_s": dt, "source": SOURCE,
                             "flag": flag, "params": params})
            got.results.append({"model": name, "method": method, "value": v, "runtime_s": dt, "flag": flag})
    return got


def _report(args, store, probe, models, methods, got: _Collected, res, notes: list, warnings: list) -> int:
    """Print the scores (table or JSON), the notes, warnings and failures; the exit code."""
    if args.format == "json":
        print(json.dumps({
            "dataset": args.dataset, "probe": probe.to_dict(), "scores": got.results, "skipped": got.skipped,
            "failed": got.failed, "notes": notes,
            "stored": None if res is None else {"added": res.scores_added, "replaced": res.scores_replaced,
                                                "unchanged": res.scores_unchanged},
        }, indent=2))
    else:
        _print_table(got.results, [n for n, _ in models], [m.name for m in methods])
        for s in got.skipped:
            print(f"skipped {s['method']} for {s['model']}: {s['reason']}")
        for n in notes:
            print(f"note: {n}")
        if res is not None:
            print(f"stored {len(got.rows)} score(s) in {store!r}: {res.scores_added} added, "
                  f"{res.scores_replaced} replaced, {res.scores_unchanged} unchanged")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for f in got.failed:
        print(f"failed {f['method']} for {f['model']}: {f['error']}", file=sys.stderr)
    if not got.rows:
        print("error: no score could be computed (see the messages above)", file=sys.stderr)
        return 1
    return 0


def dataset_mismatches(registered: dict, name: str, num_samples: int, num_classes: int) -> list[str]:
    """Where the data given to ``score`` contradicts the dataset's registered meta-features."""
    out = []
    for field, have, what in (("num_classes", num_classes, "classes"), ("num_samples", num_samples, "samples")):
        reg = registered.get(field)
        if reg is not None and int(reg) != int(have):
            out.append(f"the data has {have:,} {what} but dataset {name!r} is registered with {int(reg):,}; "
                       f"the registered value is kept. Check --dataset / --data, or fix it with 'history add-dataset "
                       f"{name} --update --num-samples N --num-classes C'")
    return out


def score_model(name, spec, x, y, methods, reference, ref_reason, opts) -> dict:
    """One model's task: extract its probe features (``x`` = probe inputs, or ``(features,
    probs)`` when precomputed) and compute every method. Pure: nothing is written but the
    feature cache; runs in the driver or on a Ray worker."""
    out: dict[str, Any] = {"notes": [], "skipped": [], "failed": [], "scores": [], "error": None, "log": "",
                           "feature_dim": None}
    try:
        if spec is None:
            (X, P), secs, cached = x, 0.0, True
        else:
            adapter = load_adapter(spec)
            if opts.get("image_size"):
                adapter.override_size = opts["image_size"]
            inputs, kind = x
            r = extract_features(adapter, inputs, dataset=opts["dataset"], probe_hash=opts["probe_hash"],
                                 data_kind=kind, batch_size=opts["batch_size"], device=opts["device"],
                                 progress=opts["progress"], cache=opts["cache"], home=opts["home"])
            out["notes"] += [f"{name}: {n}" for n in r.notes]
            X, P, secs, cached = r.features, r.probs, r.seconds, r.cached
    except (ExtractionError, RecommenderError) as exc:
        out["error"] = f"feature extraction failed: {exc}"
        return out
    out["feature_dim"] = int(X.shape[1])
    out["log"] = (f"{name}: features {X.shape[1]}-d" + (f", {P.shape[1]} source classes" if P is not None else
                                                        ", no source-class probabilities")
                  + ("" if spec is None else (" (cached)" if cached else f" in {secs:.1f}s")))
    for method in methods:
        m = get_score(method)
        if m.needs_probs and P is None:
            out["skipped"].append({"model": name, "method": method,
                                   "reason": "needs source-class probabilities; the model has no classification head"})
            continue
        if m.needs_reference and reference is None:
            out["skipped"].append({"model": name, "method": method, "reason": ref_reason})
            continue
        t0 = time.perf_counter()
        try:
            res = score_with_flag(method, X, y, probs=P if m.needs_probs else None,
                                  reference=reference if m.needs_reference else None)
        except Exception as exc:  # noqa: BLE001 - one failing method must not lose the others
            out["failed"].append({"model": name, "method": method, "error": f"{type(exc).__name__}: {exc}"})
            continue
        out["scores"].append((method, res.value, time.perf_counter() - t0, res.flag, res.params))
    return out


def _flag_degenerate(rows, results) -> list[str]:
    """Flag every method whose value is the same for all (>= 2) models of this run, and
    return one warning per degenerate method (the flagged rows are stored with their flag;
    the featurizer treats them as missing)."""
    warnings = []
    by_method: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_method.setdefault(r["method"], []).append(i)
    for method, idx in by_method.items():
        flag = constant_flag([rows[i]["value"] for i in idx])
        if flag:
            for i in idx:
                rows[i]["flag"] = rows[i]["flag"] or flag
                results[i]["flag"] = rows[i]["flag"]
        flagged = [rows[i]["model"] for i in idx if rows[i]["flag"]]
        if flagged:
            why = sorted({rows[i]["flag"] for i in idx if rows[i]["flag"]})
            warnings.append(f"{method} is degenerate for {len(flagged)} of {len(idx)} model(s) "
                            f"({', '.join(flagged[:5])}{' ...' if len(flagged) > 5 else ''}): {'; '.join(why)}. "
                            "Stored with its flag; recommenders treat it as missing.")
    return warnings


def _print_table(results, models, methods):
    if not results:
        return
    import pandas as pd

    df = pd.DataFrame(results).pivot(index="model", columns="method", values="value")
    df = df.reindex(index=[m for m in models if m in df.index], columns=[m for m in methods if m in df.columns])
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                           lambda v: f"{v:.4g}"):
        print(df.to_string(na_rep="-"))
