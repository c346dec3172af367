"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from app import create_app
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


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    config: dict[str, Any] = {
        "TESTING": True,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_WORKER_THREADS": 2,
        "ATELIER_POLL_INTERVAL_SECONDS": 0.2,
        "ATELIER_EMULATOR_PORT": 0,
    }
    config.update(overrides)
    app = create_app(config)
    with app.app_context():
        upgrade()
    return app
