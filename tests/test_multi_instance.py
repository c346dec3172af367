"""Several app instances on one PostgreSQL database and one image folder: two web processes, each
with its own worker threads, and a `flask atelier worker` process share the queue. Every job runs
exactly once, none is stuck, and either instance serves the images the other's jobs made.

PostgreSQL only: it is the database several hosts can share (tests/test_workers.py covers several
processes on one SQLite file)."""

from __future__ import annotations

import signal
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import free_port, on_postgresql
from tests.processes import logs_of, submit_round_robin, submits, wait_all_final

JOBS = 100

pytestmark = pytest.mark.skipif(
    not on_postgresql(),
    reason="needs a shared PostgreSQL database (ATELIER_TEST_DB=postgresql); "
    "tests/test_workers.py covers several processes on one SQLite file",
)


@pytest.fixture
def emulator_latency() -> str:
    return "0.2"


def test_two_app_instances_and_a_worker_share_one_queue_and_image_folder(
    start_app, start_worker_process, emulator_url, tmp_path
):
    _, first = start_app()
    _, second = start_app(port=free_port())
    worker = start_worker_process()
    bases = [first, second]

    ids = submit_round_robin(bases, "shared job", JOBS)
    jobs = wait_all_final(first, ids, timeout=180)

    assert [jobs[job_id]["status"] for job_id in ids] == ["succeeded"] * JOBS
    assert submits(emulator_url) == JOBS
    with requests.Session() as session:
        for i, job_id in enumerate(ids):
            other = bases[(i + 1) % 2]  # not the instance the job was submitted to
            for image in jobs[job_id]["images"]:
                path = urlsplit(image["url"]).path
                response = session.get(other + path, timeout=10)
                assert response.status_code == 200, (job_id, path)
                assert response.headers["Content-Type"].startswith("image/")
    assert worker.stop(signal.SIGTERM) == 0
    assert "Traceback" not in logs_of(tmp_path)
