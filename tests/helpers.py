"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import requests
from flask.testing import FlaskClient

from app.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_KEY = "test-key-" + secrets.token_hex(8)


def wait_for_job(
    client: FlaskClient, job_id: int, *, until: Any = None, timeout: float = 15
) -> dict:
    """Poll the JSON API until the job is final (or `until(job)` holds); return the job."""
    done = until or (lambda job: job["status"] in ("succeeded", "failed", "canceled"))
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").get_json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")
        time.sleep(0.05)


def emulator_counts(server: EmulatorServer) -> dict[str, int]:
    return requests.get(server.url + "_emulator/requests", timeout=5).json()["counts"]


def csrf_token(client: FlaskClient) -> str:
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the home page has no CSRF token"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
