"""The small base class every recommender implements (after ``implicit``'s RecommenderBase).

Contract
--------
* Parameters are passed to ``__init__`` only and stored under the same names (sklearn):
  ``get_params()`` / ``set_params()`` / ``clone()`` work generically.
* ``fit(history)`` does all the work; fitted attributes end in ``_``.
  ``history`` is a :class:`features.history_frame.HistoryFrame` (targets + model /
  dataset meta + MS scores).
* ``predict(pairs, history=None)`` -> predicted fine-tune accuracy for a frame with columns
  ``model`` and ``dataset``; ``history`` supplies meta-features / scores of datasets or
  models added after fitting (default: the context saved at fit time).
* ``predict_std(pairs, history=None)`` -> uncertainty (posterior std) or ``None``.
* ``recommend(dataset, k, history=None, models=None, exclude=())`` -> ranked frame.
* ``save(path)`` writes a folder of JSON / npz / parquet / native model files (no pickle);
  ``recommender.io.load_recommender(path)`` reads any saved recommender back.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from history.errors import RecommenderError


class NotFittedError(RecommenderError):
    """The recommender has not been fitted yet."""


class BaseRecommender:
    name: ClassVar[str] = ""
    #: True if ``predict_std`` returns a real uncertainty
    has_uncertainty: ClassVar[bool] = False
    #: the training history, set by ``fit`` (a HistoryFrame)
    history_: Any

    # -------------------------------------------------------------- sklearn-style params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: {valid}")
            setattr(self, k, v)
        return self

    def clone(self):
        return type(self)(**copy.deepcopy(self.get_params()))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------- API
    def fit(self, history) -> BaseRecommender:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, pairs: pd.DataFrame, history=None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_std(self, pairs: pd.DataFrame, history=None):
        return None

    def check_is_fitted(self):
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() (or run `train`) first.")

    def recommend(self, dataset: str, k: int | None = 5, history=None, models=None, exclude=()) -> pd.DataFrame:
        """Rank ``models`` (default: every model known to the fitted/passed history) for ``dataset``.

        Returns columns rank, model, predicted, std (NaN where no uncertainty).
        """
        self.check_is_fitted()
        if models is None:
            ctx = history if history is not None else self.history_
            models = list(ctx.model_names())
        excl = set(exclude or ())
        models = [m for m in models if m not in excl]
        pairs = pd.DataFrame({"model": models, "dataset": dataset})
        pred = np.asarray(self.predict(pairs, history=history), dtype=float)
        std = self.predict_std(pairs, history=history)
        out = pairs.assign(predicted=pred, std=np.nan if std is None else np.asarray(std, dtype=float))
        out = out.sort_values(["predicted", "model"], ascending=[False, True], kind="mergesort")
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        out = out.drop(columns="dataset").reset_index(drop=True)
        return out if k is None else out.head(k)

    def save(self, path) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError
