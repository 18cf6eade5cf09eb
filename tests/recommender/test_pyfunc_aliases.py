"""The pyfunc model: dataset aliases, unknown names (NaN + reason), observed accuracies (issues 20, 21)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recommender.adaptive import update_predictions
from recommender.cli import main
from tests.helpers import make_synthetic_store


@pytest.fixture()
def model(store, home):
    make_synthetic_store(store)
    store.add_dataset("oxford_iiit_pet", num_samples=3680, num_classes=37, modality="image")
    assert main(["--home", str(home), "train", "--no-mlflow", "--cv-folds", "0"]) == 0
    from recommender.pyfunc import RecommenderPyfunc  # lazy: mlflow

    m = RecommenderPyfunc()
    m.load_context(SimpleNamespace(artifacts={"recommender": str(home / "models" / "blend")}))
    return m, store.url


def test_aliases_resolve_and_unknown_names_answer_nan_with_a_reason(model):
    m, url = model
    q = pd.DataFrame({"model": ["m1", "m1", "m2", "no_such_model"],
                      "dataset": ["pets", "oxford_iiit_pet", "no_such_dataset", "ds1"]})
    got = m.predict(None, q, params={"store": url})
    assert got["predicted"][0] == got["predicted"][1] and np.isfinite(got["predicted"][0])
    assert list(got["reason"][:2]) == ["", ""]
    assert np.isnan(got["predicted"][2]) and "unknown dataset 'no_such_dataset'" in got["reason"][2]
    assert np.isnan(got["predicted"][3]) and "unknown model 'no_such_model'" in got["reason"][3]
    # the fit-time context (no store param): the same aliases, the same refusals
    fit_time = m.predict(None, q)
    assert fit_time["predicted"][0] == fit_time["predicted"][1] == got["predicted"][0]
    assert np.isnan(fit_time["predicted"][2]) and "add-dataset" in fit_time["reason"][2]


def test_observed_column_updates_the_other_rows_as_predict_does(model):
    m, url = model
    models = [f"m{i}" for i in range(8)]
    base = m.predict(None, pd.DataFrame({"model": models, "dataset": "pets"}), params={"store": url})
    obs = [0.9, np.nan, np.nan, 0.3] + [np.nan] * 4
    got = m.predict(None, pd.DataFrame({"model": models, "dataset": "pets", "observed": obs}), params={"store": url})
    assert (got["conditioned_on"] == 2).all()
    assert got["predicted"][0] == pytest.approx(0.9) and got["predicted"][3] == pytest.approx(0.3)
    prior = pd.Series(base["predicted"].to_numpy(), index=models)
    want = update_predictions(prior, m._history(url).targets, "oxford_iiit_pet", {"m0": 0.9, "m3": 0.3})
    np.testing.assert_allclose(got["predicted"], want[models], rtol=1e-12)
    assert not np.allclose(got["predicted"][[1, 2, 4, 5, 6, 7]], base["predicted"][[1, 2, 4, 5, 6, 7]])
    nan_only = m.predict(None, pd.DataFrame({"model": models, "dataset": "pets", "observed": np.nan}),
                         params={"store": url})
    pd.testing.assert_frame_equal(nan_only, base)  # no observation: the prior, exactly
