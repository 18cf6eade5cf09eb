"""Helpers that test files in several folders share (plain functions; shared fixtures live in conftest.py)."""
from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import shutil
import socket
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def make_synthetic_store(store, n_datasets: int = 4, n_models: int = 8, seed: int = 0, scores: bool = True,
                         missing=(("ds3", "m6"), ("ds3", "m7"))):
    """A small history: accuracy = dataset base + 0.3 * model quality + noise; LogME ~ quality.

    ``missing`` (model, dataset) pairs get no job, so ``ds3`` has 2 models left to rank.
    """
    rng = np.random.default_rng(seed)
    fams = ["vit", "resnet", "convnext"]
    models = [{"name": f"m{i}", "modality": "image", "family": fams[i % 3], "params": float(10**6 * (i + 1)),
               "input_size": 224, "feature_dim": 256 * (1 + i % 3), "pretrain_dataset": "imagenet",
               "source_accuracy": 0.7 + 0.02 * i} for i in range(n_models)]
    datasets = [{"name": f"ds{j}", "modality": "image", "num_samples": 1000 * (j + 1),
                 "num_classes": 10 * (j + 1)} for j in range(n_datasets)]
    quality = np.linspace(0, 1, n_models)
    skip = {(d, m) for d, m in missing}
    jobs, sc = [], []
    for j in range(n_datasets):
        for i in range(n_models):
            if scores:
                sc.append({"model": f"m{i}", "dataset": f"ds{j}", "method": "logme",
                           "value": float(quality[i] + rng.normal(0, 0.05)), "source": "synthetic"})
            if (f"ds{j}", f"m{i}") in skip:
                continue
            acc = float(np.clip(0.5 + 0.1 * j + 0.3 * quality[i] + rng.normal(0, 0.02), 0, 1))
            jobs.append({"model": f"m{i}", "dataset": f"ds{j}", "value": acc, "source": "synthetic",
                         "hparams": {"lr": 0.01}})
    store.commit(models=models, datasets=datasets, jobs=jobs, scores=sc)
    return jobs


@functools.cache
def mlflow_template_db() -> Path:
    """An empty MLflow SQLite store with all migrations applied (built once per process)."""
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, folder, True)
    db = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def two_groups(n_datasets=8, seed=0):
    """Models a0..a4 rise and fall together, b0..b4 together; datasets favour one group or the other."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_datasets):
        swing = 0.1 if d % 2 else -0.1
        for g, sign in (("a", 1), ("b", -1)):
            for i in range(5):
                rows.append({"model": f"{g}{i}", "dataset": f"d{d}",
                             "value": 0.7 + sign * swing + 0.01 * i + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


def plugin_commands() -> dict[str, str]:
    """The ``recommender.commands`` entry points that pyproject.toml registers."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(meta["project"]["entry-points"]["recommender.commands"])


def full_parser() -> argparse.ArgumentParser:
    """The CLI's parser, with every pyproject plugin command even if the installed metadata is stale."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, target in plugin_commands().items():
        if name not in sub.choices:
            mod, func = target.split(":")
            getattr(importlib.import_module(mod), func)(sub)
    return parser


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_image_folder(folder: Path, n_classes: int, per_class: int) -> Path:
    """``folder/<class>/<index>.png``: the first ``per_class`` 8x8 scikit-learn digits of classes 0..n_classes-1."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(n_classes):
        (folder / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(d.target == c)[:per_class]:
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(folder / str(c) / f"{i}.png")
    return folder
