"""One meaning per flag across the whole CLI (every sub-command, plugin commands included).

Builds the real argparse tree -- ``recommender.cli.build_parser()`` plus the commands that
pyproject registers in the ``recommender.commands`` entry-point group -- and checks that a long
flag has the same destination, kind (switch / value / counter) and type in every command, that a
short flag always stands for the same long flag, and that every renamed flag's old spelling still
works, hidden, with one deprecation line on stderr, and is listed in CHANGELOG.md.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import pytest

from features.featurizer import GROUP_HELP, GROUPS
from recommender.cli import main
from recommender.commands.flags import DeprecatedFlag
from tests.helpers import full_parser, plugin_commands

REPO = Path(__file__).resolve().parents[2]

#: flags that were ambiguous once: their help must keep saying this (one meaning, in words)
MEANING = {
    "--features": "feature groups",
    "--format": "output format",
    "--input-format": "input format",
    "--from": "local folder",
    "--json": "json",
    "--target-rule": "target",
}


def walk(parser, path=()):
    """(command path, parser) for every parser of the tree, leaves and groups."""
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                yield from walk(p, path + (name,))


def kind(a: argparse.Action) -> str:
    if isinstance(a, DeprecatedFlag):
        return {"store_true": "switch"}.get(a.kind, "value")
    if isinstance(a, argparse._CountAction):
        return "counter"
    if a.nargs == 0:
        return "switch"
    return "value"


def signature(a: argparse.Action):
    return a.dest, kind(a), getattr(a.type, "__name__", repr(a.type))


@pytest.fixture(scope="module")
def tree():
    return [(p, parser) for p, parser in walk(full_parser()) if p]


def options(tree, *, deprecated=False):
    for path, parser in tree:
        for a in parser._actions:
            if a.option_strings and isinstance(a, DeprecatedFlag) == deprecated and a.dest != "help":
                yield path, parser, a


def test_tree_has_every_command_and_the_plugins(tree):
    names = {p[0] for p, _ in tree}
    assert {"train", "predict", "score", "search", "finetune", "history", "demo", "ui"} <= names
    assert set(plugin_commands()) <= names  # evaluate, report
    assert {"import", "export", "stats", "pull", "list-models", "show"} <= {p[1] for p, _ in tree if len(p) > 1}


def test_each_long_flag_has_one_meaning(tree):
    seen = defaultdict(lambda: defaultdict(list))
    for path, _, a in options(tree):
        for s in a.option_strings:
            if s.startswith("--"):
                seen[s][signature(a)].append(" ".join(path))
    bad = {flag: {str(sig): cmds for sig, cmds in sigs.items()} for flag, sigs in seen.items() if len(sigs) > 1}
    assert not bad, f"long flags with several meanings (dest, kind, type) -> commands: {bad}"


def test_ambiguous_once_flags_say_their_one_meaning(tree):
    bad = []
    for path, _, a in options(tree):
        for flag, words in MEANING.items():
            if flag in a.option_strings and words not in (a.help or "").lower():
                bad.append(f"{' '.join(path)} {flag}: help {a.help!r} does not say {words!r}")
    assert not bad, "\n".join(bad)


def test_a_short_flag_is_always_the_same_long_flag(tree):
    seen = defaultdict(set)
    for _, _, a in options(tree):
        longs = [s for s in a.option_strings if s.startswith("--")]
        for s in a.option_strings:
            if not s.startswith("--") and s != "-h":
                seen[s].add(longs[0] if longs else "")
    bad = {s: sorted(v) for s, v in seen.items() if len(v) > 1 or "" in v}
    assert not bad, f"short flags meaning different long flags: {bad}"


def test_features_help_lists_every_featurizer_group(tree):
    found = 0
    for path, _, a in options(tree):
        if "--features" in a.option_strings:
            found += 1
            for g in GROUPS:
                assert f"{g} ({GROUP_HELP[g]})" in a.help, f"{' '.join(path)} --features help misses group {g}"
    assert found >= 2  # train, evaluate


def test_train_help_shows_every_group(capsys):
    with pytest.raises(SystemExit):
        full_parser().parse_args(["train", "--help"])
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    for g in GROUPS:
        assert f" {g} (" in out


# ----------------------------------------------------------------------------- deprecated spellings
def _value(a: argparse.Action) -> str:
    if a.choices:
        return str(list(a.choices)[0])
    return "1" if a.type in (int, float) else "x.npz"


def _argv_for(path, parser, target: argparse.Action, spelling: str) -> list[str]:
    """A minimal valid command line of ``path`` that uses ``target`` through ``spelling``."""
    argv = list(path)
    groups = [g for g in parser._mutually_exclusive_groups if g.required]
    for a in parser._actions:
        if a is target or a.dest == target.dest or a.help == argparse.SUPPRESS:
            continue
        if any(a in g._group_actions for g in groups):
            continue
        if a.required:
            argv += ([a.option_strings[0]] if a.option_strings else []) + [_value(a)]
    for g in groups:
        if not any(a.dest == target.dest for a in g._group_actions):
            first = next(a for a in g._group_actions if a.help != argparse.SUPPRESS)
            argv += [first.option_strings[0], _value(first)]
    argv.append(spelling)
    if kind(target) == "value":
        argv.append(_value(target))
    return argv


def deprecated_flags(tree):
    out = []
    for path, parser, a in options(tree, deprecated=True):
        new = next(b for b in parser._actions if a.new in b.option_strings)
        for old in a.option_strings:
            out.append((path, parser, a, new, old))
    return out


def test_there_are_deprecated_spellings_and_they_are_hidden(tree, capsys):
    deps = deprecated_flags(tree)
    assert {(" ".join(p), old) for p, _, _, _, old in deps} >= {
        ("score", "--features"), ("evaluate", "--json"), ("evaluate", "--rule"), ("evaluate", "--recommenders"),
        ("history import", "--format"), ("demo", "--data")}
    for path, parser, a, new, old in deps:
        assert a.help == argparse.SUPPRESS
        parser.print_help()
        shown = capsys.readouterr().out.replace(new.option_strings[-1], "")
        assert not re.search(re.escape(old) + r"\b(?!-)", shown), \
            f"{' '.join(path)}: {old} shows in --help"


def test_deprecated_spellings_still_work_and_warn_once(tree, capsys):
    parser = full_parser()
    for path, sub, a, new, old in deprecated_flags(tree):
        argv_new = _argv_for(path, sub, new, new.option_strings[-1])
        argv_old = _argv_for(path, sub, new, old)
        ns_new = vars(parser.parse_args(argv_new))
        assert capsys.readouterr().err == ""
        ns_old = vars(parser.parse_args(argv_old))
        err = capsys.readouterr().err.strip().splitlines()
        assert ns_old == ns_new, f"{' '.join(argv_old)} parses differently from {' '.join(argv_new)}"
        assert len(err) == 1 and err[0].startswith(f"warning: {old} is deprecated, use {a.new}"), err


def test_changelog_records_every_rename(tree):
    changelog = (REPO / "CHANGELOG.md").read_text()
    rows = [ln for ln in changelog.splitlines() if ln.startswith("| `")]
    for path, _, a, _, old in deprecated_flags(tree):
        cmd = " ".join(path)
        assert any(f"`{cmd}`" in r and f"`{old}" in r and f"`{a.new}" in r for r in rows), \
            f"CHANGELOG.md has no row for {cmd} {old} -> {a.new}"


def test_old_score_spelling_runs_for_real(tmp_path, capsys):
    """End to end: ``score --features FILE.npz`` (old) scores like ``--features-file``."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "f.npz", labels=y, **{"features/a": rng.normal(size=(30, 4)) + y[:, None],
                                               "features/b": rng.normal(size=(30, 4))})
    db = f"sqlite:///{tmp_path / 'h.db'}"
    rcs = []
    for flag in ("--features", "--features-file"):
        rcs.append(main(["score", "--store", db, "--dataset", "toy", flag, str(tmp_path / "f.npz"),
                         "--methods", "logme", "--format", "json", "--no-progress"]))
        err = capsys.readouterr().err
        assert ("deprecated" in err) == (flag == "--features"), err
    assert rcs == [0, 0]
