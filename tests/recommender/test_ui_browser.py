"""The ``ui`` command: MLflow dashboard over the tool's tracking store, checked in a real browser.

The browser test starts ``python -m recommender ui`` as a subprocess over a fresh home, logs a
real evaluation (parent run + one child run per method) into its SQLite tracking store with
``experiments.mlflow_log.log_evaluation``, opens the experiment, child-run and artifact
pages in headless Chromium and waits for the experiment name, run names, metric names and the
values that were logged. Screenshots go to ``$TMPDIR/finetune-recommender-test-artifacts/``
(or ``$RECOMMENDER_TEST_ARTIFACTS``).

The other tests cover the error paths (port in use, a store ``mlflow server`` cannot serve, a
server that crashes at start) without a browser.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recommender.mlflow_server as ms
from experiments.evaluate import EvaluationResult
from experiments.mlflow_log import log_evaluation
from recommender import metrics as M
from recommender.cli import main
from recommender.mlflow_server import ServerError, _children, check_backend_uri, free_port, serving, start_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ML = "workflowType=machine_learning"  # MLflow >= 3.x opens experiments in its GenAI view otherwise


# ---------------------------------------------------------------------------------------------
# error paths (fast, no browser)


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/mlflow.db", "postgresql+psycopg://u@localhost/mlflow",
                                 "mysql://u@localhost/mlflow"])
def test_database_stores_are_accepted(uri, tmp_path):
    uri = uri.format(tmp=tmp_path)
    assert check_backend_uri(uri) == uri


@pytest.mark.parametrize("uri, needle", [
    ("{tmp}/mlruns", "database store"),
    ("file://{tmp}/mlruns", "database store"),
    ("http://127.0.0.1:5000", "already a tracking server"),
    ("sqlite:///{tmp}/no/such/folder/mlflow.db", "does not exist"),
])
def test_unservable_stores_are_refused(uri, needle, tmp_path):
    with pytest.raises(ServerError, match=needle) as err:
        check_backend_uri(uri.format(tmp=tmp_path))
    assert "--tracking-uri" in str(err.value)


def test_ui_port_in_use_says_so(home, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc = main(["ui", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"port {port}" in err and "already in use" in err and "--port" in err
    assert not (home / "logs" / f"mlflow-ui-{port}.log").exists()  # nothing was started


def test_ui_refuses_a_folder_store(home, tmp_path, capsys):
    rc = main(["--tracking-uri", str(tmp_path / "mlruns"), "ui", "--port", str(free_port())])
    err = capsys.readouterr().err
    assert rc == 2 and "sqlite:///" in err


def test_server_crash_at_start_shows_its_log(tmp_path, monkeypatch):
    """A server that dies before serving: the error names the cause and ends with the log tail.
    (A stand-in process prints what `mlflow server` prints over a corrupt SQLite file, so the
    test stays fast; the real server takes seconds to import.)"""
    crash = ("import sys; print('INFO mlflow.store.db.utils: Creating initial MLflow database tables...'); "
             "print('Traceback (most recent call last):'); "
             "print('sqlalchemy.exc.DatabaseError: (sqlite3.DatabaseError) file is not a database'); sys.exit(1)")
    monkeypatch.setattr(ms, "build_command", lambda *a, **k: [sys.executable, "-c", crash])
    log = tmp_path / "server.log"
    port = free_port()
    with pytest.raises(ServerError) as err:
        start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", port=port, log_path=log,
                     start_timeout=30)
    msg = str(err.value)
    assert "exited with code 1" in msg and str(log) in msg
    assert msg.index("file is not a database") < msg.index(str(log))  # the cause comes first
    assert "Creating initial MLflow database tables" in msg  # then the log tail
    assert not serving(f"http://127.0.0.1:{port}", timeout=0.5)


def test_server_that_never_answers_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(ms, "build_command", lambda *a, **k: [sys.executable, "-c", "import time; time.sleep(60)"])
    before = set(_children(os.getpid()))
    with pytest.raises(ServerError, match=r"did not answer .*/health within 2 s") as err:
        start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", port=free_port(),
                     log_path=tmp_path / "server.log", start_timeout=2)
    assert str(tmp_path / "server.log") in str(err.value)
    assert set(_children(os.getpid())) <= before  # the hung process was stopped and reaped, not leaked


# ---------------------------------------------------------------------------------------------
# the dashboard in a real browser

LGBM, LOGME = "lgbm[d,m]", "ms:logme"
# per (method, held-out dataset): pearson, regret@1; exact binary fractions, so the logged
# means (0.6875, 2.25) print the same in Python and in the browser
LOGGED = {(LGBM, "cifar10"): (0.8125, 3.25), (LGBM, "dtd"): (0.5625, 1.25),
          (LOGME, "cifar10"): (0.25, 6.5), (LOGME, "dtd"): (0.125, 4.5)}


def _log_demo_evaluation(home: Path) -> dict:
    """A two-method, two-dataset evaluation logged the way ``evaluate`` logs it."""
    import pandas as pd

    rows = []
    for (meth, ds), (pearson, regret) in LOGGED.items():
        rec = meth.startswith("lgbm")
        row = {"fold": 0, "dataset": ds, "seed": 0, "method": meth,
               "kind": "recommender" if rec else "baseline", "features": "d,m" if rec else None,
               "n_test": 8, "n_missing": 0, **{m: 0.0 for m in M.METRICS}}
        row.update({"pearson": pearson, "regret@1": regret})
        rows.append(row)
    result = EvaluationResult(
        config={"protocol": "lodo", "source": "demo", "methods": [LGBM, LOGME]},
        rows=pd.DataFrame(rows),
        predictions=pd.DataFrame(columns=["fold", "dataset", "model", "method", "real", "predicted"]))
    out = log_evaluation(result, home=home, experiment="evaluate/demo", run_name="evaluate-demo",
                         plots_on=False)
    assert out["ok"], out["error"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=out["tracking_uri"])
    exp = client.get_experiment_by_name("evaluate/demo")
    children = {r.info.run_name: r for r in client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'")}
    assert set(children) == {LGBM, LOGME}
    metrics = children[LGBM].data.metrics
    return {"experiment_id": exp.experiment_id, "parent_id": out["run_id"],
            "child_id": children[LGBM].info.run_id, "pearson_mean": metrics["pearson_mean"],
            "regret_at_1_mean": metrics["regret_at_1_mean"]}


def _log_training_run(url: str) -> None:
    """A run in the training experiment the ui created, as `train` logs one (name, metrics)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("recommender-training")
    assert exp is not None and exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    run = client.create_run(exp.experiment_id, run_name="train-lr")
    client.log_metric(run.info.run_id, "cv_pearson", 0.5)
    client.set_terminated(run.info.run_id)


def _chrome(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync",
              "--disable-extensions", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def _wait_for_text(driver, texts, shot: Path, timeout: float = 60.0) -> None:
    """Wait until every string of ``texts`` is in the page's visible text; screenshot either way."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def body():
        try:
            return driver.find_element(By.TAG_NAME, "body").text
        except Exception:  # page replaced while reading: try again
            return ""

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: all(t in body() for t in texts))
    except TimeoutException:
        driver.save_screenshot(str(shot))
        missing = [t for t in texts if t not in body()]
        pytest.fail(f"{driver.current_url}: {missing} not rendered within {timeout:.0f} s "
                    f"(screenshot {shot}); page text starts with:\n{body()[:1500]}")
    driver.save_screenshot(str(shot))


def _scroll_to(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
    if found:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", found[0])


def _tidy_runs_table(driver, parent_name: str) -> None:
    """Screenshot nicety, not a check: close the assistant panel, expand the parent run's row."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
            button.click()
        row = f"//*[normalize-space(text())='{parent_name}']/ancestor::*[@role='row'][1]"
        WebDriverWait(driver, 10).until(EC.element_to_be_clickable((By.XPATH, f"{row}//button"))).click()
        WebDriverWait(driver, 10).until(lambda d: LGBM in d.find_element(By.TAG_NAME, "body").text)
    except Exception:  # another MLflow version lays the table out differently: keep going
        pass


def _stop_ui(proc: subprocess.Popen, server_pids: list[int]) -> int | None:
    """Ctrl-C the ui command; if it hangs, terminate it and the server it started (by pid)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    for pid in server_pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(15)
    return None


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_dashboard_shows_evaluation_runs(home, tmp_path, artifacts_dir):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (bash dev.sh test does it)")
    pytest.importorskip("selenium", reason="selenium is in the test extras")
    # The ui command starts first: its server creates the empty tracking store (MLflow's
    # migrations take seconds) while Chromium starts; the runs are logged once it serves.
    port = free_port()
    out_path = tmp_path / "ui.out"
    env = {**os.environ, "RECOMMENDER_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recommender", "ui", "--port", str(port)],
                                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    server_pids: list[int] = []
    driver = None
    try:
        driver = _chrome(tmp_path / "chromium-profile")
        deadline = time.monotonic() + 120
        while not (f"MLflow UI: {url}" in out_path.read_text() and serving(url)):
            assert proc.poll() is None, f"`ui` exited with {proc.returncode}:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, f"`ui` did not serve {url} in 120 s:\n{out_path.read_text()}"
            time.sleep(0.2)
        server_pids = _children(proc.pid)
        assert server_pids, "the ui command should run `mlflow server` as its child"

        # the one printed address opens the runs view of the training experiment (run names, a metric)
        import re

        from selenium.webdriver.common.by import By

        printed = re.findall(r"https?://\S+", out_path.read_text())
        assert len(printed) == 1, f"`ui` should print one address:\n{out_path.read_text()}"
        landing = printed[0]
        assert landing.startswith(f"{url}/#/experiments/") and f"/runs?{ML}" in landing
        _log_training_run(url)
        driver.get(landing)
        # the runs view of the training experiment, in the model-training workflow: its run and metric
        _wait_for_text(driver, ["recommender-training", "train-lr", "cv_pearson"], artifacts_dir / "ui_landing.png")
        assert f"/runs?{ML}" in driver.current_url and "/experiments/" in driver.current_url, driver.current_url
        assert "Welcome to MLflow" not in driver.find_element(By.TAG_NAME, "body").text  # not the GenAI home page

        ids = _log_demo_evaluation(home)
        assert ids["pearson_mean"] == 0.6875 and ids["regret_at_1_mean"] == 2.25  # means of LOGGED
        exp, parent, child = ids["experiment_id"], ids["parent_id"], ids["child_id"]

        driver.get(f"{url}/#/experiments/{exp}/runs?{ML}")
        _wait_for_text(driver, ["evaluate/demo", "evaluate-demo"], artifacts_dir / "ui_experiment.png")
        _tidy_runs_table(driver, "evaluate-demo")
        driver.save_screenshot(str(artifacts_dir / "ui_experiment.png"))

        driver.get(f"{url}/#/experiments/{exp}/runs/{child}?{ML}")
        pearson, regret = f"{ids['pearson_mean']:g}", f"{ids['regret_at_1_mean']:g}"
        _wait_for_text(driver, [LGBM, "evaluate-demo", "pearson_mean", pearson, "regret_at_1_mean", regret,
                                "pearson__cifar10", "0.8125"], artifacts_dir / "ui_run.png")
        _scroll_to(driver, "pearson_mean")
        driver.save_screenshot(str(artifacts_dir / "ui_run.png"))

        driver.get(f"{url}/#/experiments/{exp}/runs/{parent}/artifacts?{ML}")
        _wait_for_text(driver, ["evaluate-demo", "results.csv", "summary.md"], artifacts_dir / "ui_artifacts.png")
    finally:
        if driver is not None:
            driver.quit()
        rc = _stop_ui(proc, server_pids)
    assert rc == 0, f"`ui` did not stop cleanly on Ctrl-C (exit {rc}):\n{out_path.read_text()}"
    assert "stopped" in out_path.read_text()
    assert not serving(url, timeout=1.0), "the MLflow server still answers after the ui command stopped"
    assert all(not Path(f"/proc/{pid}").exists() for pid in server_pids), "mlflow server left running"
