"""timm ImageNet-1k results as a single-dataset training history (GitHub
huggingface/pytorch-image-models, ``results/``, Apache-2.0).

Files (in one folder):

``results-imagenet.csv``                          ``model`` (arch.tag), ``img_size``, ``top1``, ``top5``,
                                                 ``param_count`` (millions, e.g. ``"1,014.45"``), ``crop_pct``
``benchmark-infer-amp-nchw-pt291-cu128-4090.csv`` per architecture and resolution: ``infer_gmacs``,
                                                 ``infer_macts``, throughput (optional)
``model_metadata-in1k.csv``                       ``model`` -> ``pretrain`` domain (optional)

One job per results row: dataset ``imagenet``, regime ``full``, metric ``top1``, value
``top1 / 100``, hparams = the evaluation setting (``img_size``, ``crop_pct``,
``interpolation``) -- the same model evaluated at two resolutions is two jobs.

Model meta: ``architecture`` = the part of ``model`` before the first ``.``; ``family`` =
its leading name without size digits (``resnet50d`` -> ``resnet``, ``convnextv2_base`` ->
``convnextv2``); ``params`` = ``param_count * 1e6``; ``input_size`` = the smallest
evaluated ``img_size``; ``gmacs`` = ``infer_gmacs`` of the benchmark row of the same
architecture at that resolution (else the closest resolution, noted in ``extra``);
``domain`` = ``pretrain`` of the exact model in the metadata file, else of its
architecture.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import HistoryImportError
from .base import (
    ImportBatch,
    Importer,
    ImportReport,
    parse_numbers,
    read_optional_table,
    read_table,
    register_importer,
    require_columns,
)

RESULTS = "results-imagenet.csv"
BENCHMARK = "benchmark-infer-amp-nchw-pt291-cu128-4090.csv"
METADATA = "model_metadata-in1k.csv"
SOURCE = "timm"
_PREFIXES = {"tf", "legacy", "gluon", "tv", "hf"}
#: short leading words that name a family only together with the next word (wide_resnet, dm_nfnet)
_JOINERS = {"wide", "tiny", "dm", "nf", "eca", "gc", "ese", "inception", "test"}


def architecture_of(model: str) -> str:
    return str(model).split(".", 1)[0]


def family_of(arch: str) -> str:
    """Leading architecture family: ``tf_efficientnet_b0`` -> ``efficientnet``,
    ``resnet50d`` -> ``resnet``, ``dla102x2`` -> ``dla``, ``mobilenetv3_large_100`` -> ``mobilenetv3``,
    ``wide_resnet50_2`` -> ``wide_resnet``."""
    parts = [t for t in str(arch).split("_") if t]
    while len(parts) > 1 and parts[0] in _PREFIXES:
        parts = parts[1:]
    if not parts:
        return str(arch)
    if parts[0] in _JOINERS and len(parts) > 1:
        return f"{parts[0]}_{_strip_size(parts[1])}"
    return _strip_size(parts[0])


def _strip_size(tok: str) -> str:
    if re.search(r"v\d+$", tok):  # versioned families keep their version (resnetv2, convnextv2)
        return tok
    fam = re.sub(r"\d+[a-z]{0,2}(\d+[a-z]{0,2})*$", "", tok)
    return fam if len(fam) >= 3 else tok


@register_importer
class TimmImporter(Importer):
    """timm ``results/`` folder: ImageNet top-1 per model + GMACs + pretraining domain."""

    name = "timm"
    canonical_datasets = True
    description = ("timm results folder (results-imagenet.csv [+ benchmark-infer-*.csv, "
                   "model_metadata-in1k.csv]): ImageNet-1k top-1 of ~1,500 models")

    def read(self, path, benchmark: str | None = None, **options) -> ImportBatch:
        self.check_options(options)
        folder, res_path, batch = self.open_folder(
            path, RESULTS, SOURCE, f"a timm folder holds {RESULTS} (and optionally {BENCHMARK}, {METADATA})")
        rep = batch.report
        df = read_table(res_path, dtype=str, keep_default_na=False)
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, ["model", "img_size", "top1", "param_count"], res_path)
        rep.rows_read = len(df)
        top1 = parse_numbers(df["top1"], "top1", res_path)
        size = parse_numbers(df["img_size"], "img_size", res_path)
        params = parse_numbers(df["param_count"], "param_count", res_path)
        crop = parse_numbers(df["crop_pct"], "crop_pct", res_path) if "crop_pct" in df else None
        bad = top1[(top1 < 0) | (top1 > 100)]
        if len(bad):
            i = bad.index[0]
            raise HistoryImportError(f"{res_path}: row {i + 1} (file line {i + 2}): top1 = {col['top1'][i]!r} "
                                     "is outside [0, 100] (timm reports percentages)")

        models: dict[str, dict] = {}
        sizes: dict[str, list] = {}
        n_missing = n_dup = 0
        seen = set()
        for i in range(len(df)):
            model = col["model"][i].strip()
            if not model or np.isnan(top1.iat[i]):
                n_missing += 1
                continue
            hp: dict[str, Any] = {}
            if not np.isnan(size.iat[i]):
                hp["img_size"] = int(size.iat[i])
            if crop is not None and not np.isnan(crop.iat[i]):
                hp["crop_pct"] = float(crop.iat[i])
            if "interpolation" in df and col["interpolation"][i].strip():
                hp["interpolation"] = col["interpolation"][i].strip()
            ident = (model, tuple(sorted(hp.items())), round(float(top1.iat[i]), 6))
            if ident in seen:
                n_dup += 1
                continue
            seen.add(ident)
            arch = architecture_of(model)
            m = models.setdefault(model, {"name": model, "modality": "image", "architecture": arch,
                                          "family": family_of(arch)})
            if not np.isnan(params.iat[i]):
                m["params"] = float(params.iat[i]) * 1e6
            if "img_size" in hp:
                sizes.setdefault(model, []).append(hp["img_size"])
            batch.jobs.append({
                "model": model, "dataset": "imagenet", "regime": "full", "hparams": hp, "metric": "top1",
                "value": float(top1.iat[i]) / 100.0, "source": SOURCE, "provenance": f"{res_path.name}:{i + 1}",
            })
        rep.drop("missing model name or top1", n_missing)
        rep.drop("exact duplicate of an earlier row (same model, evaluation setting and top1)", n_dup)
        for model, s in sizes.items():
            models[model]["input_size"] = min(s)
            if len(set(s)) > 1:
                models[model]["extra"] = {"eval_img_sizes": sorted(set(s))}

        self._join_benchmark(folder / (benchmark or BENCHMARK), models, rep)
        self._join_metadata(folder / METADATA, models, rep)
        batch.models = list(models.values())
        batch.datasets = [{"name": "imagenet", "modality": "image", "num_samples": 1_281_167, "num_classes": 1000,
                           "extra": {"split_evaluated": "validation (50,000 images)"}}]
        rep.notes.append(f"{len(models)} models from {len(batch.jobs)} result rows "
                         f"({len(batch.jobs) - len(models)} extra rows are the same model at another resolution)")
        return batch

    @staticmethod
    def _join_benchmark(path: Path, models: dict, rep: ImportReport) -> None:
        b = read_optional_table(path, rep, "models carry no GMACs")
        if b is None:
            return
        require_columns(b, ["model", "infer_img_size", "infer_gmacs"], path)
        b = b.assign(
            infer_img_size=parse_numbers(b["infer_img_size"], "infer_img_size", path),
            infer_gmacs=parse_numbers(b["infer_gmacs"], "infer_gmacs", path),
        )
        for c in ("infer_macts", "infer_samples_per_sec", "param_count"):
            if c in b:
                b[c] = parse_numbers(b[c], c, path)
        rows_by_arch: dict[str, list[dict]] = {}
        for r in b.to_dict("records"):
            if not pd.isna(r["infer_gmacs"]) and not pd.isna(r["infer_img_size"]):
                rows_by_arch.setdefault(str(r["model"]).strip(), []).append(r)
        exact = closest = 0
        for m in models.values():
            rows = rows_by_arch.get(m["architecture"])
            if not rows:
                continue
            target = m.get("input_size")
            same = [r for r in rows if r["infer_img_size"] == target]
            if same:
                row = same[0]
                exact += 1
            else:
                row = min(rows, key=lambda r: abs(r["infer_img_size"] - (target or 224)))
                closest += 1
            m["gmacs"] = float(row["infer_gmacs"])
            extra = dict(m.get("extra") or {})
            extra["gmacs_img_size"] = int(row["infer_img_size"])
            if not pd.isna(row.get("infer_macts", np.nan)):
                extra["activations_m"] = float(row["infer_macts"])
            if not pd.isna(row.get("infer_samples_per_sec", np.nan)):
                extra["infer_samples_per_sec_4090_amp"] = float(row["infer_samples_per_sec"])
            m["extra"] = extra
        missing = len(models) - exact - closest
        rep.notes.append(f"GMACs from {path.name}: {exact} models at their input size, {closest} at the closest "
                         f"benchmarked size, {missing} without GMACs")

    @staticmethod
    def _join_metadata(path: Path, models: dict, rep: ImportReport) -> None:
        md = read_optional_table(path, rep, "models carry no pretraining domain")
        if md is None:
            return
        require_columns(md, ["model", "pretrain"], path)
        dom = {str(k).strip(): str(v).strip() for k, v in zip(md["model"], md["pretrain"])
               if isinstance(v, str) and v.strip()}
        exact = by_arch = 0
        for m in models.values():
            if m["name"] in dom:
                m["domain"] = dom[m["name"]]
                exact += 1
            elif m["architecture"] in dom:
                m["domain"] = dom[m["architecture"]]
                by_arch += 1
        missing = len(models) - exact - by_arch
        rep.notes.append(f"pretraining domain from {path.name}: {exact} models by exact name, {by_arch} by "
                         f"architecture, {missing} without a domain")
