"""Import fine-tuning runs logged to MLflow (importer name ``mlflow``).

``path`` is an MLflow tracking URI (``sqlite:///.../mlflow.db``, ``http://host:5000``, or
a path to an ``mlflow.db`` file); option ``experiment`` (name or id) is required.

Each terminated run becomes one job:

* params ``model`` and ``dataset`` (required; runs lacking either are dropped and
  counted), optional ``regime``; params ``model_<field>`` / ``dataset_<field>`` fill the
  model / dataset meta-features (same names as the generic format);
* every other param is a hyper-parameter (numbers are parsed: ``"0.01"`` -> 0.01,
  ``"30"`` -> 30) in ``hparams``;
* the metric ``accuracy`` (option ``metric``; last logged value) is the job value, a
  fraction, or percent with ``unit="percent"`` (same checks as the generic format);
* run status FINISHED / FAILED / KILLED -> job status completed / failed / killed;
  RUNNING / SCHEDULED runs are not finished and are dropped (counted);
* provenance ``mlflow:<experiment_id>/<run_id>``, source ``mlflow:<experiment name>``
  (option ``source``), ``created_at`` the run's start time.

Importing the same experiment twice adds nothing (job identity is content-based).
"""
from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Integer, String
from sqlalchemy.engine import make_url

from .. import schema as S
from ..errors import HistoryImportError, closest
from .base import ImportBatch, Importer, ImportReport, register_importer
from .generic_columns import DATASET_COLUMNS, MODEL_COLUMNS, UNITS

STATUS = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "killed"}
RESERVED_PARAMS = {"model", "dataset", "regime"}
_INT = re.compile(r"^[+-]?\d+$")


def _param_value(s: str):
    """A param string as int / float when it is one (MLflow stores every param as text)."""
    t = s.strip()
    if _INT.match(t):
        return int(t)
    try:
        x = float(t)
    except ValueError:
        return s
    return x if math.isfinite(x) else s


def normalize_uri(path) -> str:
    """A tracking URI from a URI or a path to an ``mlflow.db`` file; refuses missing SQLite files."""
    s = str(path)
    if "://" not in s:
        p = Path(s).expanduser().resolve()
        if p.suffix == ".db" or p.is_file():
            s = f"sqlite:///{p}"
        else:
            s = str(p)
    if s.startswith("sqlite:"):
        db = make_url(s).database
        if not db or db == ":memory:" or not Path(db).is_file():
            raise HistoryImportError(
                f"no MLflow tracking store at {s}: the SQLite file {db!r} does not exist "
                "(give the tracking URI that the runs were logged to, e.g. sqlite:///path/to/mlflow.db)"
            )
    return s


def _safe(uri: str) -> str:
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri


def _fetch_runs(uri: str, experiment) -> tuple:
    """The experiment (by name, or by id when all digits) and its active runs, oldest first."""
    try:
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # pragma: no cover - mlflow is a dependency
        raise HistoryImportError(f"the mlflow importer needs the mlflow package ({exc})") from None
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(str(experiment))
        if exp is None and str(experiment).isdigit():
            try:
                exp = client.get_experiment(str(experiment))
            except MlflowException:
                exp = None
        if exp is None:
            names = [e.name for e in client.search_experiments(view_type=ViewType.ALL)]
            near = closest(str(experiment), names)
            raise HistoryImportError(
                f"no MLflow experiment {experiment!r} at {_safe(uri)}"
                + (f"; did you mean: {', '.join(near)}?" if near else "")
                + f" Experiments there: {', '.join(names) or '(none)'}"
            )
        runs: list = []  # mlflow Run objects
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                      max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
            runs.extend(page)
            token = page.token
            if not token:
                break
    except HistoryImportError:
        raise
    except MlflowException as exc:
        raise HistoryImportError(f"cannot read MLflow runs from {_safe(uri)}: {exc.message}") from None
    except Exception as exc:  # connection errors, bad URIs
        raise HistoryImportError(f"cannot read MLflow runs from {_safe(uri)}: {exc}") from None
    return exp, runs


def _run_hparams(params: dict, where: str, m_rec: dict, d_rec: dict) -> dict:
    """A run's hyper-parameters; its ``model_<field>`` / ``dataset_<field>`` params go to the
    model / dataset record instead (typed as the store's column)."""
    hparams = {}
    for k, v in params.items():
        if k in RESERVED_PARAMS:
            continue
        if k in MODEL_COLUMNS or k in DATASET_COLUMNS:
            field, table, rec = ((MODEL_COLUMNS[k], S.models, m_rec) if k in MODEL_COLUMNS
                                 else (DATASET_COLUMNS[k], S.datasets, d_rec))
            typ = table.c[field].type
            if isinstance(typ, String):
                rec[field] = v
                continue
            x = _param_value(v)
            if not isinstance(x, (int, float)) or (isinstance(typ, Integer) and not float(x).is_integer()):
                raise HistoryImportError(f"{where}: param {k!r} has value {v!r}, which is not a "
                                         f"{'whole ' if isinstance(typ, Integer) else ''}number")
            rec[field] = int(x) if isinstance(typ, Integer) else float(x)
            continue
        hparams[k] = _param_value(v)
    return hparams


def _fraction(value, metric: str, unit: str, where: str) -> float:
    """A logged metric value as a fraction, range checked against ``unit``."""
    value = float(value)
    limit = 100.0 if unit == "percent" else 1.0
    if value < 0 or value > limit:
        hint = (" If the runs log percent, import with --unit percent (unit='percent')."
                if unit == "fraction" and value <= 100 else "")
        raise HistoryImportError(
            f"{where}: metric {metric!r} is {value!r}, outside [0, {limit:g}] for unit {unit}.{hint}")
    if unit == "percent":
        value /= 100.0
    return value


def _job_of_run(run, exp, src: str, metric: str, unit: str, report: ImportReport, models: dict,
                datasets: dict) -> dict | None:
    """One run as a job dict (its model / dataset recorded in ``models`` / ``datasets``), or None
    when the run is dropped (the reason counted in ``report``)."""
    info, params, metrics = run.info, dict(run.data.params), dict(run.data.metrics)
    where = f"MLflow run {info.run_id} (experiment {exp.name!r})"
    status = STATUS.get(info.status)
    if status is None:
        report.drop(f"run not finished (MLflow status {info.status})")
        return None
    model, dataset = (params.get("model") or "").strip(), (params.get("dataset") or "").strip()
    if not model or not dataset:
        report.drop("run has no 'model' or no 'dataset' param")
        return None
    for name, lim in ((model, 255), (dataset, 255)):
        if len(name) > lim:
            raise HistoryImportError(f"{where}: name {name[:40]!r}... is longer than {lim} characters")
    regime = (params.get("regime") or "full").strip()
    m_rec = models.setdefault(model, {"name": model})
    d_rec = datasets.setdefault(dataset, {"name": dataset})
    hparams = _run_hparams(params, where, m_rec, d_rec)
    value = metrics.get(metric)
    if value is not None and not math.isfinite(value):
        value = None
    if value is None:
        if status == "completed":
            near = closest(metric, metrics)
            report.drop(f"finished run without metric {metric!r}"
                        + (f" (it has {', '.join(near)})" if near else ""))
            return None
    else:
        value = _fraction(value, metric, unit, where)
    created = (datetime.fromtimestamp(info.start_time / 1000.0, tz=UTC)
               if info.start_time else None)
    return {
        "model": model, "dataset": dataset, "regime": regime, "hparams": hparams, "metric": metric,
        "value": value, "status": status, "source": src,
        "provenance": f"mlflow:{exp.experiment_id}/{info.run_id}", "created_at": created,
    }


@register_importer
class MlflowRunsImporter(Importer):
    """Runs of one MLflow experiment (see module docstring)."""

    name = "mlflow"
    description = "runs of an MLflow experiment: params model/dataset, metric accuracy (--experiment)"

    # its own keyword options, where Importer.read declares **options
    def read(self, path, *, experiment=None, metric: str = "accuracy", unit: str = "fraction",  # type: ignore[override]
             source: str | None = None, progress: bool = True, force_unit: bool = False) -> ImportBatch:
        if experiment is None or str(experiment).strip() == "":
            raise HistoryImportError("the mlflow importer needs an experiment: pass --experiment NAME_OR_ID")
        if unit not in UNITS:
            raise HistoryImportError(f"unknown accuracy unit {unit!r}; use one of: {', '.join(UNITS)}")
        uri = normalize_uri(path)
        exp, runs = _fetch_runs(uri, experiment)
        src = source or f"mlflow:{exp.name}"
        if len(src) > 64:
            raise HistoryImportError(
                f"the source name {src!r} is longer than 64 characters; pass a shorter one with --source"
            )
        report = ImportReport(importer="mlflow", source=src, path=f"{_safe(uri)}#{exp.name}")
        report.rows_read = len(runs)
        models: dict[str, dict] = {}
        datasets: dict[str, dict] = {}
        jobs, keys = [], set()
        for run in runs:
            job = _job_of_run(run, exp, src, metric, unit, report, models, datasets)
            if job is None:
                continue
            key = S.job_key(model=job["model"], dataset=job["dataset"], regime=job["regime"],
                            hparams=S._clean(job["hparams"]), metric=metric, value=job["value"],
                            status=job["status"], source=src, provenance=job["provenance"])
            if key in keys:
                report.drop("run identical to an earlier run (same params, status and value)")
                continue
            keys.add(key)
            jobs.append(job)
        vals = [j["value"] for j in jobs if j["value"] is not None]
        if unit == "percent" and vals and max(vals) <= 0.01 and not force_unit:
            raise HistoryImportError(
                f"--unit percent, but all {len(vals)} {metric!r} values are at most 1 (largest {100 * max(vals):g}), "
                "so the runs look like they log fractions. Import without --unit percent, or add --force-unit "
                "if these really are percentages of at most 1%")
        return ImportBatch(report=report, models=list(models.values()), datasets=list(datasets.values()),
                           jobs=jobs)
