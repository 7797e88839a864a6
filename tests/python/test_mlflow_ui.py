"""MLflow's own web UI, served by Arbor from the installed `mlflow` package, in a real
headless Chromium driven over WebDriver: the experiment page lists the runs with their
nesting, a run page shows params and metrics, the metric chart draws, the artifact tab
previews a text file, and no request to a tracking endpoint fails. Screenshots go to
target/test-output/mlflow-ui/ (or $ARBOR_TEST_OUTPUT)."""

import json
import os
import pathlib
import sys

import pytest

import mlflow
from mlflow import MlflowClient

from conftest import ROOT, Server

OUTPUT = pathlib.Path(os.environ.get("ARBOR_TEST_OUTPUT", ROOT / "target" / "test-output")) / "mlflow-ui"
WAIT_SECONDS = 60
# Tracking endpoints; the UI also asks for the current user (users/current), which
# Arbor does not serve and which the UI takes as absent.
TRACKING_PATHS = tuple(
    f"/ajax-api/2.0/mlflow/{p}" for p in ("experiments", "runs", "metrics", "artifacts", "logged-models")
) + ("/graphql", "/get-artifact")


@pytest.fixture
def ui_server(tmp_path):
    s = Server(tmp_path / "data", "--mlflow-ui", "auto", "--mlflow-ui-python", sys.executable)
    yield s
    if s.proc.poll() is None:
        s.stop()


def populate(url, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(url)
    monkeypatch.chdir(tmp_path)
    exp = mlflow.set_experiment("ui-demo").experiment_id
    notes = tmp_path / "notes.txt"
    notes.write_text("arbor serves the mlflow ui")
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "plot.png")
    with mlflow.start_run(run_name="parent-run") as parent:
        mlflow.log_params({"lr": "0.01", "batch": "32"})
        mlflow.set_tag("team", "vision")
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_artifact(str(notes))
        mlflow.log_artifact(str(tmp_path / "plot.png"))
        with mlflow.start_run(run_name="child-run", nested=True):
            mlflow.log_metric("loss", 0.5, step=0)
            with mlflow.start_run(run_name="grandchild-run", nested=True):
                mlflow.log_metric("loss", 0.25, step=0)
        from sklearn.linear_model import LinearRegression

        mlflow.sklearn.log_model(LinearRegression().fit([[0], [1]], [0, 1]), name="model")
    return exp, parent.info.run_id


def failed_tracking_requests(driver):
    failed = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        url = response["url"]
        if response["status"] >= 400 and any(p in url for p in TRACKING_PATHS):
            failed.append(f"{response['status']} {url}")
    return failed


def test_the_mlflow_ui_shows_runs_params_metrics_charts_and_artifacts(ui_server, browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = f"http://{ui_server.address}"
    exp, parent = populate(url, tmp_path, monkeypatch)
    child = MlflowClient(url).search_runs([exp], "attributes.run_name = 'child-run'")[0].info.run_id
    OUTPUT.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, WAIT_SECONDS)

    def shows(*texts):
        wait.until(lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts))

    def expand(name):
        cell = browser.find_element(
            By.XPATH, f"//span[contains(@class, 'ag-cell-value')][.//a[normalize-space()='{name}']]"
        )
        cell.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()

    # The experiment list.
    browser.get(f"{url}/#/experiments")
    shows("ui-demo")
    browser.save_screenshot(str(OUTPUT / "experiments.png"))

    # The experiment page lists the runs with their nesting: expanding a run shows its
    # children, three levels deep.
    browser.get(f"{url}/#/experiments/{exp}/runs")
    shows("parent-run")
    assert "child-run" not in browser.find_element(By.TAG_NAME, "body").text
    # The expander renders after the name; WebDriverWait retries the lookup until it does.
    wait.until(lambda d: expand("parent-run") is None)
    shows("child-run")
    expand("child-run")
    shows("grandchild-run")
    browser.save_screenshot(str(OUTPUT / "experiment-runs.png"))

    # The runs' chart view draws the metric.
    browser.get(f"{url}/#/experiments/{exp}/runs?compareRunsMode=CHART")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "canvas, svg.main-svg, .js-plotly-plot"))
    shows("loss")
    browser.save_screenshot(str(OUTPUT / "experiment-charts.png"))

    # The compare view sets runs side by side.
    browser.get(f'{url}/#/compare-runs?runs=["{parent}","{child}"]&experiments=["{exp}"]')
    shows("parent-run", "child-run", "lr")
    browser.save_screenshot(str(OUTPUT / "compare-runs.png"))

    # The logged-models tab lists the model.
    browser.get(f"{url}/#/experiments/{exp}/models")
    shows("model")
    browser.save_screenshot(str(OUTPUT / "logged-models.png"))

    # A run page shows params and metrics.
    browser.get(f"{url}/#/experiments/{exp}/runs/{parent}")
    shows("parent-run", "lr", "0.01", "batch", "loss", "team")
    browser.save_screenshot(str(OUTPUT / "run-overview.png"))

    # The metric chart draws.
    browser.get(f"{url}/#/experiments/{exp}/runs/{parent}/model-metrics")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "canvas, svg.main-svg, .js-plotly-plot"))
    browser.save_screenshot(str(OUTPUT / "run-metrics.png"))

    # The artifact tab previews the text file.
    browser.get(f"{url}/#/experiments/{exp}/runs/{parent}/artifacts/notes.txt")
    shows("arbor serves the mlflow ui")
    browser.save_screenshot(str(OUTPUT / "run-artifact-text.png"))

    failed = failed_tracking_requests(browser)
    assert failed == [], "\n".join(failed)
