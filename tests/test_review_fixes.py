"""Review findings fixed after the edit and preview merges: an input file removed by a racing
request is written again, verify sees every owner's inputs and the previews a crash left behind,
the job list loads inputs with its jobs, and a preview that cannot be written does not fail the
job."""

from __future__ import annotations

import errno
import io
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image as PILImage
from sqlalchemy import event

from app import consistency, inputs, jobs, library, storage
from app.auth import accounts, scoping
from app.models import Job, JobStatus, db
from tests.edit_helpers import EDITOR_SETTINGS
from tests.helpers import run_until_final

GPT = "azure:gpt-image-1"
STREAMING = {"partial_images": 2, "quality": "low"}


@pytest.fixture
def editor_app(app_factory: Any) -> Flask:
    return app_factory(**EDITOR_SETTINGS)


def png(color: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# --- a) an upload's file removed by a racing request is written again --------------------------


def test_an_input_file_removed_before_the_commit_is_written_again(editor_app, monkeypatch):
    """Request A wrote these bytes and failed; B found them there (wrote nothing), and A's
    clean-up removed them before B committed. B's row must not name a missing file."""
    data = png()
    with editor_app.app_context():
        request = inputs.request_from_multipart(
            {"prompt": "stormy", "provider": GPT},
            {"image": [data]},
            editor_app.config["ATELIER_TARGETS"],
        )
        prepared = request.inputs[0].prepared
        names = (prepared.file_name, *storage.thumbnail_names(prepared.sha256))
        files = storage.current()
        lock = jobs._lock_owner_limits

        def removed_by_the_other_request(session: Any, owner_id: int | None) -> None:
            # Inside B's write transaction: the files are stored, the row not yet committed.
            assert all(files.path(name).is_file() for name in names)
            files.remove_files(names)
            lock(session, owner_id)

        monkeypatch.setattr(jobs, "_lock_owner_limits", removed_by_the_other_request)
        job, created = jobs.create_job(request, owner_id=None)

        assert created
        stored = db.session.get(Job, job.id).inputs
        assert [item.file_name for item in stored] == [prepared.file_name]
        for name in names:
            assert files.path(name).read_bytes() != b""
        assert files.path(prepared.file_name).read_bytes() == data


# --- e) a preview that cannot be written -----------------------------------------------------


def test_a_preview_the_disk_cannot_take_is_dropped_and_the_job_succeeds(
    editor_app, monkeypatch, caplog
):
    client = editor_app.test_client()
    body = {"prompt": "a harbour at dawn", "provider": GPT, "options": STREAMING}
    job = client.post("/api/jobs", json=body).get_json()
    attempts: list[int] = []

    def disk_full(self: storage.Storage, job_id: int, data: bytes) -> str:
        attempts.append(job_id)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.Storage, "write_preview", disk_full)
    with caplog.at_level(logging.WARNING, logger="app.jobs"):
        status = run_until_final(editor_app, job["id"], timeout=20)

    assert attempts, "the emulator streamed no partial frame"
    assert status == JobStatus.SUCCEEDED
    done = client.get(f"/api/jobs/{job['id']}").get_json()
    assert done["preview_url"] is None
    assert len(done["images"]) == 1
    assert "not written (" in caplog.text and "No space left" in caplog.text
    assert not list((Path(editor_app.config["ATELIER_DATA_DIR"]) / "previews").glob("*"))


# --- b) verify and rebuild see every owner's edit inputs ---------------------------------------


def queue_edit(app: Flask, owner_id: int | None, data: bytes) -> Job:
    request = inputs.request_from_multipart(
        {"prompt": "stormy", "provider": GPT}, {"image": [data]}, app.config["ATELIER_TARGETS"]
    )
    job, _ = jobs.create_job(request, owner_id=owner_id)
    return job


def test_verify_and_rebuild_inside_a_signed_in_request_see_other_owners_inputs(editor_app):
    with editor_app.app_context():
        alice = accounts.create_user("alice", "a long enough passphrase 1")
        bob = accounts.create_user("bob", "a long enough passphrase 2")
        queue_edit(editor_app, alice.id, png((200, 10, 10)))
        bobs = queue_edit(editor_app, bob.id, png((10, 200, 10)))
        bobs_files = {
            name
            for item in bobs.inputs
            for name in (item.file_name, item.thumbnail_name, item.thumbnail_large_name)
        }
        alice_id = alice.id

    with editor_app.test_request_context():
        scoping.set_scope(alice_id)
        report = consistency.verify(storage.current(), grace_seconds=0)
        rebuilt = consistency.rebuild(storage.current())

    assert report.orphan_files == []
    assert report.input_problems == {}
    assert report.clean, report.lines()
    assert not bobs_files & set(rebuilt.unknown)
    assert rebuilt.created_jobs == []


# --- c) previews a crash left behind ---------------------------------------------------------


def make_old(path: Path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_verify_reports_and_repair_removes_previews_no_running_job_names(editor_app):
    client = editor_app.test_client()
    running = client.post("/api/jobs", json={"prompt": "a", "provider": GPT}).get_json()
    with editor_app.app_context():
        files = storage.current()
        claim = jobs.claim_due_job()
        assert claim is not None and claim.job_id == running["id"]
        jobs.record_preview(claim, 0, png())
        queued = client.post("/api/jobs", json={"prompt": "b", "provider": GPT}).get_json()
        left_behind = [
            files.write_preview(queued["id"], png()),  # its worker crashed mid-stream
            files.write_preview(4242, png()),  # a job deleted since
        ]
        live = db.session.get(Job, running["id"]).preview_name
        temp = files.root / storage.PREVIEWS / f"{storage.TEMP_PREFIX}x1y2"
        temp.write_bytes(b"half a frame")
        young = files.write_preview(4343, png())  # may be a worker's, not yet recorded
        for name in (*left_behind, live):
            make_old(files.path(name))
        make_old(temp)

        report = consistency.verify(files)
        assert sorted(report.stale_previews) == sorted(left_behind)
        assert report.stale_temp_files == [f"previews/{temp.name}"]
        assert young in report.recent_files
        assert not report.clean
        assert any(
            line.startswith("Preview of a job that is not running") for line in report.lines()
        )
        assert all(files.path(name).is_file() for name in left_behind)  # only reported

        repaired = consistency.verify(files, repair=True)
        assert sorted(repaired.removed_previews) == sorted(left_behind)
        assert repaired.clean, repaired.lines()
        assert not any(files.path(name).exists() for name in left_behind)
        assert files.path(live).is_file() and files.path(young).is_file()
        assert not temp.exists()
        assert consistency.verify(files).clean


# --- d) lists of jobs load their inputs with them ----------------------------------------------


@contextmanager
def counted_input_queries(app: Flask) -> Iterator[list[str]]:
    """The statements that read job_inputs while the block runs."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        if "FROM job_inputs" in args[2]:
            statements.append(args[2])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_the_api_job_list_reads_every_job_inputs_in_one_query(editor_app):
    client = editor_app.test_client()
    client.get("/api/jobs").close()  # warm up the engine
    with editor_app.app_context():
        for shade in range(6):
            queue_edit(editor_app, None, png((shade * 40, 90, 90)))

    with counted_input_queries(editor_app) as statements:
        response = client.get("/api/jobs")

    assert [len(job["inputs"]) for job in response.get_json()["items"]] == [1] * 6
    assert len(statements) == 1


LISTS = {
    "recent_jobs": lambda ids: library.recent_jobs(),
    "active_jobs": lambda ids: library.active_jobs(),
    "jobs_by_id": lambda ids: library.jobs_by_id(ids),
    "job_page": lambda ids: library.job_page(status=None, q=None, limit=20, after=None).items,
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_list_of_jobs_loads_their_inputs_with_them(editor_app, name):
    with editor_app.app_context():
        ids = [queue_edit(editor_app, None, png((shade * 40, 9, 9))).id for shade in range(5)]
        db.session.expunge_all()
        with counted_input_queries(editor_app) as statements:
            listed = LISTS[name](ids)
            shown = [len(job.inputs) for job in listed]

    assert shown == [1] * 5
    assert len(statements) == 1
