"""Feature group ``p`` (specialists), the registry's native image sizes, and pooled lifts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.featurizer import Featurizer
from features.history_frame import HistoryFrame
from features.specialist import SPECIALIST_FEATURES, dataset_entry
from history.datasets_registry import DATA_FILE, load_registry, lookup, validate


def _history() -> HistoryFrame:
    models = pd.DataFrame({
        "name": ["cars-ckpt", "cifar-ckpt", "big384", "small224", "norb-az"],
        "modality": "image",
        "pretrain_dataset": ["stanfordcars", "CIFAR-100", "imagenet", "imagenet", "smallnorb_azimuth"],
        "input_size": [224, 224, 384, 224, 224],
    })
    datasets = pd.DataFrame({"name": ["stanford_cars", "cifar100", "smallnorb_elevation", "eurosat"],
                             "modality": "image", "num_samples": [8144, 50000, 24300, 27000],
                             "num_classes": [196, 100, 9, 10]})
    rng = np.random.default_rng(0)
    t = pd.DataFrame([{"model": m, "dataset": d, "regime": "full", "metric": "accuracy",
                       "value": float(rng.uniform(0.5, 0.9))} for m in models["name"] for d in datasets["name"]])
    return HistoryFrame(targets=t, models=models, datasets=datasets)


def _features(hist, pairs):
    fz = Featurizer(groups="p").fit(hist)
    X = fz.transform(pairs, hist)
    dense = np.asarray(X.todense())
    # undo the standardization of dense columns to read raw values
    raw = dense * np.asarray(fz.scale_std_) + np.asarray(fz.scale_mean_)
    return pd.DataFrame(raw[:, : len(fz.dense_names_)], columns=fz.dense_names_)


def test_registry_resolves_aliases_for_the_source_match():
    hist = _history()
    pairs = pd.DataFrame({"model": ["cars-ckpt", "cifar-ckpt", "norb-az", "big384"],
                          "dataset": ["stanford_cars", "cifar100", "smallnorb_elevation", "stanford_cars"]})
    f = _features(hist, pairs)
    assert list(f.columns[: len(SPECIALIST_FEATURES)]) == list(SPECIALIST_FEATURES)
    assert f["p:source_match"].tolist() == [1.0, 1.0, 0.0, 0.0]  # 'stanfordcars' and 'CIFAR-100' resolve
    assert f["p:source_twin"].tolist() == [0.0, 0.0, 1.0, 0.0]  # smallnorb azimuth vs elevation: same images
    assert f["p:source_same_group"].iloc[2] == 1.0


def test_resolution_crosses_the_native_image_size():
    hist = _history()
    pairs = pd.DataFrame({"model": ["big384", "big384", "small224"],
                          "dataset": ["stanford_cars", "cifar100", "stanford_cars"]})
    f = _features(hist, pairs)
    cross = f["p:input*image_size"].to_numpy()
    # 384-pixel input on large images: positive; on 32-pixel CIFAR images: negative; the median input: 0
    assert cross[0] > 0 > cross[1] and cross[2] == pytest.approx(0.0, abs=1e-6)
    assert f["p:image_size:missing"].tolist() == [0.0, 0.0, 0.0]


def test_strength_is_the_leave_own_dataset_out_mean_z():
    hist = _history()
    t = hist.targets
    g = t.groupby("dataset")["value"]
    z = (t["value"] - g.transform("mean")) / g.transform("std", ddof=0)
    own = t.assign(z=z)
    mine = own[(own["model"] == "cars-ckpt") & (own["dataset"] != "stanford_cars")]["z"].mean()
    pairs = pd.DataFrame({"model": ["cars-ckpt", "cifar-ckpt"], "dataset": ["stanford_cars", "stanford_cars"]})
    f = _features(hist, pairs)
    assert f["p:source_match*strength"].iloc[0] == pytest.approx(mine, abs=1e-5)
    assert f["p:source_match*strength"].iloc[1] == pytest.approx(0.0, abs=1e-6)  # no match: the cross is 0


def test_pooled_dataset_names_resolve():
    assert dataset_entry("cifar100@shift").name == "cifar100"
    assert dataset_entry("no_such_dataset") is None


@pytest.mark.parametrize("name,size", [("cifar100", 32), ("eurosat", 64), ("stanford_cars", 640), ("kitti", 1242)])
def test_registry_image_sizes(name, size):
    assert lookup(name).image_size == size


def test_registry_rejects_a_bad_image_size(tmp_path):
    import json

    data = json.loads(DATA_FILE.read_text())
    e = next(x for x in data["datasets"] if x["name"] == "cifar10")
    e["image_size"] = "32px"
    assert any("image_size must be an integer" in x for x in validate(data))
    e["image_size"] = 32
    del e["refs"]["image_size"]
    assert any("image_size has no ref" in x for x in validate(data))
    text = next(x for x in data["datasets"] if x["modality"] == "text")
    text["image_size"] = 64
    text["refs"]["image_size"] = "image_sizes"
    assert any("only image tasks have an image_size" in x for x in validate(data))
    assert load_registry().lookup("cifar10").image_size == 32
