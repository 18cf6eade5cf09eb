"""Shared fixtures. Tests never touch the network: hub calls fail fast offline."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="recommender-tests-"))
os.environ["RECOMMENDER_HOME"] = str(_SESSION_TMP / "home")
os.environ["XDG_DATA_HOME"] = str(_SESSION_TMP / "xdg-data")

# the project's modules load after the environment above is set
from history.store import HistoryStore  # noqa: E402
from recommender.cli import main  # noqa: E402
from tests.helpers import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECOMMENDER_DATA", REPO.parent / "shared" / "data")).resolve()
# Screenshots of the browser test: under the temp folder unless RECOMMENDER_TEST_ARTIFACTS names one
# (CI may set it to keep them); the test run writes nothing into the checkout.
ARTIFACTS = Path(os.environ.get("RECOMMENDER_TEST_ARTIFACTS")
                 or Path(tempfile.gettempdir()) / "finetune-recommender-test-artifacts")


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
    def run(*args):
        rc = main(["--home", str(home), *map(str, args)])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture()
def store(home):
    s = HistoryStore(f"sqlite:///{home / 'history.db'}")
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


#: the Debian package postgresql-15 (tests/history/test_postgres.py, tests/recommender/test_executor_ray.py)
PG_BIN = Path(os.environ.get("RECOMMENDER_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="module")
def pg_url():
    """A real PostgreSQL 15 server on a free local port, for this test module (skips without the binaries)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql-15)")
    as_root = os.geteuid() == 0
    if as_root:
        import pwd

        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no 'postgres' user to run the server as")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="recommender-pg-", dir="/tmp"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if as_root:
        for p in (root, sock):
            os.chown(p, pg_user.pw_uid, pg_user.pw_gid)
    port = free_port()

    def pg(*args, **kw):
        return subprocess.run(prefix + list(map(str, args)), capture_output=True, text=True, timeout=120, **kw)

    r = pg(PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
           "--no-instructions")
    assert r.returncode == 0, f"initdb failed: {r.stderr}"
    r = pg(PG_BIN / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o",
           f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off")
    if r.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr}\n{text}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
