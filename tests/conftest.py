"""Shared fixtures. Tests never touch the network: hub calls fail fast offline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("RECOMMENDER_STORE", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Hermetic: nothing the tests run (in-process or as a child process) may write to the real
# per-user home, the developer's ./.recommender or ~/.local/share. Every test process gets a
# fresh default home and XDG data folder under the system temp folder; tests that need their
# own home use the ``home`` fixture (or --home).
import tempfile  # noqa: E402

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="recommender-tests-"))
os.environ["RECOMMENDER_HOME"] = str(_SESSION_TMP / "home")
os.environ["XDG_DATA_HOME"] = str(_SESSION_TMP / "xdg-data")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECOMMENDER_DATA", REPO.parent / "shared" / "data")).resolve()
# Screenshots of the browser test: under the temp folder unless RECOMMENDER_TEST_ARTIFACTS names one
# (CI may set it to keep them); the test run writes nothing into the checkout.
ARTIFACTS = Path(os.environ.get("RECOMMENDER_TEST_ARTIFACTS")
                 or Path(__import__("tempfile").gettempdir()) / "finetune-recommender-test-artifacts")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public histories (../shared/data). CI always has them; a missing folder is an error."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real histories not found at {SHARED_DATA}; set RECOMMENDER_DATA")
    return SHARED_DATA


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home folder, also exported as RECOMMENDER_HOME."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("RECOMMENDER_HOME", str(h))
    return h


@pytest.fixture()
def cli(home, capsys):
    """``cli(*args) -> (rc, stdout, stderr)``: the CLI in process, on the test's home."""
    from recommender.cli import main

    def run(*args):
        rc = main(["--home", str(home), *map(str, args)])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture()
def store(home):
    from history.store import HistoryStore

    s = HistoryStore(f"sqlite:///{home / 'history.db'}")
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
