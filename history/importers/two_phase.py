"""Two-phase-selection accuracy matrices ("A Two-Phase Recall-and-Select Framework for Fast Model
Selection"; GitHub plasware/two-phase-selection, ``coarse_recall/{CV,NLP}_coarse_recall/``, MIT).

A folder holds ``CV/`` and/or ``NLP/`` (or the repository's ``CV_coarse_recall/`` /
``NLP_coarse_recall/``), each with

``datasets.txt``   one target dataset per line
``matrix.txt``     tab-separated: line 1 names the Hugging Face models; line ``1 + i`` holds the
                   fine-tuned score of every model on dataset ``i`` of ``datasets.txt`` (fractions)

The authors fine-tuned every model offline and publish neither hyper-parameters nor split sizes,
so the jobs get their own regime, ``finetune-unspecified`` (never pooled with ``full`` or
``vtab-1k``: the training-set size is unknown), and empty ``hparams``. Modality: ``CV`` ->
image, ``NLP`` -> text (models and datasets).

Metrics. The matrix mixes metrics; each is named explicitly:

* ``cola`` (GLUE CoLA): a correlation-type score (Matthews correlation, -1..1; the file has
  -0.04), not accuracy: metric ``matthews_corr``;
* ``stsb`` (GLUE STS-B): a regression task (similarity 0-5, GLUE scores it by correlation); the
  file does not say what its number is, so it is not called accuracy: metric
  ``unspecified_score``;
* every other dataset: metric ``accuracy``.

Per-metric counts are in the report; a training frame takes one metric (``accuracy`` by
default), so these scores are never pooled with accuracies.

Quirks handled (each counted in the report):

* NLP model names are written with ``--`` instead of ``/`` (the Hugging Face cache spelling,
  ``aditeyabaral--finetuned-sail2017-xlm-roberta-base``); a Hub repo id cannot contain ``--``,
  so they are repaired to ``org/name``;
* a line with a different number of values than models, or a different number of lines than
  datasets, is an error naming the line; an empty cell would be dropped and counted;
* a value outside [-1, 1] is an error (all scores are fractions or correlations).

Dataset names are the authors' (``food101``, ``Matthijs/snacks``, ``cola``, ``sst2``, ...); the
dataset registry maps the ones it knows to the canonical tasks (``cola`` -> ``glue/cola``,
``sst2`` -> ``glue/sst2``, ``alkzar90/CC6204-Hackaton-Cub-Dataset`` -> ``cub200``); the others
keep their names. Model meta: the files carry only the Hugging Face names (modality from the
folder, ``input_size`` when the name states a resolution such as ``-224`` / ``-384``);
``history enrich`` derives family, parameters and GMACs from the names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import HistoryImportError
from .base import ImportBatch, Importer, ImportReport, not_utf8_message, register_importer, sha256_of

SOURCE = "two-phase-selection"
REGIME = "finetune-unspecified"
#: sub-folder -> modality; the repository's own folder names are accepted too
PARTS = {"CV": "image", "NLP": "text"}
ALT = {"CV": "CV_coarse_recall", "NLP": "NLP_coarse_recall"}
METRICS = {"cola": "matthews_corr", "stsb": "unspecified_score"}
METRIC_NOTES = {
    "matthews_corr": "cola: a correlation-type score (Matthews correlation), not accuracy",
    "unspecified_score": "stsb: a regression task (GLUE scores it by correlation); the file does not say which "
                         "score this is, so it is not called accuracy",
}
_RES = re.compile(r"[-_](224|240|256|288|320|384|448|512)(?:$|[-_])")


def hub_name(raw: str) -> str:
    """``org--name`` (the Hugging Face cache spelling) -> ``org/name``; other names unchanged."""
    return raw.replace("--", "/", 1) if "--" in raw and "/" not in raw else raw


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise HistoryImportError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HistoryImportError(not_utf8_message(path, exc)) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines
        lines.pop()
    return lines


def find_parts(folder: Path) -> dict[str, Path]:
    """{``CV``/``NLP``: its folder} for the parts present under ``folder``."""
    out = {}
    for part in PARTS:
        for name in (part, ALT[part]):
            if (folder / name / "matrix.txt").exists():
                out[part] = folder / name
                break
    return out


@register_importer
class TwoPhaseImporter(Importer):
    """two-phase-selection ``CV/`` + ``NLP/`` accuracy matrices."""

    name = "two-phase"
    canonical_datasets = True
    description = ("two-phase-selection accuracy matrices (plasware/two-phase-selection coarse_recall/"
                   "{CV,NLP}_coarse_recall/matrix.txt + datasets.txt): 30 image and 39 text HF models")

    def read(self, path, **options) -> ImportBatch:
        self.check_options(options)
        p = Path(path)
        if p.is_file():
            p = p.parent
        parts = find_parts(p)
        if not parts and (p / "matrix.txt").exists():  # one part's folder given directly
            key = next((k for k in PARTS if p.name in (k, ALT[k])), None)
            if key is None:
                raise HistoryImportError(f"{p}: cannot tell whether this is the CV or the NLP part "
                                         "(name the folder CV or NLP)")
            parts = {key: p}
            p = p.parent
        if not parts:
            raise HistoryImportError(f"{p}: no CV/matrix.txt or NLP/matrix.txt here; a two-phase-selection folder "
                                     "holds CV/ and NLP/ (coarse_recall/*_coarse_recall), each with matrix.txt "
                                     "and datasets.txt")
        first = (parts.get("CV") or parts["NLP"]) / "matrix.txt"
        rep = ImportReport(importer=self.name, source=SOURCE, path=str(p), sha256=sha256_of(first))
        batch = ImportBatch(report=rep)
        models: dict[str, dict[str, Any]] = {}
        datasets: dict[str, dict[str, Any]] = {}
        jobs: list[dict[str, Any]] = []
        n_blank = 0
        repaired: list[str] = []
        per_metric: dict[str, int] = {}
        for part, folder in parts.items():
            modality = PARTS[part]
            ds_path, mx_path = folder / "datasets.txt", folder / "matrix.txt"
            names = [n.strip() for n in _lines(ds_path)]
            lines = _lines(mx_path)
            if not lines:
                raise HistoryImportError(f"{mx_path}: file is empty")
            header = [m.strip() for m in lines[0].split("\t")]
            rows = lines[1:]
            if len(rows) != len(names):
                raise HistoryImportError(f"{mx_path}: {len(rows)} value lines but {ds_path.name} names {len(names)} "
                                         "datasets; line i + 1 of matrix.txt must hold dataset i")
            rep.rows_read += len(rows) * len(header)
            prov = f"{folder.name}/{mx_path.name}"
            for m in header:
                name = hub_name(m)
                if name != m:
                    repaired.append(m)
                rec: dict[str, Any] = {"name": name, "modality": modality}
                res = _RES.search(name) if modality == "image" else None
                if res:
                    rec["input_size"] = int(res.group(1))
                if name != m:
                    rec["extra"] = {"name_as_written": m}
                models.setdefault(name, rec)
            for i, (ds, line) in enumerate(zip(names, rows)):
                cells = line.split("\t")
                if len(cells) != len(header):
                    raise HistoryImportError(f"{mx_path}: line {i + 2} ({ds}) has {len(cells)} values but line 1 names "
                                             f"{len(header)} models")
                metric = METRICS.get(ds, "accuracy")
                for m, cell in zip(header, cells):
                    if not cell.strip():
                        n_blank += 1
                        continue
                    try:
                        v = float(cell)
                    except ValueError:
                        raise HistoryImportError(f"{mx_path}: line {i + 2} ({ds}), model {m}: value {cell!r} is not "
                                                 "a number") from None
                    if not -1 <= v <= 1:
                        raise HistoryImportError(f"{mx_path}: line {i + 2} ({ds}), model {m}: value {cell!r} is "
                                                 "outside [-1, 1]; the matrix holds fractions (and correlations)")
                    jobs.append({"model": hub_name(m), "dataset": ds, "regime": REGIME, "hparams": {},
                                 "metric": metric, "value": v, "source": SOURCE, "provenance": f"{prov}:{i + 1}"})
                    per_metric[metric] = per_metric.get(metric, 0) + 1
                datasets.setdefault(ds, {"name": ds, "modality": modality})
            rep.notes.append(f"{part}: {len(header)} models x {len(names)} datasets = {len(rows) * len(header)} values "
                             f"(rows read counts values)")
        missing = [k for k in PARTS if k not in parts]
        if missing:
            rep.notes.append(f"no {', '.join(missing)} part in {p}: only {', '.join(parts)} imported")
        rep.drop("empty cell (no value)", n_blank)
        if repaired:
            rep.repair("model name written with '--' for '/' (Hugging Face cache spelling) -> org/name",
                       len(repaired))
        rep.notes.append("jobs per metric: " + ", ".join(f"{k} {v}" for k, v in sorted(per_metric.items())))
        for metric, text in METRIC_NOTES.items():
            if per_metric.get(metric):
                rep.notes.append(f"metric {metric}: {per_metric[metric]} jobs -- {text}; kept apart from accuracy")
        rep.notes.append(f"regime {REGIME}: the authors give no split sizes or hyper-parameters "
                         "(not full, not vtab-1k)")
        batch.jobs, batch.models, batch.datasets = jobs, list(models.values()), list(datasets.values())
        return batch
