"""Registry of model-selection (MS) scores and the validated entry point :func:`compute_score`.

Every score is a pure function ``fn(features[n, d], labels[n], *, probs=None,
reference=None, **options) -> float`` registered under a fixed name with
:func:`register_score`. Score functions assume *validated* inputs (float64 features,
integer labels 0..C-1 with C >= 2); :func:`compute_score` is the public entry point that
validates once and guarantees a finite float or a :class:`ScoreInputError`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from history.errors import RecommenderError, unknown_name_error


class ScoreInputError(RecommenderError):
    """Inputs to an MS score are unusable (NaN/inf, wrong shape, one class, missing probs...)."""


@dataclass(frozen=True)
class ScoreSpec:
    """Metadata of one registered MS score."""

    name: str
    fn: Callable
    paper: str
    summary: str
    needs_probs: bool = False  # needs source-class probabilities (LEEP, NCE)
    needs_reference: bool = False  # needs reference features (RSA, DDS)
    uses_features: bool = True  # False: features are only validated, never cast (LEEP, NCE)
    iterative: bool = False  # inherently iterative (see docs/scores.md)
    higher_is_better: bool = True
    #: ``degenerate(X, y, value, **options) -> str | None``: why the value carries no
    #: information for this input (e.g. H-score at n <= d), or None
    degenerate: Callable | None = None
    #: the official code this score equals: repository@commit, file, function and the
    #: configuration it is reproduced in ("" where there is none); see docs/scores.md
    reference: str = ""
    #: how the score differs from ``reference`` and why ("" where it equals it)
    deviation: str = ""

    def options(self) -> list[str]:
        """Names of the keyword options the score function accepts."""
        sig = inspect.signature(self.fn)
        return [p.name for p in sig.parameters.values()
                if p.kind == p.KEYWORD_ONLY and p.name not in ("probs", "reference")]


SCORES: dict[str, ScoreSpec] = {}


def register_score(name, *, paper, summary, needs_probs=False, needs_reference=False,
                   iterative=False, higher_is_better=True, degenerate=None, uses_features=True,
                   reference="", deviation=""):
    """Decorator registering ``fn`` in :data:`SCORES` under ``name`` (names are unique)."""

    def deco(fn):
        if name in SCORES:
            raise ValueError(f"score {name!r} is already registered")
        SCORES[name] = ScoreSpec(name=name, fn=fn, paper=paper, summary=summary,
                                 needs_probs=needs_probs, needs_reference=needs_reference,
                                 iterative=iterative, higher_is_better=higher_is_better,
                                 degenerate=degenerate, uses_features=uses_features,
                                 reference=reference, deviation=deviation)
        return fn

    return deco


def list_scores() -> list[str]:
    """Sorted names of all registered scores."""
    return sorted(SCORES)


def get_score(name) -> ScoreSpec:
    """The :class:`ScoreSpec` called ``name``; unknown names raise NotFoundError listing the valid ones."""
    try:
        return SCORES[name]
    except (KeyError, TypeError):
        raise unknown_name_error("model-selection score", name, list_scores()) from None


# ----------------------------------------------------------------------------- validation
def _finite_matrix(name: str, what: str, arr, n: int | None = None, cast: bool = True) -> np.ndarray:
    try:
        a = np.asarray(arr)
    except Exception as exc:  # ragged lists etc.
        raise ScoreInputError(f"{name}: {what} cannot be read as a numeric array ({exc}).") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ScoreInputError(f"{name}: {what} must be numeric; got dtype {a.dtype}.")
    if np.iscomplexobj(a):
        raise ScoreInputError(f"{name}: {what} must be real; got complex dtype {a.dtype}.")
    if a.ndim != 2:
        fix = " (for a single feature use x[:, None])" if a.ndim == 1 else ""
        raise ScoreInputError(
            f"{name}: {what} must be a 2-D array (n_samples, n_dims); got shape {a.shape}{fix}.")
    if n is not None and a.shape[0] != n:
        raise ScoreInputError(
            f"{name}: {what} has {a.shape[0]} rows but there are {n} labels; they must match.")
    if a.shape[1] == 0:
        raise ScoreInputError(f"{name}: {what} has no columns (shape {a.shape}).")
    if cast:
        a = a.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.add.reduce(a, axis=None))  # one pass; NaN/inf make it non-finite
    bad = ~np.isfinite(a) if not np.isfinite(total) else None  # (or a finite overflow: checked below)
    if bad is not None and bad.any():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(bad.sum()) - n_nan
        r, c = np.argwhere(bad)[0]
        parts = [f"{n_nan} NaN values"] if n_nan else []
        parts += [f"{n_inf} infinite values"] if n_inf else []
        raise ScoreInputError(
            f"{name}: {what} contain {' and '.join(parts)} (first at row {r}, column {c}); "
            "drop or impute those samples before scoring.")
    return a


def _labels(name: str, labels, n_min: int = 2) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ScoreInputError(
            f"{name}: labels must be a 1-D array of class ids; got shape {y.shape} "
            "(pass class indices, not one-hot rows).")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ScoreInputError(f"{name}: labels contain {int((~np.isfinite(y)).sum())} NaN/inf values.")
    if y.dtype == object and any(v is None for v in y):
        raise ScoreInputError(f"{name}: labels contain missing values (None).")
    try:
        classes, enc = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise ScoreInputError(f"{name}: labels cannot be sorted into classes ({exc}).") from None
    if y.shape[0] < n_min:
        raise ScoreInputError(f"{name}: needs at least {n_min} samples; got {y.shape[0]}.")
    if len(classes) < 2:
        raise ScoreInputError(
            f"{name}: needs at least 2 classes; all {y.shape[0]} samples have label "
            f"{classes[0]!r}. A transferability score compares classes, so score a dataset "
            "with two or more classes.")
    return enc.astype(np.int64), classes


def _probs(name: str, probs, n: int) -> np.ndarray:
    """Validated source-class probabilities, as given (not cast, not renormalized: the
    official LEEP/NCE code uses them as they are).

    Two passes over the array (row sums, minimum) instead of a cast, a finiteness pass and
    a normalized copy: for NCE the input check costs less than the score.
    """
    p = _shape_only(name, "probs", probs, n)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.add.reduce(p, axis=1)  # NaN/inf make a row sum non-finite
    if not np.isfinite(s).all():
        _finite_matrix(name, "probs", p, n)  # raises, naming the count and the first position
    mn = p.min()
    if mn < 0:
        r, c = np.argwhere(p < 0)[0]
        raise ScoreInputError(
            f"{name}: probs must be source-class probabilities (>= 0); probs[{r}, {c}] = "
            f"{p[r, c]:g}. Apply a softmax to logits first.")
    off = np.abs(s.astype(np.float64, copy=False) - 1.0) > 1e-3
    if off.any():
        r = int(np.argmax(off))
        raise ScoreInputError(
            f"{name}: each row of probs must sum to 1 ({int(off.sum())} rows do not; row {r} "
            f"sums to {float(s[r]):.6g}). Pass softmax probabilities, not logits.")
    return p


def _shape_only(name: str, what: str, arr, n: int) -> np.ndarray:
    """``arr`` as an array after the dtype and shape checks of :func:`_finite_matrix`, without
    reading its values (for inputs a score does not use, or checks itself)."""
    try:
        a = np.asarray(arr)
    except Exception as exc:
        raise ScoreInputError(f"{name}: {what} cannot be read as a numeric array ({exc}).") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a) \
            or a.ndim != 2 or a.shape[0] != n or a.shape[1] == 0:
        return _finite_matrix(name, what, a, n, cast=False)  # raises with the precise message
    return a


def validate_inputs(name: str, features, labels, *, probs=None, reference=None):
    """Validated ``(X float64 [n,d], y int [n] in 0..C-1, probs, reference)`` for score ``name``."""
    spec = get_score(name)
    y, _ = _labels(name, labels)
    if spec.uses_features:
        X = _finite_matrix(name, "features", features, len(y))
    else:  # LEEP, NCE: the features are never read, so only their shape is checked
        X = _shape_only(name, "features", features, len(y))
    P = R = None
    if spec.needs_probs:
        if probs is None:
            raise ScoreInputError(
                f"{name}: needs probs, the model's source-class probabilities (n_samples x "
                "n_source_classes, e.g. softmax of the ImageNet head) for each target sample.")
        P = _probs(name, probs, len(y))
    elif probs is not None:
        P = _probs(name, probs, len(y))
    if spec.needs_reference:
        if reference is None:
            raise ScoreInputError(
                f"{name}: needs reference features (n_samples x d_ref) of the same samples from "
                "a reference model (e.g. a small model trained on the target task).")
        R = _finite_matrix(name, "reference", reference, len(y))
    elif reference is not None:
        R = _finite_matrix(name, "reference", reference, len(y))
    return X, y, P, R


@dataclass(frozen=True)
class ScoreResult:
    """A computed score: ``value``, ``flag`` (why it is degenerate for this input, or None)
    and ``params`` (every option it was computed with, defaults included)."""

    value: float
    flag: str | None
    params: dict


def compute_score(name, features, labels, *, probs=None, reference=None, **kwargs) -> float:
    """Validate the inputs once and return score ``name`` as a finite float.

    ``features``: (n, d) array (float32 accepted, computed in float64); ``labels``: n class
    ids of any sortable type (re-encoded to 0..C-1); ``probs``: (n, Z) source-class
    probabilities for LEEP/NCE; ``reference``: (n, d_ref) reference features for RSA/DDS;
    ``kwargs``: score options (see ``get_score(name).options()``).
    Raises :class:`ScoreInputError` for unusable inputs, never returns NaN.
    """
    return _evaluate(name, features, labels, probs, reference, kwargs, flag=False).value


def score_with_flag(name, features, labels, *, probs=None, reference=None, **kwargs) -> ScoreResult:
    """:func:`compute_score`, plus the degeneracy flag and the effective options (:class:`ScoreResult`).

    The flag costs one more pass over the features (and, for some scores, a cheap re-check,
    e.g. split_lr's start gradient); :func:`compute_score` skips it."""
    return _evaluate(name, features, labels, probs, reference, kwargs, flag=True)


def _evaluate(name, features, labels, probs, reference, kwargs, *, flag: bool) -> ScoreResult:
    spec = get_score(name)
    valid = spec.options()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ScoreInputError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(valid) or '(none)'}.")
    X, y, P, R = validate_inputs(name, features, labels, probs=probs, reference=reference)
    with np.errstate(all="ignore"):
        value = spec.fn(X, y, probs=P, reference=R, **kwargs)
    value = float(value)
    if not np.isfinite(value):
        raise ScoreInputError(
            f"{name}: the score is not finite ({value}) for these inputs (n={X.shape[0]}, "
            f"d={X.shape[1]}, classes={int(y.max()) + 1}); check for degenerate features.")
    sig = inspect.signature(spec.fn)
    params = {p: sig.parameters[p].default for p in valid}
    params.update(kwargs)
    why = None
    if flag:
        with np.errstate(all="ignore"):
            why = input_flag(X, y, uses_features=spec.uses_features)  # the input first: the wider reason
            if why is None and spec.degenerate is not None:
                why = spec.degenerate(X, y, value, **kwargs)
    return ScoreResult(value=value, flag=why, params=params)


#: features whose total standard deviation is at most this fraction of their scale
#: (root mean square) are "near-constant": below float32 resolution (6e-8) times ~16
NEAR_CONSTANT_REL = 1e-6


def input_flag(X: np.ndarray, y: np.ndarray, uses_features: bool = True) -> str | None:
    """Why an input makes *every* score uninformative, or None (checked by :func:`score_with_flag`).

    * every class has a single sample (C = n): no within-class statistics exist, and the
      scores reach their bounds (H-score = rank, SFDA = 1, LEEP-type scores = 0);
    * constant or near-constant features (total standard deviation <= ``NEAR_CONSTANT_REL``
      times the features' root-mean-square, or exactly 0): the official codes give NaN or
      raise there; any finite value a score returns carries no information. Not checked
      for scores that do not read the features (LEEP, NCE).
    """
    n = y.shape[0]
    C = int(y.max()) + 1
    if C == n:
        return f"every class has a single sample (C = n = {n}): no score can rank models on this input"
    if uses_features:
        mean = X.sum(axis=0) / n
        sq = float(np.einsum("ij,ij->", X, X)) / n  # one pass, no n x d temporary
        ms = float(mean @ mean)
        var = max(sq - ms, 0.0)  # rounding: at most ~1e-16 sq, far below the threshold squared
        scale = float(np.sqrt(sq))
        if var <= 0.0 or np.sqrt(var) <= NEAR_CONSTANT_REL * scale:
            what = "constant" if var <= 0.0 else f"near-constant (relative spread {np.sqrt(var) / scale:.1e})"
            return (f"the features are {what} across the {n} samples: the official code gives NaN "
                    "or raises; the value carries no information")
    return None


def constant_flag(values, rel: float = 1e-9) -> str | None:
    """Flag for one method's scores of several models on one dataset that are all equal.

    ``values``: the scores of the models (two or more). A score that gives every model the
    same value cannot rank them; returns the reason, or None (fewer than 2 values, or not
    constant).
    """
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size < 2:
        return None
    if float(v.max() - v.min()) <= rel * max(1.0, float(np.abs(v).max())):
        return f"constant across the {v.size} models scored on this dataset (value {v[0]:.6g})"
    return None
