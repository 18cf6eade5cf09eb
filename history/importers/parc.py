"""PARC oracle fine-tuning results (Bolya et al., "Scalable Diverse Model Selection for
Accessible Transfer Learning", NeurIPS 2021; GitHub dbolya/parc, ``oracles/``).

``all.csv`` (source ``parc``) and ``controlled.csv`` (source ``parc-controlled``) have columns
``Architecture, Source Dataset, Target Dataset, Oracle``. A model is the pair
``<architecture>@<source dataset or checkpoint>`` (e.g. ``resnet50@nabird``). ``Oracle`` is
the fine-tuned accuracy in percent (divided by 100 here); for ``voc2007`` it is the
multi-label mean average precision (metric ``map``), otherwise ``accuracy``. ``-1`` is a
placeholder for "not available": such rows are dropped and counted.

Dataset facts (training images / classes) and architecture depths are those used by the
PARC benchmark; the source dataset's size goes into the model's ``extra`` as
``source_num_samples`` / ``source_num_classes`` because PARC's heuristics need
|D_s|.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HistoryImportError
from .base import (
    ImportBatch,
    Importer,
    ImportReport,
    is_blank,
    parse_numbers,
    read_table,
    register_importer,
    require_columns,
    sha256_of,
)

#: name -> (training images, classes) as used by the PARC benchmark
DATASET_FACTS = {
    "nabird": (24_633, 555),
    "oxford_pets": (3_669, 37),
    "cub200": (5_794, 200),
    "caltech101": (2_630, 101),
    "stanford_dogs": (8_580, 120),
    "voc2007": (2_501, 21),
    "cifar10": (50_000, 10),
}
#: ImageNet as a *source* (the PARC benchmark's subset)
SOURCE_FACTS = {**DATASET_FACTS, "imagenet": (150_000, 1_000)}
MULTI_LABEL = {"voc2007"}
DEPTH = {"resnet50": 50, "resnet18": 18, "googlenet": 22, "alexnet": 8, "resnet101": 101}
FILES = {"all.csv": "parc", "controlled.csv": "parc-controlled"}
COLUMNS = ["Architecture", "Source Dataset", "Target Dataset", "Oracle"]


def family_of(arch: str) -> str:
    """``resnet50`` -> ``resnet``; ``googlenet`` -> ``googlenet``."""
    return re.sub(r"\d+$", "", arch) or arch


@register_importer
class ParcImporter(Importer):
    """PARC ``oracles/all.csv`` and/or ``oracles/controlled.csv``."""

    name = "parc"
    canonical_datasets = True
    description = "PARC oracles folder (all.csv -> source parc, controlled.csv -> parc-controlled) or one of them"

    def read(self, path, **options) -> ImportBatch:
        self.check_options(options)
        p = Path(path)
        if p.is_dir():
            files = [p / f for f in FILES if (p / f).exists()]
            if not files:
                raise HistoryImportError(f"{p}: neither all.csv nor controlled.csv found (PARC oracles folder)")
        elif p.exists():
            files = [p]
        else:
            raise HistoryImportError(f"{p}: file or folder not found")
        sources = [FILES.get(f.name, "parc") for f in files]
        rep = ImportReport(importer=self.name, source=",".join(sources), path=str(p), sha256=sha256_of(files[0]))
        batch = ImportBatch(report=rep)
        models: dict[str, dict[str, Any]] = {}
        datasets: dict[str, dict[str, Any]] = {}
        for f, source in zip(files, sources):
            self._read_file(f, source, batch, models, datasets)
        batch.models, batch.datasets = list(models.values()), list(datasets.values())
        rep.notes.append(f"{len(models)} models (architecture@source), {len(datasets)} target datasets")
        return batch

    def _read_file(self, f: Path, source: str, batch: ImportBatch, models: dict, datasets: dict):
        rep = batch.report
        df = read_table(f)
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, COLUMNS, f)
        rep.rows_read += len(df)
        oracle = parse_numbers(df["Oracle"], "Oracle", f)
        n_placeholder = n_missing = 0
        for i in range(len(df)):
            arch, src, tgt = (col[c][i] for c in COLUMNS[:3])
            v = oracle.iat[i]
            if is_blank(arch) or is_blank(src) or is_blank(tgt) or np.isnan(v):
                n_missing += 1
                continue
            if v == -1:
                n_placeholder += 1
                continue
            if not 0 <= v <= 100:
                raise HistoryImportError(
                    f"{f}: row {i + 1} (file line {i + 2}): Oracle = {col['Oracle'][i]!r} is outside "
                    "[0, 100]; PARC oracles are percentages (-1 = not available)")
            arch, src, tgt = str(arch).strip(), str(src).strip(), str(tgt).strip()
            name = f"{arch}@{src}"
            if name not in models:
                m: dict[str, Any] = {"name": name, "modality": "image", "architecture": arch, "family": family_of(arch),
                                     "depth": DEPTH.get(arch), "pretrain_dataset": src}
                if src in SOURCE_FACTS:
                    m["extra"] = {"source_num_samples": SOURCE_FACTS[src][0],
                                  "source_num_classes": SOURCE_FACTS[src][1]}
                models[name] = m
            if tgt not in datasets:
                d: dict[str, Any] = {"name": tgt, "modality": "image"}
                if tgt in DATASET_FACTS:
                    d["num_samples"], d["num_classes"] = DATASET_FACTS[tgt]
                if tgt in MULTI_LABEL:
                    d["extra"] = {"multi_label": True}
                datasets[tgt] = d
            batch.jobs.append({
                "model": name, "dataset": tgt, "regime": "full", "hparams": {},
                "metric": "map" if tgt in MULTI_LABEL else "accuracy", "value": float(v) / 100.0,
                "source": source, "provenance": f"{f.name}:{i + 1}",
            })
        rep.drop(f"{f.name}: Oracle = -1 (placeholder for 'not available', not an accuracy)", n_placeholder)
        rep.drop(f"{f.name}: missing Architecture, Source Dataset, Target Dataset or Oracle", n_missing)
