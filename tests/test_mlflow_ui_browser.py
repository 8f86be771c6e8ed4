"""The MLflow UI shows a sweep: after a small sweep against an MLflow server on 127.0.0.1, headless
Chromium opens the experiment's runs page, expands the sweep's parent run and finds it and every
trial run listed; a screenshot is saved (set MLFLOW_UI_SCREENSHOT=docs/mlflow_ui.png to refresh the
README's picture).

Chromium is driven through chromedriver's W3C WebDriver HTTP API on 127.0.0.1 with the standard
library (no selenium): the page is a React app, so the test waits for the rendered rows.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,640",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebDriver:
    """Just enough of the W3C WebDriver protocol: navigate, find, click, read the DOM, screenshot."""

    def __init__(self, port: int, user_data_dir: Path):
        self.base = f"http://127.0.0.1:{port}"
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": str(CHROMIUM), "args": CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"webdriver {method} {path}: {err.code} {err.read()[:500]!r}") from None

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def page_source(self) -> str:
        return self._session("GET", "/source")

    def visible_text(self) -> str:
        """The rendered text of the page (what a user reads), one line per block element."""
        return self._session("POST", "/execute/sync", {"script": "return document.body.innerText;", "args": []})

    def find_all(self, xpath: str) -> list[str]:
        found = self._session("POST", "/elements", {"using": "xpath", "value": xpath})
        return [element[ELEMENT] for element in found]

    def click(self, element: str) -> None:
        self._session("POST", f"/element/{element}/click")

    def screenshot(self) -> bytes:
        return base64.b64decode(self._session("GET", "/screenshot"))

    def wait_for_text(self, texts: list[str], timeout_s: float = 60.0) -> str:
        """Poll the rendered text until every one of `texts` is a line of it."""
        deadline = time.monotonic() + timeout_s
        while True:
            source = self.visible_text()
            lines = {line.strip() for line in source.splitlines()}
            if all(text in lines or text in source for text in texts):
                return source
            if time.monotonic() > deadline:
                missing = [t for t in texts if t not in source]
                raise AssertionError(f"not rendered within {timeout_s:.0f}s: {missing}")
            time.sleep(0.5)

    def quit(self) -> None:
        self._call("DELETE", f"/session/{self.session}")


@pytest.fixture
def mlflow_server():
    """An MLflow server on 127.0.0.1 (SQLite, served artifacts), started and stopped by local-cluster."""
    state_dir = Path(tempfile.mkdtemp(prefix="mxui-", dir="/tmp"))
    script = [sys.executable, str(REPO / "cluster" / "local-cluster"), "--state-dir", str(state_dir)]
    up = subprocess.run(script + ["up", "--no-ray"], env=clean_environ(), capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        uri = next(line.split("=", 1)[1] for line in (state_dir / "env").read_text().splitlines()
                   if line.startswith("export MLFLOW_TRACKING_URI="))
        yield uri, state_dir
    finally:
        down = subprocess.run(script + ["down"], env=clean_environ(), capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def browser(tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium chromium-driver)")
    assert CHROMEDRIVER.exists(), "chromium is installed but chromedriver is not: apt-get install chromium-driver"
    port = free_port()
    log = open(tmp_path / "chromedriver.log", "wb")
    driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and driver.poll() is None, "chromedriver did not start"
                time.sleep(0.2)
        web = WebDriver(port, tmp_path / "chromium-profile")
        try:
            yield web
        finally:
            web.quit()
    finally:
        os.killpg(driver.pid, 15)  # chromedriver and the browser it started
        driver.wait(timeout=30)
        log.close()


def test_mlflow_ui_lists_the_sweep_and_its_trials(mlflow_server, browser: WebDriver, tmp_path: Path):
    uri, state_dir = mlflow_server
    sweep = subprocess.run(
        [str(BIN / "mixup-sweep"), "run", "quickstart", "--tracking-uri", uri,
         "--storage-path", str(tmp_path / "ray_results"), "--set", "name=ui_smoke",
         "--set", "train.epochs=4", "--set", "grid.seed=[0]", "--set", "grid.mixup.stop_epoch=[0,2,null]"],
        cwd=tmp_path, env=clean_environ(), capture_output=True, text=True, timeout=400,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ui_smoke")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("mixup_sweep.role") == "sweep")
    trials = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3

    browser.get(f"{uri}/#/experiments/{experiment.experiment_id}/runs")
    first = browser.wait_for_text([parent.info.run_name, f"{len(runs)} matching runs"])
    if not all(name in first.splitlines() for name in trials):
        # Child runs are nested under their parent, collapsed (MLflow 3): expand the parent row.
        expanders = browser.find_all(
            f"//div[@role='gridcell'][.//a[contains(@href, '{parent.info.run_id}')]]//button")
        assert expanders, "no expand button on the sweep's parent row"
        browser.click(expanders[0])
    expanded = browser.wait_for_text(trials)
    assert parent.info.run_name in expanded.splitlines()
    source = browser.page_source()
    for run in runs:  # every run's name links to its own page
        assert f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}" in source

    # For the picture: close MLflow's assistant side panel, if it is open, to give the table the room.
    for close in browser.find_all("//button[@aria-label='Close']")[:1]:
        browser.click(close)
    png = browser.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "mlflow_ui.png").write_bytes(png)
    if os.environ.get("MLFLOW_UI_SCREENSHOT"):
        Path(os.environ["MLFLOW_UI_SCREENSHOT"]).write_bytes(png)
