"""SIGKILL at every step of a job's life, then a restart: each job ends in one final state, the
emulator saw one submit per job, no temporary file is left and no row points to a missing file.
The app kills itself at a named point (ATELIER_TEST_CRASH_AT, see app/crashpoints.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from tests.processes import generation_requests, submits, wait_until

FINAL = ("succeeded", "failed", "canceled")


@pytest.fixture
def emulator_latency() -> str:
    return "0.5"


def post_job(base: str, **body) -> int | None:
    """POST a job; None when the process died before answering (before the answer began, or
    while its body was on the way: the worker may reach the crash point that quickly)."""
    try:
        return requests.post(f"{base}/api/jobs", json=body, timeout=10).json()["id"]
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return None


def crash_then_restart(start_app, point: str, **body) -> tuple[str, int]:
    process, base = start_app(ATELIER_TEST_CRASH_AT=point)
    job_id = post_job(base, **body)
    assert process.popen.wait(timeout=20) == -signal.SIGKILL, "the crash point was not reached"
    process.stop()
    _, base = start_app()
    if job_id is None:  # the process died inside the request; the row was committed
        (job,) = requests.get(f"{base}/api/jobs", timeout=5).json()["items"]
        job_id = job["id"]
    return base, job_id


def assert_consistent_files(data_dir: Path, job: dict) -> None:
    assert not list(data_dir.rglob(".tmp-*")), "a temporary file was left behind"
    on_disk = {path.name for path in data_dir.glob("images/*/*") if path.is_file()}
    stored = [image for image in job["images"] if image["status"] == "stored"]
    for image in stored:
        assert any(name.startswith(image["sha256"]) for name in on_disk), "row without file"
    assert len(on_disk) == len({image["sha256"] for image in stored}), "file without row"


def test_crash_right_after_the_row_commits(start_app, emulator_url, app_env):
    base, job_id = crash_then_restart(start_app, "after_commit", prompt="committed", n=1)

    job = wait_until(base, job_id, lambda job: job["status"] in FINAL)

    assert job["status"] == "succeeded"
    assert submits(emulator_url) == 1
    assert_consistent_files(Path(app_env["ATELIER_DATA_DIR"]), job)


def test_crash_during_submit_ends_interrupted_without_a_second_submit(
    start_app, emulator_url, app_env
):
    base, job_id = crash_then_restart(start_app, "during_submit", prompt="in flight")

    job = wait_until(base, job_id, lambda job: job["status"] in FINAL)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "interrupted"
    assert submits(emulator_url) == 1
    assert_consistent_files(Path(app_env["ATELIER_DATA_DIR"]), job)


def test_crash_during_a_synchronous_generation_ends_interrupted(start_app, emulator_url, app_env):
    deployment = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1"}
    process, base = start_app(ATELIER_TEST_CRASH_AT="during_submit", **deployment)
    job_id = post_job(base, prompt="generated then lost")
    assert process.popen.wait(timeout=20) == -signal.SIGKILL
    process.stop()
    _, base = start_app(**deployment)

    job = wait_until(base, job_id, lambda job: job["status"] in FINAL)

    assert job["error"]["code"] == "interrupted"
    assert generation_requests(emulator_url) == 1
    assert_consistent_files(Path(app_env["ATELIER_DATA_DIR"]), job)


@pytest.mark.parametrize(
    ("phase", "prompt"),
    [
        pytest.param("mid_poll", "polled", id="mid-poll-resumes-polling"),
        # The file written before the crash is the same content, so it is reused, not duplicated.
        pytest.param("after_rename", "renamed", id="between-file-rename-and-row-update"),
    ],
)
def test_crash_then_restart_finishes_the_job_with_one_submit(
    start_app, emulator_url, app_env, phase, prompt
):
    base, job_id = crash_then_restart(start_app, phase, prompt=prompt, n=2)

    job = wait_until(base, job_id, lambda job: job["status"] in FINAL)

    assert job["status"] == "succeeded"
    assert len(job["images"]) == 2
    assert submits(emulator_url) == 1
    assert_consistent_files(Path(app_env["ATELIER_DATA_DIR"]), job)


def test_crash_mid_download_fetches_only_the_rest(start_app, emulator_url, app_env):
    base, job_id = crash_then_restart(start_app, "mid_download", prompt="halfway", n=3)

    job = wait_until(base, job_id, lambda job: job["status"] in FINAL)

    assert job["status"] == "succeeded"
    assert [image["status"] for image in job["images"]] == ["stored"] * 3
    assert submits(emulator_url) == 1
    counts = requests.get(emulator_url + "_emulator/requests", timeout=5).json()["counts"]
    assert counts["blob"] == 3  # the image stored before the crash was not fetched again
    assert_consistent_files(Path(app_env["ATELIER_DATA_DIR"]), job)
