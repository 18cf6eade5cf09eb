"""SHiFT fine-tuning records (Renggli et al., "SHiFT: an efficient, flexible search engine
for transfer learning", VLDB 2023; GitHub DS3Lab/shift).

A SHiFT folder holds ``ftrecords.csv`` (one fine-tuning run per row) and, optionally,
``huggingface_cv_models.csv`` (image model meta-data).

Task naming. ``train_dataset_name`` alone does not identify the task: the ``configs``
column (a Python dict literal, parsed with :func:`ast.literal_eval`) may carry
``label_name`` and ``preprocess`` (``'empty'`` = none). The task name is

* ``preprocess`` when it is set and starts with the dataset name
  (``clevr_count``, ``clevr_distance``, ``dsprites_orientation``, ``dsprites_location``);
  the dataset name itself when ``preprocess`` equals it (``kitti``);
  ``<dataset>_<preprocess>`` for any other preprocess;
* else ``<dataset>_<label>`` when ``label_name`` is ``label_<x>`` other than ``label``
  (``smallnorb_azimuth``, ``smallnorb_elevation``);
* else the dataset name (``cifar100``, ``glue/cola``, ...).

This yields the 19 VTAB image tasks plus the text tasks.

Regime from ``train_slice`` (never pooled silently): ``:800`` -> ``vtab-1k`` (800 train +
200 validation examples), ``:100%`` or empty -> ``full``, anything else ``:<s>`` ->
``slice-<s>`` (``:80%`` -> ``slice-80%``).

Modality from ``framework``: ``HuggingFace`` -> image, ``HuggingFaceText`` -> text.
Both learning rates of a (model, task, slice) are kept as separate jobs.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema as S
from ..errors import HistoryImportError
from .base import (
    ImportBatch,
    Importer,
    ImportReport,
    is_blank,
    parse_numbers,
    read_table,
    refuse_outside_unit,
    register_importer,
    require_columns,
)

RECORDS = "ftrecords.csv"
MODELS = "huggingface_cv_models.csv"
FRAMEWORKS = {"HuggingFace": "image", "HuggingFaceText": "text"}
SOURCE = "shift"

#: Published facts of the SHiFT tasks (VTAB: Zhai et al. 2019, Table 1 -- number of classes
#: and VTAB group; text tasks: their dataset cards). The records file carries neither, and
#: without them the tasks would have no dataset meta-features at all. Applied with
#: fill-only semantics: facts another import already stored are kept.
TASK_FACTS = {
    # VTAB natural
    "caltech101": (102, "natural"), "cifar100": (100, "natural"), "dtd": (47, "natural"),
    "oxford_flowers102": (102, "natural"), "oxford_iiit_pet": (37, "natural"),
    "sun397": (397, "natural"), "svhn_cropped": (10, "natural"),
    # VTAB specialized
    "patch_camelyon": (2, "specialized"), "eurosat": (10, "specialized"),
    "resisc45": (45, "specialized"), "diabetic_retinopathy_detection": (5, "specialized"),
    # VTAB structured
    "clevr_count": (8, "structured"), "clevr_distance": (6, "structured"), "dmlab": (6, "structured"),
    "dsprites_location": (16, "structured"), "dsprites_orientation": (16, "structured"),
    "kitti": (4, "structured"), "smallnorb_azimuth": (18, "structured"),
    "smallnorb_elevation": (9, "structured"),
    # text
    "ag_news": (4, "news"), "amazon_polarity": (2, "reviews"), "dbpedia_14": (14, "encyclopedia"),
    "glue/cola": (2, "linguistic"), "glue/sst2": (2, "reviews"), "rotten_tomatoes": (2, "reviews"),
    "tweet_eval/emotion": (4, "social"), "tweet_eval/hate": (2, "social"),
    "tweet_eval/irony": (2, "social"), "tweet_eval/offensive": (2, "social"),
    "tweet_eval/sentiment": (3, "social"),
}


def task_name(dataset: str, label_name=None, preprocess=None) -> str:
    """The task a SHiFT row fine-tunes on (see the module docstring for the scheme)."""
    ds = str(dataset).strip()
    pre = None if is_blank(preprocess) or str(preprocess).strip() == "empty" else str(preprocess).strip()
    if pre:
        if pre == ds:
            return ds
        return pre if pre.startswith(ds + "_") else f"{ds}_{pre}"
    lab = None if is_blank(label_name) else str(label_name).strip()
    if lab and lab != "label":
        return f"{ds}_{lab.removeprefix('label_')}"
    return ds


def regime_of(train_slice) -> str:
    """``:800`` -> ``vtab-1k``; ``:100%`` / empty -> ``full``; ``:<s>`` -> ``slice-<s>``."""
    if is_blank(train_slice):
        return "full"
    s = str(train_slice).strip()
    if s == ":800":
        return "vtab-1k"
    if s in (":100%", ":"):
        return "full"
    return "slice-" + s.lstrip(":")


def parse_configs(text, path, row: int) -> dict:
    """Parse a ``configs`` cell (a Python dict literal) safely; errors name the row."""
    if is_blank(text):
        return {}
    val = _literal(str(text))
    if not isinstance(val, dict):
        raise HistoryImportError(
            f"{path}: row {row} (file line {row + 1}): column 'configs' has value {str(text)!r}, "
            "which is not a Python dict literal such as {'lr': 0.01}")
    return dict(val)


@lru_cache(maxsize=4096)
def _literal(text: str):
    """``ast.literal_eval`` (never ``eval``), cached: a file repeats a handful of configs."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


@register_importer
class ShiftImporter(Importer):
    """SHiFT ``ftrecords.csv`` (+ ``huggingface_cv_models.csv``)."""

    name = "shift"
    canonical_datasets = True
    description = "SHiFT folder (ftrecords.csv, huggingface_cv_models.csv): VTAB image + text tasks"

    def read(self, path, **options) -> ImportBatch:
        self.check_options(options)
        folder, rec_path, batch = self.open_folder(
            path, RECORDS, SOURCE, f"a SHiFT folder holds {RECORDS} (and optionally {MODELS})")
        rep = batch.report
        df = read_table(rec_path)
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, ["model_identifier", "framework", "train_dataset_name", "configs",
                             "test_accuracy"], rec_path)
        rep.rows_read = len(df)
        acc = parse_numbers(df["test_accuracy"], "test_accuracy", rec_path)
        epochs = parse_numbers(df["epochs"], "epochs", rec_path) if "epochs" in df else None
        bsz = parse_numbers(df["batch_size"], "batch_size", rec_path) if "batch_size" in df else None
        refuse_outside_unit(acc, rec_path, "test_accuracy", col["test_accuracy"], "SHiFT")

        models: dict[str, dict[str, Any]] = {}
        datasets: dict[str, dict[str, Any]] = {}
        jobs: list[dict[str, Any]] = []
        seen: set = set()
        unknown_fw: dict[str, int] = {}
        n_missing = n_dup = 0
        for i in range(len(df)):
            row = i + 1
            fw = str(col["framework"][i]).strip()
            if fw not in FRAMEWORKS:
                unknown_fw[fw] = unknown_fw.get(fw, 0) + 1
                continue
            modality = FRAMEWORKS[fw]
            cfg = parse_configs(col["configs"][i], rec_path, row)
            model = col["model_identifier"][i]
            ds = col["train_dataset_name"][i]
            if is_blank(model) or is_blank(ds) or np.isnan(acc.iat[i]):
                n_missing += 1
                continue
            model, ds = str(model).strip(), str(ds).strip()
            task = task_name(ds, cfg.get("label_name"), cfg.get("preprocess"))
            tslice = (None if "train_slice" not in df or is_blank(col["train_slice"][i])
                      else str(col["train_slice"][i]).strip())
            regime = regime_of(tslice)
            hp: dict[str, Any] = {}
            if "lr" in cfg:
                hp["lr"] = float(cfg["lr"])
            if epochs is not None and not np.isnan(epochs.iat[i]):
                hp["epochs"] = int(epochs.iat[i])
            if bsz is not None and not np.isnan(bsz.iat[i]):
                hp["batch_size"] = int(bsz.iat[i])
            if tslice is not None:
                hp["train_slice"] = tslice
            for k, v in cfg.items():  # anything else the config sets (besides task identity)
                if k not in ("lr", "label_name", "preprocess", "feature_name"):
                    hp[k] = v
            value = float(acc.iat[i])
            key = S.job_key(model=model, dataset=task, regime=regime, hparams=hp, metric="test_accuracy",
                            value=value, status="completed", source=SOURCE)
            if key in seen:
                n_dup += 1
                continue
            seen.add(key)
            models.setdefault(model, {"name": model, "modality": modality})
            d = datasets.setdefault(task, {"name": task, "modality": modality,
                                           "extra": {"base_dataset": ds}})
            if task in TASK_FACTS and "num_classes" not in d:
                d["num_classes"], d["domain"] = TASK_FACTS[task]
            if cfg.get("label_name") and cfg["label_name"] != "label":
                d["extra"]["label_name"] = cfg["label_name"]
            if not is_blank(cfg.get("preprocess")) and cfg.get("preprocess") != "empty":
                d["extra"]["preprocess"] = cfg["preprocess"]
            jobs.append({
                "model": model, "dataset": task, "regime": regime, "hparams": hp,
                "metric": "test_accuracy", "value": value, "source": SOURCE,
                "provenance": f"{rec_path.name}:{row}",
            })
        for fw, n in unknown_fw.items():
            rep.drop(f"unknown framework {fw!r} (known: {', '.join(FRAMEWORKS)})", n)
        rep.drop("missing model_identifier, train_dataset_name or test_accuracy", n_missing)
        rep.drop("exact duplicate of an earlier row (same model, task, regime, hyper-parameters and "
                 "test_accuracy)", n_dup)

        self._model_meta(folder, models, rep)
        batch.jobs, batch.models, batch.datasets = jobs, list(models.values()), list(datasets.values())

        by_mod: dict[str, set[str]] = {"image": set(), "text": set()}
        for t in datasets.values():
            by_mod[t["modality"]].add(t["name"])
        vtab = sorted({j["dataset"] for j in jobs if j["regime"] == "vtab-1k"} & by_mod["image"])
        regimes: dict[str, int] = {}
        for j in jobs:
            regimes[j["regime"]] = regimes.get(j["regime"], 0) + 1
        rep.notes.append(f"{len(by_mod['image'])} image tasks ({len(vtab)} with VTAB-1k runs), "
                         f"{len(by_mod['text'])} text tasks")
        rep.notes.append("jobs per regime: " + ", ".join(f"{k} {v}" for k, v in sorted(regimes.items())))
        nm = {m: sum(1 for x in models.values() if x["modality"] == m) for m in ("image", "text")}
        rep.notes.append(f"models: {nm['image']} image, {nm['text']} text")
        return batch

    def _model_meta(self, folder: Path, models: dict, rep: ImportReport) -> None:
        p = folder / MODELS
        if not p.exists():
            rep.notes.append(f"no {MODELS} in {folder}: image models carry no input size")
            return
        df = read_table(p)
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, ["model_identifier"], p)
        size = parse_numbers(df["image_size"], "image_size", p) if "image_size" in df else None
        unused = 0
        for i in range(len(df)):
            name = col["model_identifier"][i]
            if is_blank(name):
                continue
            name = str(name).strip()
            rec = models.get(name)
            if rec is None:  # meta-data of a model without runs here: nothing to attach it to
                unused += 1
                continue
            if size is not None and not np.isnan(size.iat[i]):
                rec["input_size"] = int(size.iat[i])
            extra = {}
            for c, k in (("source", "source"), ("lr", "default_lr"), ("epochs", "default_epochs"),
                         ("batch_size", "default_batch_size"), ("momentum", "momentum"), ("nesterov", "nesterov")):
                if c in df and not is_blank(col[c][i]):
                    v = col[c][i]
                    extra[k] = v.item() if hasattr(v, "item") else v
            if extra:
                rec["extra"] = extra
        with_size = sum(1 for m in models.values() if m["modality"] == "image" and m.get("input_size"))
        n_img = sum(1 for m in models.values() if m["modality"] == "image")
        rep.notes.append(f"{with_size} of {n_img} image models have an input size from {MODELS}"
                         + (f"; {unused} rows there describe models without runs (not added)" if unused else ""))
