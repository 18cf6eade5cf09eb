"""The budget protocol's replay (``python -m experiments.budget`` renders it; see its docstring).

For each held-out dataset every strategy picks models one at a time and *observes* their
real accuracy from the history, as ``search`` would after fine-tuning them. The
recommender, its features, the GP constants and the strategies are fixed before running:
the prior is the project's default recommender (:data:`recommender.defaults.DEFAULT_LABEL`),
the strategies ``adaptive`` and ``portfolio`` are replayed with the very function ``search``
calls (:func:`recommender.acquisition.choose_next`), and ``default`` is whichever of them
``search`` runs by default (:data:`recommender.acquisition.DEFAULT_STRATEGY`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.baselines import BaselineUnavailable, hybrid
from history.viability import assess
from recommender.acquisition import ACQUISITION, DEFAULT_STRATEGY, choose_next
from recommender.adaptive import AdaptiveRanker, ConditionalRanker, history_matrix
from recommender.defaults import DEFAULT_FEATURES, DEFAULT_RECOMMENDER
from recommender.metrics import ranked_against_method
from recommender.registry import create_recommender

#: every strategy the protocol reports, in table order
STRATEGIES = ("default", "popularity-static", "static", "adaptive", "portfolio", "adaptive-ei", "adaptive-mm",
              "nested", "hybrid", "random")
#: the reference of the paired lifts (popularity: the models' mean accuracy, a fixed order)
REFERENCE = "popularity-static"
#: strategies replayed with ``search``'s own pick function, and their acquisitions
SEARCH_STRATEGIES = dict(ACQUISITION)
#: why ``nested`` is not in a default run
NESTED_OFF = ("off by default (--nested): it refits the recommender for every pair of datasets; "
              "the nested choice of the earlier table, kept for comparison")


def regret_curve(order, y: pd.Series, budget: int) -> np.ndarray:
    """Regret (points) after b = 1..budget picks of ``order`` (models) on real accuracies ``y``."""
    best = float(y.max())
    vals = y.reindex(list(order)).to_numpy(float)
    run = np.fmax.accumulate(np.where(np.isfinite(vals), vals, -np.inf)) if len(vals) else np.array([-np.inf])
    out = np.empty(budget)
    for b in range(1, budget + 1):
        out[b - 1] = 100 * (best - run[min(b, len(run)) - 1])
    return out


def within_budget(curve, tol: float = 1.0) -> float:
    """The first budget b (of ``curve``, regret after b = 1..B) within ``tol`` points of the best;
    NaN when the budget never gets there (counted only within the budget)."""
    hit = np.flatnonzero(np.asarray(curve) <= tol + 1e-9)
    return float(hit[0] + 1) if len(hit) else float("nan")


def within(order, y: pd.Series, tol: float = 1.0) -> int:
    """Fine-tunes needed to be within ``tol`` points of the best (len(order) if never)."""
    curve = regret_curve(order, y, len(order))
    hit = np.flatnonzero(curve <= tol + 1e-9)
    return int(hit[0] + 1) if len(hit) else len(order)


def _order(scores: pd.Series, y: pd.Series) -> list:
    """Models by decreasing score, ties broken against the method (lower real accuracy first),
    as the engine's metrics rank them (:func:`recommender.metrics.ranked_against_method`); unscored last."""
    s = scores.astype(float).fillna(-np.inf)
    idx = ranked_against_method(y.reindex(s.index).to_numpy(float), s.to_numpy())
    return list(s.index[idx])


def _pick_in_turn(ranker, y: pd.Series, n: int) -> list:
    """Up to ``n`` models in the order a fitted ranker's own acquisition picks them, observing
    each one's real accuracy ``y`` before the next pick."""
    observed, order = {}, []
    for _ in range(n):
        m = ranker.next_pick(observed)
        if m is None:
            break
        order.append(m)
        observed[m] = float(y[m])
    return order


def search_picks(acquisition: str, ranker, y: pd.Series, budget: int) -> list:
    """The models ``search`` would fine-tune with ``budget`` (its own :func:`choose_next`, the
    remaining budget passed at each step), observing each one's real accuracy ``y``."""
    observed, order = {}, []
    for k in range(budget):
        m, _ = choose_next(acquisition, ranker, observed, budget - k)
        if m is None:
            break
        order.append(m)
        observed[m] = float(y[m])
    return order


def replay_search(acquisition: str, ranker, y: pd.Series, budget: int) -> tuple[np.ndarray, list]:
    """(regret after b = 1..budget, picks with the whole budget). An acquisition that plans with
    the remaining budget (``portfolio``) is replayed once per b: regret@b is that of a search
    run with ``--budget b``."""
    order = search_picks(acquisition, ranker, y, budget)
    curve = regret_curve(order, y, budget)
    if acquisition != "mean":
        for b in range(1, budget):
            curve[b - 1] = regret_curve(search_picks(acquisition, ranker, y, b), y, b)[-1]
    return curve, order


def _adaptive_order(prior: pd.Series, y: pd.Series, train_targets, held, acquisition: str = "mean",
                    ranker=None, picks: int | None = None) -> list:
    """Models in the order a warm-start ranker picks them, observing ``y`` after each pick."""
    ranker = (ranker or AdaptiveRanker(acquisition_fn=acquisition)).fit(prior, train_targets, exclude=[held])
    return _pick_in_turn(ranker, y, min(len(prior), picks or len(prior)))


@dataclass(frozen=True)
class Config:
    """One adaptive strategy: a prior (``base``), a posterior model and an acquisition."""

    base: str  # "model-mean" or "rec" (the static recommender)
    model: str  # "gp" (calibrated GP kernel) or "cond" (empirical covariance, shrunk)
    acquisition: str  # "mean", "ei" or "ucb"
    shrinkage: float | None = None

    @property
    def label(self) -> str:
        m = self.model if self.shrinkage is None else f"{self.model}{self.shrinkage:g}"
        return f"{self.base}/{m}/{self.acquisition}"

    def ranker(self):
        if self.model == "gp":
            return AdaptiveRanker(acquisition_fn=self.acquisition)
        return ConditionalRanker(shrinkage=self.shrinkage, acquisition_fn=self.acquisition)


#: the candidates of the nested choice (fixed before any nested run; ties go to the earlier one)
CANDIDATES = tuple(Config(b, "gp", a) for b in ("model-mean", "rec") for a in ("mean", "ei", "ucb")) + tuple(
    Config(b, "cond", a, lam) for b in ("model-mean", "rec") for lam in (0.1, 0.5) for a in ("mean", "ei", "ucb"))
#: the inner folds score a candidate by its mean regret over b = 1..SELECT_BUDGET
SELECT_BUDGET = 3


class _Folds:
    """Training frames, viable candidates and priors for a set of excluded datasets, cached.

    Every quantity for "held-out ``d``, training = history without ``excluded``" is computed
    once per ``excluded`` set: the inner fold (outer ``h``, inner ``i``) and the inner fold
    (outer ``i``, inner ``h``) share one recommender fit."""

    def __init__(self, history, recommender: str, features: str, viable_only: bool, prior_cache=None):
        self.history, self.recommender, self.features, self.viable_only = history, recommender, features, viable_only
        #: optional folder of the recommender's predictions per excluded set (JSON), shared by processes
        self.prior_cache = Path(prior_cache) if prior_cache else None
        self._y = history.targets.groupby(["dataset", "model"])["value"].max()
        self._wide = None
        self._viable: dict = {}
        self._pred: dict = {}

    def wide(self):
        if self._wide is None:
            self._wide = history_matrix(self.history.targets)
        return self._wide

    def truth(self, excluded: frozenset, dataset: str) -> pd.Series:
        """Real accuracies on ``dataset`` of its candidates (viable on the training datasets)."""
        y = self._y.loc[dataset] if dataset in self._y.index.get_level_values(0) else pd.Series(dtype=float)
        if self.viable_only:
            if excluded not in self._viable:
                train = self.history.drop_targets(datasets=sorted(excluded))
                nc = pd.to_numeric(train.datasets.set_index("name")["num_classes"], errors="coerce")
                res = assess(train.targets, nc)
                self._viable[excluded] = set(res.loc[res["degenerate"], "model"].astype(str))
            y = y[~y.index.isin(self._viable[excluded])]
        return y

    def prior(self, excluded: frozenset, dataset: str, models, base: str) -> pd.Series:
        if base == "model-mean":  # the baselines' model-mean: mean accuracy over the training datasets
            wide = self.wide().drop(columns=[c for c in excluded if c in self.wide().columns])
            mm = wide.mean(axis=1).reindex(list(models))
            return mm.fillna(mm.mean() if mm.notna().any() else 0.0)
        key = (excluded, dataset)
        if key not in self._pred:
            self.fit_prior(excluded)
        return self._pred[key].reindex(list(models))

    def _cache_file(self, excluded: frozenset):
        import hashlib

        if self.prior_cache is None:
            return None
        blob = json.dumps([self.recommender, self.features, sorted(excluded), len(self.history.targets),
                           float(self.history.targets["value"].sum())])
        return self.prior_cache / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"

    def fit_prior(self, excluded: frozenset) -> None:
        """The recommender fitted without ``excluded``: its predictions on those datasets, every model."""
        path = self._cache_file(excluded)
        if path is not None and path.exists():
            blob = json.loads(path.read_text())
            for d, pred in blob.items():
                self._pred[(excluded, d)] = pd.Series(pred, dtype=float)
            return
        train = self.history.drop_targets(datasets=sorted(excluded))
        rec = create_recommender(self.recommender, features=self.features).fit(train)
        every = sorted(self.history.target_models())
        for d in excluded:
            p = pd.DataFrame({"model": every, "dataset": d})
            self._pred[(excluded, d)] = pd.Series(np.asarray(rec.predict(p, history=train), float),
                                                  index=every)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({d: self._pred[(excluded, d)].to_dict() for d in excluded}))
            os.replace(tmp, path)


def _adaptive_order_ex(cfg, prior, y, folds, excluded, picks):
    ranker = cfg.ranker().fit(prior, folds.wide(), exclude=sorted(excluded))
    return _pick_in_turn(ranker, y, min(len(prior), picks or len(prior)))


def nested_choice(folds: _Folds, held: str, candidates=CANDIDATES, budget: int = SELECT_BUDGET):
    """The candidate with the lowest mean regret over b = 1..``budget`` on inner leave-one-out
    over the training datasets of ``held`` (``held``'s results are never read); ties: the
    earlier candidate. Returns (config, Series of inner scores by label)."""
    inner = [d for d in folds.history.target_datasets() if d != held]
    total = np.zeros(len(candidates))
    n = 0
    for d in inner:
        ex = frozenset({held, d})
        y = folds.truth(ex, d)
        if len(y) < 2:
            continue
        n += 1
        for j, cfg in enumerate(candidates):
            order = _adaptive_order_ex(cfg, folds.prior(ex, d, y.index, cfg.base), y, folds, ex, budget)
            total[j] += regret_curve(order, y, budget).mean()
    scores = pd.Series(total / max(n, 1), index=[c.label for c in candidates])
    return candidates[int(np.argmin(total))] if n else candidates[0], scores


def prefit(history, prior_cache, *, shard: int = 0, shards: int = 1, recommender: str = DEFAULT_RECOMMENDER,
           features: str = DEFAULT_FEATURES, viable_only: bool = True, progress: bool = True,
           nested: bool = False) -> int:
    """Fit the recommender for every excluded set the protocol needs (each held-out dataset; with
    ``nested`` each pair of datasets too), shard ``shard`` of ``shards``, into ``prior_cache``;
    processes running different shards share the work. Returns the number of fits done here."""
    from itertools import combinations

    from tqdm.auto import tqdm

    folds = _Folds(history, recommender, features, viable_only, prior_cache)
    ds = history.target_datasets()
    sets = [frozenset({d}) for d in ds] + ([frozenset(p) for p in combinations(ds, 2)] if nested else [])
    mine = [e for i, e in enumerate(sets) if i % shards == shard]
    n = 0
    for e in tqdm(mine, desc=f"prefit {shard}/{shards}", disable=not progress, leave=False):
        if not folds._cache_file(e).exists():
            folds.fit_prior(e)
            n += 1
    return n


def _row(held, strategy, n, curve, **extra) -> dict:
    return {"dataset": held, "strategy": strategy, "n_models": n, "within1": within_budget(curve),
            "na": "", "chosen": strategy, "picks": "", **{f"regret@{b}": v for b, v in enumerate(curve, 1)}, **extra}


def _na_row(held, strategy, n, budget, reason) -> dict:
    return {**_row(held, strategy, n, np.full(budget, np.nan)), "within1": np.nan, "na": reason}


def _search_rows(held, pred, y, folds, ex, budget) -> list:
    """``search``'s strategies on ``held`` (prior: the default recommender), and ``default``."""
    ranker = AdaptiveRanker().fit(pred, folds.wide(), exclude=sorted(ex))
    rows = []
    for name, acq in SEARCH_STRATEGIES.items():
        curve, order = replay_search(acq, ranker, y, budget)
        rows.append(_row(held, name, len(y), curve, picks=", ".join(order[:3])))
    return rows


def with_default(rows: pd.DataFrame, default: str = DEFAULT_STRATEGY) -> pd.DataFrame:
    """``rows`` with the ``default`` strategy: a copy of the rows of the strategy ``search`` runs by
    default (``chosen`` names it), replacing any earlier copy (rows cached under another default)."""
    if rows.empty:
        return rows
    rows = rows[rows["strategy"] != "default"]
    d = rows[rows["strategy"] == default].assign(strategy="default", chosen=default)
    return pd.concat([d, rows], ignore_index=True)


def _hybrid_row(history, train, held, models, y, ms_method, budget):
    pairs = pd.DataFrame({"model": models, "dataset": held})
    try:
        h = pd.Series(hybrid(train, pairs, history, method=ms_method), index=models)
    except (BaselineUnavailable, KeyError, ValueError) as exc:
        return _na_row(held, "hybrid", len(models), budget, f"{type(exc).__name__}: {exc}"[:160])
    if not h.notna().any():
        return _na_row(held, "hybrid", len(models), budget, f"no {ms_method} score of this dataset's models")
    order = _order(h, y)
    return _row(held, "hybrid", len(models), regret_curve(order, y, budget), picks=", ".join(order[:3]))


def run_protocol(history, *, budget: int = 10, recommender: str = DEFAULT_RECOMMENDER,
                 features: str = DEFAULT_FEATURES, ms_method: str = "logme", seeds: int = 20, datasets=None,
                 progress: bool = True, viable_only: bool = True, nested: bool = False, candidates=CANDIDATES,
                 choices: list | None = None, prior_cache=None) -> pd.DataFrame:
    """One row per (held-out dataset, strategy): regret@1..budget, ``within1`` (the first b <= budget
    within 1 point of the best, NaN if none), ``na`` (why the strategy could not run there, else ""),
    ``chosen`` (the strategy behind the row: for ``default`` the one ``search`` runs by default, for
    ``nested`` the configuration chosen on inner folds) and ``picks`` (its first 5 models).

    With ``viable_only`` (default) the candidates of a held-out dataset are its viable models:
    degenerate ones (``history.viability``: at chance on >= 80% of their datasets) are left
    out, judged on the training datasets only, so the held-out results never decide it.

    ``nested``: also the ``nested`` strategy, for each held-out dataset the configuration of
    :data:`CANDIDATES` chosen by :func:`nested_choice` on the training datasets alone (costly:
    a recommender fit per pair of datasets); ``choices``, when a list, receives its choices.
    ``prior_cache``: a folder where the recommender's fits per excluded set are kept (see
    :func:`prefit`).
    """
    from tqdm.auto import tqdm

    folds = _Folds(history, recommender, features, viable_only, prior_cache)
    rows = []
    for held in tqdm(datasets or history.target_datasets(), desc="budget", disable=not progress, leave=False):
        ex = frozenset({held})
        y = folds.truth(ex, held)
        if len(y) < 2:
            continue
        models, n = list(y.index), len(y)
        train = history.drop_targets(datasets=[held])
        pred = folds.prior(ex, held, models, "rec")
        mm = folds.prior(ex, held, models, "model-mean")
        rows += _search_rows(held, pred, y, folds, ex, budget)
        orders = {"popularity-static": _order(mm, y), "static": _order(pred, y),
                  "adaptive-ei": _adaptive_order(pred, y, folds.wide(), held, "ei", picks=budget),
                  "adaptive-mm": _adaptive_order(mm, y, folds.wide(), held, picks=budget)}
        for name, order in orders.items():
            rows.append(_row(held, name, n, regret_curve(order, y, budget), picks=", ".join(order[:3])))
        if nested:
            cfg, scores = nested_choice(folds, held, candidates)
            order = _adaptive_order_ex(cfg, folds.prior(ex, held, models, cfg.base), y, folds, ex, budget)
            rows.append(_row(held, "nested", n, regret_curve(order, y, budget), chosen=cfg.label,
                             picks=", ".join(order[:3])))
            if choices is not None:
                choices.append({"dataset": held, "choice": cfg.label, "inner_score": float(scores[cfg.label])})
        else:
            rows.append(_na_row(held, "nested", n, budget, NESTED_OFF))
        rows.append(_hybrid_row(history, train, held, models, y, ms_method, budget))
        curves = [regret_curve(list(np.random.default_rng(s).permutation(models)), y, budget) for s in range(seeds)]
        w = [within_budget(c) for c in curves]
        rows.append({**_row(held, "random", n, np.mean(curves, axis=0)),
                     "within1": float(np.nanmean(w)) if np.isfinite(w).any() else np.nan})
    return with_default(pd.DataFrame(rows))


def summarize(rows: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Per strategy: mean regret@1..budget over the held-out datasets where it ran, ``reached``
    (share of datasets within 1 point by the budget), ``within1_median`` (median first b, NaN
    when half or more never get there), ``datasets`` (where it ran) and ``na`` (why not elsewhere)."""
    cols = [f"regret@{b}" for b in range(1, budget + 1)]
    rows = rows.assign(na=rows["na"].fillna("") if "na" in rows else "")
    ok = rows[rows["na"] == ""]
    g = ok.groupby("strategy", sort=False)
    out = g[cols].mean()
    out["reached"] = g["within1"].apply(lambda s: float(np.isfinite(s.to_numpy(float)).mean()))
    out["within1_median"] = g["within1"].apply(
        lambda s: float(np.median(np.where(np.isfinite(s), s, np.inf))) if len(s) else np.nan)
    out.loc[~np.isfinite(out["within1_median"]), "within1_median"] = np.nan
    out["datasets"] = g.size()
    out["total"] = rows.groupby("strategy", sort=False).size().reindex(out.index)
    out["na"] = ""
    for s, sub in rows[rows["na"] != ""].groupby("strategy", sort=False):
        if s not in out.index:
            out.loc[s, cols] = np.nan
            out.loc[s, ["datasets", "total"]] = [0, len(sub)]
        out.loc[s, "na"] = sub["na"].value_counts().index[0]
    order = [s for s in STRATEGIES if s in out.index] + [s for s in out.index if s not in STRATEGIES]
    out = out.reindex(order)
    out.index.name = "strategy"
    return out
