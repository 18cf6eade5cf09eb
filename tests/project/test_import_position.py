"""Imports of the project's own modules sit at the top of each file (issue 22).

In history/, features/, recommender/ and experiments/, an ``import`` of a project module inside a
function or method hides the dependency graph from readers and from the cycle test. The one
exception: the imported module loads a heavy optional dependency (torch, mlflow, ray, lightgbm) at
import time, and the line says so with a trailing ``# lazy: torch`` (or mlflow / ray / lightgbm).
In tests/, a deliberate function-level import (a test of import behaviour, an import after some
set-up) carries ``# lazy: <reason>``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("history", "features", "recommender", "experiments")
HEAVY = ("torch", "mlflow", "ray", "lightgbm")


def _project_module(node: ast.AST) -> str | None:
    """The project module an import statement names, or None for any other import."""
    if isinstance(node, ast.ImportFrom):
        if node.level > 0:
            return "." * node.level + (node.module or "")
        names = [node.module or ""]
    elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        return None
    hits = [n for n in names if n.split(".")[0] in PROJECT]
    return hits[0] if hits else None


def function_level_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, the `# lazy:` reason or '') for each project import inside a function."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = set()
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            module = _project_module(node)
            if module is not None:
                line = lines[node.lineno - 1]
                reason = line.split("# lazy:", 1)[1].strip() if "# lazy:" in line else ""
                found.add((node.lineno, module, reason))
    return sorted(found)


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


@pytest.mark.parametrize("package", PROJECT)
def test_source_imports_at_top(package):
    bad = []
    for path in _files(package):
        for line, module, reason in function_level_imports(path):
            if reason.split()[:1] and reason.split()[0].strip(",;") in HEAVY:
                continue
            bad.append(f"{path.relative_to(REPO)}:{line} imports {module} inside a function"
                       + (f" (`# lazy: {reason}` names no heavy dependency)" if reason else ""))
    assert not bad, "move these imports to the top of the file:\n" + "\n".join(bad)


def test_test_imports_at_top_or_explained():
    bad = [f"{path.relative_to(REPO)}:{line} imports {module} inside a function without `# lazy: <reason>`"
           for path in _files("tests") for line, module, reason in function_level_imports(path) if not reason]
    assert not bad, "\n".join(bad)


def test_checker_sees_a_function_level_import(tmp_path):
    """The checker itself: it finds a nested import, reads its reason, and ignores other packages."""
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom history import util\n\n"
                   "def f():\n    from recommender.pyfunc import x  # lazy: mlflow\n    import json\n"
                   "    class C:\n        def g(self):\n            from . import base\n")
    assert function_level_imports(src) == [(5, "recommender.pyfunc", "mlflow"), (9, ".", "")]
