"""Budgeted search: fine-tune the recommended models for real, learn from each result, stop in budget.

:func:`search` ranks the candidate models for a dataset with a saved recommender, then
fine-tunes them one at a time with the runner (:mod:`recommender.finetune`), every trial
stored as a job. Strategies:

``adaptive`` (default)  the first pick is the recommender's top model; after each result
                        the observed accuracies update every prediction
                        (:func:`recommender.adaptive.update_rule`, also used by ``predict``: models that moved
                        together with the observed ones on past datasets move with them)
                        and the next pick is the best updated prediction;
``portfolio``           as ``adaptive``, but with ``r`` fine-tunes left it plans the set of
                        ``r`` models with the highest expected best accuracy under the
                        joint posterior (Monte-Carlo), fine-tuning its top model first and
                        keeping the rest of the budget as hedges where the target may
                        deviate from the prior (:mod:`recommender.acquisition`);
``static``              the recommender's order, unchanged;
``halving``             successive halving on the recommender's top ``budget`` models:
                        1 epoch each, keep the best half (by validation accuracy), double
                        the epochs, and so on until one model is left or the epochs reach
                        the grid's maximum.

The budget is the number of models fine-tuned (each with the hyper-parameter grid);
``time_budget_s`` stops before starting a model once that much time has passed (a running
fine-tune is finished, not cut; the first fine-tune always runs). A search is identified by its dataset, data,
candidates, strategy and grid: running the same command again resumes it (finished trials are reused
from the store, a trial killed half-way is marked failed and redone).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.history_frame import HistoryFrame
from history.errors import RecommenderError

# the strategies, the default one (with its date) and their acquisitions: recommender/acquisition.py
from .acquisition import ACQUISITION, DEFAULT_STRATEGY, DEFAULT_STRATEGY_FIXED_ON, STRATEGIES, choose_next  # noqa: F401
from .adaptive import update_rule
from .executor import LocalExecutor
from .finetune import TaskData, TrialConfig, TrialResult, best_of, run_trials, wait_background, warm_tracking
from .model_io import load_saved



@dataclass
class Pick:
    """One fine-tuned model of a search."""

    step: int
    model: str
    predicted: float | None  # what the (updated) ranking predicted when it was picked
    trials: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> TrialResult | None:
        return best_of(self.trials)

    @property
    def status(self) -> str:
        return "completed" if self.best is not None else "failed"


@dataclass
class SearchResult:
    dataset: str
    strategy: str
    picks: list
    prior: pd.Series
    seconds: float
    stopped: str  # why the search stopped
    search_id: str

    @property
    def best(self) -> tuple[Pick, TrialResult] | None:
        done = [(p, p.best) for p in self.picks if p.best is not None]
        return max(done, key=lambda x: x[1].value) if done else None

    @property
    def n_trials(self) -> int:
        return sum(len(p.trials) for p in self.picks)

    @property
    def n_new_trials(self) -> int:
        return sum(1 for p in self.picks for t in p.trials if not t.reused)

    def to_dict(self) -> dict:
        b = self.best
        return {
            "dataset": self.dataset, "strategy": self.strategy, "search_id": self.search_id,
            "fine_tunes": len(self.picks), "trials": self.n_trials, "new_trials": self.n_new_trials,
            "minutes": self.seconds / 60, "stopped": self.stopped,
            "best": None if b is None else {"model": b[0].model, "accuracy": b[1].value, "weights": b[1].weights,
                                           "job_id": b[1].job_id, "hparams": b[1].config.hparams()},
            "picks": [{"step": p.step, "model": p.model, "predicted": p.predicted, "status": p.status,
                       "accuracy": None if p.best is None else p.best.value, "seconds": p.seconds,
                       "trials": [{"job_id": t.job_id, "lr": t.config.lr, "epochs": t.config.epochs,
                                   "status": t.status, "value": t.value, "curve": t.curve, "reused": t.reused,
                                   "error": t.error} for t in p.trials]} for p in self.picks],
        }


def search_id(dataset: str, fingerprint: str, specs: dict, strategy: str, grid, budget: int) -> str:
    blob = json.dumps([dataset, fingerprint, sorted(specs.items()), strategy, [c.hparams() for c in grid],
                       budget if strategy == "halving" else None], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prior_predictions(store, dataset: str, models: list[str], *, recommender=None, home=None):
    """(predicted accuracy per model, history targets, info) from the saved recommender."""
    rec, info, name = load_saved(recommender, home)
    hist = HistoryFrame.from_store(store, source=info.get("source"), regime=info.get("regime"),
                                   rule=info.get("target_rule") or "best", metric=info.get("metric"))
    pairs = pd.DataFrame({"model": models, "dataset": dataset})
    pred = pd.Series(np.asarray(rec.predict(pairs, history=hist), dtype=float), index=models)
    return pred, hist.targets, {**info, "name": name}


def observed_on(store, dataset: str, models, exclude_search: str | None = None) -> dict:
    """Best completed accuracy of each of ``models`` already on ``dataset`` (not from this search)."""
    runs = store.runs_frame(dataset=dataset, status="completed")
    out: dict[str, float] = {}
    for r in runs.itertuples(index=False):
        ex = r.extra if isinstance(r.extra, dict) else {}
        if r.model in models and r.value is not None and ex.get("search") != exclude_search:
            out[r.model] = max(out.get(r.model, -1.0), float(r.value))
    return out


class _Session:
    """What the steps of one search share: the trials' destination, the picks so far, the clock."""

    def __init__(self, store, dataset: str, data: TaskData, specs: dict, executor, emit, kw: dict,
                 time_budget_s: float | None, t0: float):
        self.store, self.dataset, self.data, self.specs = store, dataset, data, specs
        self.executor, self.emit, self.kw = executor, emit, kw
        self.time_budget_s, self.t0 = time_budget_s, t0
        self.picks: list[Pick] = []
        # the last trial of one run_trials call is recorded (weights, MLflow run, final job write) while the
        # next call trains; all of it is written before search returns or raises
        self.recording: list = []

    def out_of_time(self) -> bool:  # the first fine-tune always runs, however long the setup took
        return (self.time_budget_s is not None and any(p.trials for p in self.picks)
                and time.perf_counter() - self.t0 >= self.time_budget_s)

    def run_many(self, jobs, prefetch=None):
        """Fine-tune ``[(Pick, configs), ...]`` together: one executor task per trial; ``prefetch``:
        model names the next call will probably fine-tune (their models load meanwhile)."""
        emit, specs = self.emit, self.specs
        trials, owner = [], []
        for pick, configs in jobs:
            emit("start", pick)
            trials += [(specs[pick.model], c) for c in configs]
            owner += [pick] * len(configs)
        by_spec = {specs[p.model]: p for p, _ in jobs}
        t = time.perf_counter()
        res = run_trials(self.store, self.executor, trials, self.dataset, self.data,
                         progress=lambda s, e, a: emit("epoch", (by_spec[s], e, a)), background=self.recording,
                         prefetch=[specs[m] for m in prefetch or () if m in specs], **self.kw)
        for pick, tr in zip(owner, res):
            pick.trials.append(tr)
            emit("trial", (pick, tr))
        for pick, _ in jobs:
            pick.seconds += time.perf_counter() - t
            emit("done", pick)

    def run(self, pick: Pick, configs):
        self.run_many([(pick, configs)])


def _check_search(strategy: str, budget: int, grid) -> None:
    if strategy not in STRATEGIES:
        raise RecommenderError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if int(budget) < 1:
        raise RecommenderError(f"--budget must be >= 1 (models to fine-tune), got {budget}")
    if not grid:
        raise RecommenderError("the hyper-parameter grid is empty")


def _halving(s: _Session, prior: pd.Series, seen: dict, grid: list[TrialConfig], budget: int) -> str:
    """Successive halving on the top ``budget`` models not yet seen; sets ``s.picks``, returns why it stopped."""
    stopped = "budget reached"
    order = list(prior.drop(list(seen), errors="ignore").sort_values(ascending=False, kind="mergesort").index)
    alive = order[: int(budget)]
    max_epochs = max(c.epochs for c in grid)
    lrs = list(dict.fromkeys(c.lr for c in grid))
    base = grid[0]
    by_model = {m: Pick(i + 1, m, float(prior[m])) for i, m in enumerate(alive)}
    s.picks = list(by_model.values())
    epochs = 1
    while alive:
        configs = [TrialConfig(lr=lr, epochs=epochs, mode=base.mode, batch_size=base.batch_size, seed=base.seed,
                               val_fraction=base.val_fraction, patience=base.patience,
                               weight_decay=base.weight_decay) for lr in lrs]
        if s.executor.in_process:
            for m in alive:
                if s.out_of_time():
                    stopped = "time budget reached"
                    break
                s.run(by_model[m], configs)
        elif s.out_of_time():
            stopped = "time budget reached"
        else:  # the whole rung at once
            s.run_many([(by_model[m], configs) for m in alive])
        if stopped != "budget reached" or len(alive) == 1 or epochs >= max_epochs:
            break
        score = {m: max([t.value for t in by_model[m].trials[-len(configs):] if t.value is not None],
                        default=-1.0) for m in alive}
        alive = sorted(alive, key=lambda m: (-score[m], m))[: max(1, math.ceil(len(alive) / 2))]
        epochs = min(max_epochs, epochs * 2)
    s.picks = [p for p in s.picks if p.trials]
    return stopped


def _ranked(s: _Session, strategy: str, prior: pd.Series, ranker, seen: dict, grid: list[TrialConfig],
            budget: int) -> str:
    """The adaptive or static strategy: the best (updated) prediction not yet tried, until the budget is
    spent; adds to ``s.picks``, returns why it stopped."""
    observed = dict(seen)
    failed: set = set()
    while len(s.picks) < int(budget):
        if s.out_of_time():
            return "time budget reached"
        if strategy in ACQUISITION:  # one model at a time, the posterior updated after each
            m, pred = choose_next(ACQUISITION[strategy], ranker, observed, int(budget) - len(s.picks), failed)
            picked = [] if m is None else [(m, pred)]
        else:  # the static order; on a parallel executor the rest of the budget at once
            left = prior[[m not in observed and m not in failed for m in prior.index]]
            width = 1 if s.executor.in_process else int(budget) - len(s.picks)
            picked = [(m, float(left[m])) for m in sorted(left.index, key=lambda m: (-left[m], m))[:width]]
        if not picked:
            return "no candidate left"
        batch = [Pick(len(s.picks) + k + 1, m, p) for k, (m, p) in enumerate(picked)]
        s.picks += batch
        guess = None  # the likely next pick, loaded while this one trains: the runner-up of the current posterior
        if strategy in ACQUISITION and len(s.picks) < int(budget):
            guess = choose_next("mean", ranker, observed, 1, failed | {picked[0][0]})[0]
        s.run_many([(p, grid) for p in batch], prefetch=[guess] if guess else None)
        for pick in batch:
            if pick.best is not None:
                observed[pick.model] = pick.best.value
            else:
                failed.add(pick.model)
    return "budget reached"


def search(store, dataset: str, data: TaskData, specs: dict, *, budget: int, strategy: str = DEFAULT_STRATEGY,
           grid: list[TrialConfig], time_budget_s: float | None = None, recommender=None, home=None,
           device="auto", mlflow: bool = True, tracking_uri=None, on_event=None, executor=None,
           resources=None) -> SearchResult:
    """Fine-tune up to ``budget`` of ``specs`` (``{name: spec}``) on ``data``; see the module doc.

    ``on_event(kind, payload)`` is called with ``("prior", Series)``, ``("start", Pick)``,
    ``("epoch", (Pick, epoch, acc))`` (local executor only), ``("trial", (Pick, TrialResult))`` and
    ``("done", Pick)``.

    ``executor`` (default :class:`~recommender.executor.LocalExecutor`) runs one task per trial
    with ``resources``; the store and MLflow are written here, by the driver. The trials of
    one pick (the grid) run together; so do the models of one halving rung and, with an
    executor that is not in process, the picks of the static strategy.
    """
    _check_search(strategy, budget, grid)
    emit = on_event or (lambda *_: None)
    t0 = time.perf_counter()
    data = data.snapshot()  # the data's fingerprint once for the search, not once per fine-tune
    models = list(specs)
    modality = "text" if data.kind == "text" else "image"
    # the dataset and the candidates must exist in the store for the recommender to rank them
    store.commit(datasets=[{"name": dataset, "modality": modality, "num_samples": len(data),
                            "num_classes": data.num_classes}], models=[{"name": m} for m in models])
    sid = search_id(dataset, data.fingerprint(), specs, strategy, grid, budget)
    prior, targets, info = prior_predictions(store, dataset, models, recommender=recommender, home=home)
    emit("prior", prior)
    if mlflow:
        warm_tracking(tracking_uri, home)
    seen = observed_on(store, dataset, models, exclude_search=sid)
    ranker = update_rule(prior, targets, dataset)  # the same rule predict uses (adaptive.update_rule)

    executor = executor or LocalExecutor()
    kw = dict(home=home, device=device, mlflow=mlflow, tracking_uri=tracking_uri,
              tags={"search": sid, "strategy": strategy}, resources=resources)
    s = _Session(store, dataset, data, specs, executor, emit, kw, time_budget_s, t0)
    try:
        if strategy == "halving":
            stopped = _halving(s, prior, seen, grid, budget)
        else:
            stopped = _ranked(s, strategy, prior, ranker, seen, grid, budget)
    except BaseException:
        try:
            wait_background(s.recording)  # the trials that finished are recorded first
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    wait_background(s.recording)
    return SearchResult(dataset, strategy, s.picks, prior, time.perf_counter() - t0, stopped, sid)
