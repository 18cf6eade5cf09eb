"""VTAB published results (Zhai et al. 2019, "A Large-scale Study of Representation Learning with
the Visual Task Adaptation Benchmark"; GitHub google-research/task_adaptation,
``docs/data/results.csv``, Apache-2.0).

The file is a wide table with three header rows:

1. ``train_examples_if_subset``: ``1000`` (VTAB-1k: 800 train + 200 validation examples),
   ``full`` (the whole training set) or ``metadata``;
2. ``dataset``: the task (``CIFAR-100``, ..., ``sNORB-Elev``) or the metadata column's name
   (``model``: TF-Hub URL, ``architecture``, ``hyper_sweep_size``, ``preprocessing``);
3. ``method``: empty.

Then one row per upstream model (first cell: the paper's label, ``Sup-100%``, ``Rotation``, ...).

Jobs: one per (model row, task column) cell with a value: regime ``vtab-1k`` for ``1000`` and
``full`` for ``full`` -- the names SHiFT's importer uses, so that the same task in the same regime
is comparable across the two sources and the two regimes are never pooled. Metric
``test_accuracy`` (SHiFT's name for the same quantity); value = percent / 100. hparams:
``hyper_sweep_size`` (the paper's lightweight sweep) and ``train_examples`` (1000 or "full").

Task names are VTAB's display names; the dataset registry maps them to the canonical tasks
(``sNORB-Azim`` -> ``smallnorb_azimuth``, ``Retinopathy`` -> ``diabetic_retinopathy_detection``,
``Camelyon`` -> ``patch_camelyon``, ``KITTI-Dist`` -> ``kitti``, ...).

Models: ``vtab:<label>`` (e.g. ``vtab:Sup-100%``); ``architecture`` (``ResNet50``), ``family``
(``resnet``), ``depth`` (50), ``input_size`` from ``preprocessing`` (``resize(224)`` -> 224),
``pretrain_dataset`` ``imagenet`` (every upstream model of the study is trained on ImageNet, with
all, 10% or no labels) except ``From-Scratch`` (no pre-training: ``extra.pretrained = False``);
``extra`` holds the TF-Hub URL, the upstream kind (supervised, semi-supervised,
self-supervised, generative, none), the fraction of ImageNet labels used, and the paper's label.

Quirks handled (each counted in the report):

* values are in percent: divided by 100 (a value outside [0, 100] is an error);
* ``rows_read`` counts value cells (16 model rows x 38 task columns), so that every cell is a
  job or a counted drop;
* an empty cell would be dropped and counted ("no value");
* a value far below chance (under half of 1 / num_classes: a failed run, not a fine-tuning
  result -- ``Cond-BigGAN`` on Caltech101 ``full``, 0.15% with 102 classes) is dropped unless
  ``include_below_chance=True``;
* ``From-Scratch`` has no TF-Hub URL (it is not a pre-trained model): noted.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..datasets_registry import lookup
from ..errors import HistoryImportError
from .base import (
    ImportBatch,
    Importer,
    ImportReport,
    is_blank,
    not_utf8_message,
    register_importer,
    sha256_of,
)

RESULTS = "results.csv"
SOURCE = "vtab"
REGIMES = {"1000": "vtab-1k", "full": "full"}
METRIC = "test_accuracy"

#: the paper's upstream models: (kind, fraction of ImageNet labels used for pre-training)
UPSTREAM = {
    "Sup-100%": ("supervised", 1.0), "Sup-Rotation-100%": ("supervised", 1.0),
    "Sup-Exemplar-100%": ("supervised", 1.0),
    "Semi-Rotation-10%": ("semi-supervised", 0.1), "Semi-Exemplar-10%": ("semi-supervised", 0.1),
    "Rotation": ("self-supervised", 0.0), "Exemplar": ("self-supervised", 0.0),
    "Rel.Pat.Loc": ("self-supervised", 0.0), "Jigsaw": ("self-supervised", 0.0),
    "Cond-BigGAN": ("generative", 1.0), "Uncond-BigGAN": ("generative", 0.0), "VAE": ("generative", 0.0),
    "WAE-GAN": ("generative", 0.0), "WAE-MMD": ("generative", 0.0), "WAE-UKL": ("generative", 0.0),
    "From-Scratch": ("none", 0.0),
}

BELOW_CHANCE_REASON = ("value far below chance (< half of 1/num_classes): a failed run, not a fine-tuning "
                       "result ({cells}); import with include_below_chance=True to keep it")


def model_name(label: str) -> str:
    return f"vtab:{label}"


def _family_depth(arch: str | None):
    if not arch:
        return None, None
    m = re.fullmatch(r"([A-Za-z]+?)(\d+)", arch.strip())
    if m:
        return m.group(1).lower(), int(m.group(2))
    return arch.strip().lower(), None


def read_wide(path: Path) -> tuple[list[str], list[str], pd.DataFrame]:
    """(header row 1, header row 2, data rows as strings) of the three-header-row table."""
    if not path.exists():
        raise HistoryImportError(f"{path}: file not found; the vtab importer reads {RESULTS} of "
                                 "google-research/task_adaptation (docs/data/results.csv)")
    if path.stat().st_size == 0:
        raise HistoryImportError(f"{path}: file is empty")
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise HistoryImportError(not_utf8_message(path, exc)) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise HistoryImportError(f"{path}: cannot be parsed: {exc}") from None
    if len(raw) < 3 or raw.iat[0, 0].strip() != "train_examples_if_subset" or raw.iat[1, 0].strip() != "dataset":
        raise HistoryImportError(
            f"{path}: expected VTAB's three header rows (train_examples_if_subset, dataset, method); "
            f"found first cells {list(raw.iloc[:3, 0])}")
    return [c.strip() for c in raw.iloc[0]], [c.strip() for c in raw.iloc[1]], raw.iloc[3:].reset_index(drop=True)


@register_importer
class VtabImporter(Importer):
    """VTAB ``results.csv``: 16 upstream models x 19 tasks x {VTAB-1k, full}."""

    name = "vtab"
    canonical_datasets = True
    description = ("VTAB published results (google-research/task_adaptation docs/data/results.csv): "
                   "16 ImageNet upstream models fine-tuned on 19 VTAB tasks, VTAB-1k and full regimes")

    def read(self, path, include_below_chance: bool = False, **options) -> ImportBatch:
        self.check_options(options)
        p = Path(path)
        f = p / RESULTS if p.is_dir() else p
        rep = ImportReport(importer=self.name, source=SOURCE, path=str(p), sha256=sha256_of(f) if f.exists() else None)
        batch = ImportBatch(report=rep)
        subset, names, df = read_wide(f)
        task_cols = [i for i in range(1, len(subset)) if subset[i] in REGIMES]
        unknown = sorted({subset[i] for i in range(1, len(subset))} - set(REGIMES) - {"metadata"})
        if unknown:
            raise HistoryImportError(f"{f}: unknown train_examples_if_subset value(s) {unknown}; "
                                     "expected 1000, full or metadata")
        meta = {names[i]: i for i in range(1, len(subset)) if subset[i] == "metadata"}
        if not task_cols:
            raise HistoryImportError(f"{f}: no task columns (train_examples_if_subset 1000 / full)")

        rep.rows_read = len(df) * len(task_cols)
        models: dict[str, dict[str, Any]] = {}
        datasets: dict[str, dict[str, Any]] = {}
        jobs: list[dict[str, Any]] = []
        n_blank = 0
        below: list[str] = []
        for r in range(len(df)):
            label = df.iat[r, 0].strip()
            row = r + 1  # 1-based data row after the three header rows (file line = row + 3)
            if not label:
                raise HistoryImportError(f"{f}: data row {row} (file line {row + 3}) has no model name")
            vals = []
            for col in task_cols:
                cell = df.iat[r, col]
                where = (f"{f}: data row {row} (file line {row + 3}, {label}), column {col + 1} "
                         f"({names[col]}, {subset[col]})")
                if is_blank(cell):
                    vals.append(np.nan)
                    continue
                try:
                    v = float(cell.strip())
                except ValueError:
                    raise HistoryImportError(f"{where}: value {cell!r} is not a number") from None
                if not 0 <= v <= 100:
                    raise HistoryImportError(f"{where}: value {cell!r} is outside [0, 100]; VTAB reports percentages")
                vals.append(v)
            hs = df.iat[r, meta["hyper_sweep_size"]].strip() if "hyper_sweep_size" in meta else ""
            for k, col in enumerate(task_cols):
                v = vals[k]
                task, regime = names[col], REGIMES[subset[col]]
                if np.isnan(v):
                    n_blank += 1
                    continue
                value = float(v) / 100.0
                ent = lookup(task, SOURCE)
                if ent is not None and ent.num_classes and value < 0.5 / ent.num_classes and not include_below_chance:
                    below.append(f"{label} on {task} ({subset[col]}): {v:.3g}% with {ent.num_classes} classes")
                    continue
                hp = {"train_examples": 1000 if subset[col] == "1000" else "full"}
                if hs:
                    hp["hyper_sweep_size"] = int(float(hs))
                jobs.append({"model": model_name(label), "dataset": task, "regime": regime, "hparams": hp,
                             "metric": METRIC, "value": value, "source": SOURCE,
                             "provenance": f"{f.name}:{row}"})
                datasets.setdefault(task, {"name": task, "modality": "image"})
            models[label] = self._model(label, {k: df.iat[r, i].strip() for k, i in meta.items()}, rep)
        rep.drop("empty cell (no value)", n_blank)
        if below:
            rep.drop(BELOW_CHANCE_REASON.format(cells="; ".join(below)), len(below))
        batch.jobs, batch.models, batch.datasets = jobs, list(models.values()), list(datasets.values())
        per = {reg: sum(1 for j in jobs if j["regime"] == reg) for reg in REGIMES.values()}
        rep.notes.append(f"{len(df)} model rows x {len(task_cols)} (task, regime) columns = {rep.rows_read} values "
                         "read (rows read counts values); percentages divided by 100")
        rep.notes.append("jobs per regime: " + ", ".join(f"{k} {v}" for k, v in per.items())
                         + " (regime names as SHiFT's: the same task and regime are comparable across sources)")
        return batch

    @staticmethod
    def _model(label: str, meta: dict, rep: ImportReport) -> dict:
        arch = meta.get("architecture") or None
        family, depth = _family_depth(arch)
        rec = {"name": model_name(label), "modality": "image", "architecture": arch, "family": family, "depth": depth}
        m = re.fullmatch(r"resize\((\d+)\)", meta.get("preprocessing", ""))
        if m:
            rec["input_size"] = int(m.group(1))
        kind, labels = UPSTREAM.get(label, (None, None))
        extra: dict[str, Any] = {"vtab_label": label}
        if kind is None:
            rep.notes.append(f"model {label!r} is not one of the paper's 16 upstream models: no upstream kind")
        else:
            extra["upstream"] = kind
            extra["imagenet_label_fraction"] = labels
        if kind == "none":
            extra["pretrained"] = False
        elif kind is not None:
            rec["pretrain_dataset"] = "imagenet"
        url = meta.get("model")
        if url and not is_blank(url):
            extra["tfhub"] = url
        else:
            rep.notes.append(f"model {label!r} has no TF-Hub URL (column 'model' empty)"
                             + (": it is trained from scratch, not a pre-trained checkpoint" if kind == "none" else ""))
        if meta.get("preprocessing"):
            extra["preprocessing"] = meta["preprocessing"]
        rec["extra"] = extra
        return {k: v for k, v in rec.items() if v is not None}
