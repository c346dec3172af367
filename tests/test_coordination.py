"""Coordination between instances (app/coordination.py): on PostgreSQL the page caches' versions
live in the database and spread by LISTEN/NOTIFY, and idle workers wake on NOTIFY; on SQLite the
version files and polling stay as they were.

Two "instances" here are two apps in this process on one PostgreSQL database with different data
folders (nothing shared but the database). The second one's database URL carries another
application_name, so it gets a coordinator and listener of its own, as another process would
(apps on the very same URL share this process's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event, text

from app import coordination, page_cache
from app import worker as worker_module
from app.models import Job, db, utcnow, write_transaction
from app.worker import MAX_IDLE_WAIT, NOTIFIED_IDLE_WAIT, Worker, build_worker, start_background
from tests.helpers import (
    EMULATOR_KEY,
    cells,
    database_url_for,
    get,
    insert_images,
    make_app,
    on_postgresql,
)

postgresql_only = pytest.mark.skipif(
    not on_postgresql(),
    reason="LISTEN/NOTIFY coordination is PostgreSQL's (ATELIER_TEST_DB=postgresql); SQLite's "
    "files and polling are covered by test_sqlite_keeps_its_version_files_and_polling",
)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def coordinator_of(app: Flask) -> coordination.Coordinator:
    found = coordination.for_app(app)
    assert found is not None
    return found


def listening(app: Flask) -> coordination.Coordinator:
    """The app's coordinator, its listener started and connected."""
    found = coordinator_of(app)
    found.ensure_listening()
    wait_for(lambda: found.listening, "the listener connecting")
    return found


@pytest.fixture
def instances(tmp_path: Path, emulator) -> tuple[Flask, Flask]:
    """Two instances on one PostgreSQL database, each with its own data folder."""
    settings = {
        "AZURE_OPENAI_ENDPOINT": emulator.url,
        "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
        "AZURE_OPENAI_ASYNC_DALLE2": "on",
    }
    first = make_app(tmp_path / "first", **settings)
    url = database_url_for(tmp_path / "first")
    second = make_app(
        tmp_path / "second", DATABASE_URL=f"{url}&application_name=second", **settings
    )
    yield first, second
    for app in (first, second):
        worker = app.extensions.get("atelier_worker")
        if worker is not None:
            worker.stop()


def gallery(app: Flask) -> list[int]:
    status, body, _ = get(app.test_client(), "/gallery")
    assert status == 200, body
    return cells(body)


def older_images(app: Flask, count: int) -> list[int]:
    return insert_images(app, count, start=utcnow() - timedelta(hours=1))


def terminate(app: Flask, backend_pid: int) -> None:
    """Kill a server process of the database, as a failover or an administrator would."""
    with app.app_context():
        db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_pid})
        db.session.commit()
        db.session.remove()


def version_files(folder: str) -> list[str]:
    names = (page_cache.LIBRARY_VERSION_FILE, page_cache.DATA_VERSION_FILE)
    return [name for name in names if (Path(folder) / name).exists()]


# --- versions ------------------------------------------------------------------------------------


@postgresql_only
def test_a_write_in_one_instance_changes_the_others_cached_gallery_page(instances):
    first, second = instances
    ids = older_images(first, 3)
    watcher = listening(second)
    assert watcher is not coordinator_of(first)
    assert gallery(second) == list(reversed(ids))  # now kept under the current version
    heard = watcher.notifications

    new = insert_images(first, 1, prompt="made by the first instance")

    wait_for(lambda: gallery(second)[:1] == new, "the second instance's page changing", 5)
    assert watcher.notifications > heard  # it learned from the notification...
    assert watcher.listening  # ...while listening, so from memory, not by querying
    for app in instances:  # and no file carried it
        assert version_files(app.config["ATELIER_DATA_DIR"]) == []


@postgresql_only
def test_the_version_moves_in_the_writing_transaction_and_the_writer_sees_it_at_once(instances):
    first, _ = instances
    older_images(first, 1)
    with first.app_context():
        before = coordinator_of(first).versions(db.session())
        db.session.remove()
    seen_inside: list[tuple[int, int]] = []

    def look_from_outside(conn) -> None:  # runs as the transaction commits, after the bump
        with first.app_context(), db.engine.connect() as other:
            row = other.execute(text("SELECT library_version, data_version FROM data_versions"))
            seen_inside.append(tuple(row.one()))

    with first.app_context():
        engine = db.engine
    event.listen(engine, "commit", look_from_outside)
    try:
        new = insert_images(first, 1, prompt="atomic")
    finally:
        event.remove(engine, "commit", look_from_outside)

    # Not yet visible to another connection while the write was still committing...
    assert seen_inside and all(seen == before for seen in seen_inside)
    # ...and known to the writer's process as soon as its write returned.
    library, data = coordinator_of(first).library, coordinator_of(first).data
    assert library > before[0] and data > before[1]
    assert gallery(first)[:1] == new


@postgresql_only
def test_the_listener_reconnects_after_its_connection_is_killed(instances, caplog):
    first, second = instances
    older_images(first, 2)
    watcher = listening(second)
    killed = watcher.backend_pid()
    assert killed is not None
    gallery(second)

    terminate(first, killed)

    wait_for(
        lambda: watcher.listening and watcher.backend_pid() not in (None, killed),
        "the listener reconnecting",
    )
    assert watcher.connections >= 2
    assert "database listener disconnected" in caplog.text
    heard = watcher.notifications
    new = insert_images(first, 1, prompt="after the reconnect")
    wait_for(lambda: watcher.notifications > heard, "a notification on the new connection", 5)
    assert gallery(second)[:1] == new


@postgresql_only
def test_readers_query_the_row_while_the_listener_is_disconnected(instances):
    first, second = instances
    older_images(first, 2)
    watcher = listening(second)
    watcher.min_backoff = 120  # held off: it stays disconnected for the test
    gallery(second)
    terminate(first, watcher.backend_pid())
    wait_for(lambda: not watcher.listening, "the listener noticing")
    queries: list[str] = []

    def spy(conn, cursor, statement, *args) -> None:
        if "data_versions" in statement:
            queries.append(statement)

    with second.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", spy)
    heard = watcher.notifications
    try:
        new = insert_images(first, 1, prompt="while nobody listens")
        shown = gallery(second)  # at once: no waiting for a notification
    finally:
        event.remove(engine, "before_cursor_execute", spy)

    assert shown[:1] == new
    assert queries, "the reader did not read the versions from the database"
    assert watcher.notifications == heard and not watcher.listening


@postgresql_only
def test_a_malformed_notification_is_ignored(instances, caplog):
    first, second = instances
    watcher = listening(second)
    known = (watcher.library, watcher.data)
    with first.app_context():
        db.session.execute(text("SELECT pg_notify('atelier_versions', 'not numbers')"))
        db.session.commit()
        db.session.remove()
    wait_for(lambda: "malformed" in caplog.text, "the listener reading it")
    assert (watcher.library, watcher.data) >= known
    assert watcher.listening


@postgresql_only
def test_writes_go_on_while_the_version_table_is_missing_and_move_it_once_it_is_back(instances):
    first, _ = instances
    insert_images(first, 1)  # the table is known to be there

    def row() -> tuple[int, int]:
        with first.app_context():
            found = db.session.execute(
                text("SELECT library_version, data_version FROM data_versions")
            )
            values = tuple(found.one())
            db.session.remove()
        return values

    def schema(statement: str) -> None:
        with first.app_context(), write_transaction() as session:
            session.execute(text(statement))

    schema("ALTER TABLE data_versions RENAME TO data_versions_away")  # as a migration might
    insert_images(first, 1)  # commits without it
    schema("ALTER TABLE data_versions_away RENAME TO data_versions")
    before = row()
    insert_images(first, 1)
    after = row()

    assert after[0] > before[0] and after[1] > before[1]


# --- job wake-ups --------------------------------------------------------------------------------


def queue_job(app: Flask) -> int:
    response = app.test_client().post("/api/jobs", json={"prompt": "a lighthouse at dusk"})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


@contextmanager
def notified_worker(app: Flask) -> Iterator[Worker]:
    """A worker of `app` following the database's notifications, its listener connected; it stops
    following on the way out."""
    worker = build_worker(app)
    worker.follow_notifications()
    try:
        listening(app)
        yield worker
    finally:
        worker.unfollow_notifications()


def idle_in_background(worker, seconds: float) -> tuple[threading.Thread, dict]:
    """Run `worker.idle(seconds)` on a thread; the dict gets its reason and duration."""
    result: dict = {}

    def wait() -> None:
        started = time.monotonic()
        result["reason"] = worker.idle(seconds)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, result


@postgresql_only
def test_an_idle_worker_wakes_on_a_job_queued_by_another_instance(instances):
    first, second = instances
    with notified_worker(second) as worker:
        assert worker.idle_limit() == NOTIFIED_IDLE_WAIT
        worker.idle(0)  # the wake-up every (re)connection gives
        thread, result = idle_in_background(worker, 60)

        job_id = queue_job(first)

        thread.join(10)
        assert result.get("reason") == "notified", result
        assert result["seconds"] < 10  # far from its 60 s
        with second.app_context():
            assert worker.run_once()  # and the job is there to claim
            assert db.session.get(Job, job_id).status == "running"
            db.session.remove()


@postgresql_only
def test_a_refused_cancel_wakes_nobody_and_a_real_one_does(instances):
    first, second = instances
    with notified_worker(second) as worker:
        job_id = queue_job(first)
        worker.idle(0.5)  # the queued job's notification (and the connection's)
        worker.idle(0)
        client = first.test_client()
        thread, result = idle_in_background(worker, 60)

        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        thread.join(10)
        assert result.get("reason") == "notified", result

        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 409  # already final
        assert worker.idle(1.0) == "timeout"


@postgresql_only
def test_worker_threads_take_another_instances_job_without_polling(instances, monkeypatch):
    monkeypatch.setattr(worker_module, "NOTIFIED_IDLE_WAIT", 60.0)
    first, second = instances
    running = start_background(second)
    assert running is not None
    listening(second)
    # Past any one-second poll begun before the listener connected: from now on the threads
    # idle for up to 60 s each, so only the notification can bring one back within 5 s.
    time.sleep(1.5)

    job_id = queue_job(first)

    def taken() -> bool:
        with first.app_context():
            status = db.session.get(Job, job_id).status
            db.session.remove()
        return status != "queued"

    assert running.idle_limit() == 60.0
    wait_for(taken, "the job being claimed", 5)


@postgresql_only
def test_workers_poll_again_while_the_listener_is_down(instances):
    first, second = instances
    worker = build_worker(second)
    watcher = listening(second)
    assert worker.idle_limit() == NOTIFIED_IDLE_WAIT
    watcher.min_backoff = 120
    terminate(first, watcher.backend_pid())
    wait_for(lambda: not watcher.listening, "the listener noticing")
    assert worker.idle_limit() == MAX_IDLE_WAIT


# --- SQLite --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    on_postgresql(), reason="SQLite's mechanism (ATELIER_TEST_DB=sqlite); see the tests above"
)
def test_sqlite_keeps_its_version_files_and_polling(app):
    assert coordination.for_app(app) is None
    data_file = Path(app.config["ATELIER_DATA_DIR"]) / page_cache.DATA_VERSION_FILE
    insert_images(app, 1)
    first = data_file.read_text()
    insert_images(app, 1)
    assert data_file.read_text() != first
    worker = build_worker(app)
    worker.follow_notifications()  # nothing to follow
    assert worker.idle_limit() == MAX_IDLE_WAIT
    assert worker.idle(0.05) == "timeout"
    worker.wake()
    assert worker.idle(5) == "woken"
