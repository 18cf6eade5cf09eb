"""Fine-tune bookkeeping helpers: the history store (:func:`process_alive`,
:func:`completed_trials`) and the MLflow runs of the trials."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from history.config import resolve_home

from ..tracking import SafeLogger, setup_tracking
from .config import TrialConfig, TrialResult
from .data import TaskData

EXPERIMENT = "recommender-finetune"


def process_alive(extra: dict) -> bool:
    """Whether the process recorded in a running job's ``extra`` (host, pid) still runs."""
    if extra.get("host") != socket.gethostname():
        return True  # another machine: cannot tell, leave it
    pid = extra.get("pid")
    if not pid:
        return False
    if int(pid) == os.getpid():
        return False  # our own leftover from an earlier, interrupted call in this process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) is not running
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def completed_trials(store, dataset: str) -> dict:
    """The completed jobs on ``dataset`` by trial key (one query; the first one of a key wins)."""
    out: dict = {}
    for r in store.runs_frame(dataset=dataset, status="completed").itertuples(index=False):
        ex = r.extra if isinstance(r.extra, dict) else {}
        if ex.get("trial") is not None:
            out.setdefault(ex["trial"], r)
    return out


_TRACKING: dict = {}  # (tracking URI, home) -> (experiment, client): set up once per process


def _tracking(tracking_uri, home):
    """The MLflow experiment and client for fine-tune runs (set up once per process)."""
    from mlflow import MlflowClient

    ck = (str(tracking_uri), str(resolve_home(home)))
    if ck not in _TRACKING:
        tr = setup_tracking(tracking_uri, home, experiment=EXPERIMENT)
        _TRACKING[ck] = (tr, MlflowClient(tracking_uri=tr.tracking_uri))
    return _TRACKING[ck]


def warm_tracking(tracking_uri=None, home=None) -> str | None:
    """Set up MLflow before the first trial (so that its one-time cost is not in a trial's time).

    Returns an error message instead of raising; the trials then record it.
    """
    sl = SafeLogger()
    with sl.step("set up MLflow"):
        _tracking(tracking_uri, home)
    return sl.message() or None


def _mlflow_params(model: str, spec: str, dataset: str, config: TrialConfig, data: TaskData) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)) for k, v in {**config.hparams(), "model": model, "spec": spec, "dataset": dataset,
                                          "data": data.ref}.items()]


def _log_mlflow(*, tracking_uri, home, res: TrialResult, data: TaskData, extra: dict,
                run_id: str | None = None) -> tuple[str | None, str | None]:
    """Log a finished trial's MLflow run: its params, tags ``job_id`` / ``trial`` / ``status``, the
    curves and best accuracy, FINISHED or FAILED. ``run_id``: the run :func:`_mlflow_start`
    created when the trial started (its ``job_id`` / ``trial`` tags are there); without it the
    run is created now, starting when the trial started."""
    sl = SafeLogger()
    with sl.step("log fine-tune run"):
        from mlflow.entities import Metric, RunTag

        tr, client = _tracking(tracking_uri, home)
        tags = [RunTag("status", res.status)]
        if run_id is None:
            started = int((time.time() - extra.get("elapsed_s", 0.0)) * 1000)  # the run spans the trial
            run = client.create_run(tr.experiment_id, start_time=started, run_name=f"{res.model} on {res.dataset}")
            run_id = run.info.run_id
            tags += [RunTag("job_id", str(res.job_id)), RunTag("trial", extra["trial"])]
        params = _mlflow_params(res.model, res.spec, res.dataset, res.config, data)
        now = int(time.time() * 1000)
        metrics = [Metric("val_accuracy", float(a), now, i + 1) for i, a in enumerate(res.curve)]
        metrics += [Metric("train_loss", float(v), now, i + 1) for i, v in enumerate(extra.get("train_loss", []))]
        if res.value is not None:
            metrics.append(Metric("best_val_accuracy", float(res.value), now, 0))
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        client.set_terminated(run_id, "FINISHED" if res.status == "completed" else "FAILED")
    return run_id, (sl.message() or None)


@dataclass
class _MlflowStart:
    run_id: str | None
    error: str | None
    seconds: float


def _mlflow_start(tracking_uri, home, p, data: TaskData, start_ms: int) -> _MlflowStart:
    """Create a trial's MLflow run (RUNNING) when the trial starts, with its ``job_id`` / ``trial``
    tags (on the bookkeeping thread, while the trial trains); ``p`` is its
    :class:`~recommender.finetune.runner.PendingTrial` (not imported: the runner imports this module).
    Its params come at the end, with the metrics, in the same batch: as many SQLite commits in
    all as creating the run at the end (7), 5 of them after training instead of 7."""
    t = time.perf_counter()
    sl = SafeLogger()
    run_id = None
    with sl.step("start fine-tune run"):
        tr, client = _tracking(tracking_uri, home)
        run = client.create_run(tr.experiment_id, start_time=start_ms, run_name=f"{p.ms.name} on {p.dataset}",
                                tags={"job_id": str(p.job_id), "trial": p.key})
        run_id = run.info.run_id
    return _MlflowStart(run_id, sl.message() or None, time.perf_counter() - t)


def _mlflow_abort(tracking_uri, home, run_ids: list, status: str = "FAILED") -> None:
    """End the RUNNING MLflow runs of trials that did not finish (tag ``status`` failed)."""
    sl = SafeLogger()
    for run_id in run_ids:
        with sl.step("end an unfinished fine-tune run"):
            _, client = _tracking(tracking_uri, home)
            client.set_tag(run_id, "status", "failed")
            client.set_terminated(run_id, status)


def _mlflow_orphans(tracking_uri, home, job_ids: list) -> list:
    """The RUNNING MLflow runs of the jobs ``job_ids`` (trials of a process that was killed)."""
    sl = SafeLogger()
    out = []
    with sl.step("find unfinished fine-tune runs"):
        tr, client = _tracking(tracking_uri, home)
        wanted = {str(j) for j in job_ids}
        for run in client.search_runs([tr.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                      max_results=1000):
            if run.data.tags.get("job_id") in wanted:
                out.append(run.info.run_id)
    return out
