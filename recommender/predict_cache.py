"""What ``predict`` reuses between calls, under ``<home>/cache/predict`` (parquet + JSON, no pickle).

Building the history context (:class:`features.history_frame.HistoryFrame`) reads every job of
the store (about 1 s on a store holding all public sources); it changes only when the store
does. :func:`cached_context` keeps it per (store content fingerprint, source, regime, target
rule, metric), with the few facts ``predict`` derives from the whole store (the models with
results only outside the context). :func:`load_calibrations` / :func:`save_calibrations` keep
the kernel weights of :mod:`recommender.adaptive` (a pure function of the history matrix,
keyed by its hash there).

The fingerprint of a SQLite store is the size, modification time and header of its database
file and of its write-ahead log (an empty log counts as none): any committed write changes one
of them (two writes within one tick of the file system's clock, ~ms, with a predict call
between them, are the one case it could miss). Other databases are
not cached (``store_fingerprint`` returns None), nor is a store whose file cannot be read.
A cache entry that cannot be read is rebuilt; one that cannot be written is skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from features.history_frame import HistoryFrame
from history.config import cache_dir

from . import adaptive
from .model_io import DEFAULT_ORDER, models_root, saved_recommenders

#: bump when the cached layout or what is derived from the store changes
VERSION = 1
#: context entries kept (the most recently used)
KEEP = 6
_TABLES = ("targets", "models", "datasets", "scores")
_EXTRA = "elsewhere"  # an optional frame derived from the whole store, cached beside the context


def cache_root(home=None) -> Path:
    return Path(cache_dir(home)) / "predict"


def _file_sig(p: Path, head: int) -> str | None:
    try:
        st = p.stat()
        with open(p, "rb") as f:
            h = f.read(head)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{h.hex()}"


def store_fingerprint(store) -> str | None:
    """A string that changes whenever the content of a SQLite store file changes; None otherwise."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(str(store.url))
        if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" \
                or u.database.startswith("file:"):
            return None
        db = Path(u.database).expanduser().resolve()
    except Exception:  # noqa: BLE001 - an unusual URL is simply not cached
        return None
    main = _file_sig(db, 100)  # the header holds the change counter and page count
    if main is None:
        return None
    wal = _file_sig(db.with_name(db.name + "-wal"), 32)  # the WAL header holds checkpoint number and salts
    if wal is not None and wal.startswith("0:"):
        wal = None  # an empty log (each connection may create one) is no content
    return f"{db}|{main}|{wal}"


def _key(fingerprint: str, source, regime, rule, metric) -> str:
    src = sorted(source) if isinstance(source, (list, tuple, set)) else source
    blob = json.dumps([VERSION, fingerprint, src, regime, rule, metric], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _encode(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Object columns holding anything but strings / None are stored as JSON text."""
    df = df.copy()
    encoded = []
    for c in df.columns:
        if df[c].dtype == object and not all(v is None or isinstance(v, str) for v in df[c]):
            df[c] = [None if v is None or (isinstance(v, float) and v != v) else json.dumps(v, default=str)
                     for v in df[c]]
            encoded.append(str(c))
    return df, encoded


def _decode(df: pd.DataFrame, encoded: list[str]) -> pd.DataFrame:
    for c in encoded:
        df[c] = pd.Series([json.loads(v) if isinstance(v, str) else None for v in df[c]], index=df.index, dtype=object)
    return df


def _read(folder: Path):
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("version") != VERSION:
        return None
    frames = {t: _decode(pd.read_parquet(folder / f"{t}.parquet"), meta["encoded"].get(t, [])) for t in _TABLES}
    hist = object.__new__(HistoryFrame)  # the frames were normalized by HistoryFrame before they were written
    for t, df in frames.items():
        setattr(hist, t, df)
    derived = dict(meta["derived"])
    if (folder / f"{_EXTRA}.parquet").is_file():
        derived[_EXTRA] = pd.read_parquet(folder / f"{_EXTRA}.parquet")
    return hist, derived


def _write(folder: Path, hist, derived: dict) -> None:
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        encoded = {}
        for t in _TABLES:
            df, encoded[t] = _encode(getattr(hist, t))
            df.to_parquet(tmp / f"{t}.parquet", index=False)
        derived = dict(derived)
        extra = derived.pop(_EXTRA, None)
        if extra is not None:
            extra.to_parquet(tmp / f"{_EXTRA}.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps({"version": VERSION, "encoded": encoded, "derived": derived}))
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process wrote it first, or the disk is full
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def cached_context(store, build, *, source, regime, rule, metric, home=None):
    """``build()`` -> (HistoryFrame, derived dict), read from the cache when the store has not changed.

    Returns ``(hist, derived, hit)``; ``hit`` says whether the cache answered."""
    fp = store_fingerprint(store)
    if fp is None:
        hist, derived = build()
        return hist, derived, False
    folder = cache_root(home) / _key(fp, source, regime, rule, metric)
    if (folder / "meta.json").is_file():
        try:
            got = _read(folder)
            if got is not None:
                os.utime(folder)  # most recently used
                return got[0], got[1], True
        except Exception:  # noqa: BLE001 - a damaged entry is rebuilt
            shutil.rmtree(folder, ignore_errors=True)
    hist, derived = build()
    if store_fingerprint(store) == fp:  # not written while we read it
        try:
            _write(folder, hist, derived)
        except OSError:
            pass
    return hist, derived, False


def load_calibrations(home=None) -> None:
    """Add the kernel weights saved by earlier calls to :mod:`recommender.adaptive`'s memo."""
    try:
        saved = json.loads((cache_root(home) / "calibration.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(saved, dict):
        for k, v in saved.items():
            if isinstance(v, dict) and k not in adaptive._CALIBRATED:
                adaptive._CALIBRATED[k] = {str(a): float(b) for a, b in v.items()}


def save_calibrations(home=None, known=(), keep: int = 64) -> None:
    """Write the memo when it holds weights not in ``known`` (the keys it had when loaded)."""
    if not set(adaptive._CALIBRATED) - set(known):
        return
    path = cache_root(home) / "calibration.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        items = list(adaptive._CALIBRATED.items())[-keep:]
        tmp = path.with_name(f".calibration.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(dict(items)))
        os.replace(tmp, path)
    except OSError:
        pass


# ---------------------------------------------------------------------- the prior of a dataset
def peek_saved(name, home=None):
    """``(name, training info)`` of the saved recommender ``predict`` would load, read from its
    ``training.json`` alone (no model loaded); None when it must be loaded to know (or to fail)."""
    try:
        saved = saved_recommenders(home)
    except OSError:
        return None
    n = name if name is not None else next((x for x in DEFAULT_ORDER if x in saved), None)
    if n is None or n not in saved or not saved[n] or saved[n].get("corrupt"):
        return None
    return n, saved[n]


def model_signature(name: str, home=None) -> str | None:
    """Changes whenever a file of the saved recommender ``name`` does (size, modification time)."""
    folder = models_root(home) / name
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        parts = [f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    except OSError:
        return None
    return hashlib.sha256("|".join(parts).encode()).hexdigest() if parts else None


def prior_key(store, name: str, home, ctx: dict, dataset: str, pool) -> str | None:
    fp, sig = store_fingerprint(store), model_signature(name, home)
    if fp is None or sig is None:
        return None
    blob = json.dumps([VERSION, fp, sig, name, ctx["source"], ctx["regime"], ctx["rule"], ctx["metric"], dataset,
                       list(pool)], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_prior(key: str | None, home=None):
    """``(prior, std or None)`` saved under ``key``, or None."""
    import numpy as np

    if key is None:
        return None
    path = cache_root(home) / "priors" / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            prior, std = z["prior"].copy(), z["std"].copy()
            has_std = bool(z["has_std"])
    except (OSError, ValueError, KeyError):
        return None
    return prior, (std if has_std else None)


def save_prior(key: str | None, prior, std, home=None, keep: int = 256) -> None:
    import numpy as np

    if key is None:
        return
    folder = cache_root(home) / "priors"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{uuid.uuid4().hex[:8]}.npz"
        np.savez(tmp, prior=np.asarray(prior, dtype=float),
                 std=np.asarray(std if std is not None else [], dtype=float), has_std=std is not None)
        os.replace(tmp, folder / f"{key}.npz")
        files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
