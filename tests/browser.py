"""What the headless-Chromium tests share: Debian's Chromium driven by Playwright, and a real
`python -m app` with its built-in emulator on a fresh data folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import ROOT, free_port, scratch_database_url, wait_until_up

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Settings for a module that makes many images up front: near-instant emulator, quick worker polls.
FAST_IMAGES = {"ATELIER_EMULATOR_LATENCY_SECONDS": "0.01", "ATELIER_POLL_INTERVAL_SECONDS": "0.1"}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Browser tests need Debian's chromium on PATH: apt-get install chromium")
    return path


@contextmanager
def serve_app(data_dir: Path, **settings: str) -> Iterator[str]:
    """Migrate, start `python -m app` with the emulator, yield its base URL, stop it."""
    with scratch_database_url() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_OPENAI_")}
        env.update(ATELIER_DATA_DIR=str(data_dir), ATELIER_EMULATOR_PORT="0", ATELIER_AUTH="off")
        env.update(settings)
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        yield from _serve(data_dir, env)


def app_server(folder: str, populate: Callable[[str], None] | None = None, **settings: str) -> Any:
    """A module-scoped fixture (named by the attribute it is assigned to): `serve_app` on a fresh
    data folder called `folder`, with `settings`; its value is the base URL. `populate`, when
    given, is called with the base URL before the first test (to make the module's images)."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        with serve_app(tmp_path_factory.mktemp(folder), **settings) as base:
            if populate is not None:
                populate(base)
            yield base

    return server


def _serve(data_dir: Path, env: dict[str, str]) -> Iterator[str]:
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    with (data_dir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base + "/healthz", process, data_dir / "server.log")
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)


# Chromium logs every 4xx as a console error; 422 is how a refused form answers.
EXPECTED_CONSOLE = ("status of 422",)
# Content-Security-Policy violations are console errors in Chromium; this reports them from the
# page too, with the directive and the blocked URL.
REPORT_CSP_VIOLATIONS = (
    "document.addEventListener('securitypolicyviolation', e => "
    "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
)


def watch_problems(page: Page, problems: list[str] | None = None) -> list[str]:
    """Collect the page's script errors, console errors and CSP violations, as they happen,
    into `problems` (a new list by default), and return that list."""
    problems = [] if problems is None else problems
    page.add_init_script(REPORT_CSP_VIOLATIONS)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and not any(text in msg.text for text in EXPECTED_CONSOLE)
            else None
        ),
    )
    return problems


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def submit_job(server: str, prompt: str, **body: Any) -> int:
    """Submit a job through the served app's JSON API; its id (anything but a 202 fails)."""
    response = requests.post(f"{server}/api/jobs", json={"prompt": prompt, **body}, timeout=5)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def finished_job(server: str, job_id: int, timeout: float = 30) -> dict:
    """The job as the served app's API shows it once it is final (succeeded, failed, canceled)."""
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{server}/api/jobs/{job_id}", timeout=5).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        time.sleep(0.1)


def new_page(
    browser: Browser, problems: list[str], *, viewport: dict[str, int] | None = None, **options: Any
) -> Page:
    """A page in a new browser context (1200×900 unless `viewport` says otherwise, `options` as
    `Browser.new_context` takes them) whose problems are collected into `problems`."""
    context = browser.new_context(viewport=viewport or {"width": 1200, "height": 900}, **options)
    page = context.new_page()
    watch_problems(page, problems)
    return page


@contextmanager
def checked_page(browser: Browser, **options: Any) -> Iterator[Page]:
    """`new_page` with `options`, closed on leaving, when it must have reported no problem."""
    problems: list[str] = []
    page = new_page(browser, problems, **options)
    yield page
    page.context.close()
    assert problems == [], f"the page reported errors: {problems}"


def wait_for_js(page: Page, function: str, arg: Any = None, timeout: float = 30) -> None:
    """Call the JavaScript `function` (source text, given `arg`) until it returns something
    true. Instead of Playwright's wait_for_function, which compiles its predicate inside the page
    while it polls, and the app's CSP (no 'unsafe-eval') refuses that: page.evaluate goes through
    the DevTools protocol, which the page's CSP does not govern."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(function, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {function}")
        time.sleep(0.05)
