"""Feature group ``p`` (specialists): when does a model that is weak on average win on one dataset?

Two causes recur in the histories (docs/recommenders.md, "Where the regret comes from"):
a checkpoint already fine-tuned on the target dataset (TransferGraph's ``Ahmed9275/Vit-Cifar100``
on CIFAR-100, the EuroSAT checkpoints on EuroSAT), and a high input resolution on datasets whose
images are large (the 384-pixel models on Stanford Cars and diabetic retinopathy). The columns:

``p:source_match``          the model's pre-training / fine-tuning dataset is the target task:
                            the same canonical entry of the dataset registry (aliases resolved,
                            e.g. ``stanfordcars`` / ``stanford_cars``) or the same normalized name
                            (the rule of ``m:pretrain_matches_dataset``);
``p:source_twin``           it is another task on the same images (registry ``base_dataset``,
                            e.g. smallnorb azimuth for elevation), not the task itself;
``p:source_same_group``     source and target are in the same VTAB group (natural /
                            specialized / structured) or the same registry domain;
``p:source_match*strength`` the match crossed with the model's general strength: its mean
                            per-dataset z-score over the *training* datasets other than the
                            row's own (0 for a model without training targets);
``p:input*image_size``      (log input size - median) x (log native image size - median): high
                            resolution pays off where the images are large;
``p:input*fine_grained``    (log input size - median) x [target domain is fine-grained];
``p:image_size:missing``    the target's native image size is unknown (registry ``image_size``).

Everything here is a meta-feature or a training statistic: no target of the row's own pair
is read (the strength leaves the row's dataset out).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from history.datasets_registry import lookup

from .meta_values import _norm_name

__all__ = ["SPECIALIST_FEATURES", "specialist_block", "dataset_entry"]

SPECIALIST_FEATURES = ("p:source_match", "p:source_twin", "p:source_same_group", "p:source_match*strength",
                       "p:input*image_size", "p:input*fine_grained", "p:image_size:missing")


def dataset_entry(name):
    """The registry entry of a dataset name (a pooled ``<dataset>@<source>`` name too), or None."""
    if name is None or (isinstance(name, float) and name != name):
        return None
    base = str(name).split("@", 1)[0]
    return lookup(base)


def _relation(source, target) -> tuple[float, float, float]:
    """(match, twin, same group) of a model's source dataset and a target dataset."""
    if source is None or (isinstance(source, float) and source != source) or not str(source).strip():
        return 0.0, 0.0, 0.0
    es, et = dataset_entry(source), dataset_entry(target)
    if es is not None and et is not None:
        if es.name == et.name:
            return 1.0, 0.0, 1.0
        twin = float(es.base_dataset == et.base_dataset)
        same = float((es.vtab_group is not None and es.vtab_group == et.vtab_group) or es.domain == et.domain)
        return 0.0, twin, same
    match = float(_norm_name(source) == _norm_name(str(target).split("@", 1)[0]))
    return match, 0.0, match


def _strength(train_z: pd.DataFrame, mcodes, muniq, dcodes, duniq) -> np.ndarray:
    """Leave-own-dataset-out mean z-score of each row's model over the training datasets."""
    tm = pd.Index(pd.unique(train_z["model"]))
    td = pd.Index(pd.unique(train_z["dataset"]))
    Z = np.zeros((len(tm), len(td)))
    M = np.zeros_like(Z)
    ri, ci = tm.get_indexer(train_z["model"]), td.get_indexer(train_z["dataset"])
    Z[ri, ci] = train_z["z"].to_numpy(dtype=float)
    M[ri, ci] = 1.0
    rows = tm.get_indexer(pd.Index(muniq))[mcodes]
    own = td.get_indexer(pd.Index(duniq))[dcodes]
    out = np.zeros(len(mcodes))
    sel = rows >= 0
    r, o = rows[sel], own[sel]
    num = Z.sum(1)[r] - np.where(o >= 0, Z[r, np.maximum(o, 0)], 0.0)
    den = M.sum(1)[r] - np.where(o >= 0, M[r, np.maximum(o, 0)], 0.0)
    out[sel] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out


def specialist_block(mrows: pd.DataFrame, mcodes, muniq, duniq, dcodes, *, train_z: pd.DataFrame,
                     log_input_median: float, log_image_median: float) -> tuple[list, list]:
    """The ``p:`` columns for pairs given by codes into the unique models / datasets."""
    src = mrows["pretrain_dataset"].tolist() if "pretrain_dataset" in mrows.columns else [None] * len(muniq)
    rel = {}
    for mi, di in set(zip(mcodes.tolist(), dcodes.tolist())):
        rel[(mi, di)] = _relation(src[mi], duniq[di])
    trip = np.array([rel[(mi, di)] for mi, di in zip(mcodes.tolist(), dcodes.tolist())]).reshape(-1, 3)
    match, twin, same = trip[:, 0], trip[:, 1], trip[:, 2]
    strength = _strength(train_z, mcodes, muniq, dcodes, duniq)

    inp = pd.to_numeric(mrows["input_size"], errors="coerce").to_numpy(dtype=float) \
        if "input_size" in mrows.columns else np.full(len(muniq), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        linp = np.where(inp > 0, np.log(np.where(inp > 0, inp, 1.0)), np.nan)
    linp = np.where(np.isnan(linp), log_input_median, linp) - log_input_median
    entries = [dataset_entry(d) for d in duniq]
    img = np.array([float(e.image_size) if e is not None and e.image_size else np.nan for e in entries])
    limg = np.log(img)
    img_missing = np.isnan(limg)
    limg = np.where(img_missing, log_image_median, limg) - log_image_median
    fine = np.array([1.0 if e is not None and e.domain == "fine-grained" else 0.0 for e in entries])
    names = list(SPECIALIST_FEATURES)
    cols = [match, twin, same, match * strength, linp[mcodes] * limg[dcodes], linp[mcodes] * fine[dcodes],
            img_missing.astype(float)[dcodes]]
    return names, cols


def log_image_size_median(dataset_names) -> float:
    """Median log native image size over the named datasets known to the registry (log 224 if none)."""
    vals = [e.image_size for e in (dataset_entry(d) for d in dataset_names) if e is not None and e.image_size]
    return float(np.median(np.log(vals))) if vals else float(np.log(224))
