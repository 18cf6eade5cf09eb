"""Files split at their seams: no module of the packages over 800 lines, no function over 120.

A file or function past these sizes holds several things that are read, tested and changed
separately; split it along its sections (a package of modules, a function of named steps).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("history", "features", "recommender", "experiments")
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 120


def _file_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def _long_functions(path: Path):
    """``(line, qualified name, lines)`` of every function or method over the limit (nested ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    n = child.end_lineno - first + 1
                    if n > MAX_FUNCTION_LINES:
                        yield child.lineno, name, n
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _offenders(package: str, root: Path = REPO) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root)
        n = _file_lines(path)
        if n > MAX_FILE_LINES:
            bad.append(f"{rel}:1 has {n} lines (max {MAX_FILE_LINES})")
        for line, name, size in _long_functions(path):
            bad.append(f"{rel}:{line} {name} has {size} lines (max {MAX_FUNCTION_LINES})")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_files_and_functions_are_small(package):
    bad = _offenders(package)
    assert not bad, f"{len(bad)} too long in {package}/ (split them at their seams):\n" + "\n".join(bad)


def test_the_check_finds_a_long_function_and_a_long_file(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (pkg / "m.py").write_text(f"class C:\n    def long(self):\n{body}\n        return 0\n" + "\n" * MAX_FILE_LINES)
    (pkg / "ok.py").write_text("def short():\n    return 1\n")
    assert _offenders("pkg", tmp_path) == [
        f"pkg/m.py:1 has {MAX_FUNCTION_LINES + 3 + MAX_FILE_LINES} lines (max {MAX_FILE_LINES})",
        f"pkg/m.py:2 C.long has {MAX_FUNCTION_LINES + 2} lines (max {MAX_FUNCTION_LINES})",
    ]
