"""End-to-end: ``python -m recommender score`` on a digits image folder and on an npz."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from features.data import save_features_npz
from features.scores import SCORES, ScoreSpec
from history.store import HistoryStore
from recommender.cli import main
from tests.helpers import digits_image_folder

REPO = Path(__file__).resolve().parents[2]
METHODS = "logme,hscore,leep,knn1"


def _cnn(classes, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, classes))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A digits image folder (5 classes x 20) and two TorchScript CNNs (8x8 grayscale inputs)."""
    root = tmp_path_factory.mktemp("e2e")
    digits_image_folder(root / "digits", n_classes=5, per_class=20)
    meta = json.dumps({"input_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]})
    for name, classes, seed in (("a", 10, 0), ("b", 4, 1)):
        torch.jit.save(torch.jit.script(_cnn(classes, seed)), str(root / f"{name}.pt"),
                       _extra_files={"recommender.json": meta})
    return root


def _run(*argv):
    return main([str(a) for a in argv])


def test_score_images_end_to_end_and_rerun_replaces(workdir, home, capsys):
    db = home / "h.db"
    argv = ["score", "--store", db, "--dataset", "digits5", "--data", workdir / "digits",
            "--models", f"cnn_a=torchscript:{workdir / 'a.pt'},cnn_b=torchscript:{workdir / 'b.pt'}",
            "--methods", METHODS + ",rsa", "--probe-size", 60, "--seed", 1, "--batch-size", 16, "--no-progress"]
    assert _run(*argv) == 0
    out = capsys.readouterr().out
    assert "cnn_a" in out and "logme" in out and "was not in the store: created" in out
    assert "skipped rsa for cnn_a: needs a reference model" in out

    store = HistoryStore(f"sqlite:///{db}")
    s = store.scores_frame()
    assert len(s) == 8 and set(s["model"]) == {"cnn_a", "cnn_b"} and set(s["method"]) == set(METHODS.split(","))
    assert (s["dataset"] == "digits5").all() and (s["source"] == "score-cli").all()
    assert (s["probe_size"] == 60).all() and (s["seed"] == 1).all() and (s["runtime_s"] >= 0).all()
    assert np.isfinite(s["value"].astype(float)).all()
    ds = store.get_dataset("digits5")
    assert ds["num_samples"] == 100 and ds["num_classes"] == 5 and ds["modality"] == "image"
    assert store.get_model("cnn_a")["feature_dim"] == 16
    pr = store.probes_frame()
    assert len(pr) == 1 and pr.iloc[0]["size"] == 60 and len(pr.iloc[0]["indices"]) == 60
    assert list((home / "cache" / "features").glob("cnn_a-*.npz"))  # features were cached

    # re-running replaces (same values from the cache) instead of doubling rows
    assert _run(*argv) == 0
    assert "0 added" in capsys.readouterr().out
    s2 = store.scores_frame()
    assert len(s2) == 8
    assert np.allclose(s2.sort_values(["model", "method"])["value"].astype(float),
                       s.sort_values(["model", "method"])["value"].astype(float))

    # a reference model enables rsa; json output is machine-readable
    assert _run(*argv[:-1], "--reference-model", f"ref=torchscript:{workdir / 'b.pt'}", "--format", "json",
                "--no-progress") == 0
    rep = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rep["scores"]} == set(METHODS.split(",")) | {"rsa"}
    assert rep["probe"]["size"] == 60 and not rep["failed"]
    assert len(store.scores_frame()) == 10
    store.dispose()


def test_score_from_npz_with_failing_method(tmp_path, home, capsys, monkeypatch):
    def boom(features, labels, *, probs=None, reference=None):
        if features.shape[1] == 1:
            raise RuntimeError("cannot handle 1-d features")
        return 1.0

    monkeypatch.setitem(SCORES, "boom", ScoreSpec(name="boom", fn=boom, paper="-", summary="test only"))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    good = rng.normal(size=(60, 5)) + y[:, None]
    probs = rng.dirichlet(np.ones(3), size=60)
    path = save_features_npz(tmp_path / "f.npz", y, {"m1": good, "org/m2": good[:, :1]}, probs={"m1": probs})
    db = home / "n.db"
    rc = _run("score", "--store", db, "--dataset", "toy", "--features-file", path, "--methods", "logme,leep,boom",
              "--probe-size", 40)
    cap = capsys.readouterr()
    assert rc == 0
    assert "skipped leep for org/m2: needs source-class probabilities" in cap.out
    assert "failed boom for org/m2: RuntimeError: cannot handle 1-d features" in cap.err
    s = HistoryStore(f"sqlite:///{db}").scores_frame()
    got = sorted(zip(s["model"], s["method"]))
    assert got == [("m1", "boom"), ("m1", "leep"), ("m1", "logme"), ("org/m2", "logme")]  # the rest is stored


@pytest.mark.parametrize("extra, match", [
    (["--methods", "logmee"], "unknown model-selection score 'logmee'.*Valid model-selection scores"),
    (["--models", "nope"], "not in .*f.npz; it has features for: m1"),
    (["--probe-size", "0"], "--probe-size must be >= 1"),
    (["--methods", "rsa", "--reference-model", "ref"], "reference model 'ref' not in .*f.npz"),
])
def test_score_cli_user_errors(tmp_path, home, capsys, extra, match):
    import re

    y = np.repeat(np.arange(2), 5)
    path = save_features_npz(tmp_path / "f.npz", y, {"m1": np.random.default_rng(0).normal(size=(10, 3))})
    db = home / "e.db"
    assert _run("score", "--store", db, "--dataset", "d", "--features-file", path, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(match, err), err
    assert len(HistoryStore(f"sqlite:///{db}").scores_frame()) == 0  # nothing written


def test_score_cli_subprocess_help():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "recommender", "score", "--help"], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=60)
    assert r.returncode == 0 and "--reference-model" in r.stdout and "--probe-size" in r.stdout


def _score_registered_toy(tmp_path, db, capsys, num_samples, num_classes) -> str:
    """Register dataset 'toy' with these counts, score 60 samples of 4 classes for it; stderr of the score."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    path = save_features_npz(tmp_path / "f.npz", y, {"m1": rng.normal(size=(60, 5)) + y[:, None]})
    assert main(["--store", str(db), "history", "add-dataset", "toy", "--num-samples", str(num_samples),
                 "--num-classes", str(num_classes)]) == 0
    capsys.readouterr()
    assert _run("score", "--store", db, "--dataset", "toy", "--features-file", path, "--methods", "logme",
                "--probe-size", 40) == 0
    return capsys.readouterr().err


def test_score_warns_when_data_contradicts_registered_counts(tmp_path, home, capsys):
    db = home / "w.db"
    err = _score_registered_toy(tmp_path, db, capsys, num_samples=5000, num_classes=10)
    assert "warning: the data has 4 classes but dataset 'toy' is registered with 10" in err
    assert "warning: the data has 60 samples but dataset 'toy' is registered with 5,000" in err
    ds = HistoryStore(f"sqlite:///{db}").get_dataset("toy")
    assert (ds["num_classes"], ds["num_samples"]) == (10, 5000)  # registered values kept


def test_score_no_warning_when_counts_agree(tmp_path, home, capsys):
    assert "warning" not in _score_registered_toy(tmp_path, home / "w.db", capsys, num_samples=60, num_classes=4)
