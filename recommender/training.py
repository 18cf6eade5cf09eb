"""Training and prediction behind ``python -m recommender train`` / ``predict``.

Training (:func:`train_recommenders`)

1. build a :class:`features.history_frame.HistoryFrame` from the store (``source``,
   ``regime``, target rule), refusing when fewer than :data:`MIN_DATASETS` datasets have
   targets or when one (model, dataset) pair has targets in several regimes;
2. fit each recommender (``create_recommender(name, features=...)``);
3. measure it: in-sample RMSE / Pearson, and a grouped (leave-datasets-out) CV with
   ``cv_folds`` folds: per held-out dataset, the Pearson correlation between predicted and
   real accuracies over its models, averaged over datasets (``cv_pearson``), the pooled
   ``cv_rmse``, weighted tau, and regret@1 / @3 in accuracy points (``cv_regret1``,
   ``cv_regret3``), all with the evaluation engine's metric code (:func:`grouped_cv`);
4. save it *atomically* under ``<home>/models/<name>/`` (written to a temporary folder,
   checked by loading it back, then swapped in; a failure leaves the previous model
   untouched), with ``training.json`` recording store, source, regime, features, target
   rule, counts and metrics; ``<home>/models/index.json`` lists the latest of each;
5. log the run to MLflow (:func:`recommender.tracking.log_training_run`); a failure there
   is reported, never loses the saved model.

Prediction (:func:`recommend_for_dataset`) loads a saved recommender and ranks every model of
the *current* store for a dataset (so datasets registered and MS scores stored after
training are used).
"""
from __future__ import annotations

import json
import logging
import sys
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from history.config import models_dir as _models_dir
from history.errors import NotFoundError, RecommenderError, closest

log = logging.getLogger(__name__)

#: A recommender learns across datasets: fewer than this many datasets with targets is refused.
MIN_DATASETS = 2
#: Preference order for ``predict`` when no recommender is named (first one that is saved).
DEFAULT_ORDER = ("lgbm", "fm", "lr", "lgbm-rank")
TRAINING_INFO = "training.json"
INDEX_FILE = "index.json"


class InsufficientHistoryError(RecommenderError):
    """The store does not hold enough fine-tuning results to train on."""


class SaveError(RecommenderError):
    """A trained recommender could not be written (the previous one is kept)."""


class CorruptModelError(RecommenderError):
    """A saved recommender folder cannot be read back."""


# ------------------------------------------------------------------------------ registry
def available_recommenders() -> list[str]:
    from .registry import list_recommenders

    return list(list_recommenders())


def resolve_names(spec) -> list[str]:
    """``"all"`` / ``"lr,fm"`` / ``["lr"]`` -> validated recommender names."""
    valid = available_recommenders()
    if spec is None or spec == "all" or spec == ["all"]:
        return valid
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names:
        raise NotFoundError(f"no recommender named; valid: {', '.join(valid)}, or 'all'")
    for n in names:
        if n not in valid:
            hint = closest(n, valid)
            extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
            raise NotFoundError(f"unknown recommender {n!r}.{extra} Valid recommenders: {', '.join(valid)} "
                                "(or 'all').")
    return list(dict.fromkeys(names))


def _recommender_info(name: str):
    from .registry import RECOMMENDERS

    return RECOMMENDERS[name]


# ------------------------------------------------------------------------------ history
def build_history(store, *, source=None, regime=None, target_rule: str = "best", metric=None,
                  min_datasets: int = MIN_DATASETS):
    """The training :class:`HistoryFrame`, or a clear refusal when it cannot be trained on."""
    from features.history_frame import HistoryFrame
    from history.store import TARGET_RULES

    if target_rule not in TARGET_RULES:
        raise RecommenderError(f"unknown target rule {target_rule!r}; valid: {', '.join(TARGET_RULES)}")
    hist = HistoryFrame.from_store(store, source=source, regime=regime, rule=target_rule, metric=metric)
    t = hist.targets
    n_ds = int(t["dataset"].nunique()) if len(t) else 0
    if n_ds < min_datasets:
        filt = ", ".join(f"{k}={v}" for k, v in (("source", source), ("regime", regime)) if v)
        where = f" matching {filt}" if filt else ""
        have = store.stats()
        srcs = ", ".join(f"{s} ({v['datasets']} datasets)" for s, v in have["by_source"].items()) or "none"
        regimes = ", ".join(f"{r} ({n} jobs)" for r, n in have["by_regime"].items()) or "none"
        raise InsufficientHistoryError(
            f"cannot train: {n_ds} dataset(s) have completed fine-tuning jobs{where} in the store "
            f"{have['store']}, a recommender learns across datasets and needs at least {min_datasets}. "
            f"Sources in the store: {srcs}; regimes: {regimes}. Import a history first, e.g. "
            "`python -m recommender history pull transfergraph-image`, or relax --source/--regime."
        )
    dup = t.groupby(["model", "dataset"])["regime"].nunique()
    if (dup > 1).any():
        counts = t["regime"].value_counts()
        listing = ", ".join(f"{r} ({n} targets)" for r, n in counts.items())
        raise RecommenderError(
            f"{int((dup > 1).sum())} (model, dataset) pairs have results in several regimes ({listing}); "
            "results of different regimes must not be pooled. Pick one with --regime "
            f"(e.g. --regime {counts.index[0]}) or restrict --source."
        )
    return hist


def default_regime(store, *, source=None, regime=None):
    """The regime to train on when none was asked for.

    A store holding several regimes of the same (model, dataset) pairs (e.g. SHiFT's
    VTAB-1k and full runs) must not pool them; without ``--regime`` the recommender is
    trained on ``full`` fine-tuning (or, if absent, the most common regime) and says so.
    Returns ``regime`` unchanged when given or when no pair has several regimes.
    """
    if regime is not None:
        return regime
    t = store.targets(source=source)
    if t.empty or not (t.groupby(["model", "dataset"])["regime"].nunique() > 1).any():
        return None
    counts = t["regime"].value_counts()
    chosen = "full" if "full" in counts.index else str(counts.index[0])
    listing = ", ".join(f"{r}: {n} targets" for r, n in counts.items())
    print(f"note: the store holds several fine-tuning regimes ({listing}); training on regime "
          f"{chosen!r}. Pass --regime to choose another.", file=sys.stderr)
    return chosen


def history_counts(hist) -> dict:
    t = hist.targets
    return {
        "jobs": int(t["n_jobs"].fillna(1).sum()) if len(t) else 0,
        "pairs": int(len(t)),
        "datasets": int(t["dataset"].nunique()),
        "models": int(t["model"].nunique()),
        "candidate_models": int(len(hist.models)),
        "score_methods": sorted(map(str, hist.scores["method"].unique())),
    }


# ------------------------------------------------------------------------------ metrics
def _pearson(a, b) -> float:
    """Pooled Pearson over finite pairs (:func:`recommender.metrics.pearson`; NaN if undefined)."""
    from .metrics import pearson

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return pearson(a[ok], b[ok])


def _rmse(a, b) -> float:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d**2))) if len(d) else float("nan")


def in_sample_metrics(rec, hist) -> dict:
    t = hist.targets
    pred = np.asarray(rec.predict(t[["model", "dataset"]], history=hist), dtype=float)
    return {"train_rmse": _rmse(pred, t["value"]), "train_pearson": _pearson(pred, t["value"])}


def grouped_cv(make, hist, folds: int = 5, progress: bool = False, desc: str = "cv") -> dict:
    """Leave-datasets-out CV with the evaluation engine: ``make()`` returns an unfitted recommender.

    The folds are those of protocol ``kfold`` (:mod:`recommender.protocols`: datasets sorted
    by name, dealt round robin into ``min(folds, n_datasets)`` groups); each group's targets
    are dropped, the recommender is fitted on the rest and predicts the dropped pairs with
    the training frame as context (meta-features and MS scores of held-out datasets stay
    available). Each held-out dataset is scored with :func:`recommender.metrics.score_dataset`
    -- the same code and conventions as ``evaluate``: regret in accuracy points, ties broken
    against the method. ``cv_<metric>`` is the mean over held-out datasets; ``cv_rmse`` is
    pooled over all held-out pairs.
    """
    from tqdm.auto import tqdm

    from .metrics import aggregate, score_dataset
    from .protocols import make_folds

    ds = sorted(hist.targets["dataset"].unique())
    k = min(int(folds), len(ds))
    if k < 2:
        return {}
    plan = make_folds(hist, "kfold", k=k, min_models=2, check_kind=False)
    rows, per_ds = [], []
    for fold in tqdm(plan.folds, desc=desc, disable=not progress, leave=False):
        rec = make().fit(fold.train)
        test = fold.test.reset_index(drop=True)
        pred = np.asarray(rec.predict(test[["model", "dataset"]], history=fold.train), dtype=float)
        rows.append(test.assign(pred=pred))
        for _, idx in test.groupby("dataset", sort=True).indices.items():
            per_ds.append(score_dataset(test["value"].to_numpy()[idx], pred[idx],
                                        ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3")))
    if not rows:
        return {}
    cv = pd.concat(rows, ignore_index=True)
    out = {f"cv_{m.replace('@', '')}": aggregate(r[m] for r in per_ds)[0]
           for m in ("pearson", "spearman", "weighted_tau", "regret@1", "regret@3")}
    out.update({"cv_rmse": _rmse(cv["pred"], cv["value"]), "cv_folds": float(len(plan.folds))})
    return out


# ------------------------------------------------------------------------------ saving
def models_root(home=None) -> Path:
    return _models_dir(home)


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _clean_floats(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def save_atomic(rec, root: Path, name: str, info: dict, check_pairs=None, check_history=None) -> Path:
    """Save ``rec`` as ``root/name`` atomically; return the final folder.

    The recommender is written to a hidden temporary folder next to the target, with
    ``training.json``; it is loaded back (and, given ``check_pairs``, must predict the same
    numbers) before the old folder is moved aside and the new one renamed into place.
    Any failure removes the temporary folder and leaves ``root/name`` as it was.
    """
    from .io import load_recommender

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    old = root / f".{name}.old-{uuid.uuid4().hex[:12]}"
    try:
        rec.save(tmp)
        _write_json_atomic(tmp / TRAINING_INFO, info)
        back = load_recommender(tmp)
        if check_pairs is not None and len(check_pairs):
            a = np.asarray(rec.predict(check_pairs, history=check_history), dtype=float)
            b = np.asarray(back.predict(check_pairs, history=check_history), dtype=float)
            if not np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True):
                raise RecommenderError(f"saved recommender {name!r} does not predict like the fitted one "
                                       f"(max difference {np.nanmax(np.abs(a - b)):.3g}); not saved")
    except RecommenderError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SaveError(f"could not save recommender {name!r} to {final} ({type(exc).__name__}: {exc}); "
                        f"{'the previous model there was left unchanged' if final.exists() else 'nothing was saved'}"
                        ". Check free disk space and permissions of the home folder, then re-run train.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    moved = False
    try:
        if final.exists():
            os.rename(final, old)
            moved = True
        os.rename(tmp, final)
    except BaseException:
        if moved and not final.exists():
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return final


def update_index(root: Path, name: str, info: dict) -> None:
    """Record the latest saved ``name`` in ``root/index.json`` (atomic replace)."""
    path = Path(root) / INDEX_FILE
    try:
        index = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        index = {}
    index[name] = {k: info.get(k) for k in ("trained_at", "store", "source", "regime", "features",
                                            "target_rule", "metrics", "counts", "mlflow")}
    index[name]["path"] = name
    _write_json_atomic(path, index)


def saved_recommenders(home=None) -> dict:
    """``{name: training info}`` of every saved recommender under ``<home>/models``."""
    root = models_root(home)
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            info = p / TRAINING_INFO
            try:
                out[p.name] = json.loads(info.read_text()) if info.is_file() else {}
            except (OSError, ValueError):
                out[p.name] = {"corrupt": True}
    return out


def _recover(root: Path, name: str) -> None:
    """A crash between the two renames of :func:`save_atomic` leaves only ``.name.old-*``."""
    final = root / name
    if final.exists():
        return
    olds = sorted(root.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], final)


def load_saved(name: str | None = None, home=None):
    """(recommender, training info, name) of the saved recommender ``name``.

    ``name=None`` picks the first saved one in :data:`DEFAULT_ORDER`.
    """
    from .io import load_recommender

    root = models_root(home)
    valid = available_recommenders()
    if name is not None and name not in valid:
        hint = closest(name, valid)
        extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
        raise NotFoundError(f"unknown recommender {name!r}.{extra} Valid recommenders: {', '.join(valid)}.")
    for n in ([name] if name else list(DEFAULT_ORDER) + valid):
        _recover(root, n)
    saved = saved_recommenders(home)
    if not saved:
        raise NotFoundError(
            f"no trained recommender found in {root}. Train one first: `python -m recommender train` "
            "(after importing a history, e.g. `python -m recommender history pull transfergraph-image`)."
        )
    if name is None:
        name = next((n for n in list(DEFAULT_ORDER) + valid if n in saved), None)
        if name is None:
            raise NotFoundError(f"no known recommender saved in {root} (found {', '.join(saved)}); "
                                "run `python -m recommender train`.")
    elif name not in saved:
        raise NotFoundError(
            f"recommender {name!r} has not been trained yet (saved in {root}: {', '.join(saved)}). "
            f"Run `python -m recommender train --recommender {name}`."
        )
    path = root / name
    try:
        rec = load_recommender(path)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt model for the user
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptModelError(
            f"the saved recommender {name!r} at {path} cannot be loaded ({type(exc).__name__}: {msg}). "
            f"It was left as it is; retrain it with `python -m recommender train --recommender {name}`."
        ) from None
    info = saved[name]
    if info.get("corrupt"):
        log.warning("training record %s is unreadable", path / TRAINING_INFO)
        info = {}
    return rec, info, name


# ------------------------------------------------------------------------------ training
@dataclass
class TrainResult:
    name: str
    path: Path | None
    counts: dict
    fit_seconds: float
    metrics: dict
    info: dict
    mlflow: dict | None = None
    recommender: object = field(default=None, repr=False)

    @property
    def mlflow_ok(self) -> bool:
        return self.mlflow is None or bool(self.mlflow.get("ok"))


def _feature_schema(rec, features) -> dict:
    """The feature schema of a fitted recommender (``featurizer_.schema()`` where available)."""
    schema = {"features": features}
    fz = getattr(rec, "featurizer_", None)
    if fz is not None and hasattr(fz, "schema"):
        try:
            schema.update(fz.schema())
        except Exception as exc:  # noqa: BLE001 - the schema is informative only
            schema["schema_error"] = f"{type(exc).__name__}: {exc}"
    return json.loads(json.dumps(schema, default=_json_default))


def _safe_store_url(store) -> str:
    try:
        return store.stats()["store"]
    except Exception:  # noqa: BLE001
        return "?"


def train_recommenders(store, names="all", *, features: str | None = None, source=None, regime=None,
                       target_rule: str = "best", metric=None, home=None, tracking_uri=None,
                       mlflow: bool = True, cv_folds: int = 5, params: dict | None = None,
                       progress: bool = True, register: bool = True, history=None) -> list[TrainResult]:
    """Fit, evaluate, save (atomically) and log each recommender of ``names``.

    ``features`` (e.g. ``"d,m,s"``) is passed to every recommender; ``params`` maps a
    recommender name to extra constructor parameters. Returns one :class:`TrainResult`
    per recommender; MLflow failures are in ``result.mlflow["error"]``, never raised.
    """
    from tqdm.auto import tqdm

    from .registry import create_recommender
    from .tracking import log_training_run

    names = resolve_names(names)
    if history is None:
        regime = default_regime(store, source=source, regime=regime)
    hist = history if history is not None else build_history(
        store, source=source, regime=regime, target_rule=target_rule, metric=metric)
    counts = history_counts(hist)
    root = models_root(home)
    store_url = _safe_store_url(store)
    t = hist.targets
    check = t[["model", "dataset"]].drop_duplicates().head(50).reset_index(drop=True)
    results = []
    for name in tqdm(names, desc="train", disable=not progress or len(names) < 2):
        kw = dict((params or {}).get(name, {}))
        if features is not None:
            kw.setdefault("features", features)
        if "target_rule" in _recommender_info(name).cls._param_names():
            kw.setdefault("target_rule", target_rule)

        def make(name=name, kw=kw):
            return create_recommender(name, **kw)

        rec = make()
        t0, started = time.perf_counter(), time.time()  # started: the MLflow run's start (it spans the fit)
        rec.fit(hist)
        fit_s = time.perf_counter() - t0
        metrics = in_sample_metrics(rec, hist)
        if cv_folds and cv_folds > 1:
            t1 = time.perf_counter()
            metrics.update(grouped_cv(make, hist, cv_folds, progress=progress, desc=f"cv {name}"))
            metrics["cv_seconds"] = time.perf_counter() - t1
        metrics["fit_seconds"] = fit_s
        metrics = _clean_floats(metrics)
        rparams = {k: v for k, v in rec.get_params().items()}
        info = {
            "name": name,
            "class": type(rec).__name__,
            "params": json.loads(json.dumps(rparams, default=_json_default)),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "store": store_url,
            "source": source,
            "regime": regime,
            "target_rule": target_rule,
            "metric": str(t["metric"].iloc[0]) if len(t) and "metric" in t else metric,
            "features": rparams.get("features", features),
            "counts": counts,
            "datasets": sorted(map(str, t["dataset"].unique())),
            "metrics": metrics,
            "has_uncertainty": bool(getattr(rec, "has_uncertainty", False)),
        }
        path = save_atomic(rec, root, name, info, check_pairs=check, check_history=hist)
        ml = None
        if mlflow:
            schema = _feature_schema(rec, info["features"])
            ml = log_training_run(
                tracking_uri=tracking_uri, home=home, name=name, model_dir=path,
                params={"recommender": name, **{f"param.{k}": v for k, v in rparams.items()},
                        "source": source, "regime": regime, "target_rule": target_rule,
                        "metric": info["metric"], "store": store_url},
                metrics={**metrics, **{f"n_{k}": v for k, v in counts.items() if isinstance(v, int)}},
                tags={"recommender": name, "features": info["features"], "store": store_url},
                schema=schema, register=register, start_time=started,
            )
            info["mlflow"] = {k: ml.get(k) for k in ("ok", "run_id", "model_uri", "registered_name",
                                                     "model_version", "tracking_uri", "error")}
            _write_json_atomic(path / TRAINING_INFO, info)
        update_index(root, name, info)
        results.append(TrainResult(name, path, counts, fit_s, metrics, info, ml, rec))
    return results


# ------------------------------------------------------------------------------ prediction
def check_dataset(store, dataset: str) -> None:
    """Raise a NotFoundError naming close matches and the add-dataset command."""
    if store.has_dataset(dataset):
        return
    try:
        store.get_dataset(dataset)
        return
    except NotFoundError as exc:
        raise NotFoundError(
            f"{exc} To rank models for a new dataset, register it first: "
            f"`python -m recommender history add-dataset {dataset} --num-samples N --num-classes C` "
            "(N training images, C classes), then predict again."
        ) from None


def recommend_for_dataset(store, dataset: str, *, name: str | None = None, home=None, k: int | None = None,
                          regime=None, source=None, include_finetuned: bool = False,
                          include_degenerate: bool = False):
    """Rank every model of the current store for ``dataset`` with a saved recommender.

    Returns ``(frame, meta)``: columns ``rank, model, predicted, std, real`` (``real`` is the
    stored accuracy where ``dataset`` already has a job for that model; those models are
    left out of the ranking unless ``include_finetuned``); ``meta`` describes the run.
    """
    from features.history_frame import HistoryFrame

    check_dataset(store, dataset)
    rec, info, name = load_saved(name, home)
    src = source if source is not None else info.get("source")
    reg = regime if regime is not None else info.get("regime")
    hist = HistoryFrame.from_store(store, source=src, regime=reg, rule=info.get("target_rule") or "best",
                                   metric=info.get("metric"))
    t = hist.targets
    real = t[t["dataset"] == dataset].groupby("model")["value"].max()
    models = hist.model_names()
    # an image dataset is not a candidate for a text model (and vice versa); models or
    # datasets whose modality is unknown are kept
    ds_mod = hist.datasets.set_index("name")["modality"].get(dataset) if len(hist.datasets) else None
    other_modality = 0
    if isinstance(ds_mod, str) and ds_mod:
        mods = hist.models.set_index("name")["modality"]
        keep = [m for m in models if not isinstance(mods.get(m), str) or mods.get(m) in ("", ds_mod)]
        other_modality = len(models) - len(keep)
        models = keep
    degenerate_excluded = 0
    if not include_degenerate and "degenerate" in hist.models.columns:
        # models flagged by history.viability (stored with the model) are not ranked unless asked
        flagged = set(hist.models.loc[hist.models["degenerate"].fillna(False).astype(bool), "name"].astype(str))
        keep = [m for m in models if m not in flagged]
        degenerate_excluded = len(models) - len(keep)
        models = keep
    exclude = () if include_finetuned else tuple(real.index)
    ranked = rec.recommend(dataset, k=None, history=hist, models=models, exclude=exclude)
    ranked["real"] = ranked["model"].map(real).astype(float)
    ranked["guess"] = ranked["model"].isin(uninformed_models(hist))
    for col in ("predicted", "std"):  # shown / exported accuracies are clipped; metrics use raw values
        if col in ranked.columns:
            ranked[col] = np.clip(ranked[col].astype(float), 0.0, 1.0)
    if k is not None:
        ranked = ranked.head(int(k))
    meta = {
        "dataset": dataset,
        "recommender": name,
        "trained_at": info.get("trained_at"),
        "features": info.get("features"),
        "source": src,
        "regime": reg,
        "candidates": len(models),
        "other_modality": other_modality,
        "degenerate_excluded": degenerate_excluded,
        "modality": ds_mod if isinstance(ds_mod, str) else None,
        "finetuned": int(len(real)),
        "excluded_finetuned": 0 if include_finetuned else int(len(real)),
        "best_finetuned": None if real.empty else {"model": str(real.idxmax()), "real": float(real.max())},
        "has_uncertainty": bool(getattr(rec, "has_uncertainty", False)),
        "guesses": int(ranked["guess"].sum()),
    }
    return ranked.reset_index(drop=True), meta


#: Model fields that say nothing about how well a model fine-tunes (``score`` fills feature_dim).
_NON_DESCRIPTIVE = {"modality", "feature_dim"}


def uninformed_models(hist) -> set:
    """Models the recommender knows nothing about: no fine-tuning job in the history and no
    descriptive meta-feature (e.g. added only by ``score``). Their predictions are guesses."""
    from history import schema as S

    with_jobs = set(hist.targets["model"]) if len(hist.targets) else set()
    fields = [f for f in S.MODEL_FIELDS if f not in _NON_DESCRIPTIVE and f in hist.models.columns]
    out = set()
    for r in hist.models.to_dict("records"):
        if r["name"] in with_jobs:
            continue
        if not any(r.get(f) is not None and r.get(f) == r.get(f) for f in fields):
            out.add(r["name"])
    return out
