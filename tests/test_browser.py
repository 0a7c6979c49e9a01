"""What the user looks at, in a real browser: a smoke sweep's MLflow store served on loopback (`mlflow server`),
its report artifact and its experiment page opened in headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium through /usr/bin/chromedriver: nothing is downloaded), and the rendered DOM checked.
Screenshots go to the test's folder, and to $TUNER_SCREENSHOTS when set (the README's images come from there)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cli_process import Cli
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tuner.space import load_space

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(results: Path, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` over the test's sqlite store, on a loopback port; its URL."""
    port = _free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{results / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow-server.log").read_text()
            time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a loaded machine: its workers were slow to stop
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Debian Chromium, no network but loopback, a fresh profile."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _shot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), name
    if os.environ.get("TUNER_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["TUNER_SCREENSHOTS"]) / name)
    return path


def _plotted(driver: webdriver.Chrome, element_id: str) -> None:
    """Wait until plotly has drawn the figure in the element (as SVG)."""
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{element_id} .main-svg"))


def _body_has(text: str):
    return lambda d: text in d.find_element(By.TAG_NAME, "body").text


def test_report_and_experiment_page_render_in_chromium(results: Path, mlflow_server: str,
                                                       browser: webdriver.Chrome, tmp_path: Path) -> None:
    # the sweep runs as a user runs it, in its own process (and Ray): an in-process Ray would outlive this test
    cli = Cli(["sweep", "--space", "chaotic_10k", "--scale", "smoke", "--samples", "4", "--scheduler", "none",
               "--seed", "2", "--name", "browser"], {**os.environ, "TUNER_RESULTS": str(results)})
    assert cli.finish() == 0, cli.output
    folder, run, uri = results / "chaotic_10k" / "browser", cli.parent_run_id(), f"sqlite:///{results / 'mlflow.db'}"
    best, trials = pd.read_parquet(folder / "regime_table.parquet")["Best R²"].iloc[0], pd.read_parquet(
        folder / "trials.parquet")
    experiment_id = MlflowClient(uri).get_run(run).info.experiment_id

    # the experiment page lists the sweep's runs under "Training runs" (the model-training view, not traces)
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs")
    WebDriverWait(browser, 90).until(_body_has("browser"))
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Training runs" in page and "/runs" in browser.current_url, page[:2000]
    # the sidebar's GenAI / Model training switch lives in the browser's localStorage only, GenAI by default,
    # whatever the experiment's kind (mlflow/mlflow#24498): a user clicks "Model training" once
    browser.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
    WebDriverWait(browser, 30).until(lambda d: "Model registry" in d.find_element(By.TAG_NAME, "nav").text)
    browser.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")  # closed once, too
    browser.refresh()
    WebDriverWait(browser, 90).until(_body_has("browser"))
    _shot(browser, tmp_path, "mlflow-experiment.png")

    # the parent run: its child runs named by their parameters, and its parameters (scale, fixed regime, best)
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs/{run}")
    WebDriverWait(browser, 90).until(_body_has("fixed.connectivity_type"))
    names = [r.info.run_name for r in MlflowClient(uri).search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{run}'")]
    assert len(names) == len(trials)
    WebDriverWait(browser, 60).until(lambda d: all(name in d.find_element(By.TAG_NAME, "body").text for name in names))
    assert "Child runs" in browser.find_element(By.TAG_NAME, "body").text
    _shot(browser, tmp_path, "mlflow-parent-run.png")

    # the report page, in MLflow's artifact viewer (an iframe that runs the page's inlined scripts)
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs/{run}/artifacts/report.html")
    WebDriverWait(browser, 90).until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[sandbox*='allow-scripts']"))
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[sandbox*='allow-scripts']"))
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#regime-table"))
    header = [th.get_attribute("textContent") for th in browser.find_elements(By.CSS_SELECTOR, "#regime-table thead th")]
    cells = [td.get_attribute("textContent") for td in browser.find_elements(By.CSS_SELECTOR, "#regime-table tbody td")]
    assert cells[header.index("Best R²")] == best
    _plotted(browser, "importance")
    bars = browser.find_element(By.CSS_SELECTOR, "#importance .xaxislayer-above").get_attribute("textContent")
    assert all(name in bars for name in load_space("chaotic_10k").params), bars
    _plotted(browser, "learning-curves")
    curves = browser.find_elements(By.CSS_SELECTOR, "#learning-curves .scatterlayer .trace")
    assert len(curves) >= len(trials), "one drawn learning curve per trial"
    browser.switch_to.default_content()
    _shot(browser, tmp_path, "mlflow-report-artifact.png")
    browser.get((results / "chaotic_10k" / "browser" / "report.html").as_uri())  # the same page, opened alone
    _plotted(browser, "search-history")
    _shot(browser, tmp_path, "report.png")
