"""TransferGraph histories (Li et al., "Model selection with model zoo via graph learning",
ICDE 2024; GitHub zLizy/transfergraph and TransferGraph/transfergraph).

A TransferGraph folder holds four CSV files (``resources/experiments/<task>/``):

``records.csv``                          one fine-tuning run per row (the jobs)
``model_config_dataset.csv``             model meta-features
``target_dataset_features.csv``          size and number of classes of each target dataset
``transferability_score_records.csv``    LogME / regularised H-score per (model, dataset)

Two layouts exist. ``image`` (``image_classification``): records carry ``lr``, ``epochs``,
``batch_size``, ``train_slice`` and ``test_accuracy``. ``text`` (``sequence_classification``):
records carry ``learning_rate``, ``num_train_epochs``, ``seed``, ``peft_method`` (LoRA or
full fine-tuning) and only ``eval_accuracy``; score metrics are spelled
``TransferabilityMetric.LOG_ME`` instead of ``TransferabilityMethod.LOG_ME``; dataset
features are keyed by ``finetune_dataset``. The layout is detected from the columns.

Known quirks handled (each counted in the import report):

* ``food101`` (image) is a broken run: almost every run sits at chance (1/101 = 0.0099).
  Its rows are dropped unless ``include_food101=True``.
* ``flowers`` is listed with 10 classes (Oxford Flowers has 102): repaired to 102.
  ``tweet_eval/offensive`` (text) is listed with 18 classes (it is binary): repaired to 2.
* a few lines of the score file are truncated (fewer fields than the header): dropped.
* about 60 (model, dataset, method) score keys appear twice: aggregated by their mean.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from history.util import is_missing

from ..errors import HistoryImportError
from .base import (
    ImportBatch,
    Importer,
    ImportReport,
    is_blank,
    parse_numbers,
    read_optional_table,
    read_table,
    refuse_outside_unit,
    register_importer,
    require_columns,
    sha256_of,
)

RECORDS = "records.csv"
MODELS = "model_config_dataset.csv"
DATASETS = "target_dataset_features.csv"
SCORES = "transferability_score_records.csv"
FILES = (RECORDS, MODELS, DATASETS, SCORES)

#: score metric suffix (after ``TransferabilityMethod.`` / ``TransferabilityMetric.``) -> method
SCORE_METHODS = {
    "LOG_ME": "logme",
    "REG_H_SCORE": "reg_hscore",
    "H_SCORE": "hscore",
    "LEEP": "leep",
    "N_LEEP": "nleep",
    "NCE": "nce",
    "PARC": "parc",
    "GBC": "gbc",
    "SFDA": "sfda",
    "TRANSRATE": "transrate",
}

#: (dataset, wrong num_classes) -> right num_classes, with the reason
CLASS_REPAIRS = {
    ("flowers", 10): (102, "flowers num_classes 10 -> 102 (Oxford Flowers-102 has 102 classes)"),
    ("tweet_eval/offensive", 18): (2, "tweet_eval/offensive num_classes 18 -> 2 (binary task)"),
}

FOOD101_REASON = (
    "food101 run excluded: broken experiment ({n_chance} of {n} runs at chance accuracy "
    "~0.0099 = 1/101); import with --include-food101 to keep it"
)

def _num(v):
    """A float or None (cells already parsed by ``parse_numbers``)."""
    return None if is_missing(v) else float(v)


def _int(v):
    f = _num(v)
    return None if f is None else int(round(f))


def _first_architecture(v):
    """``"['ViTForImageClassification']"`` or ``"BertForSequenceClassification"`` -> the first name."""
    if is_blank(v):
        return None
    s = str(v).strip()
    if s.startswith("["):
        try:
            val = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            return s.strip("[]'\" ") or None
        if isinstance(val, (list, tuple)):
            return str(val[0]) if val else None
    return s


def score_method(metric: str) -> str:
    """``TransferabilityMethod.LOG_ME`` -> ``logme`` (unknown names: lower-cased suffix)."""
    suffix = str(metric).strip().rsplit(".", 1)[-1]
    return SCORE_METHODS.get(suffix.upper(), suffix.lower())


def detect_layout(folder: Path) -> str:
    """``image`` or ``text``, from the records' columns (fallback: the model config's)."""
    cols = set(pd.read_csv(folder / RECORDS, nrows=0).columns)
    if "test_accuracy" in cols or {"lr", "epochs"} <= cols:
        return "image"
    if {"learning_rate", "num_train_epochs"} & cols or "peft_method" in cols:
        return "text"
    if (folder / MODELS).exists():
        mcols = set(pd.read_csv(folder / MODELS, nrows=0).columns)
        if "input_shape" in mcols:
            return "image"
        if "number_of_labels" in mcols:
            return "text"
    raise HistoryImportError(
        f"{folder / RECORDS}: cannot tell whether this is the image or the text TransferGraph "
        f"layout from its columns ({', '.join(sorted(cols))}); pass layout='image' or layout='text'"
    )


def _named_records(names, layout: str) -> tuple[str, dict]:
    """The modality of a layout and one ``{"name", "modality"}`` record per name (the rows a
    meta-feature table then fills in)."""
    modality = "image" if layout == "image" else "text"
    return modality, {n: {"name": n, "modality": modality} for n in names}


@register_importer
class TransferGraphImporter(Importer):
    """TransferGraph folder (records + model config + dataset features + LogME scores)."""

    name = "transfergraph"
    canonical_datasets = True
    description = (
        "TransferGraph experiment folder (records.csv, model_config_dataset.csv, "
        "target_dataset_features.csv, transferability_score_records.csv); image or text layout"
    )

    def read(self, path, layout: str | None = None, include_food101: bool = False, **options) -> ImportBatch:
        self.check_options(options)
        folder = Path(path)
        if not folder.exists():
            raise HistoryImportError(f"{folder}: folder not found")
        if folder.is_file():
            if folder.name in FILES:
                folder = folder.parent
            else:
                raise HistoryImportError(
                    f"{folder}: the transfergraph importer reads a folder holding {', '.join(FILES)}")
        if not (folder / RECORDS).exists():
            raise HistoryImportError(
                f"{folder}: no {RECORDS} here; a TransferGraph folder holds {', '.join(FILES)} "
                "(resources/experiments/image_classification or sequence_classification)")
        if layout is None:
            layout = detect_layout(folder)
        if layout not in ("image", "text"):
            raise HistoryImportError(f"transfergraph importer: layout must be 'image' or 'text', got {layout!r}")
        source = f"transfergraph-{layout}"
        rep = ImportReport(importer=self.name, source=source, path=str(folder),
                           sha256=sha256_of(folder / RECORDS))
        batch = ImportBatch(report=rep)

        jobs, job_models, job_datasets = self._jobs(folder, layout, source, include_food101, rep)
        batch.jobs = jobs
        batch.models = self._models(folder, layout, job_models, rep)
        batch.datasets = self._datasets(folder, layout, job_datasets, rep)
        if (folder / SCORES).exists():
            batch.scores = self._scores(folder, source, rep)
        else:
            rep.notes.append(f"no {SCORES} in {folder}: no model-selection scores imported")
        return batch

    # ------------------------------------------------------------------ jobs
    def _jobs(self, folder, layout, source, include_food101, rep):
        p = folder / RECORDS
        df = read_table(p)
        col = {c: df[c].tolist() for c in df.columns}
        if layout == "image":
            require_columns(df, ["model", "finetuned_dataset", "test_accuracy"], p)
            acc_col = "test_accuracy"
            hp_cols = {"lr": "lr", "epochs": "epochs", "batch_size": "batch_size", "train_slice": "train_slice",
                       "val_slice": "val_slice", "test_slice": "test_slice", "input_size": "input_shape"}
        else:
            acc_col = "test_accuracy" if "test_accuracy" in df.columns else "eval_accuracy"
            require_columns(df, ["model", "finetuned_dataset", acc_col], p)
            hp_cols = {"lr": "learning_rate", "epochs": "num_train_epochs", "batch_size": "batch_size",
                       "seed": "seed", "lr_scheduler": "lr_scheduler_type",
                       "gradient_accumulation_steps": "gradient_accumulation_steps",
                       "lora_r": "lora_attention_dimension", "lora_alpha": "lora_alpha",
                       "lora_dropout": "lora_dropout", "train_slice": "train_slice"}
            if acc_col == "eval_accuracy":
                rep.notes.append("text layout has no test_accuracy column: jobs use eval_accuracy "
                                 "(metric 'eval_accuracy')")
        rep.rows_read += len(df)
        acc = parse_numbers(df[acc_col], acc_col, p)
        numeric_hp = {k: parse_numbers(df[c], c, p) for k, c in hp_cols.items()
                      if c in df.columns and k not in ("train_slice", "val_slice", "test_slice", "lr_scheduler")}
        refuse_outside_unit(acc, p, acc_col, col[acc_col], "TransferGraph")

        ds_col = df["finetuned_dataset"].astype("string")
        is_food = ds_col.str.strip().str.lower().eq("food101").fillna(False).to_numpy()
        if is_food.any() and not include_food101:
            n_chance = int(((acc[is_food] - 1 / 101).abs() < 0.002).sum())
            rep.drop(FOOD101_REASON.format(n_chance=n_chance, n=int(is_food.sum())), int(is_food.sum()))

        jobs, models, datasets = [], set(), set()
        n_missing_acc = n_missing_key = 0
        for i in range(len(df)):
            if is_food[i] and not include_food101:
                continue
            model, dataset = col["model"][i], col["finetuned_dataset"][i]
            if is_blank(model) or is_blank(dataset):
                n_missing_key += 1
                continue
            if np.isnan(acc.iat[i]):
                n_missing_acc += 1
                continue
            hp = {}
            for k, c in hp_cols.items():
                if c not in df.columns:
                    continue
                v = numeric_hp[k].iat[i] if k in numeric_hp else col[c][i]
                if is_blank(v):
                    continue
                if k in numeric_hp:
                    v = float(v)
                    if k in ("epochs", "batch_size", "seed", "gradient_accumulation_steps", "lora_r",
                             "input_size") and v.is_integer():
                        v = int(v)
                else:
                    v = str(v)
                hp[k] = v
            regime = "full"
            if layout == "text" and "peft_method" in df.columns and not is_blank(col["peft_method"][i]):
                regime = str(col["peft_method"][i]).strip().lower()  # e.g. "lora"
                hp["peft_method"] = regime
            model, dataset = str(model).strip(), str(dataset).strip()
            models.add(model)
            datasets.add(dataset)
            jobs.append({
                "model": model, "dataset": dataset, "regime": regime, "hparams": hp,
                "metric": acc_col, "value": float(acc.iat[i]), "source": source,
                "provenance": f"{p.name}:{i + 1}",
            })
        rep.drop(f"missing {acc_col} (empty cell)", n_missing_acc)
        rep.drop("missing model or finetuned_dataset name", n_missing_key)
        if layout == "text":
            regimes = pd.Series([j["regime"] for j in jobs]).value_counts().to_dict() if jobs else {}
            rep.notes.append(f"regimes: {regimes} (peft_method empty = full fine-tuning)")
        return jobs, models, datasets

    # ------------------------------------------------------------------ models
    def _models(self, folder, layout, job_models, rep):
        modality, out = _named_records(job_models, layout)
        p = folder / MODELS
        df = read_optional_table(p, rep, "models carry no meta-features")
        if df is None:
            return list(out.values())
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, ["model"], p)
        nums = {}
        for c in ("input_shape", "output_shape", "accuracy", "number_of_parameters", "#labels",
                  "number_of_labels", "memory_consumption"):
            if c in df.columns:
                nums[c] = parse_numbers(df[c], c, p)
        for i in range(len(df)):
            name = col["model"][i]
            if is_blank(name):
                continue
            name = str(name).strip()
            rec = out.setdefault(name, {"name": name, "modality": modality})
            g = lambda c: nums[c].iat[i] if c in nums else None  # noqa: E731
            rec["input_size"] = _int(g("input_shape"))
            rec["feature_dim"] = _int(g("output_shape"))
            rec["architecture"] = _first_architecture(col["architectures"][i]) if "architectures" in df else None
            if "model_type" in df and not is_blank(col["model_type"][i]):
                rec["family"] = str(col["model_type"][i]).strip()
            if "dataset" in df and not is_blank(col["dataset"][i]):
                rec["pretrain_dataset"] = str(col["dataset"][i]).strip()
            sa = _num(g("accuracy"))
            rec["source_accuracy"] = sa
            rec["params"] = _num(g("number_of_parameters"))
            extra = {}
            n_labels = _int(g("#labels")) if "#labels" in nums else _int(g("number_of_labels"))
            if n_labels is not None:
                extra["num_labels"] = n_labels
            mem = _num(g("memory_consumption"))
            if mem is not None:
                extra["memory_bytes"] = mem
            if "problem_type" in df and not is_blank(col["problem_type"][i]):
                extra["problem_type"] = str(col["problem_type"][i])
            if extra:
                rec["extra"] = extra
        missing = sorted(set(job_models) - set(df["model"].astype(str).str.strip()))
        if missing:
            rep.notes.append(f"{len(missing)} model(s) with jobs have no row in {MODELS} "
                             f"(no meta-features), e.g. {missing[:3]}")
        return list(out.values())

    # ------------------------------------------------------------------ datasets
    def _datasets(self, folder, layout, job_datasets, rep):
        modality, out = _named_records(job_datasets, layout)
        p = folder / DATASETS
        df = read_optional_table(p, rep, "datasets carry no size / class counts")
        if df is None:
            return list(out.values())
        col = {c: df[c].tolist() for c in df.columns}
        key = "target_dataset" if "target_dataset" in df.columns else "finetune_dataset"
        require_columns(df, [key, "size", "number_of_classes"], p)
        size = parse_numbers(df["size"], "size", p)
        ncls = parse_numbers(df["number_of_classes"], "number_of_classes", p)
        for i in range(len(df)):
            name = col[key][i]
            if is_blank(name):
                continue
            name = str(name).strip()
            k = _int(ncls.iat[i])
            fix = CLASS_REPAIRS.get((name, k))
            if fix:
                k = fix[0]
                rep.repair(fix[1])
            rec = out.setdefault(name, {"name": name, "modality": modality})
            rec["num_samples"] = _int(size.iat[i])
            rec["num_classes"] = k
        missing = sorted(set(job_datasets) - set(df[key].astype(str).str.strip()))
        if missing:
            rep.notes.append(f"dataset(s) with jobs but no row in {DATASETS}: {', '.join(missing)}")
        return list(out.values())

    # ------------------------------------------------------------------ scores
    def _scores(self, folder, source, rep):
        p = folder / SCORES
        df = read_table(p)
        col = {c: df[c].tolist() for c in df.columns}
        require_columns(df, ["model", "target_dataset", "metric", "score"], p)
        rep.rows_read += len(df)
        score = parse_numbers(df["score"], "score", p)
        runtime = parse_numbers(df["runtime"], "runtime", p) if "runtime" in df else pd.Series(np.nan, index=df.index)
        rows = []
        n_bad = 0
        for i in range(len(df)):
            model, ds, metric = col["model"][i], col["target_dataset"][i], col["metric"][i]
            if is_blank(model) or is_blank(ds) or is_blank(metric) or np.isnan(score.iat[i]):
                n_bad += 1
                continue
            rows.append((str(model).strip(), str(ds).strip(), score_method(metric),
                         float(score.iat[i]), _num(runtime.iat[i])))
        rep.drop(f"{SCORES}: malformed line (truncated, fewer fields than the header: "
                 "model / target_dataset / metric / score missing)", n_bad)
        if not rows:
            return []
        sf = pd.DataFrame(rows, columns=["model", "dataset", "method", "value", "runtime_s"])
        g = sf.groupby(["model", "dataset", "method"], sort=False)
        agg = g.agg(value=("value", "mean"), runtime_s=("runtime_s", "mean"), n=("value", "size")).reset_index()
        dup = agg[agg["n"] > 1]
        if len(dup):
            merged = int(dup["n"].sum() - len(dup))
            rep.repair("duplicated (model, dataset, method) score rows averaged into one", merged)
            rep.notes.append(
                f"{len(dup)} (model, dataset, method) score keys appeared more than once "
                f"({int(dup['n'].sum())} rows); each was aggregated to the mean score and runtime")
        out = []
        for r in agg.itertuples(index=False):
            out.append({
                "model": r.model, "dataset": r.dataset, "method": r.method, "value": float(r.value),
                "runtime_s": None if pd.isna(r.runtime_s) else float(r.runtime_s), "source": source,
            })
        return out
