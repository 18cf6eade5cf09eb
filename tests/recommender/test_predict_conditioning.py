"""`predict` updates its predictions with the dataset's own results (issue 20) and says what it rests on.

Synthetic history (tests/helpers.make_synthetic_store), default recommender.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from features.history_frame import HistoryFrame
from recommender.adaptive import update_rule
from tests.helpers import make_synthetic_store


@pytest.fixture()
def trained(store, cli):
    make_synthetic_store(store)
    store.add_dataset("fresh", num_samples=2500, num_classes=20, modality="image")
    rc, _, err = cli("train", "--no-mlflow", "--cv-folds", "0")
    assert rc == 0, err
    return store


def _json(cli, *args):
    rc, out, err = cli("predict", "--format", "json", "--top", "0", *args)
    assert rc == 0, err
    return json.loads(out)


OBSERVED = {"m0": 0.41, "m3": 0.93, "m7": 0.62}  # m3 far above its prior, m0 below


def test_own_results_are_measured_and_update_the_others(trained, cli, tmp_path, home):
    before = _json(cli, "--dataset", "fresh")
    assert before["own_results"] == 0 and before["conditioned_on"] == 0 and before["cold_start"] is True
    assert any(n.startswith("cold start: no fine-tune on 'fresh'") for n in before["notes"])
    prior0 = {r["model"]: r["predicted"] for r in before["ranking"]}
    assert all(r["prior"] == r["predicted"] for r in before["ranking"])

    csv = tmp_path / "fresh_runs.csv"
    csv.write_text("model,dataset,accuracy,source\n" + "".join(f"{m},fresh,{v},synthetic\n"
                                                                 for m, v in OBSERVED.items()))
    rc, _, err = cli("history", "import", csv)
    assert rc == 0, err

    res = _json(cli, "--dataset", "fresh")
    assert res["own_results"] == 3 and res["conditioned_on"] == 3 and res["cold_start"] is False
    assert {r["model"]: r["real"] for r in res["measured"]} == pytest.approx(OBSERVED)
    assert "update_rule" in res["conditioning"]
    post = {r["model"]: r["predicted"] for r in res["ranking"]}
    assert set(post) == set(prior0) - set(OBSERVED)  # measured models are not ranked by default
    assert all(r["prior"] == prior0[r["model"]] for r in res["ranking"])  # the prior is unchanged, bit for bit
    assert max(abs(post[m] - prior0[m]) for m in post) > 1e-3  # the others moved

    # the update is the rule search uses, with the same prior and history
    import pandas as pd

    hist = HistoryFrame.from_store(trained, rule="best")
    models = sorted(prior0)
    raw_prior = pd.Series([prior0[m] for m in models], index=models)  # priors are inside [0, 1]: not clipped
    want = update_rule(raw_prior, hist.targets, "fresh").posterior(OBSERVED)
    for m in post:
        assert post[m] == pytest.approx(float(np.clip(want[m], 0, 1)), abs=1e-9)

    # --ignore-own-results: the prior alone, exactly
    ign = _json(cli, "--dataset", "fresh", "--ignore-own-results")
    assert ign["conditioned_on"] == 0 and ign["own_results"] == 3
    assert {r["model"]: r["predicted"] for r in ign["ranking"]} == {m: prior0[m] for m in post}

    # measured models ranked with --include-finetuned: marked, at their measured value
    inc = _json(cli, "--dataset", "fresh", "--include-finetuned")
    rows = {r["model"]: r for r in inc["ranking"]}
    for m, v in OBSERVED.items():
        assert rows[m]["measured"] is True and rows[m]["real"] == pytest.approx(v)
        assert rows[m]["predicted"] == pytest.approx(v)
    assert sum(r["measured"] for r in inc["ranking"]) == 3

    # the table: measured block, count of own results used
    rc, out, _ = cli("predict", "--dataset", "fresh")
    assert rc == 0
    assert "used 3 of 'fresh''s own results" in out
    assert "93.0% measured" in out and "measured on 'fresh' in this context (3" in out
    rc, out, _ = cli("predict", "--dataset", "fresh", "--ignore-own-results")
    assert "--ignore-own-results: 3 own results of 'fresh' not used" in out


def test_context_is_cached_and_follows_the_store(trained, cli, home):
    a = _json(cli, "--dataset", "ds3")
    b = _json(cli, "--dataset", "ds3")
    assert a["context"]["cached"] is False and b["context"]["cached"] is True
    assert a["ranking"] == b["ranking"]  # the cached context predicts the same numbers
    assert any((home / "cache" / "predict").glob("*/targets.parquet"))
    assert not list((home / "cache").rglob("*.pkl")) and not list((home / "cache").rglob("*.pickle"))
    trained.commit(jobs=[{"model": "m6", "dataset": "ds3", "value": 0.99, "source": "synthetic"}])
    c = _json(cli, "--dataset", "ds3")
    assert c["context"]["cached"] is False and c["own_results"] == a["own_results"] + 1
    assert [r["model"] for r in c["ranking"]] == ["m7"]


def test_cold_start_and_missing_meta_features_are_said(trained, cli):
    trained.commit(datasets=[{"name": "bare", "modality": "image"}])
    res = _json(cli, "--dataset", "bare")
    notes = " | ".join(res["notes"])
    assert "cold start: no fine-tune on 'bare'" in notes and "popularity" in notes
    assert "no meta-features for 'bare': dataset features imputed" in notes
    rc, out, _ = cli("predict", "--dataset", "bare")
    assert rc == 0 and "note: cold start" in out and "note: no meta-features for 'bare'" in out
    assert "used 0 own results of 'bare'" in out
    known = _json(cli, "--dataset", "ds1")  # a dataset with results and meta-features: no note
    assert known["notes"] == [] and known["cold_start"] is False


def test_bad_inputs_are_one_line(trained, cli):
    rc, out, err = cli("predict", "--dataset", "fresh", "--top", "-1")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, out, err = cli("predict", "--dataset", "nope_dataset", "--ignore-own-results")
    assert rc == 2 and "Traceback" not in err
    for flag, bad in (("--source", "synthetc"), ("--regime", "fulll")):
        rc, out, err = cli("predict", "--dataset", "ds1", flag, bad)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert f"no results of {flag[2:]} {bad!r}" in err and "did you mean" in err
