"""The MLflow pyfunc model and registry entries written by `train` (real MLflow SQLite store)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from history.store import HistoryStore
from recommender.cli import main
from recommender.io import load_recommender
from recommender.tracking import scoped_tracking_uri
from tests.helpers import make_synthetic_store, mlflow_template_db

PAIRS = pd.DataFrame({"model": ["m0", "m3", "m7", "m6"], "dataset": ["ds0", "ds1", "ds2", "ds3"]})


def _train(home, *args):
    shutil.copy(mlflow_template_db(), home / "mlflow.db")
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    make_synthetic_store(store)
    store.dispose()
    with pytest.MonkeyPatch.context() as mp:  # the CLI exports RECOMMENDER_HOME; keep it local
        mp.setenv("RECOMMENDER_HOME", str(home))
        rc = main(["--home", str(home), "train", "--cv-folds", "0", *args])
    assert rc == 0
    return home, f"sqlite:///{home / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic history with ``lr`` and ``fm`` trained and registered (version 1 each)."""
    home = tmp_path_factory.mktemp("pyfunc") / "home"
    home.mkdir()
    return _train(home, "-r", "lr,fm")


def _load(uri, tracking_uri):
    import mlflow

    with scoped_tracking_uri(tracking_uri):
        return mlflow.pyfunc.load_model(uri)


@pytest.mark.parametrize("name", ["lr", "fm"])
def test_registered_pyfunc_predicts_like_the_saved_recommender(trained, name):
    home, uri = trained
    model = _load(f"models:/recommender-{name}/1", uri)
    got = model.predict(PAIRS)
    assert list(got.columns) == ["model", "dataset", "predicted", "std", "reason", "conditioned_on"]
    assert (got["reason"] == "").all() and (got["conditioned_on"] == 0).all()
    assert list(got["model"]) == list(PAIRS["model"])
    rec = load_recommender(home / "models" / name)
    np.testing.assert_allclose(got["predicted"], rec.predict(PAIRS), rtol=1e-9)
    std = rec.predict_std(PAIRS)
    if std is None:
        assert got["std"].isna().all()
    else:
        assert np.all(np.asarray(std) > 0)
        np.testing.assert_allclose(got["std"], std, rtol=1e-9)


def test_run_uri_and_registry_versions(home, capsys):
    import mlflow

    home, uri = _train(home, "-r", "lr")
    info = json.loads((home / "models" / "lr" / "training.json").read_text())["mlflow"]
    assert info["ok"] and info["model_version"] == 1 and info["registered_name"] == "recommender-lr"
    via_run = _load(f"runs:/{info['run_id']}/model", uri).predict(PAIRS)
    via_registry = _load("models:/recommender-lr/1", uri).predict(PAIRS)
    pd.testing.assert_frame_equal(via_run, via_registry)

    rc = main(["--home", str(home), "train", "-r", "lr", "--cv-folds", "0", "--features", "d,m,s"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "registered recommender-lr version 2" in out
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='recommender-lr'"))
    assert versions == [1, 2]
    run = client.get_run(json.loads((home / "models" / "lr" / "training.json").read_text())["mlflow"]["run_id"])
    assert run.data.params["param.features"] == "d,m,s"
    assert "train_rmse" in run.data.metrics
    v2 = _load("models:/recommender-lr/2", uri).predict(PAIRS)
    assert not np.allclose(v2["predicted"], via_registry["predicted"])  # a different model (with MS scores)
    # tracking URI set only for the duration of the calls
    assert os.environ.get("MLFLOW_TRACKING_URI") is None


def test_pyfunc_with_store_param_predicts_a_new_dataset(trained):
    home, uri = trained
    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    store.add_dataset("fresh", num_samples=800, num_classes=7, modality="image")
    model = _load("models:/recommender-lr/1", uri)
    pairs = pd.DataFrame({"model": ["m1", "m5"], "dataset": ["fresh", "fresh"]})
    got = model.predict(pairs, params={"store": store.url})
    assert np.all(np.isfinite(got["predicted"]))
    store.dispose()
    with pytest.raises(Exception, match="missing inputs"):
        model.predict(pd.DataFrame({"name": ["m1"]}))


def test_registered_model_loads_in_a_fresh_interpreter_without_the_project(trained, tmp_path):
    """Only MLflow and the third-party packages on the path (no checkout, no editable install):
    the model brings its own code (code_paths) and its requirements name what it needs."""
    import subprocess
    import sys
    import sysconfig

    import mlflow

    home, uri = trained
    with scoped_tracking_uri(uri):
        local = mlflow.artifacts.download_artifacts("models:/recommender-lr/1", dst_path=str(tmp_path / "m"))
    reqs = (Path(local) / "requirements.txt").read_text()
    assert "lightgbm==" in reqs and "pandas==" in reqs
    assert sorted(p.name for p in (Path(local) / "code").iterdir()) == ["features", "history", "recommender"]
    purelib = sysconfig.get_paths()["purelib"]
    script = (
        f"import sys; sys.path.append({purelib!r})\n"
        "import mlflow.pyfunc, pandas as pd, json\n"
        f"m = mlflow.pyfunc.load_model({str(local)!r})\n"
        f"import recommender; assert recommender.__file__.startswith({str(local)!r}), recommender.__file__\n"
        "out = m.predict(pd.DataFrame({'model': ['m0', 'm3'], 'dataset': ['ds0', 'ds1']}))\n"
        "print(json.dumps(out['predicted'].tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECOMMENDER_HOME")}
    r = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    want = load_recommender(home / "models" / "lr").predict(PAIRS.iloc[:2])
    np.testing.assert_allclose(json.loads(r.stdout.strip().splitlines()[-1]), want, rtol=1e-9)
