"""Live previews: a streaming job's latest partial frame is kept under its lease, served while
the job runs and removed when it ends or is canceled; a kill mid-stream ends `interrupted`
after the restart, never resent."""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from PIL import Image as PILImage

from app import jobs, storage
from app.models import Job, JobStatus, db
from tests.helpers import EMULATOR_KEY, wait_for_job
from tests.processes import generation_requests, wait_until

GPT = "azure:gpt-image-1"
STREAMING = {"partial_images": 2, "quality": "low"}


@pytest.fixture
def streaming_app(app_factory: Any, emulator: Any) -> Iterator[Flask]:
    """Worker threads running, the emulator pausing between stream events."""
    slow_seconds = emulator.config.slow_seconds
    emulator.config.slow_seconds = 0.6
    yield app_factory(
        start_worker=True,
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1",
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
    )
    emulator.config.slow_seconds = slow_seconds


def previews_folder(app: Flask) -> Path:
    return Path(app.config["ATELIER_DATA_DIR"]) / "previews"


def test_a_preview_is_served_while_the_job_streams_then_removed(streaming_app):
    client = streaming_app.test_client()
    body = {"prompt": "a slow dawn [stream-slow]", "provider": GPT, "options": STREAMING}
    job = client.post("/api/jobs", json=body).get_json()

    running = wait_for_job(client, job["id"], until=lambda j: j["preview_url"] is not None)
    with client.get(running["preview_url"]) as response:
        status, headers, frame = response.status_code, response.headers, response.get_data()
    done = wait_for_job(client, job["id"])

    assert running["status"] == "running"
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in headers["Cache-Control"]
    assert frame.startswith(b"\x89PNG")
    assert done["status"] == "succeeded"
    assert done["preview_url"] is None
    with client.get(f"/jobs/{job['id']}/preview") as response:
        assert response.status_code == 404
    assert not list(previews_folder(streaming_app).glob("*"))
    # The final image is stored as always, not the preview.
    with client.get(done["images"][0]["url"]) as response:
        assert response.get_data() != frame


def test_canceling_a_streaming_job_stops_it_and_removes_its_preview(streaming_app, emulator):
    client = streaming_app.test_client()
    body = {"prompt": "a long dusk [stream-slow]", "provider": GPT, "options": STREAMING}
    job = client.post("/api/jobs", json=body).get_json()
    wait_for_job(client, job["id"], until=lambda j: j["preview_url"] is not None)

    canceled = client.post(f"/api/jobs/{job['id']}/cancel").get_json()
    time.sleep(2 * emulator.config.slow_seconds)  # the worker's next frame meets the lost lease

    assert canceled["status"] == "canceled"
    assert canceled["preview_url"] is None
    assert not list(previews_folder(streaming_app).glob("*"))
    after = client.get(f"/api/jobs/{job['id']}").get_json()
    assert (after["status"], after["images"]) == ("canceled", [])


def test_a_worker_that_lost_its_lease_cannot_record_a_preview(app_factory, emulator):
    app = app_factory(AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1")
    client = app.test_client()
    job = client.post("/api/jobs", json={"prompt": "p", "provider": GPT}).get_json()
    frame = _png()
    with app.app_context():
        claim = jobs.claim_due_job()
        assert claim is not None and claim.job_id == job["id"]
        jobs.record_preview(claim, 0, frame)
        assert db.session.get(Job, job["id"]).preview_index == 0
        jobs.cancel_job(job["id"])

        with pytest.raises(jobs.LeaseLost):
            jobs.record_preview(claim, 1, frame)

        row = db.session.get(Job, job["id"])
        assert (row.status, row.preview_name) == (JobStatus.CANCELED, None)
    assert not list(previews_folder(app).glob("*"))


def test_the_polled_card_shows_each_new_frame_not_a_304_of_the_old_one(app_factory):
    app = app_factory(AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1")
    client = app.test_client()
    job = client.post("/api/jobs", json={"prompt": "p", "provider": GPT}).get_json()
    card_url = f"/partials/jobs/{job['id']}"
    with app.app_context():
        claim = jobs.claim_due_job()
        jobs.record_preview(claim, 0, _png())
        first = client.get(card_url)
        jobs.record_preview(claim, 1, _png())
        second = client.get(card_url, headers={"If-None-Match": first.headers["ETag"]})

    assert f"/jobs/{job['id']}/preview?frame=0" in first.get_data(as_text=True)
    assert second.status_code == 200
    assert f"/jobs/{job['id']}/preview?frame=1" in second.get_data(as_text=True)
    assert 'class="preview-label"' in second.get_data(as_text=True)


def test_a_frame_that_is_not_an_image_is_never_written(app_factory):
    app = app_factory(AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1")
    client = app.test_client()
    job = client.post("/api/jobs", json={"prompt": "p", "provider": GPT}).get_json()
    with app.app_context():
        claim = jobs.claim_due_job()
        jobs.record_preview(claim, 0, b"<html><script>alert(1)</script></html>")
        assert db.session.get(Job, job["id"]).preview_name is None
        with pytest.raises(storage.ImageRejected):
            storage.current().write_preview(job["id"], b"<svg onload=alert(1)>")
    assert not list(previews_folder(app).glob("*"))


def _png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def emulator_latency() -> str:
    return "0"


def test_a_kill_mid_stream_ends_interrupted_after_restart_and_is_not_resent(
    start_app, emulator_url, app_env
):
    deployment = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1"}
    process, base = start_app(ATELIER_TEST_CRASH_AT="mid_stream", **deployment)
    body = {"prompt": "killed while streaming", "provider": GPT, "options": STREAMING}
    job_id = requests.post(f"{base}/api/jobs", json=body, timeout=10).json()["id"]
    assert process.popen.wait(timeout=20) == -signal.SIGKILL, "the crash point was not reached"
    process.stop()
    data_dir = Path(app_env["ATELIER_DATA_DIR"])
    assert list((data_dir / "previews").glob("*")), "the first frame was recorded before the kill"

    _, base = start_app(**deployment)
    job = wait_until(base, job_id, lambda job: job["status"] in ("succeeded", "failed"))

    assert (job["status"], job["error"]["code"]) == ("failed", "interrupted")
    assert job["preview_url"] is None
    assert generation_requests(emulator_url) == 1
    assert not list((data_dir / "previews").glob("*"))
    assert not list(data_dir.rglob(".tmp-*"))
