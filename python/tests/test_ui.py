"""The explorer (`/ui/`) in a real browser: Debian's Chromium, headless, driven by Selenium,
against a real `snapkv demo` reader. It loads the page, looks a key up, scans, runs a query, reads
the version history and watches the metrics, checking what the page shows against the API's own answers; the browser
must log no error (a script blocked by the Content-Security-Policy would). Screenshots go to
``SNAPKV_SCREENSHOTS`` (default: the test's temporary directory)."""

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def _chromium() -> tuple:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "the explorer test needs Debian's chromium and chromium-driver (scripts/test installs "
            "them): apt-get install chromium chromium-driver",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1300"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    b = webdriver.Chrome(service=Service(driver), options=options)
    yield b
    b.quit()


def _api(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def test_the_explorer_in_a_browser(demo: str, browser: Any, tmp_path: Path) -> None:
    shots = Path(os.environ.get("SNAPKV_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    # Tables are replaced as answers arrive: an element read while it is replaced is retried.
    wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
    find = browser.find_element
    browser.get(f"{demo}/ui/")
    # The dataset list, and the dataset's details.
    wait.until(lambda b: "content" in find(By.ID, "datasets").text)
    info = _api(demo, "/v1/datasets/content")
    wait.until(lambda b: info["version"] in find(By.ID, "info").text)
    assert f"{info['keys']:,}" in find(By.ID, "info").text
    # A lookup.
    find(By.ID, "lookup-key").send_keys("SE/t0000042")
    find(By.CSS_SELECTOR, "#lookup-form button").click()
    wait.until(lambda b: "views" in find(By.ID, "lookup-result").text)
    shown = json.loads(find(By.ID, "lookup-result").text)
    assert shown == _api(demo, "/v1/datasets/content/keys/SE%2Ft0000042")
    browser.save_screenshot(str(shots / "explorer-lookup.png"))
    # A scan, and its next page.
    find(By.CSS_SELECTOR, '[data-tab="scan"]').click()
    find(By.ID, "scan-prefix").send_keys("JP/")
    limit = find(By.ID, "scan-limit")
    limit.clear()
    limit.send_keys("5")
    find(By.CSS_SELECTOR, "#scan-form button[type=submit]").click()
    first = _api(demo, "/v1/datasets/content/scan?prefix=JP/&limit=5")
    keys = lambda: [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#scan-table td:first-child")]  # noqa: E731
    wait.until(lambda b: keys() == [i["key"] for i in first["items"]])
    find(By.ID, "scan-next").click()
    second = _api(demo, f"/v1/datasets/content/scan?prefix=JP/&limit=5&after={first['next']}")
    wait.until(lambda b: keys() == [i["key"] for i in second["items"]])
    # A query built from the inputs, with its chart.
    find(By.CSS_SELECTOR, '[data-tab="query"]').click()
    group = find(By.ID, "q-group")
    group.clear()
    group.send_keys("country")
    Select(find(By.ID, "q-agg")).select_by_visible_text("sum")
    field = find(By.ID, "q-agg-field")
    field.clear()
    field.send_keys("views")
    query = json.loads(find(By.ID, "q-json").get_attribute("value"))
    assert query["group_by"] == ["country"] and query["aggregates"] == {"sum_views": {"sum": "views"}}
    find(By.CSS_SELECTOR, "#query-form button[type=submit]").click()
    expected = _api(demo, "/v1/datasets/content/query", query)["rows"]
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, "#query-table tr")  # noqa: E731
    wait.until(lambda b: len(rows()) == len(expected) + 1)
    first_row = [td.text for td in rows()[1].find_elements(By.TAG_NAME, "td")]
    assert first_row == [expected[0]["country"], str(expected[0]["sum_views"])]
    assert browser.find_elements(By.CSS_SELECTOR, "#query-chart canvas"), "no chart"
    browser.save_screenshot(str(shots / "explorer-query.png"))
    # A bad query shows the server's message.
    editor = find(By.ID, "q-json")
    editor.clear()
    editor.send_keys('{"filter": {"veiws": {">": 1}}}')
    find(By.CSS_SELECTOR, "#query-form button[type=submit]").click()
    wait.until(lambda b: "bad_query" in find(By.ID, "query-status").text)
    assert 'field "veiws"' in find(By.ID, "query-status").text
    # The version history from the store, newest first, the served version marked.
    find(By.CSS_SELECTOR, '[data-tab="history"]').click()
    entries = _api(demo, "/v1/datasets/content/history?last=100")["entries"]
    assert entries, "the demo publishes: its store has a history"
    history = lambda: browser.find_elements(By.CSS_SELECTOR, "#history-table tr[data-seq]")  # noqa: E731
    wait.until(lambda b: len(history()) == len(entries))
    assert [r.get_attribute("data-seq") for r in history()] == [str(e["seq"]) for e in reversed(entries)]
    newest = [td.text for td in history()[0].find_elements(By.TAG_NAME, "td")]
    assert newest[1] == entries[-1]["action"]
    if entries[-1].get("to") == info["version"]:
        assert newest[2] == f"{info['version']} (served)"
    browser.save_screenshot(str(shots / "explorer-history.png"))
    # The metrics charts fill from /metrics.
    find(By.CSS_SELECTOR, '[data-tab="metrics"]').click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-rate canvas"))
    browser.save_screenshot(str(shots / "explorer-metrics.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # The bad query's 400 is logged by the browser as a failed resource: expected.
    errors = [e for e in errors if "/query" not in e["message"] or "400" not in e["message"]]
    assert not errors, errors
