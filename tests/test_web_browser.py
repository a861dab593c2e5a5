"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

A real ``tasklog serve`` process on loopback reads an SQLite store written by
the library. Screenshots of each page are saved as test artifacts (in the
test's temporary directory, or in ``$TASKLOG_SCREENSHOTS`` when set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _web import HOSTILE_TASK, free_port, write_backfill, write_history

from tasklog import TaskRunRecord, open_repo

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = pytest.mark.slow

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tasklog serve exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"tasklog serve did not answer: {log.read_text()}")


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``tasklog serve`` on a free loopback port, over an SQLite history."""
    directory = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{directory / 'history.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    written = write_history(repo)
    write_backfill(repo)
    repo.close()
    port = free_port()
    log = directory / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasklog", "--repo", url, "serve", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        yield {"base": base, "url": url, "written": written, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module", name="shots")
def _shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TASKLOG_SCREENSHOTS, else a temporary directory."""
    target = os.environ.get("TASKLOG_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module", name="browser")
def _browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(name="page")
def _page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test on any dialog (an alert from injected script) or JS error."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield page
    context.close()
    assert problems == []


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def test_tasks_page(page: Any, server: dict[str, Any], shots: Path) -> None:
    """Every task is a row with its last outcome and a strip of its runs' outcomes."""
    page.goto(server["base"] + "/")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(5)
    names = [n.strip() for n in page.locator("#tasks td.name").all_inner_texts()]
    assert names == sorted(
        [HOSTILE_TASK, "cleanup-tmp", "fetch-prices", "hourly-sync", "nightly-report"]
    )
    expect(page.locator('#tasks tr[data-task="hourly-sync"] .strip a')).to_have_count(20)
    prices = page.locator('#tasks tr[data-task="fetch-prices"]')
    expect(prices.locator(".badge")).to_have_text("fail")
    expect(prices.locator(".strip a")).to_have_count(3)
    expect(prices.locator(".strip a.o-fail")).to_have_count(2)
    expect(page.locator('#tasks tr[data-task="nightly-report"] .badge')).to_have_text("running")
    expect(page.locator("#history svg rect").first).to_be_visible()
    page.screenshot(path=str(shots / "tasks.png"), full_page=True)


def test_hostile_task_name_shows_as_text(page: Any, server: dict[str, Any], shots: Path) -> None:
    """A task named <script>alert(1)</script> and an <img onerror> message stay text."""
    page.goto(server["base"] + "/")
    link = page.get_by_role("link", name=HOSTILE_TASK, exact=True)
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("h1")).to_have_text(HOSTILE_TASK)
    page.locator("#runs tbody a").first.click()
    expect(page.locator("#log")).to_contain_text('<img src=x onerror=alert(2)> & "quotes"')
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("document.title").endswith("success")
    page.screenshot(path=str(shots / "hostile.png"), full_page=True)


def test_task_page_chart_and_filter(page: Any, server: dict[str, Any], shots: Path) -> None:
    """The task page lists its runs, draws one dot per run, and a filter changes URL and rows."""
    page.goto(server["base"] + "/task?name=nightly-report")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(4)
    dots = page.locator("#chart svg circle")
    expect(dots).to_have_count(4)
    assert sorted(d.get_attribute("data-outcome") for d in dots.all()) == [
        "running", "success", "success", "success"
    ]
    box = dots.first.bounding_box()
    assert box is not None
    assert box["width"] > 0
    # the open run is a ring (no fill) in the running colour, not in the card's
    ring = page.locator('#chart circle[data-outcome="running"]')
    stroke, card = ring.evaluate(
        "d => [getComputedStyle(d).stroke, getComputedStyle(d.closest('.card') || document.body)"
        ".backgroundColor]"
    )
    assert stroke not in (card, "none", "")
    assert stroke == page.evaluate(
        "(() => { const e = document.createElement('i'); e.style.color ="
        " getComputedStyle(document.documentElement).getPropertyValue('--run').trim();"
        " document.body.append(e); const c = getComputedStyle(e).color; e.remove(); return c; })()"
    )
    page.screenshot(path=str(shots / "task.png"), full_page=True)
    page.select_option("select[name=status]", "running")
    expect(page).to_have_url(server["base"] + "/task?name=nightly-report&status=running")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text("running")
    page.go_back()
    expect(rows).to_have_count(4)
    page.goto(server["base"] + "/task?name=fetch-prices&status=fail")
    expect(page.locator("select[name=status]")).to_have_value("fail")
    expect(rows).to_have_count(2)


def test_run_page_log_traceback_and_download(
    page: Any, server: dict[str, Any], shots: Path
) -> None:
    """A failed run shows its lines, levels and traceback, and its log downloads."""
    failed = next(r for r in server["written"]["runs"] if r[2] == "fail")
    page.goto(server["base"] + f"/run?id={failed[1]}")
    lines = page.locator("#log tbody tr")
    expect(lines).to_have_count(3)
    expect(lines.nth(2).locator("td").nth(1)).to_have_text("ERROR")
    expect(page.locator("pre.traceback")).to_contain_text(
        "ConnectionError: warehouse.example.com: connection refused"
    )
    expect(page.locator("h1 .badge")).to_have_text("fail")
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    with page.expect_download() as info:
        page.click("#download")
    saved = info.value.path()
    text = Path(saved).read_text()
    assert "[ERROR] [fetch-prices] Run failed" in text
    assert text.rstrip().endswith("ConnectionError: warehouse.example.com: connection refused")


def test_errors_page(page: Any, server: dict[str, Any], shots: Path) -> None:
    """The errors page shows the failures with their tracebacks, linked to their runs."""
    page.goto(server["base"] + "/errors")
    cards = page.locator("#errors .error")
    expect(cards).to_have_count(9)  # 2 of fetch-prices, 7 of hourly-sync
    expect(cards.first).to_contain_text("fetch-prices")
    expect(cards.first.locator("summary")).to_have_text(
        "ConnectionError: warehouse.example.com: connection refused"
    )
    page.screenshot(path=str(shots / "errors.png"), full_page=True)
    page.select_option("select[name=since]", "1h")
    expect(page).to_have_url(server["base"] + "/errors?since=1h")
    expect(cards).to_have_count(2)
    page.go_back()
    expect(cards).to_have_count(9)


def test_chart_spreads_runs_over_time(page: Any, server: dict[str, Any], shots: Path) -> None:
    """48 hourly runs: 48 dots, later runs further right, longer runs higher."""
    page.goto(server["base"] + "/task?name=hourly-sync")
    dots = page.locator("#chart svg circle")
    expect(dots).to_have_count(48)
    expect(page.locator("#runs tbody tr")).to_have_count(48)
    xs = [float(d.get_attribute("cx")) for d in dots.all()]
    assert xs == sorted(xs, reverse=True)  # newest first in the list, rightmost
    assert page.locator('#chart circle[data-outcome="fail"]').count() == 7
    page.screenshot(path=str(shots / "task-chart.png"), full_page=True)


def test_phone_width(browser: Any, server: dict[str, Any], shots: Path) -> None:
    """At 390 px wide nothing overflows sideways and the task rows are there."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        for name, path in (("phone-tasks", "/"), ("phone-task", "/task?name=hourly-sync")):
            page.goto(server["base"] + path)
            expect(page.locator("main table tbody tr").first).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 391, f"{path} is {width}px wide"
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    finally:
        context.close()


def test_dark_mode(browser: Any, server: dict[str, Any], shots: Path) -> None:
    """With a dark colour scheme the page is dark."""
    context = browser.new_context(viewport={"width": 1100, "height": 700}, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(server["base"] + "/task?name=hourly-sync")
        expect(page.locator("#runs tbody tr").first).to_be_visible()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 21, 28)"
        page.screenshot(path=str(shots / "dark.png"), full_page=True)
    finally:
        context.close()


def test_new_run_appears_without_reload(page: Any, server: dict[str, Any]) -> None:
    """A run logged by another process shows on the open page, on the list and the chart."""
    page.goto(server["base"] + "/task?name=cleanup-tmp")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(1)
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__marker = 'same page'")
    script = textwrap.dedent(f"""
        import tasklog
        tasklog.basic_config({server['url']!r}, model=tasklog.TaskRunRecord)
        with tasklog.get_task_logger("cleanup-tmp").run() as run:
            run.info("deleted 3 files")
        tasklog.basic_config(None)
        import logging
        logging.shutdown()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    expect(rows).to_have_count(2, timeout=20_000)
    expect(rows.first.locator(".badge")).to_have_text("success")
    expect(page.locator("#chart svg circle")).to_have_count(2)
    assert page.evaluate("window.__marker") == "same page"


def test_served_over_auth(browser: Any, tmp_path: Path) -> None:
    """With --auth the browser's credentials open the dashboard; without them, 401."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    repo = open_repo(url, model=TaskRunRecord)
    write_history(repo)
    repo.close()
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasklog", "--repo", url, "serve", "--port", str(port),
             "--auth", "ops:pa ss"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"serving" not in log.read_bytes():
            time.sleep(0.1)
        context = browser.new_context(http_credentials={"username": "ops", "password": "pa ss"})
        page = context.new_page()
        page.goto(base + "/")
        expect(page.locator("#tasks tbody tr")).to_have_count(4)
        expect(page.locator("#live")).to_have_text("live")
        context.close()
        anonymous = browser.new_context()
        response = anonymous.request.get(base + "/api/tasks")
        assert response.status == 401
        anonymous.close()
    finally:
        process.terminate()
        process.wait(15)


def test_screenshots_were_saved(shots: Path) -> None:
    """Each page left a screenshot (the artifacts docs/web.md shows)."""
    names = {p.name for p in shots.glob("*.png")}
    assert {"tasks.png", "task.png", "run.png", "errors.png", "phone-tasks.png"} <= names
    assert shutil.disk_usage(shots).free > 0
