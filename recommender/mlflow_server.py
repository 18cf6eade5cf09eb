"""Start and stop an ``mlflow server`` (tracking REST API + web UI) as a child process.

The server runs over the same stores as the rest of the tool:

* backend store: a SQLAlchemy database URI, by default ``sqlite:///<home>/mlflow.db``
  (``mlflow server`` refuses the plain-folder ``./mlruns`` store, so a folder is rejected
  here with an actionable message);
* artifacts: ``<home>/mlartifacts`` given both as ``--default-artifact-root`` (where new
  experiments created through the server put their artifacts, as ``file://`` paths, just like
  runs logged by the client straight into the SQLite store) and as ``--artifacts-destination``
  (what ``mlflow-artifacts:/`` URIs resolve to when the server proxies artifacts).

Usage::

    with mlflow_server("sqlite:////path/mlflow.db", "/path/mlartifacts", port=5000) as server:
        print(server.url)        # answers /health by now
        server.process.wait()    # until the server exits or Ctrl-C

:func:`mlflow_server` waits until ``GET /health`` answers 200 and, on leaving the block, stops
the server by terminating the top ``mlflow server`` process (it forwards the signal to its
uvicorn worker and waits for it), waiting, and killing it after a timeout.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from history.errors import RecommenderError

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 15.0


class ServerError(RecommenderError):
    """The MLflow server cannot be started (bad store URI, port in use, crash at start)."""


@dataclass
class ServerHandle:
    """A running ``mlflow server``: its URL, process and log file."""

    url: str
    process: subprocess.Popen
    log_path: Path
    command: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
        """Terminate the server (see :func:`stop_process`); returns its exit code."""
        return stop_process(self.process, timeout)


# ---------------------------------------------------------------------------------------------
# checks


def check_backend_uri(uri: str) -> str:
    """Return ``uri`` if ``mlflow server`` can serve it, else raise :class:`ServerError`.

    Accepts SQLAlchemy database URIs (``sqlite:///``, ``postgresql://``, ``mysql://``,
    ``mssql://``, with an optional ``+driver``). For SQLite the folder must exist.
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https", "databricks"):
        raise ServerError(
            f"the MLflow tracking URI {uri!r} is already a tracking server; open it in a browser "
            "instead of starting one, or pass --tracking-uri sqlite:///<path>/mlflow.db")
    if scheme not in DATABASE_SCHEMES:
        raise ServerError(
            f"cannot serve the MLflow tracking store {uri!r}: the dashboard needs a database "
            "store (the plain-folder ./mlruns store is refused by `mlflow server`); pass "
            "--tracking-uri sqlite:///<path>/mlflow.db or unset MLFLOW_TRACKING_URI to use "
            "sqlite:///<home>/mlflow.db")
    if scheme == "sqlite":
        rest = uri.split("://", 1)[1].split("?", 1)[0]  # sqlite:///<path>: '/' + path
        if rest.startswith("/") and rest not in ("/", "/:memory:"):
            db = Path(rest[1:]).expanduser()
            if not db.parent.resolve().is_dir():
                raise ServerError(
                    f"the folder of the MLflow SQLite store {uri!r} does not exist "
                    f"({db.parent}); create it or pass another --tracking-uri")
    return uri


def port_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` cannot be bound because another socket listens there.

    SO_REUSEADDR as uvicorn sets it, so that connections of a just-stopped server lingering in
    TIME_WAIT do not count as "in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: str | os.PathLike, n: int = 20) -> str:
    """The last ``n`` lines of a log file ('' when it does not exist)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def serving(url: str, timeout: float = 2.0) -> bool:
    """True when ``<url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# start / stop


def build_command(backend_store_uri: str, artifact_root: str | os.PathLike, *, host: str = "127.0.0.1",
                  port: int = 5000, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line (run with this interpreter)."""
    root = Path(artifact_root).expanduser().resolve()
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", root.as_uri(),
            "--artifacts-destination", str(root),
            "--host", host, "--port", str(int(port)), "--workers", str(int(workers))]


def server_env(base: dict | None = None) -> dict:
    """Environment of the server: job execution off (it spawns an executor and slows start)."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; [] elsewhere)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return kids


def stop_process(proc: subprocess.Popen, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
    """Terminate ``proc`` (SIGTERM: ``mlflow server`` forwards it to uvicorn), wait ``timeout`` s,
    then kill it and the children it leaves (by pid). Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    kids = _children(proc.pid)
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    kids = sorted(set(kids) | set(_children(proc.pid)))
    for pid in kids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    return proc.wait(timeout)


def wait_until_serving(url: str, proc: subprocess.Popen, log_path: Path,
                       timeout: float = DEFAULT_START_TIMEOUT) -> None:
    """Poll ``<url>/health`` until it answers; raise :class:`ServerError` with the log tail if
    the process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(_start_failure(f"`mlflow server` exited with code {proc.returncode} "
                                             "before serving", log_path))
        if serving(url, timeout=2.0):
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise ServerError(_start_failure(f"`mlflow server` did not answer {url}/health within "
                                     f"{timeout:.0f} s", log_path))


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*)$")


def _start_failure(what: str, log_path: Path) -> str:
    """Message for a server that did not come up: the last error line, a hint, the log tail."""
    tail = log_tail(log_path, 20)
    errors = [m.group(1) for m in map(_ERROR_LINE.match, log_tail(log_path, 200).splitlines()) if m]
    cause = f": {errors[-1]}" if errors else ""
    hint = ""
    if "address already in use" in tail.lower():
        hint = " (the port is already in use: choose another one with --port)"
    return f"{what}{cause}{hint}. Last lines of its log {log_path}:\n{tail or '(empty log)'}"


def start_server(backend_store_uri: str, artifact_root: str | os.PathLike, *, host: str = "127.0.0.1",
                 port: int = 5000, workers: int = 1, log_path: str | os.PathLike | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT, detach: bool = False,
                 env: dict | None = None) -> ServerHandle:
    """Start ``mlflow server`` and return once it serves (the caller must stop it).

    ``detach=True`` starts it in its own session so that it outlives the caller (and a Ctrl-C
    in the caller's terminal). Raises :class:`ServerError` for a bad store URI, a port in use,
    or a server that exits or hangs at start (the message ends with the log tail).
    """
    check_backend_uri(backend_store_uri)
    if port_in_use(host, port):
        raise ServerError(f"port {port} on {host} is already in use (another MLflow UI?); "
                          f"choose a free one with --port, e.g. --port {free_port(host)}")
    root = Path(artifact_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else root.parent / "logs" / f"mlflow-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(backend_store_uri, root, host=host, port=port, workers=workers)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=server_env(env), start_new_session=detach)
    probe_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
    if ":" in probe_host and not probe_host.startswith("["):
        probe_host = f"[{probe_host}]"
    handle = ServerHandle(url=f"http://{probe_host}:{port}", process=proc, log_path=log_path, command=cmd)
    try:
        wait_until_serving(handle.url, proc, log_path, start_timeout)
    except BaseException:
        stop_process(proc)
        raise
    return handle


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifact_root: str | os.PathLike, *, host: str = "127.0.0.1",
                  port: int = 5000, workers: int = 1, log_path: str | os.PathLike | None = None,
                  start_timeout: float = DEFAULT_START_TIMEOUT,
                  stop_timeout: float = DEFAULT_STOP_TIMEOUT, env: dict | None = None) -> Iterator[ServerHandle]:
    """Context manager: a serving ``mlflow server`` that is stopped on exit, even on error."""
    handle = start_server(backend_store_uri, artifact_root, host=host, port=port, workers=workers,
                          log_path=log_path, start_timeout=start_timeout, env=env)
    try:
        yield handle
    finally:
        handle.stop(stop_timeout)


#: MLflow 3 opens an experiment in its GenAI view unless told it is a model-training one.
ML_WORKFLOW = "workflowType=machine_learning"
ML_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(url: str, name: str, artifact_location: str, timeout: float = 30.0) -> str:
    """The id of experiment ``name`` on the server at ``url``, created (as a model-training
    experiment with ``artifact_location``) when missing. Uses the REST API: no mlflow import."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    base = url.rstrip("/") + "/api/2.0/mlflow/experiments"
    q = urllib.parse.urlencode({"experiment_name": name})
    try:
        with urllib.request.urlopen(f"{base}/get-by-name?{q}", timeout=timeout) as r:
            return str(json.loads(r.read())["experiment"]["experiment_id"])
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise ServerError(f"the MLflow server at {url} cannot look up experiment {name!r}: {exc}") from None
    body = json.dumps({"name": name, "artifact_location": artifact_location,
                       "tags": [{"key": ML_KIND_TAG[0], "value": ML_KIND_TAG[1]}]}).encode()
    req = urllib.request.Request(f"{base}/create", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return str(json.loads(r.read())["experiment_id"])
    except urllib.error.HTTPError:  # created meanwhile by a training run: look it up again
        with urllib.request.urlopen(f"{base}/get-by-name?{q}", timeout=timeout) as r:
            return str(json.loads(r.read())["experiment"]["experiment_id"])


def runs_view_url(url: str, experiment_id: str) -> str:
    """The runs page (model-training view) of one experiment in the MLflow UI, in its chart
    layout: the run names on the left and one chart per metric, so the metrics are on screen
    (the table layout puts its metric columns right of six fixed columns, off-screen)."""
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}&compareRunsMode=CHART"

