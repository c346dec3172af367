"""Several processes on one SQLite database: separate `flask atelier worker` processes and a web
process share the queue; no job runs twice, none is stuck, and nothing hits "database is
locked"."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.processes import logs_of, submits

JOBS = 200


@pytest.fixture
def emulator_latency() -> str:
    return "0.2"


def queue_jobs(base: str, count: int) -> list[int]:
    with requests.Session() as session:
        return [
            session.post(
                f"{base}/api/jobs", json={"prompt": f"job {i}", "size": "256x256"}, timeout=10
            ).json()["id"]
            for i in range(count)
        ]


def statuses(base: str) -> dict[int, str]:
    found: dict[int, str] = {}
    cursor = ""
    with requests.Session() as session:
        while True:
            page = session.get(f"{base}/api/jobs?limit=100&cursor={cursor}", timeout=10).json()
            found.update({job["id"]: job["status"] for job in page["items"]})
            if not page["next_cursor"]:
                return found
            cursor = page["next_cursor"]


def wait_all_final(base: str, ids: list[int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = statuses(base)
        if all(found.get(job_id) in ("succeeded", "failed", "canceled") for job_id in ids):
            return found
        assert time.monotonic() < deadline, f"stuck: {sorted(set(found.values()))}"
        time.sleep(0.5)


def test_two_worker_processes_run_200_jobs_exactly_once(
    start_app, start_worker_process, emulator_url, tmp_path
):
    _, base = start_app(ATELIER_WORKER_THREADS="0")  # web only: the workers are separate
    ids = queue_jobs(base, JOBS)
    workers = [start_worker_process(ATELIER_WORKER_THREADS="2") for _ in range(2)]

    found = wait_all_final(base, ids, timeout=120)

    assert [found[job_id] for job_id in ids] == ["succeeded"] * JOBS
    assert submits(emulator_url) == JOBS
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0  # a clean stop on SIGTERM
    assert "Traceback" not in logs_of(tmp_path)


def test_no_database_is_locked_under_page_load_while_workers_run(
    start_app, start_worker_process, emulator_url, tmp_path
):
    _, base = start_app()  # web process with its own worker threads
    start_worker_process()
    ids = queue_jobs(base, 60)
    failures: list[str] = []
    stop = threading.Event()

    def browse() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                for path in ("/", "/gallery", "/api/jobs", f"/partials/jobs/{ids[-1]}"):
                    response = session.get(base + path, timeout=10)
                    if response.status_code != 200:
                        failures.append(f"{path}: {response.status_code}")

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(browse)
        found = wait_all_final(base, ids, timeout=120)
        stop.set()

    assert failures == []
    assert [found[job_id] for job_id in ids] == ["succeeded"] * len(ids)
    assert "database is locked" not in logs_of(tmp_path)
    assert submits(emulator_url) == len(ids)
