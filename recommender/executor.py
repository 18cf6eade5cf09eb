"""Run independent tasks in this process or on a Ray cluster.

A :class:`Task` is a pure, module-level function with its arguments and the resources it
asks for. :meth:`Executor.map` runs a list of tasks and yields one :class:`Outcome` per
task as the tasks finish (not in submission order). Results come back to the caller (the
*driver*), which alone writes the history store and MLflow.

``LocalExecutor`` (the default) runs the tasks one after the other in this process; it never
imports Ray. ``RayExecutor`` submits every task to a Ray cluster with its resource request
(CPUs, GPUs or a GPU fraction). A task whose worker process or node is lost is retried by
Ray up to ``max_retries`` times; an exception raised by the task itself is not retried (it
would fail again) and, like a task whose retries ran out, comes back as a failed outcome
with its reason. Ray is imported only when a ``RayExecutor`` starts (``pip install
'finetune-recommender[ray]'``).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from history.errors import RecommenderError
from history.util import exception_reason as _reason

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Resources:
    """What one task asks for: CPUs and GPUs (a fraction shares a GPU between tasks)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def check(self) -> Resources:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise RecommenderError(f"task resources must be >= 0, got {self.num_cpus} CPU, {self.num_gpus} GPU")
        return self


@dataclass
class Task:
    key: str  # unique within one map() call; names the task in progress and errors
    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)


@dataclass
class Outcome:
    key: str
    ok: bool
    value: object = None
    error: str | None = None  # "ExceptionType: message" when not ok
    seconds: float = 0.0  # from submission to result, as seen by the driver


class _Progress:
    """tqdm bar of the tasks: done, running, failed."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.done = self.failed = self.running = 0
        self.bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="task", leave=False)

    def update(self, *, running: int, finished: Outcome | None = None):
        self.running = running
        if finished is not None:
            self.done += finished.ok
            self.failed += not finished.ok
        if self.bar is not None:
            if finished is not None:
                self.bar.update(1)
            self.bar.set_postfix_str(f"done {self.done}, running {self.running}, failed {self.failed}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Executor:
    name = "base"
    in_process = False

    def map(self, tasks: Iterable[Task], *, progress: bool = False, desc: str = "tasks") -> Iterator[Outcome]:
        raise NotImplementedError

    def run(self, tasks, **kw) -> dict:
        """All outcomes, by task key."""
        return {o.key: o for o in self.map(tasks, **kw)}

    def shutdown(self):
        pass

    def describe(self) -> str:
        return self.name


class LocalExecutor(Executor):
    """The tasks one after the other, in this process (no Ray)."""

    name = "local"
    in_process = True

    def map(self, tasks, *, progress=False, desc="tasks"):
        tasks = list(tasks)
        bar = _Progress(len(tasks), desc, progress)
        try:
            for t in tasks:
                bar.update(running=1)
                t0 = time.perf_counter()
                try:
                    out = Outcome(t.key, True, t.fn(*t.args, **t.kwargs))
                except Exception as exc:  # noqa: BLE001 - a failing task is an outcome, not a crash
                    out = Outcome(t.key, False, error=_reason(exc))
                out.seconds = time.perf_counter() - t0
                bar.update(running=0, finished=out)
                yield out
        finally:
            bar.close()


class RayExecutor(Executor):
    """Tasks on a Ray cluster: ``address`` is ``auto`` (the cluster this machine belongs to),
    ``HOST:PORT`` (a head node's GCS) or ``ray://HOST:PORT`` (Ray Client); ``None`` starts
    a private local instance. ``max_retries`` bounds the retries of a task whose worker died.
    """

    name = "ray"

    def __init__(self, address: str | None = "auto", *, max_retries: int = 2, runtime_env: dict | None = None):
        if int(max_retries) < 0:
            raise RecommenderError(f"--max-retries must be >= 0, got {max_retries}")
        self.address, self.max_retries, self.runtime_env = address, int(max_retries), runtime_env
        self._ray = None
        self._started = False
        self._stdout = None
        self._remote: dict = {}

    def _init(self):
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise RecommenderError("--executor ray needs Ray: pip install 'finetune-recommender[ray]' "
                                   "(ray==2.60.0)") from None
        if not ray.is_initialized():
            _check_reachable(self.address)
            kw = {"log_to_driver": False, "logging_level": "ERROR"}
            if self.runtime_env:
                kw["runtime_env"] = self.runtime_env
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RecommenderError(f"cannot connect to the Ray cluster at {self.address!r}: {_reason(exc)}; "
                                       "start one with `ray start --head` or pass --address HOST:PORT") from None
            self._started = True
        # Ray prints its own diagnostics ("(raylet) A worker died ...") to sys.stdout from a background
        # thread: send them to stderr while the executor is up, so that stdout stays ours (--format json)
        self._stdout, sys.stdout = sys.stdout, sys.stderr
        self._ray = ray
        return ray

    def describe(self) -> str:
        ray = self._init()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        res = ray.cluster_resources()
        return (f"ray ({len(nodes)} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"
                f"{'' if self.address in (None, 'auto') else ' at ' + self.address})")

    def _remote_of(self, fn):
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn]

    def map(self, tasks, *, progress=False, desc="tasks"):
        ray = self._init()
        from ray.exceptions import RayTaskError

        tasks = list(tasks)
        shared: dict = {}  # id(arg) -> ObjectRef: a big argument shared by tasks is sent once

        def ref(a):
            if isinstance(a, (str, int, float, bool, type(None))):
                return a
            if id(a) not in shared:
                shared[id(a)] = (ray.put(a), a)  # keep ``a`` alive so that its id is not reused
            return shared[id(a)][0]

        pending, started = {}, {}
        for t in tasks:
            r = t.resources.check()
            opts = {"num_cpus": r.num_cpus, "max_retries": self.max_retries, "retry_exceptions": False}
            if r.num_gpus:
                opts["num_gpus"] = r.num_gpus
            obj = self._remote_of(t.fn).options(**opts).remote(*[ref(a) for a in t.args],
                                                               **{k: ref(v) for k, v in t.kwargs.items()})
            pending[obj] = t
            started[t.key] = time.perf_counter()
        bar = _Progress(len(tasks), desc, progress)
        bar.update(running=len(pending))
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for obj in done:
                    t = pending.pop(obj)
                    try:
                        out = Outcome(t.key, True, ray.get(obj))
                    except RayTaskError as exc:  # the task raised: report the task's own error
                        cause = getattr(exc, "cause", None)
                        out = Outcome(t.key, False, error=_reason(cause) if cause is not None else _reason(exc))
                    except Exception as exc:  # noqa: BLE001 - worker/node lost after the retries, cancelled, ...
                        out = Outcome(t.key, False, error=f"{_reason(exc)} (after {self.max_retries} retries)")
                    out.seconds = time.perf_counter() - started[t.key]
                    bar.update(running=len(pending), finished=out)
                    yield out
        finally:
            bar.close()
            for obj in pending:  # the caller stopped early: do not leave work running for nobody
                try:
                    ray.cancel(obj, force=True)
                except Exception:  # noqa: BLE001
                    pass

    def shutdown(self):
        if self._ray is not None and self._started:
            self._ray.shutdown()
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None
        self._ray, self._started, self._remote = None, False, {}


def _check_reachable(address, timeout: float = 5.0):
    """A HOST:PORT address that nothing listens on is one clear error now, not minutes of retries."""
    import socket

    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RecommenderError(f"invalid Ray address {address!r}; use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RecommenderError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); is "
                               "`ray start --head` running there, and is the port open?") from None


def make_executor(name: str = "local", *, address: str | None = None, max_retries: int = 2) -> Executor:
    """The executor for ``--executor NAME [--address A]``."""
    if name == "local":
        if address:
            raise RecommenderError("--address is for --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address or "auto", max_retries=max_retries)
    raise RecommenderError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")


def add_executor_args(p, *, what: str = "task"):
    """``--executor``, ``--address``, ``--max-retries``, ``--cpus-per-task``, ``--gpus-per-task``."""
    g = p.add_argument_group("executor")
    g.add_argument("--executor", default="local", choices=EXECUTORS,
                   help=f"local (default: one {what} after the other in this process) or ray (one Ray task per "
                        f"{what}; needs the [ray] extra)")
    g.add_argument("--address", default=None,
                   help="Ray cluster address: auto (default), HOST:PORT, or ray://HOST:PORT (Ray Client)")
    g.add_argument("--max-retries", type=int, default=2,
                   help="retries of a Ray task whose worker was lost (default 2)")
    g.add_argument("--cpus-per-task", type=float, default=1.0, help=f"CPUs one {what} asks for (default 1)")
    g.add_argument("--gpus-per-task", type=float, default=0.0,
                   help=f"GPUs one {what} asks for; 1 = one {what} per GPU, 0.5 = two share a GPU (default 0)")


def executor_from_args(args) -> tuple[Executor, Resources]:
    ex = make_executor(getattr(args, "executor", "local") or "local", address=getattr(args, "address", None),
                       max_retries=getattr(args, "max_retries", 2))
    res = Resources(getattr(args, "cpus_per_task", 1.0), getattr(args, "gpus_per_task", 0.0)).check()
    return ex, res
