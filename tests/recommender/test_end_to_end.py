"""The whole chain through the CLI: history -> train -> add-dataset -> score -> predict.

A brand-new dataset (digits, 5 classes) is registered, scored with a small zoo of real
TorchScript CNNs, and ranked by a recommender that was trained BEFORE the dataset existed:
prediction must pick up the stored MS scores (the ``s`` features) from the store.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from history.store import HistoryStore
from recommender.cli import main
from tests.helpers import digits_image_folder

ZOO = ["cnn_a", "cnn_b", "cnn_c", "cnn_d"]


def _cnn(width, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * width, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture()
def world(tmp_path, home):
    digits_image_folder(tmp_path / "digits", n_classes=5, per_class=16)
    meta = json.dumps({"input_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]})
    specs = []
    for k, name in enumerate(ZOO):
        path = tmp_path / f"{name}.pt"
        torch.jit.save(torch.jit.script(_cnn(4 + 4 * k, k)), str(path), _extra_files={"recommender.json": meta})
        specs.append(f"{name}=torchscript:{path}")
    # a past history of the same zoo on four other datasets: accuracy follows model quality,
    # and the stored LogME scores follow it too
    rng = np.random.default_rng(0)
    quality = np.array([0.1, 0.4, 0.6, 0.9])
    jobs, scores = [], []
    for j in range(4):
        for i, m in enumerate(ZOO):
            jobs.append({"model": m, "dataset": f"past{j}", "value": float(0.5 + 0.05 * j + 0.3 * quality[i]
                                                                            + rng.normal(0, 0.01)),
                         "source": "team"})
            scores.append({"model": m, "dataset": f"past{j}", "method": "logme",
                           "value": float(quality[i] + rng.normal(0, 0.05)), "source": "team"})
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    store.commit(models=[{"name": m, "modality": "image", "family": "cnn"} for m in ZOO],
                 datasets=[{"name": f"past{j}", "modality": "image", "num_samples": 500 * (j + 1),
                            "num_classes": 10} for j in range(4)],
                 jobs=jobs, scores=scores)
    store.dispose()
    return tmp_path, ",".join(specs)


def _cli(home, capsys, *args):
    rc = main(["--home", str(home), *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_new_dataset_scored_then_predicted(world, home, capsys):
    folder, specs = world
    rc, _, err = _cli(home, capsys, "train", "--recommender", "lr", "--features", "d,m,s", "--no-mlflow",
                      "--cv-folds", "0")
    assert rc == 0, err

    rc, _, err = _cli(home, capsys, "predict", "--dataset", "digits5")
    assert rc == 2 and "history add-dataset digits5" in err  # not registered yet: says how

    rc, out, err = _cli(home, capsys, "history", "add-dataset", "digits5", "--num-samples", 80,
                        "--num-classes", 5, "--modality", "image")
    assert rc == 0, err
    rc, out, err = _cli(home, capsys, "predict", "--dataset", "digits5", "--format", "json")
    assert rc == 0, err
    cold = {r["model"]: r["predicted"] for r in json.loads(out)["ranking"]}
    assert set(cold) == set(ZOO)

    rc, out, err = _cli(home, capsys, "score", "--dataset", "digits5", "--data", folder / "digits",
                        "--models", specs, "--methods", "logme", "--probe-size", 60, "--no-progress")
    assert rc == 0, err
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    s = store.scores_frame(method="logme")
    new = s[s["dataset"] == "digits5"].set_index("model")["value"]
    assert set(new.index) == set(ZOO) and np.isfinite(new.astype(float)).all()
    store.dispose()

    rc, out, err = _cli(home, capsys, "predict", "--dataset", "digits5", "--format", "json")
    assert rc == 0, err
    warm = {r["model"]: r["predicted"] for r in json.loads(out)["ranking"]}
    # the stored scores reached the recommender: predictions moved, and the model with the
    # higher digits5 LogME is predicted higher (the trained model weights LogME positively)
    assert not np.allclose([cold[m] for m in ZOO], [warm[m] for m in ZOO])
    delta = np.array([warm[m] - cold[m] for m in ZOO])
    z = (new[ZOO].to_numpy(float) - new.mean()) / new.std(ddof=0)
    assert np.corrcoef(delta, z)[0, 1] > 0.9
