"""Adaptive polling in real headless Chromium (issue #8): a running job's card revalidates its
stored copy with If-None-Match, gets 304 Not Modified while nothing changed, keeps polling
after a 304 (the browser hands htmx the stored card, whose trigger schedules the next poll),
and shows the change, then stops polling, once the job is final."""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests
from playwright.sync_api import Browser, expect

from tests.browser import serve_app

POLL = re.compile(r"path=/partials/jobs/(\d+) status=(\d+)")


def card_polls(data_dir: Path, job_id: int) -> list[int]:
    """Statuses of the card's polls so far, from the server's request log."""
    log = (data_dir / "server.log").read_text()
    return [int(status) for found, status in POLL.findall(log) if int(found) == job_id]


def wait_for_polls(data_dir: Path, job_id: int, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(polls := card_polls(data_dir, job_id)) < count:
        assert time.monotonic() < deadline, f"only {polls} after {timeout} s"
        time.sleep(0.2)
    return polls


def test_a_waiting_card_polls_on_through_304s_and_stops_when_final(browser: Browser, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # No worker threads: the job stays queued until the test cancels it.
    with serve_app(data_dir, ATELIER_WORKER_THREADS="0") as base:
        created = requests.post(
            base + "/api/jobs", json={"prompt": "a lighthouse at dusk"}, timeout=10
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(f"{base}/jobs/{job_id}")
            card = page.locator(f"#job-{job_id}")
            expect(card).to_contain_text("Queued")

            # The first poll renders the card; the next ones are 304s, and polling goes on.
            polls = wait_for_polls(data_dir, job_id, 4, timeout=30)
            assert polls[0] == 200
            assert polls[1:4] == [304, 304, 304], polls
            expect(card).to_contain_text("Queued")
            assert card.get_attribute("hx-trigger") == "load delay:5s"

            canceled = requests.post(f"{base}/api/jobs/{job_id}/cancel", timeout=10)
            assert canceled.status_code == 200, canceled.text
            expect(card).to_contain_text("Canceled", timeout=15_000)
            assert card.get_attribute("hx-trigger") is None
            settled = len(card_polls(data_dir, job_id))
            time.sleep(6)  # longer than the last delay the card asked for
            assert len(card_polls(data_dir, job_id)) == settled
        finally:
            context.close()
