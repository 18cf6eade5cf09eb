"""Saving and loading trained recommenders under ``<home>/models`` (``train`` writes, ``predict`` reads).

:func:`save_atomic` writes a recommender to a temporary folder next to ``<home>/models/<name>/``
with ``training.json``, loads it back (and checks it predicts the same numbers), then swaps it in;
a failure leaves the previous model untouched. :func:`update_index` records the latest of each
in ``<home>/models/index.json``. :func:`load_saved` reads one back (the first saved one of
:data:`DEFAULT_ORDER` when none is named).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from history.config import models_dir as _models_dir
from history.errors import NotFoundError, RecommenderError, unknown_name_error
from history.util import json_default as _json_default  # noqa: F401  (training imports it from here)

from .defaults import DEFAULT_RECOMMENDER
from .io import load_recommender
from .registry import list_recommenders

log = logging.getLogger(__name__)

#: Preference order for ``predict`` when no recommender is named (first one that is saved).
DEFAULT_ORDER = (DEFAULT_RECOMMENDER, "lgbm", "fm", "lr", "lgbm-rank")
TRAINING_INFO = "training.json"
INDEX_FILE = "index.json"


class SaveError(RecommenderError):
    """A trained recommender could not be written (the previous one is kept)."""


class CorruptModelError(RecommenderError):
    """A saved recommender folder cannot be read back."""


def models_root(home=None) -> Path:
    return _models_dir(home)


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _clean_floats(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def save_atomic(rec, root: Path, name: str, info: dict, check_pairs=None, check_history=None) -> Path:
    """Save ``rec`` as ``root/name`` atomically; return the final folder.

    The recommender is written to a hidden temporary folder next to the target, with
    ``training.json``; it is loaded back (and, given ``check_pairs``, must predict the same
    numbers) before the old folder is moved aside and the new one renamed into place.
    Any failure removes the temporary folder and leaves ``root/name`` as it was.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    old = root / f".{name}.old-{uuid.uuid4().hex[:12]}"
    try:
        rec.save(tmp)
        _write_json_atomic(tmp / TRAINING_INFO, info)
        back = load_recommender(tmp)
        if check_pairs is not None and len(check_pairs):
            a = np.asarray(rec.predict(check_pairs, history=check_history), dtype=float)
            b = np.asarray(back.predict(check_pairs, history=check_history), dtype=float)
            if not np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True):
                raise RecommenderError(f"saved recommender {name!r} does not predict like the fitted one "
                                       f"(max difference {np.nanmax(np.abs(a - b)):.3g}); not saved")
    except RecommenderError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SaveError(f"could not save recommender {name!r} to {final} ({type(exc).__name__}: {exc}); "
                        f"{'the previous model there was left unchanged' if final.exists() else 'nothing was saved'}"
                        ". Check free disk space and permissions of the home folder, then re-run train.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    moved = False
    try:
        if final.exists():
            os.rename(final, old)
            moved = True
        os.rename(tmp, final)
    except BaseException:
        if moved and not final.exists():
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return final


def update_index(root: Path, name: str, info: dict) -> None:
    """Record the latest saved ``name`` in ``root/index.json`` (atomic replace)."""
    path = Path(root) / INDEX_FILE
    try:
        index = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        index = {}
    index[name] = {k: info.get(k) for k in ("trained_at", "store", "source", "regime", "features",
                                            "target_rule", "metrics", "counts", "mlflow")}
    index[name]["path"] = name
    _write_json_atomic(path, index)


def saved_recommenders(home=None) -> dict:
    """``{name: training info}`` of every saved recommender under ``<home>/models``."""
    root = models_root(home)
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            info = p / TRAINING_INFO
            try:
                out[p.name] = json.loads(info.read_text()) if info.is_file() else {}
            except (OSError, ValueError):
                out[p.name] = {"corrupt": True}
    return out


def _recover(root: Path, name: str) -> None:
    """A crash between the two renames of :func:`save_atomic` leaves only ``.name.old-*``."""
    final = root / name
    if final.exists():
        return
    olds = sorted(root.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], final)


def load_saved(name: str | None = None, home=None):
    """(recommender, training info, name) of the saved recommender ``name``.

    ``name=None`` picks the first saved one in :data:`DEFAULT_ORDER`.
    """
    root = models_root(home)
    valid = list(list_recommenders())  # as training.available_recommenders (training imports this module)
    if name is not None and name not in valid:
        raise unknown_name_error("recommender", name, valid)
    for n in ([name] if name else list(DEFAULT_ORDER) + valid):
        _recover(root, n)
    saved = saved_recommenders(home)
    if not saved:
        raise NotFoundError(
            f"no trained recommender found in {root}. Train one first: `python -m recommender train` "
            "(after importing a history, e.g. `python -m recommender history pull transfergraph-image`)."
        )
    if name is None:
        name = next((n for n in list(DEFAULT_ORDER) + valid if n in saved), None)
        if name is None:
            raise NotFoundError(f"no known recommender saved in {root} (found {', '.join(saved)}); "
                                "run `python -m recommender train`.")
    elif name not in saved:
        raise NotFoundError(
            f"recommender {name!r} has not been trained yet (saved in {root}: {', '.join(saved)}). "
            f"Run `python -m recommender train --recommender {name}`."
        )
    path = root / name
    try:
        rec = load_recommender(path)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt model for the user
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptModelError(
            f"the saved recommender {name!r} at {path} cannot be loaded ({type(exc).__name__}: {msg}). "
            f"It was left as it is; retrain it with `python -m recommender train --recommender {name}`."
        ) from None
    info = saved[name]
    if info.get("corrupt"):
        log.warning("training record %s is unreadable", path / TRAINING_INFO)
        info = {}
    return rec, info, name
