"""Pooled training (features.pooling, experiments.histories.load_pooled): which regime of another
source is pooled, and the pooled rows' popularity reference (model-mean over the benchmark's own
training datasets)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.ablations import model_mean_own
from experiments.baselines import model_mean
from experiments.histories import load_pooled
from features.pooling import own_datasets, pool_regime
from recommender.commands.train import pooled_history
from recommender.training import default_regime

MODELS = [f"m{i}" for i in range(5)]


def _jobs(source, regime, datasets, value):
    return [{"model": m, "dataset": d, "value": float(value(i, j)), "source": source, "regime": regime}
            for j, d in enumerate(datasets) for i, m in enumerate(MODELS)]


@pytest.fixture()
def two_sources(store):
    """``prim``: full fine-tunings on a, b (m4 best). ``other``: mostly VTAB-1k-like runs on b, c, d
    where the ranking is reversed (m0 best), and a few full runs on c where it agrees (m4 best)."""
    store.commit(
        models=[{"name": m, "modality": "image", "params": 1e6 * (i + 1)} for i, m in enumerate(MODELS)],
        datasets=[{"name": d, "modality": "image", "num_samples": 1000 * (k + 1), "num_classes": 10}
                  for k, d in enumerate("abcd")],
        jobs=(_jobs("prim", "full", ["a", "b"], lambda i, j: 0.5 + 0.05 * i + 0.1 * j)
              + _jobs("other", "low-data", ["b", "c", "d"], lambda i, j: 0.6 - 0.05 * i)
              + _jobs("other", "full", ["c"], lambda i, j: 0.3 + 0.02 * i)))
    return store


def test_another_source_pools_the_primarys_regime_unless_one_is_named(two_sources):
    pooled, src, _, notes, primary = load_pooled(two_sources, source="prim,other")
    other = pooled.targets[pooled.targets["dataset"].str.endswith("@other")]
    # the full runs (the primary's regime), not the more frequent low-data ones
    assert set(other["dataset"]) == {"c@other"} and len(other) == len(MODELS)
    assert other.set_index("model")["value"].idxmax() == "m4"
    assert any("other (regime full)" in n for n in notes) and primary == ["a", "b"]
    pooled2, *_ = load_pooled(two_sources, source="prim,other:low-data")
    other2 = pooled2.targets[pooled2.targets["dataset"].str.endswith("@other")]
    assert set(other2["dataset"]) == {"b@other", "c@other", "d@other"}
    assert set(pooled2.targets["regime"]) == {"full"}  # one regime label for the protocols
    ex = pooled2.datasets.set_index("name").loc["d@other", "extra"]["pooled_from"]
    assert ex == {"source": "other", "dataset": "d", "regime": "low-data"}


def test_pool_regime_rule():
    counts = pd.Series({"vtab-1k": 10, "full": 3})
    assert pool_regime(counts, primary="full") == "full"
    assert pool_regime(counts, primary="slice") == "vtab-1k"  # the source lacks it: its most frequent
    assert pool_regime(counts, named="full", primary="vtab-1k") == "full"


def test_pooled_reference_is_model_mean_over_the_benchmarks_own_datasets(two_sources):
    pooled, *_ = load_pooled(two_sources, source="prim,other:low-data")
    own = set(own_datasets(pooled))
    assert {"a", "b"} <= own and not {d for d in own if "@" in d}
    train = pooled.drop_targets(datasets=["a"])
    test = pd.DataFrame({"model": MODELS, "dataset": "a"})
    mine = model_mean_own(train, test, pooled)
    raw = model_mean(train, test, pooled)
    assert np.argmax(mine) == 4  # b's ranking only (m4 best)
    assert np.argmax(raw) == 0  # the other source's reversed low-data ranking dominates the raw mean
    # on an unpooled history it is model-mean itself
    base = pooled.keep_targets(datasets=["a", "b"]).drop_targets(datasets=["a"])
    assert np.allclose(model_mean_own(base, test, base), model_mean(base, test, base))


def test_train_pools_another_source_in_the_primarys_regime(store, capsys):
    """``train --source p,q``: q has low-data and full runs of the same pairs; the primary p has only
    low-data runs, so q contributes its low-data runs (alone, q would train on full)."""
    store.commit(
        models=[{"name": m, "modality": "image", "params": 1e6 * (i + 1)} for i, m in enumerate(MODELS)],
        datasets=[{"name": d, "modality": "image", "num_samples": 1000, "num_classes": 10} for d in "abcd"],
        jobs=(_jobs("p", "low-data", ["a", "b"], lambda i, j: 0.5 + 0.05 * i)
              + _jobs("q", "low-data", ["c", "d"], lambda i, j: 0.6 - 0.05 * i)
              + _jobs("q", "full", ["c", "d"], lambda i, j: 0.3 + 0.02 * i)))
    assert default_regime(store, source="q") == "full"
    pooled = pooled_history(store, "p,q")
    q = pooled.targets[pooled.targets["dataset"] == "c@q"].set_index("model")["value"]
    assert len(q) == len(MODELS) and q.idxmax() == "m0"  # the low-data ranking, not the full one
    named = pooled_history(store, "p,q:full")
    assert named.targets[named.targets["dataset"] == "c@q"].set_index("model")["value"].idxmax() == "m4"
