"""One direction of flow: history -> features -> recommender -> experiments.

Parses every module's imports (including lazy ones inside functions) and fails if a
package imports one that is downstream of it.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ORDER = ["history", "features", "recommender", "experiments"]


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("package", ORDER)
def test_no_upstream_package_imports_downstream(package):
    downstream = set(ORDER[ORDER.index(package) + 1:])
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for mod, line in _imports(path):
            if mod in downstream:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {mod}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_layering_check_detects_a_violation(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from experiments import report\n")
    assert ("experiments", 2) in list(_imports(f))


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash dev.sh test" in readme
    assert "\nbash dev.sh test\n" in ci
