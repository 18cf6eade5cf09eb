"""OpenCLIP zero-shot classification results (GitHub mlfoundations/open_clip,
``docs/openclip_classification_results.csv`` and ``docs/model_profile.csv``, MIT-style license).

``openclip_classification_results.csv``: one row per (architecture ``name``, ``pretrained`` tag),
with ``params (M)``, ``FLOPs (B)``, ``Average perf. on 35 datasets`` and the zero-shot score on
35 datasets (fractions), one column each, named by their display names (``Stanford Cars``,
``Oxford-IIIT Pet``, ...). ``model_profile.csv``: per architecture ``image_size``, widths,
``embed_dim`` and parameters / GFLOPs of the whole model and of each tower.

This is a **zero-shot** regime: no training on the target. Every job has regime ``zero-shot``,
which no fine-tuning source uses, so these scores are never pooled with fine-tuning runs.

Datasets. The columns are the DataComp evaluation suite (mlfoundations/datacomp ``tasklist.yml``):
each display name is stored under its DataComp task key (``Stanford Cars`` -> ``cars``,
``Oxford-IIIT Pet`` -> ``vtab/pets``, ``ImageNet 1k`` -> ``imagenet1k``), which the dataset
registry maps to the canonical task where it knows it (``cars`` -> ``stanford_cars``,
``vtab/pets`` -> ``oxford_iiit_pet``, ``vtab/clevr_count_all`` -> ``clevr_count``, ...). The
number of classes and the evaluation-set size of each task come with it (``num_classes``,
``extra.eval_size``).

Metrics. DataComp scores a few datasets by another main metric than top-1 accuracy; each keeps
its own metric name, so they are never averaged with accuracies: ``mean_per_class_recall``
(Caltech-101, FGVC Aircraft, Oxford Flowers-102, Oxford-IIIT Pet), ``macro_f1`` (iWildCam),
``worst_region_accuracy`` (FMoW), ``worst_group_top5_accuracy`` (Dollar Street),
``worst_group_accuracy`` (GeoDE); the other 27 datasets ``accuracy`` (top-1).

Models: ``<name>@<pretrained>`` (``ViT-B-32@laion2b_s34b_b79k``), like PARC's
(architecture, source) pairs. ``architecture`` = ``name``; ``family`` = its leading word
(``ViT``, ``EVA02``, ``convnext``, ``RN50``, ``coca``, ...) lower-cased with sizes stripped;
``pretrain_dataset`` = the data part of the tag (``laion2b_s34b_b79k`` -> ``laion2b``,
``datacomp_xl_s13b_b90k`` -> ``datacomp_xl``, ``laion400m_e32`` -> ``laion400m``,
``mscoco_finetuned_laion2b_s13b_b90k`` -> ``laion2b`` with ``extra.finetuned_on`` ``mscoco``);
the tag's samples seen / batch size / epochs go to ``extra``. From the profile:
``input_size`` = ``image_size``, ``feature_dim`` = ``embed_dim``, ``params`` and ``gmacs`` of the
**image tower** (``image_mparams``; ``image_gflops`` / 2, since open_clip's profiler counts FLOPs
with ``torch.utils.flop_counter``, two per multiply-add: ViT-B-32's 8.82 GFLOPs = timm's 4.41
GMACs), which is what is comparable with the image models of the other sources; the whole
model's parameters and GFLOPs and the text tower's go to ``extra``.

Quirks handled (each counted in the report):

* ``Average perf. on 35 datasets`` is an aggregate, not a dataset: kept in the model's ``extra``
  (``avg_35_datasets``), never a job;
* ``rows_read`` counts value cells (121 models x 35 datasets);
* an empty cell would be dropped and counted; a value outside [0, 1] is an error;
* models with identical scores on every dataset (``ViT-B-32@openai`` = ``ViT-B-32-quickgelu@openai``: the
  same OpenAI weights under two architecture names; 4 such pairs) are kept as listed, named in a note;
* a model whose architecture has no row in ``model_profile.csv`` keeps the results file's
  ``params (M)`` / ``FLOPs (B)`` (whole model) in ``extra`` only, counted in a note.
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
)

RESULTS = "openclip_classification_results.csv"
PROFILE = "model_profile.csv"
SOURCE = "openclip"
REGIME = "zero-shot"
AVERAGE = "Average perf. on 35 datasets"
META_COLS = ("name", "pretrained", "params (M)", "FLOPs (B)", AVERAGE)

#: display name -> (DataComp task key, main metric, num_classes, evaluation-set size), from
#: mlfoundations/datacomp tasklist.yml
DATASETS = {
    "ImageNet 1k": ("imagenet1k", "accuracy", 1000, 50000),
    "Caltech-101": ("vtab/caltech101", "mean_per_class_recall", 102, 6085),
    "CIFAR-10": ("cifar10", "accuracy", 10, 10000),
    "CIFAR-100": ("vtab/cifar100", "accuracy", 100, 10000),
    "CLEVR Counts": ("vtab/clevr_count_all", "accuracy", 8, 15000),
    "CLEVR Distance": ("vtab/clevr_closest_object_distance", "accuracy", 6, 15000),
    "Country211": ("country211", "accuracy", 211, 21100),
    "Describable Textures": ("vtab/dtd", "accuracy", 47, 1880),
    "EuroSAT": ("vtab/eurosat", "accuracy", 10, 5400),
    "FGVC Aircraft": ("fgvc_aircraft", "mean_per_class_recall", 100, 3333),
    "Food-101": ("food101", "accuracy", 101, 25250),
    "GTSRB": ("gtsrb", "accuracy", 43, 12630),
    "ImageNet Sketch": ("imagenet_sketch", "accuracy", 1000, 50889),
    "ImageNet v2": ("imagenetv2", "accuracy", 1000, 10000),
    "ImageNet-A": ("imagenet-a", "accuracy", 200, 7500),
    "ImageNet-O": ("imagenet-o", "accuracy", 200, 2000),
    "ImageNet-R": ("imagenet-r", "accuracy", 200, 30000),
    "KITTI Vehicle Distance": ("vtab/kitti_closest_vehicle_distance", "accuracy", 4, 711),
    "MNIST": ("mnist", "accuracy", 10, 10000),
    "ObjectNet": ("objectnet", "accuracy", 113, 18574),
    "Oxford Flowers-102": ("vtab/flowers", "mean_per_class_recall", 102, 6149),
    "Oxford-IIIT Pet": ("vtab/pets", "mean_per_class_recall", 37, 3669),
    "Pascal VOC 2007": ("voc2007", "accuracy", 20, 14976),
    "PatchCamelyon": ("vtab/pcam", "accuracy", 2, 32768),
    "Rendered SST2": ("renderedsst2", "accuracy", 2, 1821),
    "RESISC45": ("vtab/resisc45", "accuracy", 45, 6300),
    "Stanford Cars": ("cars", "accuracy", 196, 8041),
    "STL-10": ("stl10", "accuracy", 10, 8000),
    "SUN397": ("sun397", "accuracy", 397, 108754),
    "SVHN": ("vtab/svhn", "accuracy", 10, 26032),
    "iWildCam": ("wilds/iwildcam", "macro_f1", 182, 42791),
    "Camelyon17": ("wilds/camelyon17", "accuracy", 2, 85054),
    "FMoW": ("wilds/fmow", "worst_region_accuracy", 62, 22108),
    "Dollar Street": ("fairness/dollar_street", "worst_group_top5_accuracy", 58, 3503),
    "GeoDE": ("fairness/geode", "worst_group_accuracy", 40, 12488),
}

_SCHEDULE = re.compile(r"_(?:s\d+[kmb]_b\d+k|e\d+)(?=_|$)")


def parse_tag(tag: str) -> tuple[str, dict]:
    """``pretrained`` tag -> (pre-training data, extra facts).

    ``laion2b_s34b_b79k`` -> ``laion2b`` {samples_seen 34e9, batch_size 79000};
    ``laion400m_e32`` -> ``laion400m`` {epochs 32}; ``laion2b_s34b_b82k_augreg_soup`` ->
    ``laion2b`` {..., recipe ``augreg_soup``}; ``mscoco_finetuned_laion2b_s13b_b90k`` -> ``laion2b``
    {finetuned_on ``mscoco``}; ``frozen_laion5b_s13b_b90k`` -> ``laion5b`` {frozen True}; a tag
    without a schedule (``openai``, ``webli``, ``dfn5b``, ``metaclip_fullcc``) is the data name
    (the importer leaves a version-only tag such as ``v1`` without pre-training data)."""
    t = str(tag).strip()
    extra: dict = {}
    m = re.match(r"(\w+?)_finetuned_(.+)", t)
    if m:
        extra["finetuned_on"], t = m.group(1), m.group(2)
    if t.startswith("frozen_"):
        extra["frozen"], t = True, t[len("frozen_"):]
    sched = _SCHEDULE.search(t)
    if not sched:
        return t, extra
    data, rest = t[:sched.start()], t[sched.start() + 1:]
    units = {"k": 1e3, "m": 1e6, "b": 1e9}
    toks = rest.split("_")
    recipe = []
    for tok in toks:
        if m := re.fullmatch(r"s(\d+)([kmb])", tok):
            extra["samples_seen"] = float(m.group(1)) * units[m.group(2)]
        elif m := re.fullmatch(r"b(\d+)k", tok):
            extra["batch_size"] = int(m.group(1)) * 1000
        elif m := re.fullmatch(r"e(\d+)", tok):
            extra["epochs"] = int(m.group(1))
        else:
            recipe.append(tok)
    if recipe:
        extra["recipe"] = "_".join(recipe)
    return data, extra


def family_of(arch: str) -> str:
    """``ViT-B-32-quickgelu`` -> ``vit``; ``EVA02-E-14-plus`` -> ``eva02``; ``convnext_base_w`` ->
    ``convnext``; ``RN50x4`` -> ``resnet``; ``coca_ViT-L-14`` -> ``coca``; ``xlm-roberta-base-ViT-B-32`` -> ``vit``
    (the image tower); ``nllb-clip-base`` -> ``nllb-clip``."""
    a = str(arch).strip()
    if re.match(r"RN\d", a):
        return "resnet"
    if a.startswith("coca"):
        return "coca"
    if a.startswith("nllb-clip"):
        return "nllb-clip"
    m = re.search(r"(?:^|-)(ViT)-", a)
    if m and not a.startswith(("EVA", "vit_")):
        return "vit"
    head = re.split(r"[-_]", a)[0].lower()
    return head


@register_importer
class OpenClipImporter(Importer):
    """open_clip ``docs/``: zero-shot results of 121 CLIP models on 35 datasets + model profile."""

    name = "openclip"
    canonical_datasets = True
    description = ("open_clip zero-shot results (docs/openclip_classification_results.csv [+ model_profile.csv]): "
                   "121 CLIP models on 35 datasets, regime zero-shot")

    def read(self, path, **options) -> ImportBatch:
        self.check_options(options)
        folder, res_path, batch = self.open_folder(
            path, RESULTS, SOURCE, f"an openclip folder holds {RESULTS} (and optionally {PROFILE})")
        rep = batch.report
        df = read_table(res_path, dtype=str, keep_default_na=False)
        require_columns(df, ["name", "pretrained"], res_path)
        cols = [c for c in df.columns if c not in META_COLS]
        unknown = [c for c in cols if c not in DATASETS]
        if unknown:
            raise HistoryImportError(f"{res_path}: unknown dataset column(s) {', '.join(unknown)}; known: the 35 "
                                     "DataComp classification tasks (history/importers/openclip.py DATASETS)")
        rep.rows_read = len(df) * len(cols)
        vals = {c: parse_numbers(df[c], c, res_path) for c in cols}
        for c, v in vals.items():
            bad = v[(v < 0) | (v > 1)]
            if len(bad):
                i = bad.index[0]
                raise HistoryImportError(f"{res_path}: row {i + 1} (file line {i + 2}): {c} = {df[c].iat[i]!r} is "
                                         "outside [0, 1]; open_clip scores are fractions")
        nums = {c: parse_numbers(df[c], c, res_path) for c in ("params (M)", "FLOPs (B)", AVERAGE) if c in df}
        models: dict[str, dict[str, Any]] = {}
        jobs: list[dict[str, Any]] = []
        per_metric: dict[str, int] = {}
        seen: set[str] = set()
        versions: list[str] = []
        n_blank = 0
        n_dup = 0
        data: str | None  # the tag's pre-training data (None: a version-only tag)
        for i in range(len(df)):
            arch, tag = df["name"].iat[i].strip(), df["pretrained"].iat[i].strip()
            if not arch or not tag:
                raise HistoryImportError(f"{res_path}: row {i + 1} (file line {i + 2}): empty name or pretrained tag")
            name = f"{arch}@{tag}"
            if name in seen:
                n_dup += 1
                continue
            seen.add(name)
            data, extra = parse_tag(tag)
            extra = {"pretrained_tag": tag, **extra}
            if re.fullmatch(r"v\d+", data):  # a version, not a data set (nllb-clip-*: 'v1')
                versions.append(name)
                data = None
            for c, k in (("params (M)", "params_total"), ("FLOPs (B)", "gflops_total"), (AVERAGE, "avg_35_datasets")):
                if c in nums and not np.isnan(nums[c].iat[i]):
                    extra[k] = float(nums[c].iat[i]) * (1e6 if c == "params (M)" else 1)
            models[name] = {"name": name, "modality": "image", "architecture": arch, "family": family_of(arch),
                            "extra": extra, **({"pretrain_dataset": data} if data else {})}
            for c in cols:
                v = vals[c].iat[i]
                if np.isnan(v):
                    n_blank += 1
                    continue
                key, metric, _, _ = DATASETS[c]
                jobs.append({"model": name, "dataset": key, "regime": REGIME, "hparams": {}, "metric": metric,
                             "value": float(v), "source": SOURCE, "provenance": f"{res_path.name}:{i + 1}"})
                per_metric[metric] = per_metric.get(metric, 0) + 1
        if versions:
            rep.notes.append(f"{len(versions)} model(s) with a version-only pretrained tag name no pre-training data "
                             f"(pretrain_dataset left empty): {', '.join(versions)}")
        rep.drop("empty cell (no value)", n_blank)
        rep.drop("repeated (name, pretrained) row: the first is kept", n_dup * len(cols))
        same: dict = {}
        for i in range(len(df)):
            values = tuple(df[c].iat[i] for c in cols)
            same.setdefault(values, []).append(f"{df['name'].iat[i]}@{df['pretrained'].iat[i]}")
        twins = [" = ".join(v) for v in same.values() if len(v) > 1]
        if twins:  # kept: the file lists them as different models (e.g. the -quickgelu name of OpenAI weights)
            rep.notes.append(f"{len(twins)} group(s) of models with identical scores on all {len(cols)} datasets, kept "
                             "as listed: " + "; ".join(twins))
        self._profile(folder / PROFILE, models, rep)
        batch.models, batch.jobs = list(models.values()), jobs
        batch.datasets = [{"name": key, "modality": "image", "num_classes": k,
                           "extra": {"openclip": {"column": c, "metric": metric, "eval_size": n}}}
                          for c, (key, metric, k, n) in DATASETS.items() if c in cols]
        rep.notes.append(f"{len(df)} models x {len(cols)} datasets = {rep.rows_read} values (rows read counts "
                         f"values); regime {REGIME}: no fine-tuning, never pooled with the fine-tuning sources")
        rep.notes.append(f"column {AVERAGE!r} is an aggregate, not a dataset: kept in model extra.avg_35_datasets")
        rep.notes.append("jobs per metric: " + ", ".join(f"{k} {v}" for k, v in sorted(per_metric.items()))
                         + " (DataComp's main metric per dataset; only 'accuracy' is top-1 accuracy)")
        return batch

    @staticmethod
    def _profile(path: Path, models: dict, rep: ImportReport) -> None:
        if not path.exists():
            rep.notes.append(f"no {PROFILE}: models carry no input size, tower params or GMACs")
            return
        pf = read_table(path, dtype=str, keep_default_na=False)
        require_columns(pf, ["model", "image_size"], path)
        num = {c: parse_numbers(pf[c], c, path) for c in pf.columns if c != "model"}
        rows = {str(m).strip(): i for i, m in enumerate(pf["model"]) if not is_blank(m)}
        found = 0
        missing = set()
        for rec in models.values():
            i = rows.get(rec["architecture"])
            if i is None:
                missing.add(rec["architecture"])
                continue
            found += 1
            g = lambda c: None if c not in num or np.isnan(num[c].iat[i]) else float(num[c].iat[i])  # noqa: E731
            if (v := g("image_size")) is not None:
                rec["input_size"] = int(v)
            if (v := g("embed_dim")) is not None:
                rec["feature_dim"] = int(v)
            if (v := g("image_mparams")) is not None:
                rec["params"] = v * 1e6
            if (v := g("image_gflops")) is not None:
                rec["gmacs"] = v / 2
            ex = rec["extra"]
            for c, k, scale in (("text_mparams", "text_params", 1e6), ("text_gflops", "text_gflops", 1),
                                ("image_gflops", "image_gflops", 1), ("image_width", "image_width", 1),
                                ("text_width", "text_width", 1)):
                if (v := g(c)) is not None:
                    ex[k] = v * scale
        rep.notes.append(f"{found} of {len(models)} models have an input size, image-tower params and GMACs "
                         f"(image GFLOPs / 2) from {PROFILE}"
                         + (f"; architectures without a profile row: {', '.join(sorted(missing))}" if missing else ""))
