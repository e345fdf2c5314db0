"""The web console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium with both paths given, so Selenium Manager never runs and
nothing is downloaded) against one local stack for the module, served at its root URL.

Proves: a file uploads with a progress bar and its transcript opens by itself when the job
succeeds; a larger one goes up in three parts and its job succeeds; a click (and Enter) on a
line seeks the audio; a download is the format it says; an upload and a queued job can be
cancelled; a bad file shows its error code; the page fits 375 px; the page's SigV4 signer signs
as botocore does. Saves docs/console.png for the README."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalStack
from harness.audio import SHORT_TEXT, convert, long_text, speak
from tests.e2e.waits import hold_workers_back, running_stack, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
PART_BYTES = 5 * 1024 * 1024  # S3's (and moto's) smallest part: the module's stack cuts parts this size

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
    ),
]

if CHROMIUM.is_file():  # selenium is imported only where it can run
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory, idle_exit_seconds=60, name="console", multipart_part_bytes=PART_BYTES)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, were it ever asked, may not download
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SHORT_TEXT, tmp_path_factory.mktemp("audio") / "meeting.wav")


def find(driver: WebDriver, css: str, timeout: float = 30) -> WebElement:
    """The element once it is on the page."""
    found: list[WebElement] = []

    def present() -> bool:
        found[:] = driver.find_elements(By.CSS_SELECTOR, css)
        return bool(found)

    wait_until(present, timeout, 0.1)
    return found[0]


def open_console(driver: WebDriver, stack: LocalStack, query: str = "") -> None:
    driver.get(f"{stack.url}/{query}")
    find(driver, "#opt-language option")  # the page has started


def submit(driver: WebDriver, *files: Path) -> None:
    driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    driver.find_element(By.ID, "transcribe").click()


def upload_row(driver: WebDriver, name: str) -> WebElement:
    return find(driver, f'li.upload[data-file="{name}"]')


def job_row_status(driver: WebDriver, job_id: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    return rows[0].get_attribute("data-status") or "" if rows else ""


def test_a_queued_job_is_cancelled_from_the_list(browser: WebDriver, stack: LocalStack, speech: Path) -> None:
    """First in the module: no worker has started yet, so holding them back waits for none."""
    try:
        hold_workers_back(stack)  # the job stays queued while the test cancels it
        open_console(browser, stack)
        find(browser, "#options summary").click()  # the options, as a person opens them
        find(browser, "#opt-own").click()  # the same transcript every time: windows of its own
        submit(browser, speech)
        row = upload_row(browser, speech.name)
        wait_until(lambda: row.get_attribute("data-done") == "true", 60, 0.1)
        job_id = str(row.get_attribute("data-job"))
        wait_until(lambda: job_row_status(browser, job_id) == "queued", 30, 0.2)
        assert "in queue" in find(browser, f'tr[data-job="{job_id}"] td.status').text
        find(browser, f'tr[data-job="{job_id}"] button.cancel').click()
        wait_until(lambda: job_row_status(browser, job_id) == "cancelled", 10, 0.1)
    finally:
        stack.set_max_workers(1)
    job = Client(stack.url).get(job_id)
    assert job["status"] == "cancelled" and job["options"]["share_windows"] is False


def test_a_file_uploads_with_progress_and_its_transcript_follows_the_audio(
    browser: WebDriver, stack: LocalStack, speech: Path, downloads: Path
) -> None:
    open_console(browser, stack)
    submit(browser, speech)

    row = upload_row(browser, speech.name)
    wait_until(lambda: row.get_attribute("data-done") == "true", 60, 0.1)
    bar = row.find_element(By.TAG_NAME, "progress")
    assert int(bar.get_attribute("value") or 0) == speech.stat().st_size == int(bar.get_attribute("max") or 0)
    job_id = row.get_attribute("data-job")

    # no click: the page opens the transcript when the job succeeds
    lines = find(browser, "#transcript li", timeout=120).find_elements(By.XPATH, "../li")
    assert browser.current_url.endswith(f"#/jobs/{job_id}")
    text = " ".join(li.text for li in lines).lower()
    assert "weather" in text and "report" in text
    assert len(lines) >= 2

    audio = browser.find_element(By.ID, "player")
    wait_until(lambda: browser.execute_script("return arguments[0].readyState", audio) >= 1, 30, 0.1)
    target = lines[-1]
    start = float(target.get_attribute("data-start") or 0)
    assert start > 0
    target.click()
    assert abs(browser.execute_script("return arguments[0].currentTime", audio) - start) < 0.3
    assert "current" in (target.get_attribute("class") or "")
    lines[0].send_keys(Keys.ENTER)  # and by keyboard
    first = float(lines[0].get_attribute("data-start") or 0)
    assert abs(browser.execute_script("return arguments[0].currentTime", audio) - first) < 0.3
    target.click()
    browser.set_window_size(1100, 520)
    browser.save_screenshot(str(SCREENSHOT))
    browser.set_window_size(1280, 900)

    # downloads: a click saves the srt; every format's link is that format
    browser.find_element(By.CSS_SELECTOR, 'a[data-format="srt"]').click()
    wait_until(lambda: any(p.suffix == ".srt" for p in downloads.iterdir()), 30, 0.1)
    srt = next(p for p in downloads.iterdir() if p.suffix == ".srt").read_text()
    assert srt.startswith("1\n00:00:") and " --> " in srt.splitlines()[1]
    anchors = browser.find_elements(By.CSS_SELECTOR, ".downloads a")
    links = {a.get_attribute("data-format"): a.get_attribute("href") for a in anchors}
    assert set(links) == {"txt", "srt", "vtt", "json"}
    assert requests.get(str(links["vtt"]), timeout=10).text.startswith("WEBVTT")
    assert json.loads(requests.get(str(links["json"]), timeout=10).text)["segments"]
    assert "weather" in requests.get(str(links["txt"]), timeout=10).text.lower()
    log = find(browser, "#log")
    wait_until(lambda: "succeeded rtf=" in (log.get_attribute("textContent") or ""), 10, 0.1)  # the job's log


def test_a_file_over_two_parts_goes_up_in_three_and_its_job_succeeds(
    browser: WebDriver, stack: LocalStack, speech: Path, tmp_path: Path
) -> None:
    """The page sends a file in parts as the CLI does: each part PUT to its presigned URL, the
    ETags S3 answered collected, the upload completed through the API. The module's stack cuts
    parts at S3's smallest size (5 MiB); the speech, padded with silence and stored as 48 kHz
    stereo 32-bit, is just over two parts."""
    big = convert(
        speech, tmp_path / "padded.wav", "-af", "apad=whole_dur=29", "-ar", "48000", "-ac", "2", "-c:a", "pcm_s32le"
    )
    size = big.stat().st_size
    assert 2 * PART_BYTES < size < 3 * PART_BYTES
    open_console(browser, stack, "?multipart_bytes=1")
    browser.execute_script("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(10000)")
    submit(browser, big)

    row = upload_row(browser, big.name)
    wait_until(lambda: row.get_attribute("data-done") == "true", 120, 0.1)
    bar = row.find_element(By.TAG_NAME, "progress")
    assert int(bar.get_attribute("value") or 0) == size
    sent = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('partNumber='))"
    )
    assert sorted({parse_qs(urlsplit(url).query)["partNumber"][0] for url in sent}) == ["1", "2", "3"]

    job_id = str(row.get_attribute("data-job"))
    lines = find(browser, "#transcript li", timeout=120).find_elements(By.XPATH, "../li")  # opened on success
    assert browser.current_url.endswith(f"#/jobs/{job_id}")
    assert "weather" in " ".join(li.text for li in lines).lower()
    job = Client(stack.url).get(job_id)
    assert job["status"] == "succeeded" and job["input"]["size_bytes"] == size


def test_the_page_fits_a_phone_screen(browser: WebDriver, stack: LocalStack) -> None:
    browser.set_window_size(375, 800)
    try:
        open_console(browser, stack)
        find(browser, "#job-rows tr")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth")
        browser.find_element(By.CSS_SELECTOR, "#job-rows tr a").click()
        find(browser, "#transcript li", timeout=30)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= browser.execute_script(
            "return window.innerWidth"
        )
    finally:
        browser.set_window_size(1280, 900)


def test_an_upload_is_cancelled_mid_way(browser: WebDriver, stack: LocalStack, tmp_path: Path) -> None:
    """A slow link (the browser's own network throttling) keeps the upload going while the
    test looks at its progress and presses Cancel; the file goes up in parts (multipart)."""
    long = speak(long_text(40), tmp_path / "long.wav")
    open_console(browser, stack, "?multipart_bytes=1")
    browser.execute_cdp_cmd("Network.enable", {})
    slow = {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 200 * 1024}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", slow)
    try:
        submit(browser, long)
        row = upload_row(browser, long.name)
        bar = row.find_element(By.TAG_NAME, "progress")
        wait_until(lambda: int(bar.get_attribute("value") or 0) > 0, 30, 0.05)
        assert int(bar.get_attribute("value") or 0) < long.stat().st_size
        row.find_element(By.CSS_SELECTOR, "button.cancel").click()
        wait_until(lambda: row.find_element(By.CLASS_NAME, "state").text == "cancelled", 30, 0.1)
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1, "latency": 0})
    job_id = str(row.get_attribute("data-job"))
    assert Client(stack.url).get(job_id)["status"] == "cancelled"


def test_a_bad_file_shows_its_error_code(browser: WebDriver, stack: LocalStack, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(os.urandom(4000))  # named and typed audio, but no audio inside
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    open_console(browser, stack)
    submit(browser, broken, notes)

    # refused at once by the API: its code, in the upload's row
    refused = upload_row(browser, notes.name)
    assert find(browser, f'li.upload[data-file="{notes.name}"] .error-code').text == "unsupported_media_type"
    assert "failed" in (refused.get_attribute("class") or "")
    # failed by the worker: its code and the hint, in the job list
    row = upload_row(browser, broken.name)
    wait_until(lambda: row.get_attribute("data-done") == "true", 60, 0.1)
    job_id = row.get_attribute("data-job")
    code = find(browser, f'tr[data-job="{job_id}"] .error-code', timeout=120)
    assert code.text == "invalid_media"
    assert find(browser, f'tr[data-job="{job_id}"] .hint').text


def test_the_pages_signer_signs_as_botocore_does(browser: WebDriver, stack: LocalStack) -> None:
    """The deployed page signs each API call itself (SigV4, WebCrypto): held to botocore's
    signature for the same request, credentials and time."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    open_console(browser, stack)
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1/jobs?status=queued&limit=5"
    body = '{"filename": "a b.wav"}'
    creds = {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "secret/key+1", "sessionToken": "token=="}
    when = datetime(2026, 12, 7, 10, 30, 0, tzinfo=UTC)
    page: dict[str, Any] = browser.execute_async_script(
        """const [url, body, creds, when, done] = arguments;
        window.batchscribe.sign("POST", new URL(url), {"Content-Type": "application/json"}, body, creds,
          "eu-west-1", "execute-api", new Date(when)).then(done);""",
        url,
        body,
        creds,
        when.isoformat(),
    )
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+1", "token=="), "execute-api", "eu-west-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    assert page["authorization"] == request.headers["Authorization"]
    assert page["x-amz-security-token"] == "token=="


def test_the_console_is_served_with_a_strict_policy(stack: LocalStack) -> None:
    """No inline script, no other site's assets, and the page under 200 KB."""
    page = requests.get(f"{stack.url}/", timeout=10)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
    assert '<script defer src="app.js">' in page.text and "http" not in page.text.replace("http-equiv", "")
    weight = sum(len(requests.get(f"{stack.url}/{name}", timeout=10).content) for name in ("", "app.js", "app.css"))
    assert weight < 200 * 1024
    assert requests.get(f"{stack.url}/config.json", timeout=10).json() == {"api": "", "cognito": None}
    assert "jobs" in requests.get(f"{stack.url}/jobs", timeout=10).json()  # the API still answers beside it
