"""A saved recommender as an MLflow pyfunc model.

The recommender folder written by ``save()`` (JSON / npz / parquet / native files) is logged
as the pyfunc model's artifact ``recommender``; :meth:`RecommenderPyfunc.load_context`
reads it back with :func:`recommender.io.load_recommender`. The model is logged *from
code* (this file), so nothing is pickled.

Input: a DataFrame with string columns ``model`` and ``dataset`` and, optionally, ``observed``
(a measured fine-tune accuracy of that pair, a fraction; NaN where unknown). Output: a DataFrame
with ``model``, ``dataset``, ``predicted`` (fine-tune accuracy, a fraction), ``std`` (the
recommender's uncertainty where it has one, e.g. the spread of the ``fm`` ensemble, else NaN),
``reason`` (empty where ``predicted`` is a number; else why it is NaN: an unknown dataset or
model) and ``conditioned_on`` (how many ``observed`` values of that row's dataset updated it).

Datasets are resolved through the dataset registry (``history.datasets_registry``): ``pets``
and ``oxford_iiit_pet`` name the same task and get the same prediction. A dataset or model the
history context does not know answers NaN with its ``reason``, never a number. Rows of a
dataset with ``observed`` values are updated with them by the rule ``predict`` and ``search``
use (:func:`recommender.adaptive.update_predictions`); an observed row answers its observed value.

By default predictions use the history context saved at fit time. Pass the parameter
``store`` (a history store URL) to predict with the *current* store instead, e.g. for a
dataset registered after training::

    m = mlflow.pyfunc.load_model("models:/recommender-lgbm/1")
    m.predict(pd.DataFrame({"model": ["google/vit-base-patch16-224"], "dataset": ["pets"]}))
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import mlflow
from mlflow.models import ModelSignature, set_model
from mlflow.pyfunc import PythonModel  # mlflow.pyfunc is a LazyLoader to type checkers
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from features.history_frame import HistoryFrame
from history.datasets_registry import resolve_name
from history.store import HistoryStore
from recommender.adaptive import update_predictions
from recommender.io import load_recommender

ARTIFACT_KEY = "recommender"
TRAINING_INFO = "training.json"

INPUT_SCHEMA = Schema([ColSpec("string", "model"), ColSpec("string", "dataset"),
                       ColSpec("double", "observed", required=False)])
OUTPUT_SCHEMA = Schema([ColSpec("string", "model"), ColSpec("string", "dataset"),
                        ColSpec("double", "predicted"), ColSpec("double", "std"), ColSpec("string", "reason"),
                        ColSpec("long", "conditioned_on")])
PARAMS_SCHEMA = ParamSchema([ParamSpec("store", "string", "")])
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA, params=PARAMS_SCHEMA)


#: The project's packages the model needs at load / predict time; logged as ``code_paths``, so
#: the model carries its own code and loads where the project is not installed.
CODE_PACKAGES = ("history", "features", "recommender")


def _code_paths() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    return [str(root / p) for p in CODE_PACKAGES]


def _requirements() -> list[str]:
    """Pinned third-party runtime requirements of the pyfunc model (the project's own code
    travels as ``code_paths``; no slow inference by MLflow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "numpy", "pandas", "scipy", "scikit-learn", "lightgbm", "pyarrow",
                "sqlalchemy", "tqdm", "rich"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover - optional
            continue
    return out


class RecommenderPyfunc(PythonModel):
    """Predicted fine-tune accuracy (and std) for (model, dataset) pairs."""

    def load_context(self, context):
        path = Path(context.artifacts[ARTIFACT_KEY])
        self.recommender_ = load_recommender(path)
        info = path / TRAINING_INFO
        self.training_ = json.loads(info.read_text()) if info.is_file() else {}

    def _history(self, store_url: str | None):
        if not store_url:
            return None

        t = self.training_
        store = HistoryStore(store_url, create=False)
        try:
            return HistoryFrame.from_store(store, source=t.get("source"), regime=t.get("regime"),
                                           rule=t.get("target_rule", "best"), metric=t.get("metric"))
        finally:
            store.dispose()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        df = pd.DataFrame(model_input)
        missing = [c for c in ("model", "dataset") if c not in df.columns]
        if missing:
            raise ValueError(f"pyfunc input needs columns 'model' and 'dataset'; missing {missing} "
                             f"(got {list(df.columns)})")
        pairs = df[["model", "dataset"]].astype(str).reset_index(drop=True)
        n = len(pairs)
        observed = (pd.to_numeric(df["observed"], errors="coerce").to_numpy(dtype=float) if "observed" in df
                    else np.full(n, np.nan))
        history = self._history((params or {}).get("store"))
        if history is None:
            history = getattr(self.recommender_, "history_", None)
        resolved, reason = _resolve(pairs, history)
        ok = np.array([r == "" for r in reason], dtype=bool)
        pred, std = np.full(n, np.nan), np.full(n, np.nan)
        if ok.any():
            q = pd.DataFrame({"model": pairs["model"][ok].to_numpy(), "dataset": np.asarray(resolved)[ok]})
            pred[ok] = np.asarray(self.recommender_.predict(q, history=history), dtype=float)
            s = self.recommender_.predict_std(q, history=history)
            if s is not None:
                std[ok] = np.asarray(s, dtype=float)
        used = _condition(pairs, np.asarray(resolved), ok, observed, pred, history)
        return pairs.assign(predicted=pred, std=std, reason=reason, conditioned_on=used)


def _resolve(pairs: pd.DataFrame, history):
    """(dataset names as the history context stores them, reason per row: '' when it can be predicted)."""
    if history is None:  # nothing to check against: every row is tried as given
        return list(pairs["dataset"]), [""] * len(pairs)
    datasets, models = set(history.dataset_names()), set(history.model_names())
    memo: dict = {}
    resolved, reason = [], []
    for m, d in zip(pairs["model"], pairs["dataset"]):
        if d not in memo:
            memo[d] = d if d in datasets else resolve_name(d, datasets)
        r = memo[d]
        resolved.append(r if r is not None else d)
        if r is None:
            reason.append(f"unknown dataset {d!r}: not in the history context (register it with `history "
                          "add-dataset` and pass params={'store': URL})")
        elif m not in models:
            reason.append(f"unknown model {m!r}: not in the history context")
        else:
            reason.append("")
    return resolved, reason


def _condition(pairs, resolved, ok, observed, pred, history) -> np.ndarray:
    """Update ``pred`` in place with the ``observed`` values of each dataset; rows' counts of them."""
    used = np.zeros(len(pairs), dtype=np.int64)
    seen = ok & np.isfinite(observed)
    if history is None or not seen.any():
        return used
    models = pairs["model"].to_numpy()
    for d in sorted(set(resolved[seen])):
        rows = ok & (resolved == d)
        obs: dict = {}
        for m, v in zip(models[rows & seen], observed[rows & seen]):
            obs[m] = max(obs.get(m, -np.inf), float(v))
        prior = pd.Series(pred[rows], index=models[rows]).groupby(level=0).first()
        post = update_predictions(prior, history.targets, d, obs)
        pred[rows] = post.reindex(models[rows]).to_numpy(dtype=float)
        used[rows] = len(obs)
    return used


def log_pyfunc_model(model_dir, *, name: str = "model", registered_model_name: str | None = None):
    """Log the saved recommender folder ``model_dir`` as a pyfunc model in the active run.

    Returns MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``).
    """
    # MLflow prints "Successfully registered model ..." to stderr; the caller reports it.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).resolve()),
            artifacts={ARTIFACT_KEY: str(Path(model_dir).resolve())},
            signature=SIGNATURE,
            pip_requirements=_requirements(),
            code_paths=_code_paths(),
            registered_model_name=registered_model_name,
            await_registration_for=0,
        )


if __name__ != "recommender.pyfunc":  # executed by MLflow as a model-from-code file
    set_model(RecommenderPyfunc())
