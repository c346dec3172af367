"""Jobs survive the app process dying: real processes, real signals, the emulator in its own
process so Azure's side of each operation outlives the app."""

from __future__ import annotations

import signal
import time

import requests

from tests.processes import generation_requests, job_state, submits, wait_until


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


def test_killed_mid_generation_is_interrupted_and_retry_sends_it_once_more(start_app, emulator_url):
    deployment = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1"}
    process, base = start_app(**deployment)
    job_id = requests.post(f"{base}/api/jobs", json={"prompt": "in flight"}, timeout=5).json()["id"]
    wait_until(base, job_id, lambda job: job["phase"] == "submitting")
    deadline = time.monotonic() + 10
    while generation_requests(emulator_url) == 0:  # the request has reached the emulator
        assert time.monotonic() < deadline
        time.sleep(0.02)

    process.stop(signal.SIGKILL)
    _, base = start_app(**deployment)
    job = wait_until(base, job_id, lambda job: job["status"] == "failed")

    assert job["error"]["code"] == "interrupted"
    assert "Retry" in job["error"]["message"]
    assert generation_requests(emulator_url) == 1  # not resent on its own
    retried = requests.post(f"{base}/api/jobs/{job_id}/retry", timeout=5).json()
    assert wait_until(base, retried["id"], lambda job: job["status"] == "succeeded")
    assert generation_requests(emulator_url) == 2
