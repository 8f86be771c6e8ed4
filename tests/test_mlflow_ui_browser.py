"""What a person sees of a sweep in MLflow's UI. After a real small quickstart-like sweep (real Ray,
real torch, a real MLflow server on 127.0.0.1), headless Chromium checks the page as rendered:

- the experiment opens on its runs, not on MLflow's GenAI overview: through the link `run` and `best`
  print, and by clicking the experiment in the experiments list with the UI's "Model training" switch
  on. (MLflow 3.17's UI takes the landing page from that switch, GenAI by default, not from the
  experiment's `mlflow.experimentKind` tag, which the sweep sets all the same: the design asks for it
  and other MLflow versions read it.)
- the parent run, named after the sweep, and its trials, named by their labels (sweeps/labels.py);
- one trial's metric chart drawn (a plotted line, not a spinner);
- the parent run's selection plot shown as an image.

Screenshots of the three pages are saved in the test's directory; set MLFLOW_UI_SCREENSHOTS=docs to
refresh the README's pictures (docs/mlflow_ui*.png).

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
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fault_support import MlflowServer
from sweep_support import run_cli

from sweeps.labels import sweep_label_keys, trial_label
from sweeps.spec import load_sweep

pytestmark = pytest.mark.e2e  # a real sweep and a browser: ~1 min

REPO = Path(__file__).resolve().parents[1]
# $CHROMIUM / $CHROMEDRIVER: other binaries (test_skips_with_the_reason... points one at nothing).
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,900", "--force-device-scale-factor=1",
]
# The quickstart, shorter: 4 stop epochs x 3 seeds of 60 epochs (the real one: 5 x 3 of 200).
SWEEP = ["quickstart", "--set", "train.epochs=60", "--set", "grid.mixup.stop_epoch=[0,20,40,null]",
         "--set", "grid.seed=[0,1,2]"]
GENAI_OVERVIEW_TEXT = ("Token Usage", "Cost Breakdown", "Tool calls")  # on MLflow's GenAI overview page
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


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

    def current_url(self) -> str:
        return self._session("GET", "/url")

    def run_script(self, script: str):
        return self._session("POST", "/execute/sync", {"script": script, "args": []})

    def type_into(self, element: str, text: str) -> None:
        self._session("POST", f"/element/{element}/value", {"text": text})

    def move_pointer_away(self) -> None:
        """Park the pointer in the page's corner: charts show their hover toolbar under it."""
        self._session("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse", "actions": [
            {"type": "pointerMove", "x": 1, "y": 1, "origin": "viewport"}]}]})

    def page_source(self) -> str:
        return self._session("GET", "/source")

    def visible_text(self) -> str:
        """The rendered text of the page (what a user reads), one line per block element."""
        return self.run_script("return document.body.innerText;")

    def wait_until(self, script: str, what: str, timeout_s: float = 60.0):
        """Poll a JavaScript expression (`return ...;`) until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.run_script(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not rendered within {timeout_s:.0f}s: {what}")
            time.sleep(0.5)

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
def mlflow_server(tmp_path: Path):
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        yield server.uri
    finally:
        server.stop()


def _missing_browser() -> str | None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if not Path(path).exists()]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; "
            ".ci/run installs both)")


@pytest.fixture
def browser(tmp_path: Path):
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    port = free_port()
    log = open(tmp_path / "chromedriver.log", "wb")
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
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
        web = WebDriver(port, tmp_path / "chromium-profile")  # a fresh profile: the UI's defaults
        try:
            yield web
        finally:
            web.quit()
    finally:
        os.killpg(driver.pid, 15)  # chromedriver and the browser it started
        driver.wait(timeout=30)
        log.close()


def _save(png: bytes, tmp_path: Path, name: str) -> None:
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / name).write_bytes(png)
    if os.environ.get("MLFLOW_UI_SCREENSHOTS"):
        target = Path(os.environ["MLFLOW_UI_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(png)


def _close_assistant(browser: WebDriver) -> None:
    """MLflow's assistant side panel opens by itself on a first visit; close it so the page has the room."""
    for close in browser.find_all("//button[@aria-label='Close']")[:1]:
        browser.click(close)
        time.sleep(0.5)


def _assert_runs_page(browser: WebDriver, n_runs: int) -> str:
    try:
        text = browser.wait_for_text([f"{n_runs} matching runs"])
    except AssertionError as err:
        raise AssertionError(f"{err} at {browser.current_url()}: {browser.visible_text()[:600]!r}") from None
    assert "/runs" in browser.current_url(), browser.current_url()
    assert not [t for t in GENAI_OVERVIEW_TEXT if t in text], "MLflow's GenAI overview, not the runs"
    return text


def test_skips_with_the_reason_when_chromedriver_is_missing(tmp_path: Path):
    """Chromium without chromedriver (Debian ships them apart): the UI test is skipped and says why
    (its browser fixture comes first, so that happens before a server or a sweep is started)."""
    test = f"{Path(__file__)}::test_mlflow_ui_shows_the_sweep_as_a_person_reads_it"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "e2e", test],
                          env={**os.environ, "CHROMEDRIVER": str(tmp_path / "no-chromedriver")},
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "chromedriver not installed (apt-get install chromium chromium-driver" in proc.stdout


def test_mlflow_ui_shows_the_sweep_as_a_person_reads_it(browser: WebDriver, mlflow_server, tmp_path: Path):
    uri = mlflow_server
    sweep = run_cli(["run", *SWEEP, "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray_results")],
                    cwd=tmp_path, timeout=500)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("quickstart")
    eid = experiment.experiment_id
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([eid], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("mixup_sweep.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # The labels the finished product shows, computed from the spec as the trials compute them.
    spec = load_sweep(SWEEP[0], SWEEP[2::2])
    keys = sweep_label_keys(spec)
    expected = sorted(trial_label(point, keys) for point in spec.grid_points())
    assert expected[:3] == ["E=0 s0", "E=0 s1", "E=0 s2"] and "E=never s2" in expected
    assert parent.info.run_name == "quickstart"
    assert sorted(r.info.run_name for r in children if r.data.tags.get("mixup_sweep.role") == "trial") == expected

    # 1. The link `run` printed opens the runs, on a browser that never touched the UI's switch.
    link = f"{uri}/#/experiments/{eid}?workflowType=machine_learning"
    assert f"MLflow UI: {link}" in sweep.stdout
    browser.get(link)
    _assert_runs_page(browser, len(runs))

    # 2. A person's way: the experiments list, the "Model training" switch, a click on the experiment.
    browser.get(f"{uri}/#/experiments")
    browser.wait_for_text(["quickstart", "Model training"])
    _close_assistant(browser)
    browser.click(browser.find_all("//*[normalize-space(text())='Model training']")[0])
    browser.wait_until("return (localStorage.getItem('mlflow.workflowType_v1') || '').includes('machine_learning');",
                       "the UI's switch set to Model training")
    time.sleep(1)  # the list re-renders its links for the new mode
    browser.click(browser.find_all("//a[@data-testid='experiment-list-item-link' and normalize-space(.)='quickstart']")[0])
    first = _assert_runs_page(browser, len(runs))

    # 3. The parent run and, once expanded, every trial by its label.
    assert "quickstart" in first.splitlines()
    if not all(name in first.splitlines() for name in expected):
        # Child runs are nested under their parent, collapsed (MLflow 3): expand the parent row.
        expanders = browser.find_all(
            f"//div[@role='gridcell'][.//a[contains(@href, '{parent.info.run_id}')]]//button")
        assert expanders, "no expand button on the sweep's parent row"
        browser.click(expanders[0])
    expanded = browser.wait_for_text(expected)
    assert all(name in expanded.splitlines() for name in expected)
    source = browser.page_source()
    for run in runs:  # every run's name links to its own page
        assert f"#/experiments/{eid}/runs/{run.info.run_id}" in source
    _close_assistant(browser)
    browser.move_pointer_away()
    _save(browser.screenshot(), tmp_path, "mlflow_ui.png")

    # 4. One trial's chart of the paper's measure, drawn: a plotted line with points, not a spinner.
    trial = next(r for r in children if r.info.run_name == "E=40 s0")
    browser.get(f"{uri}/#/experiments/{eid}/runs/{trial.info.run_id}/model-metrics?workflowType=machine_learning")
    browser.wait_for_text(["E=40 s0", "Model metrics"])
    search = browser.find_all("//input[@placeholder='Search metric charts']")
    assert search, "no metric chart search box on the run's Model metrics page"
    browser.type_into(search[0], "test_acc_rare")
    drawn = browser.wait_until(
        "const cards = Array.from(document.querySelectorAll('[data-testid=experiment-view-compare-runs-card]'))"
        "  .filter(c => c.innerText.split('\\n')[0].trim() === 'test_acc_rare');"
        "return cards.length === 1 && cards[0].querySelectorAll('.scatterlayer .trace path.js-line').length > 0"
        "  && cards[0].querySelector('path.js-line').getAttribute('d').length > 100;",
        "the test_acc_rare line chart of a trial")
    assert drawn
    _close_assistant(browser)
    browser.move_pointer_away()
    time.sleep(1)
    _save(browser.screenshot(), tmp_path, "mlflow_ui_trial.png")

    # 5. The parent run's selection plot, shown as an image in its artifacts.
    plot = "selection/learning_curves.png"
    browser.get(f"{uri}/#/experiments/{eid}/runs/{parent.info.run_id}/artifacts/{plot}?workflowType=machine_learning")
    width = browser.wait_until(
        "const img = Array.from(document.images).find(i => i.src.startsWith('blob:') && i.complete);"
        "return img ? img.naturalWidth : 0;", f"the image of {plot}")
    assert width >= 1000  # the PNG as written (plots.py), decoded by the browser
    assert plot in browser.visible_text()
    _close_assistant(browser)
    _save(browser.screenshot(), tmp_path, "mlflow_ui_selection.png")
