"""`predict` in a store with several sources says which source and regime its numbers refer to (issue 21)."""
from __future__ import annotations

import json

import pytest

from tests.helpers import make_synthetic_store


@pytest.fixture()
def multi(store):
    """The synthetic history plus a second source: other results on ds3 and a model known only there."""
    make_synthetic_store(store)
    store.commit(models=[{"name": "elsewhere_only", "modality": "image", "family": "vit", "params": 5e6}],
                 jobs=[{"model": "m6", "dataset": "ds3", "value": 0.31, "source": "other", "regime": "vtab1k"},
                       {"model": "m7", "dataset": "ds3", "value": 0.77, "source": "other"},
                       {"model": "elsewhere_only", "dataset": "ds3", "value": 0.9, "source": "other"},
                       {"model": "elsewhere_only", "dataset": "ds1", "value": 0.8, "source": "other"},
                       {"model": "m6", "dataset": "ds0", "value": 0.2, "source": "other", "regime": "vtab1k"}])
    return store


def _json(cli, *args):
    rc, out, err = cli("predict", "--format", "json", "--top", "0", *args)
    assert rc == 0, err
    return json.loads(out)


def test_training_source_is_the_context_and_other_sources_are_marked(multi, cli):
    assert cli("train", "--no-mlflow", "--cv-folds", "0", "--source", "synthetic")[0] == 0
    res = _json(cli, "--dataset", "ds3")
    assert res["source"] == "synthetic" and res["context"]["origin"] == "training"
    assert res["context"]["line"].startswith("context: source synthetic; regime")
    ranked = {r["model"]: r for r in res["ranking"]}
    assert set(ranked) == {"m6", "m7"}  # elsewhere_only has no evidence in the training source
    assert res["outside_context"] == 1
    # other sources' results are marked, not used: m7 is still ranked (no result in the context)
    assert res["own_results"] == 6 and ranked["m7"]["real"] is None and ranked["m7"]["measured"] is False
    assert "other/full" in ranked["m7"]["elsewhere"] and "other/vtab1k" in ranked["m6"]["elsewhere"]
    assert {(r["model"], r["source"]) for r in res["measured_elsewhere"]} == {
        ("m6", "other"), ("m7", "other"), ("elsewhere_only", "other")}
    rc, out, _ = cli("predict", "--dataset", "ds3")
    lines = out.splitlines()
    assert lines[1].startswith("context: source synthetic; regime")
    assert "measured elsewhere (not used)" in lines[2] and "77.0% other/full" in out
    assert "3 results on 'ds3' outside this context (" in out and "other/vtab1k: 1" in out and "other/full: 2" in out
    assert "1 models with results only outside this context are not ranked" in out


def test_training_refuses_to_mix_sources_and_asked_source_overrides(multi, cli):
    rc, _, err = cli("train", "--no-mlflow", "--cv-folds", "0")  # several sources, none named
    assert rc == 2 and "the store holds 2 sources" in err and "--source" in err
    assert cli("train", "--no-mlflow", "--cv-folds", "0", "--source", "synthetic")[0] == 0
    asked = _json(cli, "--dataset", "ds3", "--source", "other")
    assert asked["source"] == "other"
    assert asked["context"]["origin"] == "asked" and "asked with --source/--regime" in asked["context"]["line"]


@pytest.mark.slow
def test_real_store_cifar100_ranks_training_source_models(shared_data, cli):
    for name in ("transfergraph-image", "vtab"):
        rc, _, err = cli("history", "pull", name, "--from", shared_data / name)
        assert rc == 0, err
    assert cli("train", "--no-mlflow", "--cv-folds", "0", "--source", "transfergraph-image")[0] == 0
    res = _json(cli, "--dataset", "cifar100")
    assert res["source"] == "transfergraph-image"
    assert res["measured_elsewhere"] and {r["source"] for r in res["measured_elsewhere"]} == {"vtab"}
    assert res["own_results"] >= 150 and all(r["real"] is None for r in res["ranking"])
