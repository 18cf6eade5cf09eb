"""The dataset text embedding (offline sentence model) and its optional use by the featurizer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.dataset_text import add_text_embedding, cosine_similarity, dataset_text, embed_datasets, text_columns
from features.featurizer import Featurizer
from features.history_frame import synthetic_history
from history.datasets_registry import load_registry


def test_dataset_text_is_missing_without_description_or_classes():
    assert dataset_text("my_data", None) is None and dataset_text("my_data", {"aliases": {}}) is None
    t = dataset_text("apple_leaves", {"description": "Photos of apple leaves", "class_names": ["healthy", "leaf_rust"]})
    assert t == "apple leaves. Photos of apple leaves. Classes: healthy, leaf rust."
    reg = load_registry().lookup("pets").store_record()
    t = dataset_text("oxford_iiit_pet", reg["extra"])
    assert "Classes:" in t and reg["extra"]["registry"]["description"] in t


@pytest.mark.slow
def test_registry_embeddings_put_similar_datasets_close():
    reg = load_registry()
    names = ["oxford_iiit_pet", "stanford_dogs", "dsprites_location", "eurosat", "resisc45"]
    recs = [reg.entries[n].store_record() for n in names]
    frame = pd.DataFrame({"name": names, "extra": [r["extra"] for r in recs]})
    frame.loc[len(frame)] = {"name": "no_text", "extra": None}
    emb = embed_datasets(frame)
    assert emb.at["no_text", "embedding"] is None and pd.isna(emb.at["no_text", "text"])
    v = emb.at["eurosat", "embedding"]
    assert v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-4
    sim = lambda a, b: cosine_similarity(emb, a, b)
    assert sim("oxford_iiit_pet", "stanford_dogs") > sim("oxford_iiit_pet", "dsprites_location")
    assert sim("eurosat", "resisc45") > sim("eurosat", "oxford_iiit_pet")
    assert sim("eurosat", "no_text") is None


def test_featurizer_uses_the_projected_embedding_only_when_asked():
    h = synthetic_history(10, 5, seed=2)
    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=16).astype(np.float32) for _ in range(4)] + [None]  # the last dataset has no text
    emb = pd.DataFrame({"text": ["t"] * 4 + [None], "embedding": vecs}, index=pd.Index(h.datasets["name"], name="name"))
    h2 = add_text_embedding(h, k=3, embeddings=emb)
    d = h2.datasets.set_index("name")
    last = h.datasets["name"].iloc[-1]
    assert d.loc[last, list(text_columns(3))].isna().all()  # missing stays missing
    assert d.drop(index=last)[list(text_columns(3))].notna().all().all()

    plain = Featurizer("d,m").fit(h2)
    assert not any("text_emb" in n for n in plain.feature_names_)  # nothing by default
    f = Featurizer("d,m", dataset_columns=text_columns(3)).fit(h2)
    assert {"d:text_emb_0", "d:text_emb_0:missing", "d:text_emb_2"} <= set(f.feature_names_)
    pairs = h2.targets[["model", "dataset"]]
    X = f.transform(pairs, h2).toarray()
    miss = X[:, f.feature_names_.index("d:text_emb_0:missing")]
    assert set(miss[pairs["dataset"].to_numpy() == last]) == {1.0}
    assert set(miss[pairs["dataset"].to_numpy() != last]) == {0.0}
    state, tables = f.get_state()
    g = Featurizer.from_state(state, tables)
    assert np.allclose(g.transform(pairs, h2).toarray(), X)
