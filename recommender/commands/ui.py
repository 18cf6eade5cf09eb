"""``python -m recommender ui``: the MLflow dashboard over the tool's tracking store.

Starts ``mlflow server`` on ``--host``/``--port`` with backend store
``resolve_tracking_uri(--tracking-uri, --home)`` (``sqlite:///<home>/mlflow.db`` by default)
and artifacts under ``<home>/mlartifacts``, prints the URL, and serves until Ctrl-C (or
SIGTERM), then stops the server. The one address it prints (and, in a terminal, opens) is the
runs view of the training experiment ``recommender-training`` in MLflow's machine-learning
workflow (not MLflow's GenAI welcome page), creating the experiment when the store has none yet.
``--no-wait`` leaves the server running in the background and prints its process id instead.
"""
from __future__ import annotations

import signal
import sys

from history.config import artifact_root, resolve_home, resolve_tracking_uri
from recommender.tracking import DEFAULT_EXPERIMENT
from recommender.commands import add_parser
from recommender.mlflow_server import (DEFAULT_START_TIMEOUT, ServerError, ensure_experiment, runs_view_url,
                                       start_server)


def register(sub) -> None:
    p = add_parser(sub, "ui", help="open the MLflow dashboard (training and evaluation runs)",
                   description="Serve the MLflow UI over the tool's tracking store "
                               "(default sqlite:///<home>/mlflow.db, artifacts in <home>/mlartifacts).")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--no-browser", action="store_true",
                   help="do not open the runs view in a web browser (never opened when output is not a terminal)")
    p.add_argument("--no-wait", action="store_true",
                   help="start the server in the background, print its URL and process id, and return")
    p.add_argument("--start-timeout", type=float, default=DEFAULT_START_TIMEOUT,
                   help=f"seconds to wait for the server to answer (default {DEFAULT_START_TIMEOUT:.0f})")
    p.set_defaults(func=run)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise ServerError(f"--port {args.port} is not a TCP port (1-65535)")
    home = resolve_home(args.home)
    uri = resolve_tracking_uri(args.tracking_uri, home)
    artifacts = artifact_root(home)
    log_path = home / "logs" / f"mlflow-ui-{args.port}.log"
    # Ctrl-C (SIGINT, even when started from a shell that ignores it: `cmd &`) and `kill`
    # (SIGTERM) both raise KeyboardInterrupt, so the server is always stopped with us.
    saved: dict = {}
    try:
        for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, _raise_interrupt)):
            saved[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (embedded use): keep the caller's handlers
        pass
    try:
        return _serve(args, uri, artifacts, log_path)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _serve(args, uri, artifacts, log_path) -> int:
    print(f"starting the MLflow UI over {uri} (artifacts {artifacts}) ...", flush=True)
    server = start_server(uri, artifacts, host=args.host, port=args.port, workers=1,
                          log_path=log_path, start_timeout=args.start_timeout, detach=args.no_wait)
    url = server.url
    try:
        exp_id = ensure_experiment(url, DEFAULT_EXPERIMENT, (artifacts / DEFAULT_EXPERIMENT).as_uri())
        landing = runs_view_url(url, exp_id)
    except Exception as exc:  # the dashboard still works from its home page
        print(f"warning: cannot find the {DEFAULT_EXPERIMENT!r} experiment ({exc}); open {url}", file=sys.stderr)
        landing = url
    # One address: the runs view of the training experiment (the server's bare URL opens MLflow's
    # GenAI welcome page instead).
    if args.no_wait:
        print(f"MLflow UI: {landing}\nrunning in the background as process {server.pid}; "
              f"stop it with: kill {server.pid}\nserver log: {log_path}", flush=True)
        return 0
    print(f"MLflow UI: {landing}\n  (the training runs; evaluations are the evaluate/* experiments, in the "
          f"experiment list)\nserver log: {log_path}\npress Ctrl-C to stop", flush=True)
    if not args.no_browser and sys.stdout.isatty():
        import webbrowser

        try:
            webbrowser.open(landing)
        except Exception:  # no browser here: the printed URL is enough
            pass
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        print("stopping the MLflow UI ...", file=sys.stderr, flush=True)
        server.stop()
        print("stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        if server.running():
            server.stop()
    raise ServerError(f"the MLflow server stopped by itself with exit code {code}. "
                      f"Last lines of its log {log_path}:\n{server.log_tail(20)}")
