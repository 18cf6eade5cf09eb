"""The ``python -m recommender ...`` command lines of the docs still work.

Reads whatever command lines README.md and docs/*.md contain (fenced blocks: bash, sh, console
or no language; a leading ``$ `` and ``\\`` continuations are understood), so rewriting the docs
needs no change here:

* every line is checked against the real argparse tree (plugins included): an unknown
  sub-command or flag, or a deprecated spelling, fails. A synopsis line (``[--top 10]``,
  ``X|Y``, ``<name>``) is checked flag by flag;
* the command lines of README.md and docs/usage.md are also run, in order, against one small
  store (the TransferGraph image history from the local mirror, with ``lr`` trained), unless
  they need the network, a GPU, files the docs only name, or a long run (``skip_reason``). A
  line followed by ``error: ...`` in the docs must fail with that error.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.commands.flags import DeprecatedFlag
from tests.helpers import full_parser

REPO = Path(__file__).resolve().parents[2]
PARSE_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_DOCS = [REPO / "README.md", REPO / "docs" / "usage.md"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
#: sub-commands never run here, and why (each has its own tests)
SKIP = {
    "score": "extracts features with models and images the docs only name (tests/recommender/test_score_cli.py)",
    "search": "fine-tunes models: long, wants a GPU (tests/recommender/test_finetune_search.py)",
    "finetune": "fine-tunes models: long, wants a GPU (tests/recommender/test_finetune_search.py)",
    "ui": "starts a server and waits (tests/recommender/test_ui_browser.py)",
    "demo": "runs the whole demo on the full history, tens of seconds (tests/recommender/test_train_predict_cli.py)",
    "evaluate": "minutes on a real history (tests/experiments/test_evaluate_cli.py)",
    "report": "reruns every benchmark: long (experiments/report.py)",
    "history enrich": "reads timm's model cards (tests/history/test_enrich_cli.py)",
}
PLACEHOLDER = re.compile(r"[\[\]|<>]|\.\.\.")


def command_lines(doc: Path) -> list[tuple[int, list[str], str | None]]:
    """``(line number, argv after 'python -m recommender', expected error or None)``."""
    out = []
    lines = doc.read_text().splitlines()
    in_block, lang, i = False, "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            in_block, lang = (not in_block), line[3:].strip()
            i += 1
            continue
        text = line.strip().removeprefix("$ ")
        if in_block and lang in SHELL_LANGS and text.startswith("python -m recommender"):
            start = i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            expected = nxt[len("error: "):] if nxt.startswith("error: ") else None
            argv = shlex.split(text, comments=True)[3:]
            out.append((start + 1, argv, expected))
        i += 1
    return out


def cases(docs):
    return [pytest.param(doc, argv, expected, id=f"{doc.name}:{n}")
            for doc in docs for n, argv, expected in command_lines(doc)]


@pytest.fixture(scope="module")
def parser():
    return full_parser()


def _subparser(parser, argv):
    """The parser of the sub-command named at the start of ``argv``, and the rest of ``argv``."""
    words = []
    while argv and not argv[0].startswith("-"):
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or argv[0] not in sub.choices:
            break
        parser = sub.choices[argv[0]]
        words.append(argv.pop(0))
    return parser, words, argv


def test_the_docs_have_command_lines():
    assert len(cases(RUN_DOCS)) >= 10


@pytest.mark.parametrize("doc, argv, expected", cases(PARSE_DOCS))
def test_command_line_parses(parser, doc, argv, expected, capsys):
    sub, words, rest = _subparser(parser, list(argv))
    if PLACEHOLDER.search(" ".join(rest)) or any(re.fullmatch(r"[A-Z][A-Z_]*", t) for t in rest):
        flags = {a: o for a in sub._actions for o in a.option_strings}
        known = {o: a for a in sub._actions for o in a.option_strings}
        for tok in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(rest)):
            assert tok in known, f"{doc.name}: '{' '.join(words)} {tok}': no such flag"
            assert not isinstance(known[tok], DeprecatedFlag), f"{doc.name}: {tok} is deprecated: use {known[tok].new}"
        assert flags is not None
        return
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 0, f"{doc.name}: `python -m recommender {' '.join(argv)}` no longer parses: {err}"
    err = capsys.readouterr().err
    assert "deprecated" not in err, f"{doc.name}: `python -m recommender {' '.join(argv)}`: {err}"


def skip_reason(argv) -> str | None:
    words = [w for w in argv if not w.startswith("-")][:2]
    for key in (" ".join(words), words[0] if words else ""):
        if key in SKIP:
            return SKIP[key]
    if words and words[0] == "history" and words[1:] == ["pull"] and "--from" not in argv:
        return "downloads from the network"
    if words[:1] == ["train"] and ("all" in argv or "lr" not in " ".join(argv)):
        return "trains recommenders with 5-fold CV on the full history (minutes); `train -r lr` lines run"
    for tok in argv:
        if ("/" in tok or re.search(r"\.(csv|parquet|npz|pt|json)$", tok)) and "=" not in tok \
                and not tok.startswith(("-", "sqlite:", "http")) and not (REPO / tok).exists():
            return f"names a file the docs do not ship ({tok})"
    return None


@pytest.fixture(scope="module")
def doc_home(tmp_path_factory, shared_data):
    """One home with the TransferGraph image history and a trained ``lr``, for every run."""
    home = tmp_path_factory.mktemp("docs") / "home"
    assert main(["--home", str(home), "history", "pull", "transfergraph-image", "--from", str(shared_data)]) == 0
    assert main(["--home", str(home), "train", "-r", "lr", "--no-mlflow", "--cv-folds", "0"]) == 0
    return home


@pytest.mark.slow
@pytest.mark.parametrize("doc, argv, expected", cases(RUN_DOCS))
def test_command_line_runs(doc_home, doc, argv, expected, monkeypatch, capsys):
    if PLACEHOLDER.search(" ".join(argv)) or any(re.fullmatch(r"[A-Z][A-Z_]*", t) for t in argv):
        pytest.skip("a synopsis line (placeholders), checked by test_command_line_parses")
    why = skip_reason(argv)
    if why:
        pytest.skip(why)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RECOMMENDER_HOME", str(doc_home))
    monkeypatch.delenv("RECOMMENDER_STORE", raising=False)
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # --help
        rc = exc.code
    err = capsys.readouterr().err
    if expected is None:
        assert rc == 0, f"{doc.name}: `python -m recommender {' '.join(argv)}` failed ({rc}): {err}"
    else:
        head = re.split(r"[.;]", expected)[0]
        assert rc != 0 and head in err, f"{doc.name}: expected `error: {head}...`, got rc {rc}: {err}"
