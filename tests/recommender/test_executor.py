"""The executor interface without Ray: the local executor, errors, and that the core never imports Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from features.data import save_features_npz
from history.errors import RecommenderError
from recommender.cli import main
from recommender.executor import LocalExecutor, Resources, Task, make_executor

REPO = Path(__file__).resolve().parents[2]


def _square(x):
    return x * x


def _boom(x):
    raise ValueError(f"bad input {x}")


def test_local_executor_returns_results_and_failures_with_their_reason():
    tasks = [Task("a", _square, (3,)), Task("b", _boom, (4,)), Task("c", _square, (), {"x": 5})]
    out = list(LocalExecutor().map(tasks, progress=True))
    assert [o.key for o in out] == ["a", "b", "c"]
    assert out[0].ok and out[0].value == 9 and out[2].value == 25
    assert not out[1].ok and out[1].error == "ValueError: bad input 4" and out[1].value is None
    assert all(o.seconds >= 0 for o in out)


def test_executor_choice_errors_are_clear():
    with pytest.raises(RecommenderError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(RecommenderError, match="--address is for --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(RecommenderError, match=">= 0"):
        Resources(num_gpus=-1).check()
    with pytest.raises(RecommenderError, match="max-retries"):
        make_executor("ray", max_retries=-1)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"})


def test_the_core_never_imports_ray():
    code = """
import sys
import recommender.cli, recommender.executor, recommender.finetune, recommender.search
import recommender.commands.score, recommender.commands.search
from recommender.cli import build_parser
from recommender.executor import LocalExecutor, Task
build_parser()
assert [o.value for o in LocalExecutor().map([Task("a", abs, (-2,))])] == [2]
bad = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("RAY" if bad else "NO-RAY", bad[:3])
"""
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert "NO-RAY" in r.stdout, r.stdout


def test_ray_executor_without_ray_installed_is_one_clear_error():
    r = _python("""
import sys
sys.modules["ray"] = None  # as if the [ray] extra were not installed
from recommender.executor import RayExecutor
from history.errors import RecommenderError
try:
    RayExecutor("auto").describe()
except RecommenderError as e:
    print("ERR", e)
""")
    assert r.returncode == 0, r.stderr
    assert "ERR --executor ray needs Ray: pip install 'finetune-recommender[ray]'" in r.stdout


def test_an_unreachable_cluster_is_one_clear_error_before_anything_is_written(home, tmp_path, capsys):
    import socket

    import numpy as np

    pytest.importorskip("ray")
    rng = np.random.default_rng(0)
    npz = save_features_npz(tmp_path / "f.npz", labels=rng.integers(0, 3, 60),
                            features={"a": rng.normal(size=(60, 5))})
    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["--home", str(home), "score", "--dataset", "x", "--features-file", str(npz), "--executor", "ray",
               "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Ray cluster" in err and len(err.strip().splitlines()) == 1
    assert not (home / "history.db").exists()
