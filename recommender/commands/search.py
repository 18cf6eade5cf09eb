"""``python -m recommender search`` / ``finetune``: fine-tune models for real and record every trial.

``finetune`` runs the hyper-parameter grid for the given models; ``search`` picks which
models to fine-tune with a trained recommender, learns from each result and stops within
a budget (see :mod:`recommender.search`).
"""
from __future__ import annotations

import json
import re
import sys

from features.extract import parse_model_spec
from history.errors import RecommenderError
from recommender.executor import add_executor_args, executor_from_args
from recommender.finetune import best_of, load_task, make_grid, run_trials, wait_background
from recommender.search import Pick, search

from ..acquisition import DEFAULT_STRATEGY, STRATEGIES
from . import add_parser, fmt_pct, open_store

SEARCH_HELP = "fine-tune the recommended models for real, learn from each result, stop within a budget"
FINETUNE_HELP = "fine-tune models on a labelled dataset (every trial stored as a job)"


def _common(p):
    p.add_argument("--dataset", "-d", required=True, help="dataset name in the store (registered if new)")
    p.add_argument("--data", required=True,
                   help="an image folder (root/<class>/<image>), a CSV of image paths and labels (column "
                        "'path'), or a CSV of texts and labels (columns 'text', 'label')")
    p.add_argument("--models", "-m", required=True,
                   help="comma-separated model specs: [name=]torchscript:PATH | timm:NAME | hf:ID | sentence:ID")
    p.add_argument("--mode", default="full", choices=["full", "linear"],
                   help="full fine-tune (default) or linear probe (frozen features, new head only)")
    p.add_argument("--lrs", default="1e-3", help="learning rates of the grid, comma-separated (default 1e-3)")
    p.add_argument("--epochs", default="5", help="epochs of the grid, comma-separated (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--patience", type=int, default=2, help="early stopping: epochs without improvement (default 2)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation split (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the head and the batch order")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--path-column", default="path")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the trials to MLflow")
    p.add_argument("--format", "-f", default="table", choices=["table", "json"], help="output format")

    add_executor_args(p, what="trial")


def register(sub):
    p = add_parser(sub, "search", help=SEARCH_HELP, description=SEARCH_HELP + ". The first model is the "
                   "trained recommender's top pick; each fine-tune's result updates the predictions for the "
                   "others (strategy adaptive). Running the same command again resumes the search.")
    _common(p)
    p.add_argument("--budget", "-b", type=int, required=True, help="number of models to fine-tune")
    p.add_argument("--time-budget", default=None,
                   help="stop starting new fine-tunes after this long, e.g. 90s, 20m, 1.5h")

    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGIES),
                   help=f"default {DEFAULT_STRATEGY} (experiments/BUDGET.md). adaptive: learn from each result; "
                        "portfolio: as adaptive, keeping part of the budget as hedges (expected best of the "
                        "remaining picks under the posterior); static: the recommender's order; "
                        "halving: 1 epoch for the top BUDGET models, then longer for the best half, ...")
    p.add_argument("--recommender", "-r", default=None, help="saved recommender (default: as predict)")
    p.set_defaults(func=run_search)
    f = add_parser(sub, "finetune", help=FINETUNE_HELP, description=FINETUNE_HELP + ". Each (learning rate, "
                   "epochs) of the grid is one trial; a finished trial is reused when run again.")
    _common(f)
    f.set_defaults(func=run_finetune)


def parse_duration(text) -> float | None:
    """``90``, ``90s``, ``20m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise RecommenderError(f"invalid --time-budget {text!r}; use a positive duration like 90s, 20m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _floats(text, what) -> list:
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise RecommenderError(f"--{what} must be comma-separated numbers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise RecommenderError(f"--{what} must be positive numbers, got {text!r}")
    return vals


def _setup(args):
    specs = {}
    for s in [x.strip() for x in args.models.split(",") if x.strip()]:
        ms = parse_model_spec(s)
        if ms.name in specs:
            raise RecommenderError(f"model name {ms.name!r} given twice in --models; use NAME=SPEC to tell them apart")
        specs[ms.name] = s
    if not specs:
        raise RecommenderError("--models is empty; give at least one model spec")
    epochs = [int(e) for e in _floats(args.epochs, "epochs")]
    grid = make_grid(_floats(args.lrs, "lrs"), epochs, mode=args.mode, batch_size=args.batch_size, seed=args.seed,
                     val_fraction=args.val_fraction, patience=args.patience)
    data = load_task(args.data, text_column=args.text_column, label_column=args.label_column,
                     path_column=args.path_column)
    for n in data.notes:
        print(f"note: {n}", file=sys.stderr)
    return specs, grid, data


class _Live:
    """A rich table of the fine-tunes, refreshed live on a terminal (printed once otherwise)."""

    def __init__(self, title: str, enabled: bool):
        from rich.console import Console

        self.title, self.current = title, None
        self.rows: list = []
        self.console = Console(stderr=True)
        self.live = None
        if enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.start()

    def _table(self):
        from rich.table import Table

        t = Table(title=self.title)
        for c in ("#", "model", "predicted", "trial", "val. accuracy", "curve", "time", "status"):
            t.add_column(c, justify="right" if c in ("#", "predicted", "val. accuracy", "time") else "left")
        for r in self.rows + ([self.current] if self.current else []):
            t.add_row(*r)
        return t

    def event(self, kind, payload):
        if kind == "start":
            self.current = [str(payload.step), payload.model, fmt_pct(payload.predicted), "", "", "", "", "running"]
        elif kind == "epoch":
            pick, epoch, acc = payload
            self.current = [str(pick.step), pick.model, fmt_pct(pick.predicted), "", fmt_pct(acc), f"epoch {epoch}",
                            "", "running"]
        elif kind == "trial":
            pick, tr = payload
            curve = " ".join(f"{100 * a:.0f}" for a in tr.curve)
            self.rows.append([str(pick.step), pick.model, fmt_pct(pick.predicted),
                              f"lr {tr.config.lr:g}, {tr.config.epochs} ep", fmt_pct(tr.value), curve,
                              f"{tr.duration_s:.1f}s", tr.status + (" (reused)" if tr.reused else "")
                              + (f": {tr.error}" if tr.error else "")])
            self.current = None
        if self.live is not None:
            self.live.update(self._table())

    def close(self):
        if self.live is not None:
            self.live.stop()


def _print_table(live) -> None:
    from rich.console import Console

    con = Console()
    if not con.is_terminal:
        con = Console(width=160)
    con.print(live._table())


def run_search(args) -> int:
    tb = parse_duration(args.time_budget)
    if args.budget < 1:
        raise RecommenderError(f"--budget must be >= 1 (models to fine-tune), got {args.budget}")

    specs, grid, data = _setup(args)
    executor, resources = executor_from_args(args)
    if not executor.in_process:
        print(f"executor: {executor.describe()}", file=sys.stderr)
    store = open_store(args)
    live = _Live(f"search {args.dataset!r}: {args.strategy}, budget {args.budget}", args.format == "table")
    try:
        res = search(store, args.dataset, data, specs, budget=args.budget, strategy=args.strategy, grid=grid,
                     time_budget_s=tb, recommender=args.recommender, home=args.home, device=args.device,
                     mlflow=not args.no_mlflow, tracking_uri=args.tracking_uri, on_event=live.event,
                     executor=executor, resources=resources)
    finally:
        live.close()
        store.dispose()
        executor.shutdown()
    out = res.to_dict()
    if args.format == "json":
        print(json.dumps(out, indent=2, default=str))
        return 0 if res.best else 1
    if live.live is None:
        _print_table(live)
    b = out["best"]
    print(f"{out['fine_tunes']} fine-tune(s) ({out['trials']} trials, {out['new_trials']} run now) in "
          f"{out['minutes']:.1f} min; stopped: {out['stopped']}.")
    if b is None:
        print("no fine-tune completed; see the errors above.", file=sys.stderr)
        return 1
    print(f"best: {b['model']} at {fmt_pct(b['accuracy'])} validation accuracy (job {b['job_id']}, "
          f"lr {b['hparams']['lr']:g}, {b['hparams']['epochs']} epochs)")
    print(f"weights: {b['weights']}")
    return 0


def run_finetune(args) -> int:
    specs, grid, data = _setup(args)
    executor, resources = executor_from_args(args)
    store = open_store(args)
    live = _Live(f"fine-tune on {args.dataset!r}", args.format == "table")

    results: list = []
    recording: list = []  # a model's last trial is recorded while the next model trains
    data = data.snapshot()  # its fingerprint once for all the models
    try:
        for i, (name, spec) in enumerate(specs.items(), 1):
            pick = Pick(i, name, None)
            live.event("start", pick)
            trials = run_trials(store, executor, [(spec, c) for c in grid], args.dataset, data, home=args.home,
                                device=args.device, mlflow=not args.no_mlflow, tracking_uri=args.tracking_uri,
                                resources=resources, progress=lambda s, e, a, p=pick: live.event("epoch", (p, e, a)),
                                background=recording)
            for tr in trials:
                live.event("trial", (pick, tr))
            results += trials
        wait_background(recording)
    finally:
        live.close()
        try:
            wait_background(recording)  # after an error: what finished is still recorded
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        store.dispose()
        executor.shutdown()
    if args.format == "json":
        print(json.dumps([{"model": t.model, "job_id": t.job_id, "status": t.status, "value": t.value,
                           "hparams": t.config.hparams(), "curve": t.curve, "weights": t.weights,
                           "reused": t.reused, "error": t.error} for t in results], indent=2))
    else:
        if live.live is None:
            _print_table(live)
        b = best_of(results)
        if b is not None:
            print(f"best: {b.model} at {fmt_pct(b.value)} (job {b.job_id}); weights: {b.weights}")
    failed = [t for t in results if t.status != "completed"]
    return 1 if failed and len(failed) == len(results) else 0
