"""Every flag that a message, hint or help text names exists in a parser (issue: stale hints).

Scans every string literal (not docstrings) of the packages for ``--flag`` tokens and checks
each against the options of ``python -m recommender`` (with its sub-commands) and of the
``python -m experiments.*`` modules' own parsers. Python keyword spellings of CLI options
(``include_food101=True``) are not what a command-line user can type, so messages must not
use them without the flag.
"""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from history.importers.shift import regime_of
from recommender.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("history", "features", "recommender", "experiments")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")
#: Flags of other programs that the code passes on (``mlflow server``).
EXTERNAL = {"--backend-store-uri", "--default-artifact-root", "--artifacts-destination", "--workers",
            "--host", "--port",
            # `ray start` (docs and the Ray executor's hints, the executor benchmark's cluster)
            "--head", "--node-ip-address", "--num-cpus", "--object-store-memory", "--disable-usage-stats",
            "--include-dashboard", "--temp-dir"}


def _parser_options(p, acc):
    for a in p._actions:
        acc.update(a.option_strings)
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                _parser_options(sp, acc)
    return acc


def _strings():
    """(file, line, text, is_add_argument_name) for each non-docstring string literal."""
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text(), str(f))
            skip = set()
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                        and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    skip.add(id(body[0].value))
            names = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                    names.update(id(a) for a in node.args)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                    yield f.relative_to(REPO), node.lineno, node.value, id(node) in names


def _declared():
    have = _parser_options(build_parser(), set())
    for _, _, text, is_name in _strings():
        if is_name and text.startswith("--"):
            have.add(text)
    return have


def test_every_flag_named_in_a_message_exists():
    have = _declared() | EXTERNAL
    stale = [f"{f}:{line}: {flag} in {text[:70]!r}" for f, line, text, _ in _strings()
             for flag in FLAG.findall(text) if flag not in have]
    assert not stale, "messages name flags no parser has:\n" + "\n".join(stale)


def test_messages_do_not_spell_cli_options_as_python_keywords():
    have = _parser_options(build_parser(), set())
    keywords = {o[2:].replace("-", "_") for o in have if o.startswith("--")}
    bad = []
    for f, line, text, _ in _strings():
        for m in re.finditer(r"\b([a-z][a-z0-9_]*)=(True|False)\b", text):
            if m.group(1) in keywords and "--" + m.group(1).replace("_", "-") not in text:
                bad.append(f"{f}:{line}: {m.group(0)} in {text[:70]!r}")
    assert not bad, "name the CLI flag instead:\n" + "\n".join(bad)


def test_help_names_real_regimes():
    """``train --help`` / ``evaluate --help`` name regimes the importers really produce."""
    real = {regime_of(":800"), regime_of(":100%")}
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for a in p._actions:
            if "--regime" in a.option_strings and a.help and "e.g." in a.help:
                named = set(re.findall(r"\b(?:full|vtab[-\w]*)\b", a.help))
                assert named <= real, f"{name} --regime help names {named - real}; real regimes: {real}"


def test_the_scanner_can_fail():
    flags = FLAG.findall("use --from-dir FOLDER or --from FOLDER")
    assert flags == ["--from-dir", "--from"] and "--from-dir" not in _declared()
