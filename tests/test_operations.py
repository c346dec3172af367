"""Operations: readiness, Prometheus metrics, structured logs, backup and restore."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.exc import OperationalError

from app import backup, storage
from app.logs import KeyValueFormatter
from app.models import db
from tests.helpers import EMULATOR_KEY, on_postgresql, submit, wait_for_job

sqlite_only = pytest.mark.skipif(on_postgresql(), reason="backup and restore handle SQLite only")


def metric_lines(client) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.get_data(as_text=True).splitlines()


@pytest.fixture
def read_log() -> Iterator[Callable[[], list[str]]]:
    """Every log line so far (DEBUG and up, every logger) as production formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: stream.getvalue().splitlines()
    root.removeHandler(handler)
    root.setLevel(previous_level)


# --- health -------------------------------------------------------------------------------------


def test_readyz_reports_every_part_ok_with_the_worker_running(running_app):
    client = running_app.test_client()
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"database": "ok", "images": "ok", "worker": "ok"}
    assert client.get("/healthz").status_code == 200


def test_readyz_is_ready_without_a_worker_in_this_process(idle_app):
    response = idle_app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["worker"] == "not running here"


def test_readyz_fails_when_the_worker_threads_stopped(running_app):
    running_app.extensions["atelier_worker"].stop()

    response = running_app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json() == {"database": "ok", "images": "ok", "worker": "stopped"}


def test_readyz_fails_when_the_image_folder_is_not_writable(idle_app, tmp_path):
    idle_app.extensions[storage.EXTENSION] = storage.Storage(tmp_path / "gone")

    response = idle_app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["images"] == "not writable"


def test_readyz_fails_without_secrets_when_the_database_does_not_answer(idle_app, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception(idle_app.config["DATABASE_URL"]))

    monkeypatch.setattr(db.session, "execute", refuse)

    response = idle_app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["database"] == "unavailable"
    assert idle_app.config["DATABASE_URL"] not in response.get_data(as_text=True)


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_count_queued_jobs_by_status_and_queue_depth(idle_app):
    client = idle_app.test_client()
    submit(client, prompt="a kite")
    submit(client, prompt="a second kite")

    lines = metric_lines(client)

    assert 'atelier_jobs{status="queued"} 2' in lines
    assert 'atelier_jobs{status="succeeded"} 0' in lines
    assert "atelier_queue_depth 2" in lines
    assert "# TYPE atelier_job_duration_seconds histogram" in lines


def test_metrics_record_a_finished_job_its_duration_and_its_images(client):
    job = wait_for_job(client, submit(client, prompt="a harbour", n=2, size="256x256")["id"])
    assert job["status"] == "succeeded"

    lines = metric_lines(client)

    assert 'atelier_jobs{status="succeeded"} 1' in lines
    assert "atelier_queue_depth 0" in lines
    assert "atelier_stored_images 2" in lines
    assert "atelier_images_saved_total 2" in lines
    assert 'atelier_job_duration_seconds_bucket{status="succeeded",le="+Inf"} 1' in lines
    assert 'atelier_job_duration_seconds_count{status="succeeded"} 1' in lines


def test_metrics_count_upstream_errors_by_code(client):
    job = wait_for_job(client, submit(client, prompt="something [refuse]")["id"])
    code = job["error"]["code"]

    lines = metric_lines(client)

    assert f'atelier_job_failures_total{{code="{code}"}} 1' in lines
    assert 'atelier_job_duration_seconds_count{status="failed"} 1' in lines


# --- logs ---------------------------------------------------------------------------------------


def test_requests_and_job_transitions_log_structured_lines_without_secrets(client, read_log):
    job_id = submit(client, prompt="a quiet street")["id"]
    wait_for_job(client, job_id)
    client.get(f"/api/jobs/{job_id}?token=do-not-log-me")

    lines = read_log()

    request_line = next(line for line in lines if f"path=/api/jobs/{job_id} " in line)
    assert re.search(
        rf"event=http.request method=GET path=/api/jobs/{job_id} status=200 "
        r"duration_ms=[\d.]+ remote_addr=127.0.0.1$",
        request_line,
    ), request_line
    assert request_line.startswith("ts=")
    events = {
        match.group(1): line
        for line in lines
        if (match := re.search(rf"event=job\.(\w+) job_id={job_id} ", line))
    }
    assert {"queued", "submitting", "downloading", "succeeded"} <= events.keys()
    assert "status=succeeded" in events["succeeded"]
    assert "status=queued" in events["queued"]
    assert not [line for line in lines if EMULATOR_KEY in line]
    assert not [line for line in lines if "do-not-log-me" in line]


def test_formatter_keeps_each_record_on_one_line():
    record = logging.LogRecord("app.x", logging.INFO, __file__, 1, 'two\nlines "q"', (), None)
    record.fields = {"job_id": 3, "reason": "rate limited", "code": None}

    line = KeyValueFormatter().format(record)

    assert "\n" not in line
    assert line.endswith(r'msg="two\nlines \"q\"" job_id=3 reason="rate limited"')


# --- backup and restore -------------------------------------------------------------------------


@sqlite_only
def test_backup_and_restore_bring_back_the_same_jobs_and_image_bytes(app_factory, tmp_path):
    source = app_factory()
    client = source.test_client()
    job_ids = [
        submit(client, prompt="a red door", n=2, size="256x256")["id"],
        submit(client, prompt="a blue door", size="256x256")["id"],
    ]
    jobs_before = [wait_for_job(client, job_id) for job_id in job_ids]
    assert all(job["status"] == "succeeded" for job in jobs_before)
    images_before = _image_hashes(client, jobs_before)
    dest = tmp_path / "backup"

    backed_up = source.test_cli_runner().invoke(args=["atelier", "backup", str(dest)])

    assert backed_up.exit_code == 0, backed_up.output
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["counts"]["jobs"] == 2
    assert manifest["counts"]["stored_images"] == 3
    assert manifest["schema_revision"]
    assert manifest["missing"] == []

    target = app_factory()  # a fresh data folder
    restored = target.test_cli_runner().invoke(args=["atelier", "restore", str(dest)])

    assert restored.exit_code == 0, restored.output
    target_client = target.test_client()
    jobs_after = [target_client.get(f"/api/jobs/{job_id}").get_json() for job_id in job_ids]
    assert jobs_after == jobs_before
    assert _image_hashes(target_client, jobs_after) == images_before
    verified = target.test_cli_runner().invoke(args=["atelier", "verify"])
    assert verified.exit_code == 0, verified.output


def _image_hashes(client, jobs: list[dict]) -> dict[str, str]:
    hashes = {}
    for job in jobs:
        for image in job["images"]:
            with client.get(image["url"]) as response:
                assert response.status_code == 200
                hashes[image["url"]] = hashlib.sha256(response.data).hexdigest()
                assert hashes[image["url"]] == image["sha256"]
    return hashes


@sqlite_only
def test_restore_refuses_a_database_that_has_jobs_unless_forced(app_factory, tmp_path):
    source = app_factory()
    submit(source.test_client(), prompt="kept")
    dest = tmp_path / "backup"
    assert source.test_cli_runner().invoke(args=["atelier", "backup", str(dest)]).exit_code == 0
    target = app_factory()
    submit(target.test_client(), prompt="would be lost")
    runner = target.test_cli_runner()

    refused = runner.invoke(args=["atelier", "restore", str(dest)])
    forced = runner.invoke(args=["atelier", "restore", "--force", str(dest)])

    assert refused.exit_code != 0
    assert "already has 1 job" in refused.output
    assert forced.exit_code == 0, forced.output
    prompts = [job["prompt"] for job in target.test_client().get("/api/jobs").get_json()["items"]]
    assert prompts == ["kept"]


@sqlite_only
def test_backup_refuses_a_folder_that_is_not_empty(idle_app, tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "something").write_text("x")

    result = idle_app.test_cli_runner().invoke(args=["atelier", "backup", str(tmp_path / "backup")])

    assert result.exit_code != 0
    assert "not empty" in result.output


def test_backup_of_postgresql_points_to_pg_dump_without_showing_the_url():
    with pytest.raises(backup.BackupError) as refused:
        backup.sqlite_path("postgresql+psycopg://atelier:s3cret@db.example/atelier")

    assert "pg_dump" in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.skipif(not on_postgresql(), reason="needs ATELIER_TEST_DB=postgresql")
def test_backup_command_on_postgresql_says_to_use_pg_dump(idle_app, tmp_path):
    result = idle_app.test_cli_runner().invoke(args=["atelier", "backup", str(tmp_path / "b")])

    assert result.exit_code != 0
    assert "pg_dump" in result.output
    assert idle_app.config["DATABASE_URL"] not in result.output
    assert not (tmp_path / "b").exists()


def test_restore_refuses_a_folder_without_a_manifest(tmp_path):
    with pytest.raises(backup.BackupError, match="no manifest.json"):
        backup.read_manifest(tmp_path)
