"""The shared helpers: one "unknown name" error, one missing-value test, one JSON default, one reason."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from history.errors import NotFoundError, RecommenderError, unknown_name_error
from history.util import exception_reason, is_missing, json_default


def test_unknown_name_error_says_did_you_mean_and_lists_the_valid_names():
    e = unknown_name_error("recommender", "lgmb", ["lr", "fm", "lgbm", "lgbm-rank"])
    assert isinstance(e, NotFoundError)
    assert str(e) == "unknown recommender 'lgmb'. Did you mean 'lgbm'? Valid recommenders: lr, fm, lgbm, lgbm-rank."
    e = unknown_name_error("source", "zzz", [], where=" in --source 'zzz'", extra="Import one first.",
                           cls=RecommenderError)
    assert type(e) is RecommenderError
    assert str(e) == "unknown source 'zzz' in --source 'zzz'. Valid sources: none. Import one first."


@pytest.mark.parametrize("call, text", [
    (lambda: __import__("recommender.registry", fromlist=["x"]).get_entry("lgmb"), "unknown recommender 'lgmb'"),
    (lambda: __import__("recommender.training", fromlist=["x"]).resolve_names("lgmb"), "unknown recommender 'lgmb'"),
    (lambda: __import__("recommender.protocols", fromlist=["x"]).get_protocol("lodoo"), "unknown protocol 'lodoo'"),
    (lambda: __import__("features.scores", fromlist=["x"]).get_score("logmee"),
     "unknown model-selection score 'logmee'"),
])
def test_every_registry_uses_the_one_message(call, text):
    with pytest.raises(NotFoundError) as ei:
        call()
    assert str(ei.value).startswith(text + ". Did you mean '") and "? Valid " in str(ei.value)


@pytest.mark.parametrize("v", [None, float("nan"), np.nan, np.float32("nan"), pd.NA, pd.NaT])
def test_is_missing(v):
    assert is_missing(v)


@pytest.mark.parametrize("v", [0, 0.0, "", "nan", "x", np.array([np.nan]), [None], math.inf, np.int64(3)])
def test_is_not_missing(v):
    assert not is_missing(v)


def test_json_default_and_exception_reason():
    got = json.loads(json.dumps({"i": np.int64(3), "f": np.float32(0.5), "nan": np.float32("nan"),
                                 "a": np.arange(2), "p": Path("a/b")}, default=json_default))
    assert got == {"i": 3, "f": 0.5, "nan": None, "a": [0, 1], "p": "a/b"}
    assert exception_reason(ValueError("bad\nmore")) == "ValueError: bad"
    assert exception_reason(KeyboardInterrupt()) == "KeyboardInterrupt"
