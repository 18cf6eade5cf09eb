"""Estimators take only parameters they use and talk to the featurizer through its public API."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.history_frame import synthetic_history
from recommender.io import load_recommender
from recommender.registry import RECOMMENDERS, create_recommender

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(RECOMMENDERS))
def test_no_ignored_target_rule_parameter(name):
    assert "target_rule" not in RECOMMENDERS[name].cls._param_names()
    with pytest.raises(Exception, match="target_rule"):
        create_recommender(name, target_rule="mean")


def test_estimators_use_no_private_featurizer_members():
    private = []
    for f in sorted((REPO / "recommender").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value)
                if "featurizer" in base or base in ("fz", "self.featurizer_"):
                    private.append(f"{f.relative_to(REPO)}:{node.lineno}: {base}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("features."):
                private += [f"{f.relative_to(REPO)}:{node.lineno}: import {a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert not private, "\n".join(private)


def test_dataset_weights_is_the_collab_kernel():
    hist = synthetic_history(n_models=10, n_datasets=5, seed=0)
    rec = create_recommender("lr", features="d,m").fit(hist)
    fz = rec.featurizer_
    names = list(fz.train_datasets_)
    w = fz.dataset_weights(names)
    assert w.shape == (len(names), len(names))
    assert np.allclose(np.diag(w), 1.0) and (w > 0).all() and (w <= 1).all()
    assert np.allclose(w, w.T)


def test_a_model_saved_with_target_rule_still_loads(tmp_path):
    hist = synthetic_history(n_models=10, n_datasets=5, seed=0)
    rec = create_recommender("lr", features="d,m").fit(hist)
    rec.save(tmp_path / "lr")
    meta_f = tmp_path / "lr" / "meta.json"
    meta = json.loads(meta_f.read_text())
    meta["params"]["target_rule"] = "best"  # as older versions wrote it
    meta_f.write_text(json.dumps(meta))
    back = load_recommender(tmp_path / "lr")
    pairs = pd.DataFrame({"model": hist.model_names()[:3], "dataset": hist.dataset_names()[0]})
    assert np.allclose(back.predict(pairs), rec.predict(pairs))
