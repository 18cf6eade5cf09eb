"""``python -m recommender predict``: rank the model zoo for a dataset with a saved recommender."""
from __future__ import annotations

import json
import math
import sys

from history.datasets_registry import resolve_name

from history.errors import RecommenderError

from recommender.prediction import recommend_for_dataset

from ..model_io import DEFAULT_ORDER
from . import add_parser, fmt_pct, open_store

HELP = "rank every model of the store for a dataset (predicted fine-tune accuracy)"


def register(sub):
    p = add_parser(sub, "predict", help=HELP, description=HELP + ". Uses the recommender saved by "
                   "`train` and the current store, so datasets registered with `history add-dataset` "
                   "and newly stored MS scores are used.")
    p.add_argument("--dataset", "-d", required=True, help="target dataset name (as in the store)")
    p.add_argument("--top", "-k", type=int, default=10, help="show the top K models (default 10; 0: all)")
    p.add_argument("--recommender", "-r", default=None,
                   help="saved recommender to use (default: the first trained of " + ", ".join(DEFAULT_ORDER) + ")")
    p.add_argument("--format", "-f", default="table", choices=["table", "csv", "json"], help="output format")
    p.add_argument("--include-finetuned", action="store_true",
                   help="also rank models that already have a job on the dataset (their real accuracy is shown)")
    p.add_argument("--ignore-own-results", action="store_true",
                   help="do not update the predictions with the dataset's own results (show the recommender's "
                        "prior alone); by default they update every other model's prediction, as in `search`")
    p.add_argument("--include-degenerate", action="store_true",
                   help="also rank degenerate models (at chance on >= 80%% of their datasets; see docs/evaluation.md)")
    p.add_argument("--regime", default=None, help="regime of the history context (default: the training one)")
    p.add_argument("--source", default=None, help="source of the history context (default: the training one)")
    p.set_defaults(func=run)
    return p


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def run(args) -> int:
    if args.top is not None and args.top < 0:
        raise RecommenderError(f"--top must be >= 0 (0 shows every model), got {args.top}")
    store = open_store(args, write=False)
    try:
        if not store.has_dataset(args.dataset):  # a source's name of a dataset stored under its canonical name

            stored = resolve_name(args.dataset, store.datasets_frame()["name"])
            if stored is not None:
                print(f"note: {args.dataset!r} is stored as {stored!r} (dataset registry)", file=sys.stderr)
                args.dataset = stored
        ranked, meta = recommend_for_dataset(
            store, args.dataset, name=args.recommender, home=args.home, k=args.top or None,
            regime=args.regime, source=args.source, include_finetuned=args.include_finetuned,
            include_degenerate=args.include_degenerate, ignore_own_results=args.ignore_own_results)
    finally:
        store.dispose()
    if args.format == "csv":
        text = ranked.to_csv(index=False, float_format="%.6g")
    elif args.format == "json":
        rows = [{"rank": int(r.rank), "model": r.model, "predicted": _num(r.predicted), "std": _num(r.std),
                 "real": _num(r.real), "guess": bool(r.guess), "prior": _num(r.prior), "measured": bool(r.measured),
                 "elsewhere": r.elsewhere if isinstance(r.elsewhere, str) else None}
                for r in ranked.itertuples(index=False)]
        text = json.dumps({**meta, "ranking": rows}, indent=2) + "\n"
    else:
        text = _table(ranked, meta) + "\n"
    _emit(text)
    return 0


def _emit(text: str) -> None:
    """Write to stdout; a reader that stops early (``| head``) is not an error."""
    import os

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _table(ranked, meta) -> str:
    lines = [f"Top {len(ranked)} models for {meta['dataset']!r} (recommender {meta['recommender']}, "
             f"trained {meta['trained_at']}, features {meta['features']}; {meta['candidates']} candidates)",
             meta["context"]["line"]]
    show_std = bool(meta.get("has_uncertainty")) and ranked["std"].notna().any()
    show_real = ranked["real"].notna().any()
    show_else = ranked["elsewhere"].notna().any()
    header = ["rank", "model", "predicted"] + (["std"] if show_std else []) + (["real"] if show_real else []) \
        + (["measured elsewhere (not used)"] if show_else else [])
    rows = []
    for r in ranked.itertuples(index=False):
        row = [str(r.rank), str(r.model), fmt_pct(r.predicted) + (" ?" if getattr(r, "guess", False) else "")]
        if show_std:
            row.append(fmt_pct(r.std))
        if show_real:
            row.append(fmt_pct(r.real) + (" measured" if r.measured else ""))
        if show_else:
            row.append(_else_cell(r.elsewhere))
        rows.append(row)
    lines += _grid(header, rows, right={0, 2, 3} | ({4} if show_std and show_real else set()))
    lines += _measured_block(meta, ranked)
    lines += _footer(ranked, meta)
    return "\n".join(lines)


def _else_cell(v) -> str:
    if not isinstance(v, str):
        return ""
    parts = []
    for item in v.split("; "):
        val, _, rest = item.partition(" ")
        parts.append(f"{fmt_pct(float(val))} {rest}")
    return "; ".join(parts)


def _grid(header, rows, right) -> list[str]:
    if not rows:
        return ["(no candidate models left to rank)"]
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _measured_block(meta, ranked) -> list[str]:
    """The dataset's own results in the context (not in the ranking unless --include-finetuned)."""
    own = meta["measured"]
    if not own or meta["excluded_finetuned"] == 0:
        return []
    top = max(len(ranked), 3)
    shown = own[:top]
    lines = ["", f"measured on {meta['dataset']!r} in this context ({len(own)}, best first"
             + (f", top {len(shown)} shown" if len(shown) < len(own) else "") + "):"]
    lines += ["  " + ln for ln in _grid(["model", "real", "prior"],
                                        [[r["model"], fmt_pct(r["real"]) + " measured", fmt_pct(r["prior"])]
                                         for r in shown], right={1, 2})]
    return lines


def _footer(ranked, meta) -> list[str]:
    lines = []
    n_own, used = meta["own_results"], meta["conditioned_on"]
    if used:
        lines.append(f"used {used} of {meta['dataset']!r}'s own results: every other prediction is updated with "
                     "them (the rule `search` uses); --ignore-own-results shows the recommender's prior.")
    elif n_own:
        lines.append(f"--ignore-own-results: {n_own} own results of {meta['dataset']!r} not used; "
                     "predictions are the recommender's prior.")
    else:
        lines.append(f"used 0 own results of {meta['dataset']!r}.")
    lines += [f"note: {n}" for n in meta.get("notes", [])]
    if meta.get("excluded_finetuned"):
        b = meta["best_finetuned"]
        lines.append(f"{meta['excluded_finetuned']} models already fine-tuned on {meta['dataset']!r} are not ranked "
                     f"(best: {b['model']} at {fmt_pct(b['real'])}); pass --include-finetuned to rank them too.")
    if meta.get("measured_elsewhere"):
        by: dict[str, int] = {}
        for r in meta["measured_elsewhere"]:
            key = f"{r['source']}/{r['regime']}"
            by[key] = by.get(key, 0) + 1
        lines.append(f"{len(meta['measured_elsewhere'])} results on {meta['dataset']!r} outside this context ("
                     + ", ".join(f"{k}: {n}" for k, n in by.items()) + ") are shown as 'measured elsewhere', "
                     "never used; --format json lists them all.")
    if "guess" in ranked and ranked["guess"].any():
        lines.append(f"? {int(ranked['guess'].sum())} models have no fine-tuning history and no meta-features "
                     "(e.g. added only by 'score'): their predictions are guesses. Add their meta-features "
                     "(generic import, model_<field> columns) to inform them.")
    if meta.get("outside_context"):
        lines.append(f"{meta['outside_context']} models with results only outside this context are not ranked "
                     "(no evidence for them here).")
    if meta.get("degenerate_excluded"):
        lines.append(f"{meta['degenerate_excluded']} degenerate models (at chance on most datasets) are not ranked; "
                     "pass --include-degenerate to rank them too.")
    if meta.get("other_modality"):
        lines.append(f"{meta['other_modality']} models of another modality than {meta['dataset']!r} "
                     f"({meta.get('modality')}) are not candidates.")
    return lines
