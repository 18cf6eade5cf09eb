"""Where things live: the home folder, the store URL and the MLflow tracking URI.

Resolution order for each setting: explicit argument > environment variable > default.

* home folder: ``--home`` / ``RECOMMENDER_HOME`` / ``./.recommender`` **if that folder
  already exists in the current directory** / else the per-user data folder of the platform
  (``platformdirs.user_data_dir("finetune-recommender")``: ``~/.local/share/finetune-recommender``
  on Linux, ``~/Library/Application Support/finetune-recommender`` on macOS,
  ``%LOCALAPPDATA%\\finetune-recommender`` on Windows). So one user has one home wherever
  they run the tool; a project keeps its own by creating ``./.recommender`` (or naming it).
* history store: ``--store`` / ``RECOMMENDER_STORE`` / ``sqlite:///<home>/history.db``
* MLflow tracking: ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` / ``sqlite:///<home>/mlflow.db``

Resolving a setting never creates anything: the home folder is created by the first command
that writes into it (``history import``/``pull``, ``score``, ``train`` saving a model, ...);
commands that only read (``predict``, ``history stats``/``export``/``list-*``, ``evaluate``)
leave no folder and no empty ``history.db`` behind. A ``--home`` that names a file is an error.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError

#: The project-local home, used when it exists in the current directory.
DEFAULT_HOME = ".recommender"
APP_NAME = "finetune-recommender"
HOME_ENV = "RECOMMENDER_HOME"


def user_home() -> Path:
    """The per-user data folder (platform convention); not created here."""
    try:
        from platformdirs import user_data_dir
    except ModuleNotFoundError:  # pragma: no cover - platformdirs is a dependency
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(base) / APP_NAME
    return Path(user_data_dir(APP_NAME, appauthor=False))


def default_home() -> Path:
    """``./.recommender`` when it exists in the current directory, else :func:`user_home`."""
    local = Path.cwd() / DEFAULT_HOME
    return local if local.is_dir() else user_home()


def home_origin(home: str | os.PathLike | None = None) -> str:
    """How the home was chosen, for messages: '--home', 'RECOMMENDER_HOME', './.recommender' or 'user'."""
    if home:
        return "--home"
    if os.environ.get(HOME_ENV):
        return HOME_ENV
    return DEFAULT_HOME if (Path.cwd() / DEFAULT_HOME).is_dir() else "user"


def resolve_home(home: str | os.PathLike | None = None, create: bool = True) -> Path:
    """The home folder (see the module docstring); ``create``: make it if missing.

    A home that exists but is not a folder is a one-line :class:`StoreError`.
    """
    raw = home or os.environ.get(HOME_ENV)
    path = (Path(raw) if raw else default_home()).expanduser().resolve()
    if path.exists() and not path.is_dir():
        how = "--home" if home else HOME_ENV if raw else "the default home"
        raise StoreError(f"home folder {path} ({how}) is a file, not a folder; point --home or "
                         f"{HOME_ENV} to a folder (it is created if missing)")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the home folder {path}: {exc.strerror or exc}; "
                             f"point --home or {HOME_ENV} to a writable folder") from None
    return path


def resolve_store_url(store: str | None = None, home: str | os.PathLike | None = None) -> str:
    """The history store URL; never creates anything (the store creates its home on a write)."""
    url = store or os.environ.get("RECOMMENDER_STORE")
    if url:
        if "://" not in url:  # a bare path means a SQLite file
            return f"sqlite:///{Path(url).expanduser().resolve()}"
        return url
    return f"sqlite:///{resolve_home(home, create=False) / 'history.db'}"


def store_is_default(store: str | None = None) -> bool:
    """True when the store is ``<home>/history.db`` (no --store / RECOMMENDER_STORE)."""
    return not (store or os.environ.get("RECOMMENDER_STORE"))


def resolve_tracking_uri(uri: str | None = None, home: str | os.PathLike | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{resolve_home(home) / 'mlflow.db'}"


def artifact_root(home: str | os.PathLike | None = None) -> Path:
    path = resolve_home(home) / "mlartifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir(home: str | os.PathLike | None = None, create: bool = True) -> Path:
    path = resolve_home(home, create=create) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(home: str | os.PathLike | None = None) -> Path:
    path = resolve_home(home) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
