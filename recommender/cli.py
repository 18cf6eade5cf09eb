"""``python -m recommender``: the single entry point.

Sub-commands live in ``recommender/commands/<name>.py``; each module exposes
``register(subparsers)`` which adds its parser(s) and sets ``func(args) -> int``.
Downstream packages (``experiments``) add theirs through the ``recommender.commands``
entry-point group, so this package never imports them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

from history.config import resolve_home
from history.errors import NotFoundError, RecommenderError
from history.store._open import _is_corrupt, _is_full, _safe_url, corrupt_message, full_message, sqlite_path

COMMAND_MODULES = ["history", "train", "predict", "score", "ui", "demo", "search"]


def common_parent() -> argparse.ArgumentParser:
    """Options every sub-command accepts (also before the sub-command)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--home", default=argparse.SUPPRESS,
                   help="home folder for the default store, MLflow store and saved models "
                        "(env RECOMMENDER_HOME; default ./.recommender where that folder exists, else the "
                        "per-user data folder, e.g. ~/.local/share/finetune-recommender)")
    g.add_argument("--store", default=argparse.SUPPRESS,
                   help="history store SQLAlchemy URL or SQLite path (env RECOMMENDER_STORE, "
                        "default sqlite:///<home>/history.db)")
    g.add_argument("--tracking-uri", default=argparse.SUPPRESS,
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI, default sqlite:///<home>/mlflow.db)")
    g.add_argument("--lock-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                   help="how long a write waits for another process writing the same SQLite store "
                        "(env RECOMMENDER_LOCK_TIMEOUT, default 600)")
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    return p


def build_parser() -> argparse.ArgumentParser:
    parent = common_parent()
    parser = argparse.ArgumentParser(
        prog="python -m recommender",
        description="Which pretrained model should I fine-tune on my dataset? Learns from the "
                    "history of past fine-tuning jobs and ranks a model zoo for a new dataset.",
        parents=[parent],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.parent_parser = parent  # type: ignore[attr-defined]  # an attribute argparse lacks; command modules pass parents=[sub.parent_parser]
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"recommender.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"recommender.commands.{name}":
                continue
            raise
        mod.register(sub)
    for ep in entry_points(group="recommender.commands"):
        try:
            ep.load()(sub)
        except ModuleNotFoundError as exc:  # downstream package missing: command not offered
            logging.getLogger(__name__).debug("command plugin %s unavailable: %s", ep.name, exc)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for k in ("home", "store", "tracking_uri", "lock_timeout"):
        if not hasattr(args, k):
            setattr(args, k, None)
    verbose = getattr(args, "verbose", 0) or 0
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.home:
            resolve_home(args.home, create=False)  # a file named as home: one line
            os.environ["RECOMMENDER_HOME"] = str(args.home)
        rc = args.func(args)
    except RecommenderError as exc:
        print(f"error: {_named(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        _quiet_sigint()
        msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "interrupted"
        print(msg, file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - last resort for faults of the store or the disk
        line = _fault_line(exc, args)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _quiet_sigint() -> None:
    """A second Ctrl-C while we report the first one must not print a traceback."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread
        pass


def _named(exc: RecommenderError, args) -> str:
    """A 'not found' error about the store's content names the store it looked in (password masked);
    one about a name of the tool (a recommender, a protocol, ...) is left as it is."""
    msg = str(exc)
    url = getattr(args, "_store_url", None)
    low = msg.lower()
    about_store = any(w in low for w in ("store", "source", "dataset", "model named", "job")) and "public" not in low
    if isinstance(exc, NotFoundError) and url and about_store:
        shown = _safe_url(url)
        p = sqlite_path(url)
        if shown not in msg and (p is None or str(p) not in msg):
            msg = f"{msg.rstrip()} (history store: {shown})"
    return msg


def _fault_line(exc: Exception, args) -> str | None:
    """One line for a corrupt store or a full disk met outside the store's own checks; None: a bug."""
    import errno

    from sqlalchemy.exc import DatabaseError

    url = getattr(args, "_store_url", None)
    if isinstance(exc, DatabaseError) or type(exc).__name__ == "DatabaseError":
        if _is_corrupt(exc) and url:
            return corrupt_message(url, exc)
        if _is_full(exc) and url:
            return full_message(url, exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on the disk{where}; free some space and run the command again"
    return None
