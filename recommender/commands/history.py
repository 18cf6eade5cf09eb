"""``python -m recommender history ...``: fill, inspect and export the history store.

Sub-commands: pull, import, export, stats, list-models, list-datasets, show, add-dataset, enrich.
User errors raise :class:`history.errors.RecommenderError` subclasses (the CLI prints
``error: ...`` and exits 2).
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from history import schema as S
from history.config import resolve_tracking_uri
from history.datasets_registry import load_registry, lookup, resolve_name
from history.enrich import BENCHMARK_GLOB, FIELDS, enrich
from history.errors import NotFoundError, RecommenderError, StoreError, closest
from history.export import export_history
from history.importers import get_importer
from history.pull import PUBLIC_HISTORIES, pull, pull_all

from . import add_parser, open_store
from .flags import renamed

HELP = "fill, inspect and export the fine-tuning history store"
FORMATS = ("generic", "transfergraph", "shift", "parc", "timm", "vtab", "two-phase", "openclip", "mlflow")
LIST_FORMATS = ("table", "csv", "json")
GENERIC_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


class CliUsageError(RecommenderError):
    """A command-line argument is missing or inconsistent."""


def register(sub):
    p = add_parser(sub, "history", help=HELP, description=HELP + ".")
    hs = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hs.parent_parser = sub.parent_parser

    q = add_parser(hs, "pull", help="import a public fine-tuning history by name",
                   description="Import a public history (transfergraph-image, shift, parc, timm, vtab, "
                               "two-phase-selection, openclip) from a local copy (--from) or download it into the "
                               "cache; 'all' pulls every one (with --from: those with a folder there). Importing "
                               "twice adds nothing.")
    q.add_argument("name", nargs="?", help="public history name (see --list), or 'all'")
    q.add_argument("--list", action="store_true", help="list the public histories and exit")
    q.add_argument("--from", dest="from_dir", default=None, help="read the files from this local folder")
    q.add_argument("--cache", dest="cache_dir", default=None, help="download cache folder (default <home>/cache)")
    q.add_argument("--base-url", default=None, help="download from this mirror instead of the public origin")
    _import_options(q, food101="transfergraph-image: keep the broken food101 runs (dropped by default)",
                    option="extra importer option (repeatable), e.g. -o layout=text")
    q.set_defaults(func=cmd_pull)

    q = add_parser(hs, "import", help="import a history file or folder in a given format",
                   description="Import a history into the store in one transaction (a bad file changes "
                               "nothing). Importing the same rows twice adds nothing. Formats: generic "
                               "(CSV/Parquet, docs/generic-format.md), transfergraph, shift, parc, timm "
                               "(folders of the public histories), mlflow (PATH = tracking URI).")
    q.add_argument("path", nargs="?", help="file or folder; for --input-format mlflow the tracking URI "
                                           "(default: --tracking-uri)")
    renamed(q, ["--format", "-f"], q.add_argument(
        "--input-format", default=None,
        help=f"input format: {', '.join(FORMATS)} (default: generic for a .csv or .parquet file)"))
    q.add_argument("--unit", choices=["fraction", "percent"], default=None,
                   help="generic/mlflow: accuracy unit in the input (default fraction, values in [0, 1])")
    q.add_argument("--force-unit", action="store_true",
                   help="accept --unit percent even when every value is at most 1 (refused by default)")
    q.add_argument("--source", default=None,
                   help="generic: source name for rows without one (default: file stem); mlflow: source "
                        "name (default mlflow:<experiment>)")
    q.add_argument("--experiment", default=None, help="mlflow: experiment name or id (required for mlflow)")
    q.add_argument("--metric", default=None, help="mlflow: metric holding the accuracy (default accuracy)")
    _import_options(q, food101="transfergraph: keep the broken food101 runs",
                    option="extra importer option (repeatable)")
    q.set_defaults(func=cmd_import)

    q = add_parser(hs, "export", help="export the store to a generic CSV/Parquet file (lossless)",
                   description="Write the store (or one source) in the generic format; importing the file "
                               "into a fresh store reproduces the same models, datasets, jobs and scores.")
    q.add_argument("path", help="output file (.csv or .parquet)")
    q.add_argument("--source", default=None, help="only the jobs and scores of this source")
    q.add_argument("--format", "-f", choices=["csv", "parquet"], default=None,
                   help="output format (default: from the extension)")
    q.add_argument("--wide", action="store_true",
                   help="for pandas: one row per (model, dataset) with the target and one score_<method> column "
                        "per score (a view, not re-importable)")
    q.add_argument("--target-rule", choices=["best", "mean", "latest"], default="best",
                   help="--wide: how a pair's target is derived from its jobs (default best)")
    q.set_defaults(func=cmd_export)

    q = add_parser(hs, "stats", help="counts of jobs, models, datasets and scores; the last imports",
                   description="Counts by source, regime and score method, and the last imports with "
                               "their dropped rows by reason.")
    q.add_argument("--json", action="store_true", help="machine-readable JSON")
    q.set_defaults(func=cmd_stats)

    for kind in ("models", "datasets"):
        q = add_parser(hs, f"list-{kind}", help=f"list the {kind} with their meta-features and job counts",
                       description=f"List the {kind} in the store with their meta-features and job counts.")
        q.add_argument("--source", default=None, help=f"only {kind} with jobs or scores of this source")
        q.add_argument("--format", "-f", choices=LIST_FORMATS, default="table", help="output format (default table)")
        if kind == "datasets":
            q.add_argument("--aliases", action="store_true",
                           help="show the name mapping instead: each name a source (or you) used -> the "
                                "canonical name it is stored under (dataset registry + the store's aliases)")
        q.set_defaults(func=cmd_list, kind=kind[:-1])

    q = add_parser(hs, "show", help="show one model or dataset: meta-features, job count, best jobs",
                   description="Meta-features, number of jobs and the best completed jobs of one model or dataset.")
    q.add_argument("kind", choices=["model", "dataset"])
    q.add_argument("name")
    q.add_argument("--top", type=int, default=10, help="how many best jobs to show (default 10)")
    q.set_defaults(func=cmd_show)

    q = add_parser(hs, "add-dataset", help="register a new target dataset (for scoring / prediction)",
                   description="Add a dataset and its meta-features to the store, e.g. a new dataset to get "
                               "recommendations for. Refuses an existing name unless --update.")
    q.add_argument("name")
    q.add_argument("--num-samples", type=int, required=True, help="number of training examples")
    q.add_argument("--num-classes", type=int, required=True, help="number of classes")
    q.add_argument("--modality", choices=["image", "text"], default="image", help="default image")
    q.add_argument("--domain", default=None, help="e.g. natural, medical, satellite")
    q.add_argument("--alias", action="append", default=[], metavar="NAME",
                   help="another name of this dataset (repeat, or comma-separate); evaluation holds it out "
                        "together with the dataset")
    q.add_argument("--class-names", default=None, metavar="A,B,...|@FILE",
                   help="the class names, comma-separated or @FILE with one name per line (as many as "
                        "--num-classes)")
    q.add_argument("--description", default=None, help="a one-line description of the dataset")
    q.add_argument("--update", action="store_true", help="overwrite the meta-features of an existing dataset")
    q.set_defaults(func=cmd_add_dataset)

    q = add_parser(hs, "enrich", help="fill missing model meta-features offline (params, GMACs, input size, ...)",
                   description="Fill the model meta-features the store lacks (params, GMACs, input size, depth, "
                               "feature dim, family, pretraining dataset and domain) from timm's published tables, "
                               "stated tables and transformers configs built without weights (no network). Only "
                               "missing values are written, so running it again changes nothing. Prints per source "
                               "what was filled, what stayed unknown and why, and the coverage. "
                               "See docs/datasets-and-models.md.")
    q.add_argument("--timm-dir", default=None,
                   help="folder with timm's benchmark-infer-*.csv (default: found through the timm import)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=cmd_enrich)
    return p


# ---------------------------------------------------------------------- helpers
def _import_options(q, *, food101: str, option: str) -> None:
    """The options ``history pull`` and ``history import`` share (the helps name what each imports)."""
    q.add_argument("--include-food101", action="store_true", help=food101)
    q.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help=option)
    q.add_argument("--json", action="store_true", help="print the import report as JSON")


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False, highlight=False)


def _table(title, columns, rows):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold", justify="right" if c in _NUMERIC else "left")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    _console().print(t)


_NUMERIC = {"jobs", "models", "datasets", "scores", "pairs", "value", "n", "count", "num_samples",
            "num_classes", "params", "probes", "gmacs", "input_size", "feature_dim", "depth", "source_accuracy"}


def _parse_options(pairs):
    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise CliUsageError(f"--option {kv!r}: write KEY=VALUE, e.g. -o layout=text")
        k, v = kv.split("=", 1)
        low = v.strip().lower()
        out[k.strip().replace("-", "_")] = True if low == "true" else False if low == "false" else v
    return out


def _call_importer(fn, *args, options, **kw):
    """Call ``fn`` passing ``progress`` only where it is accepted."""
    params = inspect.signature(fn).parameters
    if "progress" in params:
        kw["progress"] = sys.stderr.isatty()
    return fn(*args, **options, **kw)


def _import_and_report(args, what, run) -> int:
    """``run(store)``: one import (one transaction) into the store of ``args``; print its report."""
    store = open_store(args)
    try:
        rep = run(store)
    except KeyboardInterrupt:  # the import's one transaction was rolled back
        raise KeyboardInterrupt(f"interrupted: nothing of {what} was imported") from None
    finally:
        store.dispose()
    _print_report(rep, args.json)
    return 0


def _print_report(rep, as_json):
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        print(rep.summary())


def _fmt(v):
    if v is None:
        return None
    if isinstance(v, float):
        if v != v:
            return None
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}" if abs(v) >= 1e4 else str(int(v))
        return f"{v:.4g}"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


# ---------------------------------------------------------------------- commands
def cmd_pull(args) -> int:
    if args.list:
        _table("public histories", ["name", "description"],
               [(n, getattr(h, "description", "")) for n, h in PUBLIC_HISTORIES.items()])
        return 0
    if not args.name:
        raise CliUsageError(f"history pull: give the NAME of a public history: {', '.join(PUBLIC_HISTORIES)} "
                            "(--list describes them)")
    if args.name == "all":
        return _pull_all(args)
    if args.name not in PUBLIC_HISTORIES:
        near = closest(args.name, PUBLIC_HISTORIES)
        raise NotFoundError(f"no public history named {args.name!r}"
                            + (f"; did you mean: {', '.join(near)}?" if near else "")
                            + f" Available: {', '.join(PUBLIC_HISTORIES)}")
    options = _parse_options(args.option)
    if args.include_food101:
        options["include_food101"] = True
    return _import_and_report(args, args.name, lambda store: pull(
        store, args.name, from_dir=args.from_dir, cache_dir=args.cache_dir, base_url=args.base_url,
        progress=sys.stderr.isatty(), **options))


def _pull_all(args) -> int:
    """``history pull all``: every public history, one import (transaction) each."""
    if args.option:
        raise CliUsageError("history pull all: --option/-o applies to one importer; pull that history by name "
                            "to pass importer options")
    store = open_store(args)
    try:
        reports, skipped = pull_all(store, from_dir=args.from_dir, cache_dir=args.cache_dir, base_url=args.base_url,
                                    progress=sys.stderr.isatty(), include_food101=args.include_food101)
    finally:
        store.dispose()
    if args.json:
        print(json.dumps({"imports": {n: r.to_dict() for n, r in reports.items()}, "skipped": skipped}, indent=2,
                         default=str))
        return 0
    for rep in reports.values():
        print(rep.summary())
        print()
    _table("history pull all", ["history", "importer", "rows read", "jobs added", "already there", "dropped"],
           [(n, r.importer, f"{r.rows_read:,}", f"{r.jobs_added:,}", f"{r.jobs_existing:,}", f"{r.rows_dropped:,}")
            for n, r in reports.items()])
    for line in skipped:
        print(f"skipped {line}")
    return 0


def cmd_import(args) -> int:
    if args.input_format is None:
        suffixes = [x.lower() for x in Path(args.path or "").suffixes]
        if args.path and suffixes and suffixes[-1] in GENERIC_SUFFIXES or suffixes[-2:-1] == [".csv"]:
            args.input_format = "generic"
        else:
            raise CliUsageError(f"history import {args.path or ''}: give --input-format (one of {', '.join(FORMATS)}); "
                                "only a .csv or .parquet file is taken as the generic format by default")
    imp = get_importer(args.input_format)  # unknown format -> error listing the supported ones
    options = _parse_options(args.option)
    for k in ("unit", "source", "experiment", "metric"):
        v = getattr(args, k)
        if v is not None:
            options[k] = v
    if args.include_food101:
        options["include_food101"] = True
    if args.force_unit:
        options["force_unit"] = True
    path = args.path
    if path is None:
        if args.input_format != "mlflow":
            raise CliUsageError(
                f"history import --input-format {args.input_format}: give the PATH of the file or folder")
        path = resolve_tracking_uri(args.tracking_uri, args.home)
    return _import_and_report(args, path, lambda store: _call_importer(imp.run, store, path, options=options))


def cmd_export(args) -> int:
    store = open_store(args, write=False)
    try:
        rep = export_history(store, args.path, source=args.source, format=args.format, wide=args.wide,
                             target_rule=args.target_rule)
    finally:
        store.dispose()
    print(rep.summary())
    return 0


def cmd_stats(args) -> int:
    store = open_store(args, write=False)
    try:
        st = store.stats()
    finally:
        store.dispose()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    t = st["totals"]
    print(f"store: {st['store']}")
    _table("totals", list(t), [[f"{v:,}" for v in t.values()]])
    if st["by_source"]:
        _table("jobs by source", ["source", "jobs", "models", "datasets"],
               [(s, f"{v['jobs']:,}", v["models"], v["datasets"]) for s, v in st["by_source"].items()])
    if st["by_source_regime"]:
        _table("jobs by source/regime", ["source/regime", "jobs", "datasets"],
               [(k, f"{v['jobs']:,}", v["datasets"]) for k, v in st["by_source_regime"].items()])
    if st["scores_by_method"]:
        _table("scores by method", ["method", "scores", "pairs", "sources"],
               [(m, f"{v['scores']:,}", f"{v['pairs']:,}", ", ".join(f"{s} ({n})" for s, n in v["sources"].items()))
                for m, v in st["scores_by_method"].items()])
    if st.get("last_imports"):
        _table(f"last {len(st['last_imports'])} imports (newest first)",
               ["when", "importer", "source", "rows", "jobs", "scores", "dropped"],
               [(str(r["created_at"])[:19], r["importer"], r["source"], f"{r['rows_read']:,}", f"{r['jobs_added']:,}",
                 f"{r['scores_added']:,}", f"{r['rows_dropped']:,}") for r in st["last_imports"]])
        drops = [(str(r["created_at"])[:19], r["source"], reason, f"{n:,}")
                 for r in st["last_imports"] for reason, n in r["dropped"].items()]
        if drops:
            _table("dropped rows of those imports, by reason", ["when", "source", "reason", "count"], drops)
    if not t["jobs"] and not t["scores"]:
        print("the store is empty: fill it with 'history pull NAME' or 'history import PATH --input-format generic'")
    return 0


def _listing(store, kind, source):
    import pandas as pd

    frame = store.models_frame() if kind == "model" else store.datasets_frame()
    fields = list(S.MODEL_FIELDS if kind == "model" else S.DATASET_FIELDS)
    jobs = store.jobs_frame(source=source, include_failed=True)
    counts = jobs.groupby(kind).size() if not jobs.empty else pd.Series(dtype=int)
    if source is not None:
        scores = store.scores_frame(source=source)
        used = set(jobs[kind]) | set(scores[kind])
        if not used:
            have = sorted(set(store.sources()) | set(store.scores_frame()["source"]))
            raise NotFoundError(f"no jobs or scores with source {source!r}; sources: {', '.join(have) or '(none)'}")
        frame = frame[frame["name"].isin(used)]
    out = frame[["name"] + fields].copy()
    types = S.MODEL_FIELDS if kind == "model" else S.DATASET_FIELDS
    for f in fields:  # whole-number fields stay whole numbers despite missing values
        if types[f].python_type is int:
            out[f] = pd.array([None if v is None or v != v else int(v) for v in out[f]], dtype="Int64")
    out.insert(1, "jobs", [int(counts.get(n, 0)) for n in out["name"]])
    return out.reset_index(drop=True)


def _alias_listing(store, source):
    """Rows (name, source, canonical, in_store, jobs): the registry's names and the aliases the store
    records (imports under ``extra.aliases``, a user's under source ``user``)."""
    import pandas as pd

    reg = load_registry()
    frame = store.datasets_frame()
    jobs = store.jobs_frame(include_failed=True)
    counts = jobs.groupby("dataset").size() if not jobs.empty else pd.Series(dtype=int)
    stored = set(frame["name"])
    rows = {}
    for r in reg.aliases_table():
        rows[(r["name"], r["source"], r["canonical"])] = "registry"
    for name, extra in zip(frame["name"], frame["extra"]):
        for src, names in ((extra or {}).get("aliases") or {}).items():
            for n in names if isinstance(names, list) else [names]:
                key = (n, src, name)
                rows[key] = "registry, store" if key in rows else "store"
    out = [{"name": n, "source": src, "canonical": c, "from": how, "in_store": c in stored,
            "jobs": int(counts.get(c, 0))} for (n, src, c), how in rows.items()]
    if source is not None:
        out = [r for r in out if r["source"] == source]
        if not out:
            have = sorted({s for _, s, _ in rows})
            raise NotFoundError(f"no dataset aliases of source {source!r}; sources: {', '.join(have)}")
    out.sort(key=lambda r: (not r["in_store"], r["canonical"], r["source"], r["name"]))
    return pd.DataFrame(out, columns=["name", "source", "canonical", "from", "in_store", "jobs"])


def cmd_list(args) -> int:
    store = open_store(args, write=False)
    try:
        if getattr(args, "aliases", False):
            df = _alias_listing(store, args.source)
            if args.format == "table":
                _table(f"{len(df)} dataset names -> canonical names (source 'user': history add-dataset --alias)",
                       ["name", "source", "canonical", "from", "in store", "jobs"],
                       [[r.name, r.source, r.canonical, r._3, "yes" if r.in_store else "no", r.jobs]
                        for r in df.itertuples(index=False)])
                return 0
        else:
            df = _listing(store, args.kind, args.source)
    finally:
        store.dispose()
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        recs = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                for r in df.astype(object).where(df.notna(), None).to_dict("records")]
        print(json.dumps(recs, indent=2, default=str))
    else:
        cols = ["name", "jobs"] + [c for c in df.columns[2:] if df[c].notna().any()]
        _table(f"{len(df)} {args.kind}s" + (f" (source {args.source})" if args.source else ""), cols,
               [[_fmt(v) for v in r]
                for r in df[cols].astype(object).where(df[cols].notna(), None).itertuples(index=False)])
    return 0


def cmd_show(args) -> int:
    store = open_store(args, write=False)
    try:
        if args.kind == "dataset" and not store.has_dataset(args.name):
            stored = resolve_name(args.name, store.datasets_frame()["name"])
            if stored is not None:  # a source's name of a dataset stored under its canonical name
                print(f"note: {args.name!r} is stored as {stored!r} (dataset registry)", file=sys.stderr)
                args.name = stored
        rec = store.get_model(args.name) if args.kind == "model" else store.get_dataset(args.name)
        jobs = store.jobs_frame(include_failed=True)
        scores = store.scores_frame()
    finally:
        store.dispose()
    jobs = jobs[jobs[args.kind] == args.name]
    scores = scores[scores[args.kind] == args.name]
    other = "dataset" if args.kind == "model" else "model"
    print(f"{args.kind} {args.name}")
    meta = [(k, _fmt(v)) for k, v in rec.items() if k not in ("id", "name") and v is not None]
    _table("meta-features", ["field", "value"], meta or [("(none)", "")])
    done = jobs[(jobs["status"] == "completed") & jobs["value"].notna()]
    by_status = ", ".join(f"{n} {s}" for s, n in jobs["status"].value_counts().items())
    print(f"jobs: {len(jobs)}" + (f" ({by_status})" if len(jobs) else "")
          + (f"; {done[other].nunique()} {other}s" if len(done) else "")
          + f"; scores: {len(scores)}")
    if len(done):
        best = done.sort_values("value", ascending=False).head(args.top)
        _table(f"best {min(args.top, len(done))} completed jobs",
               [other, "regime", "metric", "value", "source", "hparams"],
               [(r[other], r["regime"], r["metric"], f"{r['value']:.4f}", r["source"], _fmt(r["hparams"] or None))
                for r in best.to_dict("records")])
    return 0


def _class_names(spec: str, num_classes: int) -> list[str]:
    if spec.startswith("@"):
        p = Path(spec[1:]).expanduser()
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CliUsageError(f"--class-names {spec}: file {p} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliUsageError(f"--class-names {spec}: cannot read {p} as UTF-8 text ({exc})") from None
        names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        names = [n.strip() for n in spec.split(",")]
    if not names or any(not n for n in names):
        raise CliUsageError(f"--class-names: empty class name in {spec!r}; give one name per class")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CliUsageError(f"--class-names: repeated class name(s) {', '.join(dup)}")
    if len(names) != num_classes:
        raise CliUsageError(f"--class-names gives {len(names)} names but --num-classes is {num_classes}")
    return names


def _aliases(args, store) -> list[str]:
    out = []
    for a in args.alias:
        out += [x.strip() for x in a.split(",") if x.strip()]
    out = list(dict.fromkeys(out))
    reg = load_registry()
    mine = reg.canonical_name(args.name)
    frame = store.datasets_frame()
    for a in out:
        if a == args.name:
            raise CliUsageError(f"--alias {a!r} is the dataset's own name")
        other = reg.canonical_name(a)
        if other is not None and other != mine:
            raise CliUsageError(f"--alias {a!r} is the dataset registry's name of {other!r}, another dataset; "
                                "an alias maps to one dataset (see history list-datasets --aliases)")
        if a in set(frame["name"]):
            raise CliUsageError(f"--alias {a!r} is already a dataset in the store; pick another alias")
        for name, extra in zip(frame["name"], frame["extra"]):
            used = ((extra or {}).get("aliases") or {}).values()
            if name != args.name and any(a in (v if isinstance(v, list) else [v]) for v in used):
                raise CliUsageError(f"--alias {a!r} is already an alias of dataset {name!r} in the store")
    return out


def cmd_add_dataset(args) -> int:
    for flag, v in (("--num-samples", args.num_samples), ("--num-classes", args.num_classes)):
        if v <= 0:
            raise CliUsageError(f"{flag} must be a positive whole number, got {v}")
    if args.description is not None and (not args.description.strip() or "\n" in args.description):
        raise CliUsageError("--description must be one non-empty line")
    names = _class_names(args.class_names, args.num_classes) if args.class_names is not None else None
    store = open_store(args)
    try:
        exists = store.has_dataset(args.name)
        if exists and not args.update:
            raise StoreError(f"dataset {args.name!r} already exists in the store; pass --update to overwrite "
                             f"its meta-features, or see 'history show dataset {args.name}'")
        aliases = _aliases(args, store)
        fields = {"num_samples": args.num_samples, "num_classes": args.num_classes, "modality": args.modality}
        if args.domain:
            fields["domain"] = args.domain
        extra = dict(store.get_dataset(args.name).get("extra") or {}) if exists else {}
        if aliases:
            al = {k: list(v) if isinstance(v, list) else [v] for k, v in (extra.get("aliases") or {}).items()}
            al["user"] = list(dict.fromkeys(al.get("user", []) + aliases))
            extra["aliases"] = al
        if names is not None:
            extra["class_names"] = names
        if args.description is not None:
            extra["description"] = args.description.strip()
        if extra:
            fields["extra"] = extra
        rec = store.add_dataset(args.name, exist_ok=args.update, **fields)
    finally:
        store.dispose()
    print(f"{'updated' if args.update else 'added'} dataset {rec['name']}: "
          + ", ".join(f"{k}={rec[k]}" for k in ("num_samples", "num_classes", "modality", "domain") if rec.get(k)))
    ex = rec.get("extra") or {}
    if ex.get("aliases", {}).get("user"):
        print(f"  aliases: {', '.join(ex['aliases']['user'])}")
    if names is not None:
        print(f"  class names: {len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    if ex.get("description"):
        print(f"  description: {ex['description']}")

    ent = lookup(args.name)
    if ent is not None and ent.name != args.name:
        print(f"note: {args.name!r} is the dataset registry's alias of {ent.name!r}; evaluation holds them out "
              "together", file=sys.stderr)
    return 0


def cmd_enrich(args) -> int:
    if args.timm_dir is not None:
        d = Path(args.timm_dir).expanduser()
        if not (d.is_dir() and any(d.glob(BENCHMARK_GLOB))) and not (d.is_file() and d.suffix == ".csv"):
            raise CliUsageError(f"--timm-dir {args.timm_dir}: no {BENCHMARK_GLOB} there (timm's published "
                                "benchmark table, e.g. ../shared/data/timm)")
    store = open_store(args)
    try:
        if store.models_frame().empty:
            print("the store has no models: fill it first with 'history pull NAME' or 'history import PATH'")
            return 0
        rep = enrich(store, timm_dir=args.timm_dir, progress=sys.stderr.isatty() and not args.json)
    finally:
        store.dispose()
    if args.json:
        print(json.dumps({
            "models_updated": rep.models_updated, "seconds": round(rep.seconds, 2), "timm_table": rep.timm_table,
            "architectures_counted": rep.configs_counted,
            "sources": {s: {"models": r.models, "coverage": {f: round(c, 4) for f, c in r.coverage().items()},
                            "filled": dict(r.filled), "repaired": dict(r.repaired),
                            "unknown": {f: dict(c) for f, c in r.unknown.items() if c}}
                        for s, r in sorted(rep.sources.items())},
        }, indent=2))
        return 0
    print(rep.summary())
    cov = rep.coverage_table()
    _table("coverage after enrich: % of each source's models with the field", ["source", "models", *FIELDS],
           [[r["source"], r["models"], *[f"{r[f]:.1f}" for f in FIELDS]] for r in cov.to_dict("records")])
    if not rep.models_updated:
        print("nothing new to fill: every fact these sources allow is already stored (enrich is idempotent)")
    return 0


__all__ = ["register"]
