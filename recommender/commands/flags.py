"""Shared flag helpers: one meaning per flag across every sub-command.

* :func:`renamed` keeps an old spelling of a renamed flag working for one release: hidden from
  ``--help``, it stores into the new flag's destination and prints one deprecation line on stderr.
  Every rename is listed in CHANGELOG.md.
* :func:`features_help` builds the ``--features`` help from the featurizer's groups
  (:mod:`features.groups`), so a new group shows up in every command's help.
"""
from __future__ import annotations

import argparse
import sys

from features.groups import groups_help


class DeprecatedFlag(argparse.Action):
    """A hidden old spelling of a renamed flag: warns on stderr, then acts as the new flag."""

    def __init__(self, option_strings, dest, *, new: str, kind: str = "store", **kw):
        self.new, self.kind = new, kind
        if kind == "store_true":
            kw["nargs"] = 0
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated, use {self.new} (the old spelling will be removed "
              "in the next release)", file=sys.stderr)
        if self.kind == "store_true":
            values = True
        elif self.kind == "append":
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "store_true"
    if isinstance(action, argparse._AppendAction):
        return "append"
    if isinstance(action, argparse._StoreAction):
        return "store"
    raise TypeError(f"renamed(): unsupported action {type(action).__name__}")


def renamed(container, old: str | list[str], new: argparse.Action) -> argparse.Action:
    """Add the old spelling(s) ``old`` of the flag ``new`` (the action ``add_argument`` returned).

    ``container`` is the parser, or the group (mutually exclusive or not) ``new`` belongs to."""
    olds = [old] if isinstance(old, str) else list(old)
    long_name = max(new.option_strings, key=len)
    kw = {"dest": new.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS,
          "action": DeprecatedFlag, "new": long_name, "kind": _kind(new)}
    if kw["kind"] != "store_true":
        kw.update(type=new.type, choices=new.choices, metavar=new.metavar)
    return container.add_argument(*olds, **kw)


def features_help(default: str, *, repeatable: bool = False) -> str:
    """Help of ``--features``: the feature groups, generated from :mod:`features.groups`."""
    text = f"feature groups, comma-separated: {groups_help()}"
    if repeatable:
        text += "; repeatable or ';'-separated for several feature sets, e.g. --features 'd,m;d,m,s'"
    return text + f" (default: {default})"
