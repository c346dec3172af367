"""Jobs survive the app process dying: real processes, real signals, the emulator in its own
process so Azure's side of each operation outlives the app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, free_port

KEY = "restart-test-key"


class Process:
    """A child process whose output goes to a log file, killed at teardown if still running."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        code = self.popen.wait(timeout=20)
        self.log.close()
        return code


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.emulator", "--port", "0", "--api-key", KEY,
         "--latency", "2", "--poll-interval", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    assert line.startswith("EMULATOR_URL="), line
    yield line.split("=", 1)[1]
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


@pytest.fixture
def start_app(tmp_path: Path, emulator_url: str) -> Iterator:
    """Start `python -m app` on a fixed data folder and port; may be called again to restart."""
    port = free_port()
    env = {
        **os.environ,
        "AZURE_OPENAI_ENDPOINT": emulator_url,
        "AZURE_OPENAI_API_KEY": KEY,
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_LEASE_SECONDS": "2",
        "ATELIER_POLL_INTERVAL_SECONDS": "0.2",
    }
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    started: list[Process] = []

    def start(**overrides: str) -> tuple[Process, str]:
        process = Process(
            [sys.executable, "-m", "app", "--port", str(port)],
            {**env, **overrides},
            tmp_path / "app.log",
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(base + "/api/jobs", timeout=1).raise_for_status()
                return process, base
            except requests.RequestException:
                if process.popen.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.log_path.read_text()) from None
                time.sleep(0.1)

    yield start
    for process in started:
        process.stop()


def job_state(base: str, job_id: int) -> dict:
    return requests.get(f"{base}/api/jobs/{job_id}", timeout=5).json()


def wait_until(base: str, job_id: int, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(base, job_id)
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.05)


def submits(emulator_url: str) -> int:
    return requests.get(emulator_url + "_emulator/requests", timeout=5).json()["counts"]["submit"]


def test_killed_mid_poll_resumes_polling_without_resubmitting(start_app, emulator_url):
    process, base = start_app()
    job_id = requests.post(
        f"{base}/api/jobs", json={"prompt": "survivor", "n": 2}, timeout=5
    ).json()["id"]
    wait_until(base, job_id, lambda job: job["phase"] == "polling")

    process.stop(signal.SIGKILL)
    _, base = start_app()
    job = wait_until(base, job_id, lambda job: job["status"] == "succeeded")

    assert [image["status"] for image in job["images"]] == ["stored", "stored"]
    assert submits(emulator_url) == 1


def test_queued_job_is_submitted_after_a_restart(start_app, emulator_url):
    process, base = start_app(ATELIER_WORKER_THREADS="0")
    job_id = requests.post(f"{base}/api/jobs", json={"prompt": "patient"}, timeout=5).json()["id"]
    assert job_state(base, job_id)["status"] == "queued"

    process.stop(signal.SIGKILL)
    _, base = start_app()
    job = wait_until(base, job_id, lambda job: job["status"] == "succeeded")

    assert len(job["images"]) == 1
    assert submits(emulator_url) == 1


def test_sigterm_stops_cleanly_and_the_job_continues_after_restart(start_app, emulator_url):
    process, base = start_app()
    job_id = requests.post(f"{base}/api/jobs", json={"prompt": "graceful"}, timeout=5).json()["id"]
    wait_until(base, job_id, lambda job: job["phase"] == "polling")

    assert process.stop(signal.SIGTERM) == 0
    _, base = start_app()
    wait_until(base, job_id, lambda job: job["status"] == "succeeded")

    assert submits(emulator_url) == 1


def generation_requests(emulator_url: str) -> int:
    log = requests.get(emulator_url + "_emulator/requests", timeout=5).json()["requests"]
    return sum(1 for entry in log if entry["path"].endswith("/images/generations"))


def test_killed_mid_generation_is_interrupted_and_retry_sends_it_once_more(start_app, emulator_url):
    deployment = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1"}
    process, base = start_app(**deployment)
    job_id = requests.post(f"{base}/api/jobs", json={"prompt": "in flight"}, timeout=5).json()["id"]
    wait_until(base, job_id, lambda job: job["phase"] == "submitting")

    process.stop(signal.SIGKILL)
    _, base = start_app(**deployment)
    job = wait_until(base, job_id, lambda job: job["status"] == "failed")

    assert job["error"]["code"] == "interrupted"
    assert "Retry" in job["error"]["message"]
    assert generation_requests(emulator_url) == 1  # not resent on its own
    retried = requests.post(f"{base}/api/jobs/{job_id}/retry", timeout=5).json()
    assert wait_until(base, retried["id"], lambda job: job["status"] == "succeeded")
    assert generation_requests(emulator_url) == 2
