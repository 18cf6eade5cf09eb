"""MLflow helpers: where runs go, and logging that never loses a trained model.

* :func:`setup_tracking` resolves the URI with ``history.config.resolve_tracking_uri``
  (default ``sqlite:///<home>/mlflow.db``; the model registry uses the same URI) and gets or
  creates the experiment, its artifact location under ``<home>/mlartifacts``.
* :func:`scoped_tracking_uri` sets MLflow's global URI for one block and restores it.
* :func:`log_training_run` logs params, metrics, the feature schema and the pyfunc model
  (registered as ``recommender-<name>``).
* :class:`SafeLogger` wraps every MLflow call: a failure (bad URI, server down, disk full)
  is caught, recorded as a one-line message and reported as a warning, so that training
  still saves its model; the CLI then exits with :data:`MLFLOW_FAILED_EXIT_CODE`.

MLflow is imported lazily: ``--no-mlflow`` never pays its import time.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from history.config import artifact_root, resolve_tracking_uri

log = logging.getLogger(__name__)

#: MLflow experiment that training runs are logged to.
DEFAULT_EXPERIMENT = "recommender-training"
#: Exit code of ``train`` when the model was saved but MLflow logging failed.
MLFLOW_FAILED_EXIT_CODE = 3
#: Registered model name of a recommender in the MLflow model registry.
REGISTERED_PREFIX = "recommender-"


def registered_name(recommender: str) -> str:
    """Name of ``recommender`` in the MLflow model registry, e.g. ``recommender-lgbm``."""
    return f"{REGISTERED_PREFIX}{recommender}"


def _quiet_mlflow():
    """Keep MLflow's own INFO chatter (db migrations, 'Created version') off the terminal."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.models"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _http_fail_fast(uri: str):
    """An unreachable tracking server should fail in seconds, not retry for minutes.

    Only sets MLflow's HTTP retry settings that the user did not set.
    """
    if uri.split(":", 1)[0].lower() in ("http", "https", "databricks"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@dataclass
class Tracking:
    """Where MLflow logging goes (the result of :func:`setup_tracking`)."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    artifact_location: str


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else type(exc).__name__
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"


def setup_tracking(tracking_uri: str | None = None, home=None,
                   experiment: str = DEFAULT_EXPERIMENT) -> Tracking:
    """Get or create ``experiment`` in the tracking store of ``tracking_uri``.

    Touches no global MLflow state (see :func:`scoped_tracking_uri`). Raises whatever
    MLflow raises for an invalid / unreachable URI; call it through :class:`SafeLogger`
    to turn that into a warning.
    """
    _quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri, home)
    _http_fail_fast(uri)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = (artifact_root(home) / experiment).as_uri()
        try:
            # the tag makes the MLflow 3 UI open the experiment in its runs (model training)
            # view instead of the GenAI view
            exp_id = client.create_experiment(
                experiment, artifact_location=location,
                tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # created concurrently by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id, location = exp.experiment_id, exp.artifact_location
    else:
        exp_id, location = exp.experiment_id, exp.artifact_location
    return Tracking(uri, experiment, str(exp_id), str(location))


_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")


@contextlib.contextmanager
def scoped_tracking_uri(uri: str):
    """Use ``uri`` as MLflow's global tracking + registry URI inside the block only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; both the module state
    and the environment are restored on exit, so library callers (and tests) are not left
    pointing at this store.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    saved_env = {k: os.environ.get(k) for k in _URI_ENV}
    saved = (getattr(trk_utils, "_tracking_uri", None), getattr(reg_utils, "_registry_uri", None))
    try:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield
    finally:
        with contextlib.suppress(Exception):
            mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None: back to MLflow's default
        with contextlib.suppress(Exception):
            reg_utils._registry_uri = saved[1]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class SafeLogger:
    """Runs MLflow calls so that a failure is recorded and reported, never raised.

    >>> sl = SafeLogger()
    >>> with sl.step("log params"):
    ...     raise OSError("disk full")
    >>> sl.ok, sl.errors
    (False, ['log params: OSError: disk full'])
    >>> sl.call("log metrics", print, "skipped") is None   # skipped after a failure
    True

    :meth:`call` skips every later step once one failed (``skip_after_failure``), since a
    broken tracking store rarely heals mid-run; :meth:`step` always runs its body.
    """

    skip_after_failure: bool = True
    errors: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @contextlib.contextmanager
    def step(self, what: str):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except Exception as exc:  # noqa: BLE001 - every MLflow failure is reported, never fatal
            msg = f"{what}: {_short(exc)}"
            self.errors.append(msg)
            log.warning("MLflow logging failed (%s)", msg)
            log.debug("MLflow failure", exc_info=True)

    def call(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, or ``None`` if it failed (or an earlier step failed)."""
        if self.errors and self.skip_after_failure:
            return None
        with self.step(what):
            return fn(*args, **kwargs)
        return None

    def message(self) -> str:
        return "; ".join(self.errors)


def log_training_run(*, tracking_uri, home, name: str, model_dir: Path, params: dict, metrics: dict,
                     tags: dict, schema: dict | None = None, register: bool = True,
                     experiment: str = DEFAULT_EXPERIMENT, start_time: float | None = None) -> dict:
    """Log one training run: params, metrics, feature schema, and the pyfunc model.

    ``start_time`` (seconds since the epoch): when the work the run stands for began, e.g.
    just before fitting; the run starts then (default: now) and ends when logging is done,
    so its duration in the MLflow UI covers the fit.

    The saved recommender folder ``model_dir`` becomes the pyfunc model's artifacts (see
    :mod:`recommender.pyfunc`) and is registered as ``recommender-<name>``.

    Returns ``{"ok", "run_id", "model_uri", "registered_name", "model_version",
    "tracking_uri", "experiment_id", "error"}``; never raises for MLflow failures.
    """
    sl = SafeLogger()
    out: dict[str, Any] = {"ok": False, "run_id": None, "model_uri": None, "registered_name": None,
                           "model_version": None, "tracking_uri": None, "experiment_id": None, "error": None}
    out["tracking_uri"] = resolve_tracking_uri(tracking_uri, home)
    tracking = sl.call("set up MLflow tracking", setup_tracking, tracking_uri, home, experiment)
    if tracking is not None:
        out["tracking_uri"] = tracking.tracking_uri
        out["experiment_id"] = tracking.experiment_id
        with scoped_tracking_uri(tracking.tracking_uri):
            _log_run(sl, out, tracking, name=name, model_dir=model_dir, params=params, metrics=metrics,
                     tags=tags, schema=schema, register=register, start_time=start_time)
    out["ok"] = sl.ok
    out["error"] = None if sl.ok else sl.message()
    return out


def _log_run(sl, out, tracking, *, name, model_dir, params, metrics, tags, schema, register, start_time=None):
    import time

    import mlflow

    from .pyfunc import log_pyfunc_model  # lazy: mlflow

    # created with its real start time, then made the active run (the pyfunc model logs through it)
    created = sl.call("start run", mlflow.MlflowClient().create_run, tracking.experiment_id,
                      start_time=int((time.time() if start_time is None else start_time) * 1000),
                      run_name=f"train-{name}")
    if created is None:
        return
    run = sl.call("start run", mlflow.start_run, run_id=created.info.run_id)
    if run is None:
        return
    out["run_id"] = run.info.run_id
    try:
        sl.call("log params", mlflow.log_params, {k: _param(v) for k, v in params.items()})
        finite = {k: float(v) for k, v in metrics.items() if _finite(v)}
        if finite:
            sl.call("log metrics", mlflow.log_metrics, finite)
        sl.call("set tags", mlflow.set_tags, {k: str(v) for k, v in tags.items()})
        if schema is not None:
            sl.call("log feature schema", mlflow.log_dict, schema, "feature_schema.json")
        reg = registered_name(name) if register else None
        info = sl.call("log pyfunc model", log_pyfunc_model, model_dir, registered_model_name=reg)
        if info is not None:
            out["model_uri"] = info.model_uri
            out["registered_name"] = reg
            out["model_version"] = _version(info) if reg else None
    finally:
        status = "FINISHED" if sl.ok else "FAILED"
        with sl.step("end run"):
            mlflow.end_run(status=status)


def _version(info):
    v = getattr(info, "registered_model_version", None)
    return None if v is None else int(v)


def _finite(v) -> bool:
    try:
        import math

        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _param(v) -> str:
    s = str(v)
    return s if len(s) <= 500 else s[:497] + "..."
