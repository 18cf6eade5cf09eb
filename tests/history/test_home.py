"""One home per user (issue 21, item 2): where the default home is, and that reads create nothing.

Each test points the per-user data folder (``XDG_DATA_HOME``, what ``platformdirs`` reads on
Linux) and the current directory into ``tmp_path``, so nothing touches the real user folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from history.config import default_home, resolve_home, resolve_store_url, user_home
from history.store import HistoryStore
from recommender.cli import main


@pytest.fixture()
def no_home(tmp_path, monkeypatch) -> Path:
    """No --home / RECOMMENDER_HOME, an empty cwd, and a per-user data folder under tmp_path;
    returns the per-user home the tool should use (not created)."""
    monkeypatch.delenv("RECOMMENDER_HOME", raising=False)
    monkeypatch.delenv("RECOMMENDER_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return user_home()


def _one_error(capsys, rc) -> str:
    cap = capsys.readouterr()
    assert rc == 2, (cap.out, cap.err)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    return lines[0]


def _csv(path: Path, n: int = 6) -> Path:
    path.write_text("model,dataset,accuracy\n" + "".join(f"m{i % 3},d{i % 2},0.{i + 1}\n" for i in range(n)))
    return path


def test_default_home_is_the_per_user_data_folder(no_home, tmp_path):
    from platformdirs import user_data_dir

    assert no_home == Path(user_data_dir("finetune-recommender", appauthor=False))
    if sys.platform.startswith("linux"):
        assert no_home == tmp_path / "xdg" / "finetune-recommender"
    assert default_home() == no_home
    assert resolve_home(create=False) == no_home.resolve()
    assert resolve_store_url() == f"sqlite:///{no_home.resolve() / 'history.db'}"
    assert not no_home.exists()  # resolving creates nothing


def test_local_dot_recommender_only_when_it_exists(no_home, tmp_path, monkeypatch):
    local = Path.cwd() / ".recommender"
    assert default_home() == no_home  # not there: the per-user folder, never a new ./.recommender
    local.mkdir()
    assert resolve_home(create=False) == local.resolve()
    monkeypatch.setenv("RECOMMENDER_HOME", str(tmp_path / "env-home"))
    assert resolve_home(create=False) == (tmp_path / "env-home").resolve()  # the environment wins
    assert resolve_home(tmp_path / "flag-home", create=False) == (tmp_path / "flag-home").resolve()  # --home wins


def test_import_creates_the_per_user_home(no_home, tmp_path, capsys):
    assert main(["history", "import", str(_csv(tmp_path / "a.csv"))]) == 0
    assert (no_home / "history.db").is_file()
    assert not (Path.cwd() / ".recommender").exists()
    assert main(["history", "stats"]) == 0
    assert f"store: sqlite:///{no_home.resolve() / 'history.db'}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["history", "stats"],
    ["history", "list-models"],
    ["history", "show", "model", "m1"],
    ["history", "export", "OUT"],
    ["predict", "--dataset", "d1"],
    ["train", "--recommender", "lr", "--no-mlflow"],
    ["evaluate", "--protocol", "lodo"],
])
def test_read_commands_create_no_store_and_no_home(no_home, tmp_path, capsys, argv):
    argv = [str(tmp_path / "out.csv") if a == "OUT" else a for a in argv]
    line = _one_error(capsys, main(argv))
    assert f"no history store at {no_home.resolve() / 'history.db'}" in line
    assert "history import" in line  # says how to fill it
    assert not no_home.exists()  # no home folder, no empty history.db
    assert not (Path.cwd() / ".recommender").exists() and not (tmp_path / "out.csv").exists()


def test_read_commands_on_an_explicit_home_create_nothing(tmp_path, capsys):
    home = tmp_path / "h"
    line = _one_error(capsys, main(["--home", str(home), "history", "stats"]))
    assert str(home / "history.db") in line and "--home" in line
    assert not home.exists()


def test_train_on_an_empty_store_leaves_no_history_db(home, capsys):
    rc = main(["train", "--recommender", "lr", "--no-mlflow"])
    assert rc == 2 and not (home / "history.db").exists()
    capsys.readouterr()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_home_naming_a_file_is_one_line(tmp_path, capsys, monkeypatch, how):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    if how == "env":
        monkeypatch.setenv("RECOMMENDER_HOME", str(f))
        argv = ["history", "import", str(_csv(tmp_path / "a.csv"))]
    else:
        argv = ["--home", str(f), "history", "stats"]
    line = _one_error(capsys, main(argv))
    assert str(f) in line and "is a file, not a folder" in line
    assert f.read_text() == "x"


def test_not_found_errors_name_the_store(home, tmp_path, capsys):
    assert main(["history", "import", str(_csv(tmp_path / "a.csv"))]) == 0
    capsys.readouterr()
    db = str(home / "history.db")
    for argv in (["history", "show", "model", "nope"], ["history", "show", "dataset", "nope"],
                 ["history", "list-models", "--source", "nope"]):
        line = _one_error(capsys, main(argv))
        assert db in line, line


def test_store_url_password_is_masked(capsys):
    url = "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:9/hist"
    line = _one_error(capsys, main(["--store", url, "history", "stats"]))
    assert "s3cret-pw" not in line and "127.0.0.1:9/hist" in line


def test_write_then_read_use_the_same_store(home, tmp_path, capsys):
    """A store written by import is what every read command reads (no second, empty store)."""
    assert main(["history", "import", str(_csv(tmp_path / "a.csv"))]) == 0
    assert main(["history", "stats", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"jobs": 6' in out
    s = HistoryStore(f"sqlite:///{home / 'history.db'}")
    try:
        assert s.stats()["totals"]["jobs"] == 6
    finally:
        s.dispose()
