"""Where things live: the home folder, the store URL and the MLflow tracking URI.

Resolution order for each setting: explicit argument > environment variable > default.

* home folder: ``--home`` / ``RECOMMENDER_HOME`` / ``./.recommender``
* history store: ``--store`` / ``RECOMMENDER_STORE`` / ``sqlite:///<home>/history.db``
* MLflow tracking: ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` / ``sqlite:///<home>/mlflow.db``
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".recommender"


def resolve_home(home: str | os.PathLike | None = None, create: bool = True) -> Path:
    path = Path(home or os.environ.get("RECOMMENDER_HOME") or DEFAULT_HOME).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_store_url(store: str | None = None, home: str | os.PathLike | None = None) -> str:
    url = store or os.environ.get("RECOMMENDER_STORE")
    if url:
        if "://" not in url:  # a bare path means a SQLite file
            return f"sqlite:///{Path(url).expanduser().resolve()}"
        return url
    return f"sqlite:///{resolve_home(home) / 'history.db'}"


def resolve_tracking_uri(uri: str | None = None, home: str | os.PathLike | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{resolve_home(home) / 'mlflow.db'}"


def artifact_root(home: str | os.PathLike | None = None) -> Path:
    path = resolve_home(home) / "mlartifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir(home: str | os.PathLike | None = None) -> Path:
    path = resolve_home(home) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(home: str | os.PathLike | None = None) -> Path:
    path = resolve_home(home) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
