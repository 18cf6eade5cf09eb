"""The fine-tune runner: prepare (start the job), train and finish (record) trials, one at a time
(:func:`run_trial`, :func:`finetune_model`) or as the tasks of an executor (:func:`run_trials`)."""
from __future__ import annotations

import functools
import logging
import os
import socket
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.extract import ModelSpec, load_adapter, parse_model_spec
from history.util import exception_reason as _reason

from ..executor import Resources, Task
from .config import TrialConfig, TrialResult, trial_key
from .data import TaskData
from .tracking import _log_mlflow, _mlflow_abort, _mlflow_orphans, _mlflow_start, completed_trials, process_alive
from .train import save_weights, train_classifier, weights_dir

log = logging.getLogger(__name__)

SOURCE = "recommender-finetune"
#: test hook: a folder where every trial task writes ``<pid>-<trial key>`` when it starts (worker-kill tests)
PID_DIR_ENV = "RECOMMENDER_TEST_PID_DIR"


@dataclass
class PendingTrial:
    """A trial whose job is started in the store (``running``) and whose training is to run."""

    ms: ModelSpec
    spec: str
    dataset: str
    config: TrialConfig
    key: str
    fingerprint: str
    job_id: int
    extra: dict
    t0: float
    t_store: float
    mlflow_start: Future | None = None  # Future of the _MlflowStart of a run created when the trial started


def _alive(extra: dict) -> bool:
    """:func:`process_alive`, except that this process's trials still being recorded are alive."""
    if extra.get("pid") == os.getpid() and extra.get("host") == socket.gethostname() \
            and extra.get("trial") in _RECORDING:
        return True
    return process_alive(extra)


def fail_stale(store, dataset: str) -> list[int]:
    """Mark ``running`` jobs on ``dataset`` whose process is gone as failed; return their ids."""
    return store.fail_stale_jobs(dataset=dataset, is_alive=_alive,
                          reason="stale: its process ended without finishing the trial (killed or crashed)")


def prepare_trial(store, spec: str, dataset: str, data: TaskData, config: TrialConfig, *, adapter=None,
                  source: str = SOURCE, tags: dict | None = None, check_stale: bool = True,
                  completed: dict | None = None):
    """Driver side, before training: the reused :class:`TrialResult` of a completed identical
    trial, or a :class:`PendingTrial` whose job is now ``running`` in the store.

    ``check_stale`` first fails the jobs left ``running`` by a dead process (pass False when
    this process has started other jobs that are still running). ``completed``: the
    :func:`completed_trials` of ``dataset`` read once for several trials (default: read now)."""
    config.check()
    if adapter is not None and ":" not in str(spec):
        # an in-memory model (e.g. features.extract.TorchAdapter(module, name)): ``spec`` is its name,
        # its identity is the adapter's cache id (a hash of the weights for a torch module)
        ms = ModelSpec(str(spec), adapter.kind, adapter.cache_id())
    else:
        ms = parse_model_spec(spec)
    fp = data.fingerprint()
    key = trial_key(f"{ms.prefix}:{ms.target}", dataset, fp, config)
    if check_stale:
        fail_stale(store, dataset)
    old = (completed if completed is not None else completed_trials(store, dataset)).get(key)
    if old is not None:
        ex = old.extra or {}
        return TrialResult(ms.name, spec, dataset, config, "completed", float(old.value), list(ex.get("curve", [])),
                           ex.get("best_epoch"), ex.get("weights"), int(old.job_id), float(old.duration_s or 0),
                           dict(ex.get("timings", {})), reused=True, mlflow_run=ex.get("mlflow_run"))
    t0 = time.perf_counter()
    hp = {**config.hparams(), "data": fp}
    extra = {"trial": key, "spec": spec, "host": socket.gethostname(), "pid": os.getpid(), "data_ref": data.ref,
             **(tags or {})}
    modality = "text" if data.kind == "text" else "image"
    job_id = store.start_job(model=ms.name, dataset=dataset, regime=f"finetune-{config.mode}", hparams=hp,
                             source=source, provenance=f"recommender finetune {spec} on {data.ref}", extra=extra,
                             model_fields={"modality": modality},
                             dataset_fields={"modality": modality, "num_samples": len(data),
                                             "num_classes": data.num_classes})
    return PendingTrial(ms, spec, dataset, config, key, fp, job_id, extra, t0, time.perf_counter() - t0)


_ADAPTER: dict = {}  # the last model loaded by train_trial in this process (a grid reuses it)


def train_trial(spec: str, data: TaskData, config: TrialConfig, *, device="auto", adapter=None, progress=None,
                key: str | None = None, preload=None) -> dict:
    """The training part of a trial, pure (writes nothing): runs in the driver or on a Ray worker.

    ``preload`` (in process only): a callable returning ``(adapter, used_later, seconds)``, the
    model loaded ahead by :class:`_Preloader`; the wait for it is timed as ``load_wait_s``, the
    load itself (on the preloading thread, mostly while the previous trial trained) as ``preload_s``.
    Returns :func:`train_classifier`'s dict (best accuracy, curve, best weights as arrays);
    raises on failure.
    """
    pid_dir = os.environ.get(PID_DIR_ENV)
    if pid_dir and Path(pid_dir).is_dir():
        (Path(pid_dir) / f"{os.getpid()}-{key}").touch()
    restore, waited, loaded = True, None, 0.0
    if adapter is None and preload is not None:
        t = time.perf_counter()
        adapter, restore, loaded = preload()
        waited = time.perf_counter() - t
    if adapter is None:
        if spec not in _ADAPTER:
            _ADAPTER.clear()
            _ADAPTER[spec] = load_adapter(spec)
        adapter = _ADAPTER[spec]
    out = train_classifier(adapter, data, config, device=device, progress=progress, restore=restore)
    if waited is not None:
        out["timings"].update(load_wait_s=waited, preload_s=loaded)
    return out


class _Preloader:
    """Loads the models of one call's trials a trial ahead, on a thread, while the current
    trial trains (in-process executors). Each spec is loaded once per call (a grid's trials
    share it; :func:`train_classifier` restores its weights between them), on the CPU (so
    that two models never sit on the GPU at once); a model is let go after its last trial."""

    def __init__(self, specs: list, kind: str):
        from concurrent.futures import ThreadPoolExecutor

        self.specs, self.kind = list(specs), kind
        self._loads: dict = {}  # spec -> Future of (its adapter, load seconds)
        self._used: set = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-preload")
        # a load started speculatively by the previous call (``run_trials(prefetch=...)``) is taken over;
        # the other speculative loads guessed wrong and are dropped
        for spec in dict.fromkeys(self.specs):
            fut = _SPECULATIVE.pop((spec, kind), None)
            if fut is not None:
                self._loads[spec] = fut
        _SPECULATIVE.clear()

    def _load(self, spec):
        return _load_on_cpu(spec, self.kind)

    def _submit(self, spec):
        if spec not in self._loads:
            self._loads[spec] = self._pool.submit(self._load, spec)

    def adapter(self, i: int):
        """Trial ``i``'s adapter (raises its load error), whether a later trial uses it, and the
        seconds its load took on the thread (0 after its first trial); starts loading the next
        model."""
        spec = self.specs[i]
        self._submit(spec)
        later = self.specs[i + 1:]
        nxt = next((s for s in later if s != spec), None)
        if nxt is not None:
            self._submit(nxt)
        for s in [s for s in self._loads if s != spec and s not in later]:
            del self._loads[s]
        adapter, seconds = self._loads[spec].result()
        first = spec not in self._used
        self._used.add(spec)
        if spec not in later:
            del self._loads[spec]
        return adapter, spec in later, seconds if first else 0.0

    def close(self):
        self._loads.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


#: (spec, data kind) -> Future of (adapter, load seconds): models a caller expects its *next* run_trials
#: call to need (``prefetch``), loading on their own thread while this call trains
_SPECULATIVE: dict = {}
_SPECULATOR = None


def _load_on_cpu(spec, kind: str):
    t = time.perf_counter()
    adapter = load_adapter(spec)
    adapter._load(kind, _cpu())
    return adapter, time.perf_counter() - t


def prefetch_models(specs, kind: str) -> None:
    """Start loading ``specs`` (on a thread) for the next :func:`run_trials` call in this process;
    that call takes the ones it uses and drops the rest (a wrong guess costs one load off the
    main thread)."""
    global _SPECULATOR
    from concurrent.futures import ThreadPoolExecutor

    if _SPECULATOR is None:
        _SPECULATOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-speculate")
    for spec in specs:
        if (spec, kind) not in _SPECULATIVE:
            _SPECULATIVE[(spec, kind)] = _SPECULATOR.submit(_load_on_cpu, spec, kind)


def _cpu():
    import torch

    return torch.device("cpu")


def finish_trial(store, p: PendingTrial, data: TaskData, out: dict | None, error: str | None = None, *, home=None,
                 mlflow: bool = True, tracking_uri=None, background: list | None = None) -> TrialResult:
    """Driver side, after training: save the weights, log MLflow, mark the job completed or failed.

    ``background`` (a list): saving the weights, the MLflow run and the final store write are handed to this
    process's bookkeeping thread (:class:`_Bookkeeper`, in submission order) so that the
    next trial trains meanwhile; the future is appended to the list and
    :func:`wait_background` must be called before the store is read. The job stays
    ``running`` until that write, so a process killed in between leaves a job that the next
    run marks failed and redoes, as for a kill during training.
    """
    res = TrialResult(p.ms.name, p.spec, p.dataset, p.config, "failed", job_id=p.job_id, error=error)
    res.duration_s = time.perf_counter() - p.t0
    if out is not None:  # until the weights are saved (_record), a failure there turns it to failed
        res.timings = dict(out["timings"])
        res.status, res.value, res.curve, res.best_epoch = "completed", float(out["value"]), out["curve"], \
            out["best_epoch"]
    if background is None or not _can_background(store):
        return _record(store, p, res, data, out, home, mlflow, tracking_uri)
    _RECORDING.add(p.key)
    background.append(_BOOKKEEPER.submit(_record, store, p, res, data, out, home, mlflow, tracking_uri))
    return res


#: trial keys of this process whose job is recorded on the bookkeeping thread, not yet finished in the store
#: (a later run_trials call must not take them for leftovers of an interrupted call)
_RECORDING: set = set()


def _record(store, p: PendingTrial, res: TrialResult, data: TaskData, out: dict | None, home, mlflow: bool,
            tracking_uri) -> TrialResult:
    try:
        return _record_trial(store, p, res, data, out, home, mlflow, tracking_uri)
    finally:
        _RECORDING.discard(p.key)


def _record_trial(store, p: PendingTrial, res: TrialResult, data: TaskData, out: dict | None, home, mlflow: bool,
                  tracking_uri) -> TrialResult:
    """Save the weights, log the MLflow run, then write the job's final state, in that order.

    ``duration_s`` (set by :func:`finish_trial`) runs from the job's start until its result
    is ready; the recording is timed in ``timings`` (``save_s``, ``mlflow_s``, ``store_s``)."""
    extra_done: dict[str, Any] = {"error": res.error}
    if out is not None:
        try:
            t = time.perf_counter()
            folder = weights_dir(home, p.dataset, p.ms.name, p.key)
            info = {"model": p.ms.name, "spec": p.spec, "dataset": p.dataset, "data": data.ref,
                    "data_fingerprint": p.fingerprint, "classes": [str(c) for c in data.class_names],
                    "hparams": p.config.hparams(), "job_id": p.job_id, "val_accuracy": out["value"],
                    "curve": out["curve"], "best_epoch": out["best_epoch"], "feature_dim": out["feature_dim"],
                    "layout": "head/<param>: new linear head; backbone/<param>: fine-tuned backbone state dict "
                              "(full mode only)"}
            wpath = save_weights(folder, out["state"], info)
            res.timings["save_s"] = time.perf_counter() - t
            res.status, res.value, res.curve = "completed", float(out["value"]), out["curve"]
            res.best_epoch, res.weights, res.error = out["best_epoch"], str(wpath), None
            extra_done = {"curve": out["curve"], "train_loss": out["train_loss"], "best_epoch": out["best_epoch"],
                          "weights": str(wpath), "n_train": out["n_train"], "n_val": out["n_val"]}
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the job is failed, not left running
            res.status, res.value, res.error = "failed", None, _reason(exc)
            extra_done = {"error": res.error}
    if mlflow:
        start = p.mlflow_start.result() if p.mlflow_start is not None else None
        t = time.perf_counter()
        res.mlflow_run, err = _log_mlflow(tracking_uri=tracking_uri, home=home, res=res, data=data,
                                          extra={**p.extra, **extra_done, "elapsed_s": t - p.t0},
                                          run_id=start.run_id if start is not None else None)
        res.timings["mlflow_s"] = time.perf_counter() - t + (start.seconds if start is not None else 0.0)
        extra_done["mlflow_run"] = res.mlflow_run
        if err:
            extra_done["mlflow_error"] = err
    t = time.perf_counter()
    res.timings["total_s"] = res.duration_s
    extra_done["timings"] = res.timings
    store.finish_job(p.job_id, status=res.status, value=res.value, duration_s=res.duration_s, extra=extra_done)
    res.timings["store_s"] = p.t_store + time.perf_counter() - t
    return res


class _Bookkeeper:
    """One background thread per process for the MLflow runs and final store writes of trials."""

    def __init__(self):
        self._pool = None

    def submit(self, fn, *args):
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-bookkeeping")
        return self._pool.submit(fn, *args)


_BOOKKEEPER = _Bookkeeper()


def _can_background(store) -> bool:
    """An in-memory SQLite store lives in one connection of one thread: record it in line."""
    url = getattr(getattr(store, "engine", None), "url", None)
    return url is not None and not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


def wait_background(futures: list) -> None:
    """Wait for the recordings handed to the bookkeeping thread; re-raise the first error."""
    first = None
    for f in futures:
        try:
            f.result()
        except BaseException as exc:  # noqa: BLE001 - wait for all of them, then raise
            first = first or exc
    futures.clear()
    if first is not None:
        raise first


def run_trial(store, spec: str, dataset: str, data: TaskData, config: TrialConfig, *, home=None, device="auto",
              mlflow: bool = True, tracking_uri=None, source: str = SOURCE, tags: dict | None = None,
              progress=None, adapter=None) -> TrialResult:
    """Run (or reuse) one trial of ``spec`` on ``data`` and record it; never leaves a half-written job.

    ``spec`` is a model spec string (see :mod:`features.extract`), or, with ``adapter`` given
    (any adapter, e.g. ``TorchAdapter(module, name)`` for an in-memory ``nn.Module``), just the
    model's name.

    A completed trial with the same model spec, dataset, data fingerprint and hyper-parameters
    is reused. A running job of this trial whose process is gone is marked failed first.
    Errors in training are recorded as a failed job and returned (``status="failed"``);
    ``KeyboardInterrupt`` is recorded and re-raised.
    """
    p = prepare_trial(store, spec, dataset, data, config, adapter=adapter, source=source, tags=tags)
    if isinstance(p, TrialResult):
        return p
    out, error = None, None
    try:
        out = train_classifier(adapter or load_adapter(p.ms), data, config, device=device, progress=progress)
    except KeyboardInterrupt:
        store.finish_job(p.job_id, status="failed", duration_s=time.perf_counter() - p.t0,
                         extra={"error": "interrupted (KeyboardInterrupt)"})
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed job with its message
        error = _reason(exc)
        log.debug("trial failed", exc_info=True)
    return finish_trial(store, p, data, out, error, home=home, mlflow=mlflow, tracking_uri=tracking_uri)


def run_trials(store, executor, trials: list, dataset: str, data: TaskData, *, home=None, device="auto",
               mlflow: bool = True, tracking_uri=None, tags: dict | None = None, resources=None,
               progress=None, on_result=None, background: list | None = None,
               prefetch=None) -> list[TrialResult]:
    """Run ``trials`` (a list of ``(spec, TrialConfig)``) with ``executor``: one task per trial.

    The driver (this process) starts every job in the store, the tasks only train, and the
    driver saves the weights and finishes each job as its result comes back, so that a task
    retried after a lost worker still makes one job. The MLflow run and the job's final write
    go to the bookkeeping thread (see :func:`finish_trial`) while the next trial trains; they
    are all written before this returns (or raises), unless ``background`` (a list) is given:
    then the recordings still running are appended to it and the caller calls
    :func:`wait_background` on it before it reads the store or returns (a caller that runs
    one call after the other, like ``search``, so overlaps the last trial's recording with its
    next call's training). ``progress(spec, epoch, acc)`` only works in process (the local
    executor). ``on_result(TrialResult)`` is called as each trial ends. Returns the results
    in the order of ``trials``. ``prefetch`` (in process only): model specs the *next* call will
    probably need (e.g. ``search``'s likely next pick), loaded on a thread while this call trains
    (:func:`prefetch_models`).
    """
    out: list = [None] * len(trials)
    pending, tasks = {}, []
    later = background if background is not None else []
    data = data.snapshot()  # the fingerprint (a stat of every image file) once for the whole call
    stale = fail_stale(store, dataset)
    bg = _can_background(store)
    if mlflow and stale:  # a killed process's trials: their MLflow runs were left RUNNING
        orphans = _mlflow_orphans(tracking_uri, home, stale)
        if orphans:
            _mlflow_abort(tracking_uri, home, orphans)
    completed = completed_trials(store, dataset)
    preloader = None
    try:
        for i, (spec, cfg) in enumerate(trials):
            p = prepare_trial(store, spec, dataset, data, cfg, tags=tags, check_stale=False, completed=completed)
            if isinstance(p, TrialResult):
                out[i] = p
                if on_result:
                    on_result(p)
                continue
            key = f"{i}:{p.key}"
            pending[key] = (i, p)
            kw = {"device": device, "key": p.key}
            if executor.in_process and progress is not None:
                kw["progress"] = (lambda e, a, s=spec: progress(s, e, a))
            tasks.append(Task(key, train_trial, (spec, data, cfg), kw, resources or Resources()))
        if executor.in_process and tasks:  # the next trial's model loads while this one trains
            preloader = _Preloader([t.args[0] for t in tasks], data.kind)
            for n, t in enumerate(tasks):
                t.kwargs["preload"] = functools.partial(_begin, preloader, n, pending[t.key][1], data,
                                                        mlflow and bg, tracking_uri, home)
        if executor.in_process and prefetch:
            prefetch_models(list(prefetch), data.kind)
        for o in executor.map(tasks, progress=not executor.in_process, desc="trials"):
            i, p = pending.pop(o.key)
            # the jobs are all started up front: a trial's duration runs from its task's start (plus its
            # start write), not from when it was queued behind the others
            p.t0 = max(p.t0, time.perf_counter() - float(o.seconds or 0.0) - p.t_store)
            out[i] = finish_trial(store, p, data, o.value if o.ok else None, None if o.ok else o.error, home=home,
                                  mlflow=mlflow, tracking_uri=tracking_uri, background=later)
            if on_result:
                on_result(out[i])
        if background is None:
            wait_background(later)
    except BaseException as exc:  # interrupted, or the executor itself failed (e.g. the cluster went away)
        try:
            wait_background(later)  # the trials already finished are recorded first
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.debug("recording a finished trial failed", exc_info=True)
        why = "interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt) else f"executor: {_reason(exc)}"
        started = []  # the MLflow runs created at their trials' start
        for _, p in pending.values():
            store.finish_job(p.job_id, status="failed", duration_s=time.perf_counter() - p.t0, extra={"error": why})
            if p.mlflow_start is not None:
                try:
                    run_id = p.mlflow_start.result().run_id
                except Exception:  # noqa: BLE001 - _mlflow_start does not raise; nothing to end
                    run_id = None
                if run_id:
                    started.append(run_id)
        if started:
            _mlflow_abort(tracking_uri, home, started, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if preloader is not None:
            preloader.close()
    return out


def _begin(preloader: _Preloader, n: int, p: PendingTrial, data: TaskData, mlflow: bool, tracking_uri, home):
    """At the start of task ``n`` (in process): its MLflow run is created on the bookkeeping
    thread (the run spans the trial; only its end is left for after training), and its model
    comes from the preloader."""
    if mlflow:
        p.mlflow_start = _BOOKKEEPER.submit(_mlflow_start, tracking_uri, home, p, data, int(time.time() * 1000))
    return preloader.adapter(n)


def finetune_model(store, spec: str, dataset: str, data: TaskData, grid: list[TrialConfig], **kw) -> list[TrialResult]:
    """Run every config of ``grid`` for one model (one adapter load); see :func:`run_trial`."""
    adapter = None
    out = []
    for cfg in grid:
        if adapter is None:
            try:
                adapter = load_adapter(parse_model_spec(spec))
            except Exception:  # noqa: BLE001 - reported by run_trial as a failed job
                adapter = None
        out.append(run_trial(store, spec, dataset, data, cfg, adapter=adapter, **kw))
    return out


def best_of(results: list[TrialResult]) -> TrialResult | None:
    done = [r for r in results if r.status == "completed" and r.value is not None]
    return max(done, key=lambda r: r.value or 0.0) if done else None  # r.value is set on every one of done
