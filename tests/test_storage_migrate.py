"""`flask atelier storage migrate --to URL` (issue #17 item 2): a library copied between the data
folder, Azurite and moto's S3, verified object by object, resumable after kill -9, then
switched: the database records the new place, an app started with the old URL refuses to
start naming both, and an instance still running with the old URL commits no image row.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app import consistency, jobs, storage, storage_migrate
from app.config import ConfigError
from app.models import Image, Job, JobInput, LibrarySetting, db, write_transaction
from tests.edit_helpers import EDITOR, png
from tests.helpers import (
    EMULATOR_KEY,
    ROOT,
    database_url_for,
    free_port,
    generate,
    make_app,
    run_ready,
    submit,
    wait_for_job,
)
from tests.objstore_servers import (  # noqa: F401  (fixtures)
    ObjectBackend,
    azurite_connection_string,
    azurite_port_fixture,
    moto_port_fixture,
)

# A model that edits (besides the asynchronous dall-e-2 of the test apps, 256x256).
DEPLOYMENTS = "gpt-image-1=gpt-image-1"


@pytest.fixture
def backends(request: pytest.FixtureRequest) -> Any:
    """`backends("azure")` / `backends("s3")`: a fresh container or bucket on the test server."""

    def make(kind: str) -> ObjectBackend:
        port = request.getfixturevalue("azurite_port" if kind == "azure" else "moto_port")
        backend = ObjectBackend(kind, port)
        backend.create()
        return backend

    return make


@pytest.fixture
def restarted() -> Iterator[Any]:
    """`restarted(app, **settings)`: a new app on the same data folder and database (an
    instance restarted with other settings); engines closed at teardown."""
    made: list[Flask] = []

    def restart(app: Flask, **settings: Any) -> Flask:
        config = {
            key: app.config[key]
            for key in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT")
        }
        config["AZURE_OPENAI_ASYNC_DALLE2"] = "on"
        fresh = make_app(Path(app.config["ATELIER_DATA_DIR"]), **config, **settings)
        made.append(fresh)
        return fresh

    yield restart
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def settings_for(kind: str, backend: ObjectBackend | None) -> dict[str, Any]:
    """App settings whose ATELIER_STORAGE_URL is this backend ("file": unset)."""
    if backend is None:
        return {}
    return backend.settings()


def url_of(backend: ObjectBackend | None) -> str:
    return backend.url() if backend is not None else "file:"


def fill_library(app: Flask) -> None:
    """Two generated images and an edit with an uploaded input."""
    client = app.test_client()
    assert (
        generate(client, prompt="two pears", size="256x256", n=2, provider="azure-async")["status"]
        == "succeeded"
    )
    response = client.post(
        "/api/jobs",
        data={
            "prompt": "make it stormy",
            "provider": EDITOR,
            "image": [(io.BytesIO(png()), "a.png")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    assert wait_for_job(client, response.get_json()["id"])["status"] == "succeeded"


def library_of(app: Flask) -> tuple[list[Any], dict[str, bytes]]:
    """The rows that name objects, and every image, thumbnail and input as served."""
    with app.app_context():
        images = db.session.execute(
            select(Image.id, Image.sha256, Image.file_name, Image.thumbnail_name)
            .where(Image.file_name.is_not(None))
            .order_by(Image.id)
        ).all()
        inputs = db.session.execute(
            select(JobInput.id, JobInput.sha256, JobInput.file_name).order_by(JobInput.id)
        ).all()
        db.session.remove()
    client = app.test_client()
    urls = [f"/files/images/{row.id}/original" for row in images]
    urls += [f"/files/thumbs/{row.id}" for row in images]
    urls += [f"/files/{row.sha256}-512.webp" for row in images]
    urls += [f"/files/inputs/{row.id}" for row in inputs]
    served = {}
    for url in urls:
        with client.get(url) as response:
            assert response.status_code == 200, url
            served[url] = response.get_data()
    return [tuple(row) for row in images] + [tuple(row) for row in inputs], served


def run_migrate(app: Flask, url: str) -> Any:
    return app.test_cli_runner().invoke(args=["atelier", "storage", "migrate", "--to", url])


def recorded(app: Flask) -> str | None:
    with app.app_context():
        row = db.session.get(LibrarySetting, storage.STORAGE_URL_KEY)
        value = row.value if row is not None else None
        db.session.remove()
    return value


def library_names(store: Any) -> list[str]:
    return sorted(
        item.name for prefix in ("images/", "thumbs/", "sidecars/") for item in store.list(prefix)
    )


@pytest.mark.parametrize(
    ("source_kind", "target_kind"), [("file", "azure"), ("azure", "s3"), ("s3", "file")]
)
def test_migrate_copies_every_object_and_the_app_on_the_new_url_serves_the_same_bytes(
    app_factory, backends, restarted, monkeypatch, source_kind, target_kind
):
    source = backends(source_kind) if source_kind != "file" else None
    target = backends(target_kind) if target_kind != "file" else None
    credentials = {**settings_for(target_kind, target), **settings_for(source_kind, source)}
    credentials["ATELIER_STORAGE_URL"] = url_of(source)
    app = app_factory(AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS, **credentials)
    fill_library(app)
    rows, served = library_of(app)
    source_names = library_names(storage.current(app).blobs)
    assert len(rows) == 4 and len(source_names) >= 3 * 4 + 3

    monkeypatch.setattr(storage_migrate, "PROGRESS_EVERY", 5)

    result = run_migrate(app, url_of(target))

    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if "looked at" in line]
    assert progress[0].startswith("5 object(s) looked at: 5 copied (")
    assert progress[1].startswith("10 object(s) looked at: 10 copied (")
    assert len(progress) == len(source_names) // 5
    assert f"Copied {len(source_names)} object(s)" in result.output
    assert "0 damaged, 0 missing, 0 failed" in result.output
    assert "was not changed or deleted" in result.output
    assert recorded(app) == url_of(target)
    moved = restarted(
        app, **{**settings_for(target_kind, target), "ATELIER_STORAGE_URL": url_of(target)}
    )
    assert library_names(storage.current(moved).blobs) == source_names
    assert library_of(moved) == (rows, served)
    with moved.app_context():
        assert consistency.verify(storage.current()).clean
    assert library_names(storage.current(app).blobs) == source_names  # the source stays


def test_running_it_again_after_kill_9_continues_where_it_stopped(app_factory, backends):
    target = backends("azure")
    app = app_factory(
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS,
        AZURE_STORAGE_CONNECTION_STRING=target.settings()["AZURE_STORAGE_CONNECTION_STRING"],
    )
    fill_library(app)
    total = len(library_names(storage.current(app).blobs))
    data_dir = Path(app.config["ATELIER_DATA_DIR"])
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_AUTH": "off",
        "ATELIER_WORKER_THREADS": "0",
        "AZURE_OPENAI_ENDPOINT": app.config["AZURE_OPENAI_ENDPOINT"],
        "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
        "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENTS,
        "AZURE_STORAGE_CONNECTION_STRING": target.settings()["AZURE_STORAGE_CONNECTION_STRING"],
    }
    env.pop("ATELIER_STORAGE_URL", None)
    if (database_url := database_url_for(data_dir)) is not None:
        env["DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "flask", "--app", "app"]
    command += ["atelier", "storage", "migrate", "--to", target.url()]

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    killed = run(ATELIER_TEST_CRASH_AT="migrate_copy")
    assert killed.returncode == -9, killed.stderr
    assert len(target.names()) == 3  # the crash point fires after the third copy
    assert recorded(app) is None

    again = run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Copied {total - 3} object(s)" in again.stdout
    assert "3 already there" in again.stdout
    assert recorded(app) == target.url()
    assert sorted(target.names()) == library_names(storage.current(app).blobs)


def test_a_damaged_source_object_is_reported_not_copied_and_nothing_switches(
    app_factory, backends, restarted
):
    target = backends("s3")
    app = app_factory(
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS, **target.settings(ATELIER_STORAGE_URL="")
    )
    fill_library(app)
    files = storage.current(app)
    damaged = next(name for name in library_names(files.blobs) if name.startswith("images/"))
    files.path(damaged).write_bytes(b"not the bytes its name promises")

    result = run_migrate(app, target.url())

    assert result.exit_code == 1, result.output
    assert f"Damaged in the source (not copied): {damaged}" in result.output
    assert "1 damaged" in result.output
    assert "Not switched" in result.output
    assert damaged not in target.names()
    assert len(target.names()) == len(library_names(files.blobs)) - 1  # the rest was copied
    assert recorded(app) is None
    restarted(app)  # the old URL still starts: nothing was switched


def test_an_original_missing_from_the_source_stops_the_switch(app_factory, backends):
    target = backends("azure")
    app = app_factory(**target.settings(ATELIER_STORAGE_URL=""))
    fill_library_simple = generate(app.test_client(), prompt="a plum", size="256x256")
    assert fill_library_simple["status"] == "succeeded"
    files = storage.current(app)
    original = next(name for name in library_names(files.blobs) if name.startswith("images/"))
    files.path(original).unlink()

    result = run_migrate(app, target.url())

    assert result.exit_code == 1, result.output
    assert f"Missing in the source (a row names it): {original}" in result.output
    assert recorded(app) is None


@pytest.mark.parametrize(
    "fault", ["wrong container", "bad credentials", "unreachable", "unknown scheme"]
)
def test_a_bad_target_is_a_clear_error_and_nothing_is_recorded(app_factory, backends, fault):
    if fault == "wrong container":
        target = backends("azure")
        settings = target.settings(ATELIER_STORAGE_URL="")
        url, expected = "az://no-such-container/lib", "container 'no-such-container' does not exist"
    elif fault == "bad credentials":
        target = backends("azure")
        bad = azurite_connection_string(target.port, key="YmFkIGtleQ==")
        settings = target.settings(ATELIER_STORAGE_URL="", AZURE_STORAGE_CONNECTION_STRING=bad)
        url, expected = target.url(), "AZURE_STORAGE_CONNECTION_STRING: Azure Blob Storage refused"
    elif fault == "unknown scheme":
        target = backends("s3")
        settings = target.settings(ATELIER_STORAGE_URL="")
        url, expected = "ftp://somewhere/lib", "--to='ftp://somewhere/lib': use file:"
    else:
        target = backends("s3")
        closed = f"http://127.0.0.1:{free_port()}"
        settings = target.settings(ATELIER_STORAGE_URL="", AWS_ENDPOINT_URL=closed)
        url, expected = target.url(), "cannot be reached"
    app = app_factory(**settings)
    assert generate(app.test_client(), prompt="a fig", size="256x256")["status"] == "succeeded"

    result = run_migrate(app, url)

    assert result.exit_code == 1
    assert f"The target {url} cannot be used: " in result.output, result.output
    assert expected in result.output, result.output
    assert recorded(app) is None
    assert target.names() == []


def test_migrating_to_where_the_library_already_is_is_refused(app_factory, backends):
    target = backends("azure")
    app = app_factory(**target.settings())

    result = run_migrate(app, target.url() + "/")

    assert result.exit_code == 1
    assert f"The library already lives in {target.url()}" in result.output
    assert recorded(app) is None


def test_starting_with_the_old_url_after_the_switch_names_both(app_factory, backends, restarted):
    target = backends("azure")
    app = app_factory(**target.settings(ATELIER_STORAGE_URL=""))
    assert run_migrate(app, target.url()).exit_code == 0

    with pytest.raises(ConfigError) as refused:
        restarted(app)
    message = str(refused.value)
    assert f"moved to {target.url()} by `flask atelier storage migrate` on " in message
    assert "but ATELIER_STORAGE_URL is file:" in message
    assert f"set ATELIER_STORAGE_URL={target.url()}" in message
    # The new URL starts.
    restarted(app, **target.settings())


def test_an_instance_still_on_the_old_url_waits_and_commits_no_image(app_factory, backends):
    target = backends("azure")
    app = app_factory(ATELIER_JOB_DEADLINE_SECONDS=4, **target.settings(ATELIER_STORAGE_URL=""))
    assert run_migrate(app, target.url()).exit_code == 0
    client = app.test_client()

    job = generate(client, prompt="a late heron", size="256x256", timeout=60)

    assert job["status"] == "failed"
    error = job["images"][0]["error"]
    assert error["code"] == jobs.STORAGE_FAILING
    assert f"moved to {target.url()}" in error["message"]
    assert f"set ATELIER_STORAGE_URL={target.url()}" in error["message"]
    assert "kept in the local spool" in error["message"]
    with app.app_context():
        assert db.session.scalars(select(Image).where(Image.file_name.is_not(None))).all() == []
    assert storage.current(app).spool_files()
    assert target.names() == []


def test_an_image_row_never_commits_once_the_switch_is_recorded(app_factory, backends, monkeypatch):
    """The switch lands between an upload's early check and its row's commit: the commit
    itself reads the location and stores nothing."""
    target = backends("azure")
    app = app_factory(**target.settings(ATELIER_STORAGE_URL=""))
    real = jobs.store_downloaded

    def switch_meanwhile(*args: Any, **kwargs: Any) -> storage.StoredImage:
        stored = real(*args, **kwargs)
        with write_transaction() as session:
            storage.record_location(session, target.url())
        return stored

    monkeypatch.setattr(jobs, "store_downloaded", switch_meanwhile)
    job_id = submit(app.test_client(), prompt="a heron in between", size="256x256")["id"]

    # Steps until the job reaches its commit (give-up point only: a loaded machine is slower).
    give_up = time.monotonic() + 60
    with pytest.raises(storage.StorageMoved, match=f"moved to {target.url()}"):
        while time.monotonic() < give_up:
            run_ready(app)
            time.sleep(0.02)
    with app.app_context():
        assert db.session.scalars(select(Image).where(Image.job_id == job_id)).all() == []
        job = db.session.get(Job, job_id)
        assert job.status == "running" and job.error_code == jobs.STORAGE_FAILING
        assert f"set ATELIER_STORAGE_URL={target.url()}" in job.error_message
        assert "kept in the local spool" in job.error_message
    assert storage.current(app).spool_files() == [f"{job_id}-0.bin"]


def test_an_edit_uploaded_to_an_instance_on_the_old_url_is_not_committed(app_factory, backends):
    target = backends("azure")
    app = app_factory(
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS, **target.settings(ATELIER_STORAGE_URL="")
    )
    assert run_migrate(app, target.url()).exit_code == 0

    with pytest.raises(storage.StorageMoved, match=f"moved to {target.url()}"):
        app.test_client().post(
            "/api/jobs",
            data={"prompt": "stormy", "provider": EDITOR, "image": [(io.BytesIO(png()), "a.png")]},
            content_type="multipart/form-data",
        )
    with app.app_context():
        assert db.session.scalars(select(JobInput)).all() == []


def test_a_row_committing_during_the_switch_waits_for_it_and_then_stores_nothing(
    app_factory, backends, monkeypatch
):
    """While migrate holds the location row (its last pass), a commit that names an object
    waits for the switch (PostgreSQL: FOR SHARE against FOR UPDATE; SQLite: one writer at a
    time) and then sees the new place, instead of committing into the old one unseen."""
    target = backends("azure")
    app = app_factory(**target.settings(ATELIER_STORAGE_URL=""))
    real = storage.record_location
    switching = threading.Event()
    outcome: dict[str, Any] = {}

    def slow_switch(session: Any, url: str) -> None:
        switching.set()
        time.sleep(1)  # the other commit is waiting now
        real(session, url)

    def commit_meanwhile() -> None:
        switching.wait(30)
        started = time.monotonic()
        with app.app_context():
            try:
                with write_transaction() as session:
                    storage.check_location(session, "file:")
            except storage.StorageMoved as error:
                outcome["error"] = error
            finally:
                db.session.remove()
        outcome["waited"] = time.monotonic() - started

    monkeypatch.setattr(storage, "record_location", slow_switch)
    thread = threading.Thread(target=commit_meanwhile)
    thread.start()
    result = run_migrate(app, target.url())
    thread.join(30)

    assert result.exit_code == 0, result.output
    assert outcome["waited"] > 0.5
    assert f"moved to {target.url()}" in str(outcome["error"])


def test_a_migration_that_lost_the_race_to_another_one_records_nothing(
    app_factory, backends, monkeypatch
):
    target = backends("azure")
    app = app_factory(**target.settings(ATELIER_STORAGE_URL=""))
    real = storage_migrate._names_in_rows

    def another_migration_finishes_meanwhile() -> set[str]:
        with write_transaction() as session:
            storage.record_location(session, "s3://elsewhere/lib")
        return real()

    monkeypatch.setattr(storage_migrate, "_names_in_rows", another_migration_finishes_meanwhile)

    result = run_migrate(app, target.url())

    assert result.exit_code == 1
    assert "Another migration moved the library to s3://elsewhere/lib meanwhile" in result.output
    assert recorded(app) == "s3://elsewhere/lib"
