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

from history.errors import RecommenderError

COMMAND_MODULES = ["history", "train", "predict", "score", "ui", "demo", "search"]


def common_parent() -> argparse.ArgumentParser:
    """Options every sub-command accepts (also before the sub-command)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--home", default=argparse.SUPPRESS,
                   help="home folder for the default store, MLflow store and saved models "
                        "(env RECOMMENDER_HOME, default ./.recommender)")
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
    sub.parent_parser = parent  # command modules pass parents=[sub.parent_parser]
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
    if args.home:
        os.environ["RECOMMENDER_HOME"] = str(args.home)
    try:
        rc = args.func(args)
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return int(rc or 0)
