"""`python -m app` on a data folder nobody migrated: it brings the schema to head itself (as
gunicorn's master does), so the first start serves pages and runs jobs instead of 500s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from tests.helpers import database_url_for
from tests.processes import KEY, wait_until


@pytest.fixture
def emulator_latency() -> str:
    return "0"


@pytest.fixture
def app_env(tmp_path: Path, emulator_url: str) -> dict[str, str]:
    """start_app's environment with no `flask db upgrade` run first: a brand-new data folder."""
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "AZURE_OPENAI_ENDPOINT": emulator_url,
        "AZURE_OPENAI_API_KEY": KEY,
        "AZURE_OPENAI_ASYNC_DALLE2": "on",
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_AUTH": "off",
        "ATELIER_POLL_INTERVAL_SECONDS": "0.2",
    }
    database_url = database_url_for(data_dir)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


def test_first_start_on_a_never_migrated_data_folder_migrates_and_runs_jobs(start_app):
    process, base = start_app()  # waits until /api/jobs answers 200

    job_id = requests.post(f"{base}/api/jobs", json={"prompt": "first"}, timeout=5).json()["id"]
    job = wait_until(base, job_id, lambda job: job["status"] == "succeeded")

    assert [image["status"] for image in job["images"]] == ["stored"]
    assert "worker step failed" not in process.log_path.read_text()
