"""Images in object storage (ATELIER_STORAGE_URL): Azurite and moto, started by the tests
(tests/objstore_servers.py), each test on a fresh container or bucket.

Every test runs on both object backends: the job pipeline, an edit's inputs, serving, share
links, the ZIP, delete and purge, a crash between upload and commit, storage failing mid-job,
wrong settings at start-up, and rebuild from the sidecars.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import blobstore, consistency, curation, jobs, storage
from app.auth import accounts
from app.config import ConfigError
from app.models import Image, Job, db
from tests.edit_helpers import EDITOR, png
from tests.helpers import (
    EMULATOR_KEY,
    csrf_token,
    generate,
    make_app,
    signed_in,
    submit,
    wait_for_job,
)
from tests.objstore_servers import (  # noqa: F401  (fixtures)
    ObjectBackend,
    Relay,
    azurite_connection_string,
    azurite_port_fixture,
    moto_port_fixture,
    object_store_fixture,
)

IMAGE_LIKE = (".png", ".jpg", ".webp", ".json", ".bin")
PASSWORD = "correct horse battery staple 42"


def local_image_files(app: Flask) -> list[str]:
    """Files in the data folder that are images, thumbnails, sidecars or spooled downloads."""
    root = Path(app.config["ATELIER_DATA_DIR"])
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.suffix in IMAGE_LIKE
    )


@pytest.fixture
def obj_app(app_factory: Any, object_store: ObjectBackend) -> Flask:
    return app_factory(**object_store.settings())


def test_a_job_stores_image_thumbnails_and_sidecar_in_the_bucket_only(obj_app, object_store):
    client = obj_app.test_client()
    job = generate(client, prompt="a lighthouse in fog", size="256x256")
    assert job["status"] == "succeeded", job
    digest = job["images"][0]["sha256"]

    names = set(object_store.names())
    assert any(re.fullmatch(rf"images/{digest[:2]}/{digest}\.png", n) for n in names)
    assert storage.thumbnail_names(digest)[0] in names
    assert storage.thumbnail_names(digest)[1] in names
    assert storage.sidecar_name(digest, job["id"], 0) in names
    assert local_image_files(obj_app) == []
    # What was stored is exactly what is served back.
    with obj_app.app_context():
        file_name = db.session.get(Image, job["images"][0]["id"]).file_name
    assert (
        object_store.store().get(file_name)
        == client.get(f"/files/images/{job['images'][0]['id']}/original").get_data()
    )


def test_serving_has_the_same_headers_and_etag_as_the_data_folder(
    obj_app, object_store, app_factory
):
    local_app = app_factory()
    answers = []
    for app in (obj_app, local_app):
        client = app.test_client()
        image = generate(client, prompt="a pear", size="256x256")["images"][0]
        found = []
        for url in (
            f"/files/images/{image['id']}",
            f"/files/thumbs/{image['id']}",
            f"/files/{image['sha256']}.png",
            f"/files/{image['sha256']}-512.webp",
        ):
            with client.get(url) as response:
                assert response.status_code == 200, url
                etag = response.headers["ETag"]
                found.append(
                    (
                        response.mimetype,
                        etag.replace(image["sha256"], "SHA"),
                        response.headers["Cache-Control"],
                        response.headers["X-Content-Type-Options"],
                        "Last-Modified" in response.headers,
                        int(response.headers["Content-Length"]) == len(response.get_data()),
                    )
                )
            with client.get(url, headers={"If-None-Match": etag}) as again:
                assert again.status_code == 304
        answers.append(found)
    assert answers[0] == answers[1]


def test_an_edits_inputs_are_stored_in_the_bucket(app_factory, object_store):
    obj_app = app_factory(
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1",
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
        **object_store.settings(),
    )
    client = obj_app.test_client()
    upload = png((64, 48))
    response = client.post(
        "/api/jobs",
        data={
            "prompt": "make it stormy",
            "provider": EDITOR,
            "image": [(io.BytesIO(upload), "a.png")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    digest = hashlib.sha256(upload).hexdigest()
    assert object_store.store().get(f"images/{digest[:2]}/{digest}.png") == upload
    assert local_image_files(obj_app) == []
    with obj_app.app_context():
        item = db.session.get(Job, job["id"]).inputs[0]
        input_id = item.id
    assert client.get(f"/files/inputs/{input_id}").get_data() == upload


def test_share_link_and_zip_serve_from_the_bucket(app_factory, object_store):
    app = app_factory(ATELIER_AUTH="on", **object_store.settings())
    with app.app_context():
        accounts.create_user("alice", PASSWORD, admin=True)
    client = signed_in(app, "alice", PASSWORD)
    response = client.post(
        "/api/jobs",
        json={"prompt": "two figs", "size": "256x256", "n": 2},
        headers={"X-CSRFToken": csrf_token(client)},
    )
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    image = job["images"][0]
    created = client.post(
        "/shares", data={"image_id": image["id"], "days": "7", "csrf_token": csrf_token(client)}
    )
    assert created.status_code == 201
    token = re.search(r"/s/([A-Za-z0-9_-]{20,})", created.get_data(as_text=True))[1]
    original = client.get(f"/files/images/{image['id']}/original").get_data()
    shared = app.test_client().get(f"/s/{token}/files/{image['sha256']}.png?download=1")
    assert shared.status_code == 200 and shared.get_data() == original

    with client.post(
        "/gallery/zip",
        data={"csrf_token": csrf_token(client), "ids": [i["id"] for i in job["images"]]},
    ) as response:
        assert response.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(response.data))
    members = [name for name in archive.namelist() if name != "manifest.json"]
    assert len(members) == 2
    assert original in {archive.read(name) for name in members}


def test_delete_and_purge_remove_objects_only_when_unused(obj_app, object_store):
    client = obj_app.test_client()
    first = generate(client, prompt="same bytes", size="256x256")
    second = generate(client, prompt="same bytes", size="256x256")
    digest = first["images"][0]["sha256"]
    assert second["images"][0]["sha256"] == digest  # the emulator is deterministic
    original = f"images/{digest[:2]}/{digest}.png"

    with obj_app.app_context():
        jobs.delete_job(first["id"])
    names = set(object_store.names())
    assert original in names  # the second job still uses it
    assert storage.sidecar_name(digest, first["id"], 0) not in names
    assert storage.sidecar_name(digest, second["id"], 0) in names

    with obj_app.app_context():
        curation.trash([second["images"][0]["id"]])
        assert curation.purge() == 1
    assert [n for n in object_store.names() if digest in n] == []


def test_a_crash_between_upload_and_commit_leaves_an_orphan_verify_removes(
    obj_app, object_store, monkeypatch
):
    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("crash between upload and commit")

    monkeypatch.setattr(jobs, "record_stored_image", crash)
    client = obj_app.test_client()
    job_id = submit(client, prompt="an orphan", size="256x256")["id"]
    with pytest.raises(SystemExit):
        wait_for_job(client, job_id)
    monkeypatch.undo()
    uploaded = [n for n in object_store.names() if n.startswith("images/")]
    assert len(uploaded) == 1
    with obj_app.app_context():
        assert db.session.query(Image).count() == 0  # never a row without its object
        db.session.get(Job, job_id).status = "failed"  # the crashed job, given up
        db.session.commit()
        young = consistency.verify(storage.current(), repair=True)
        assert uploaded[0] in young.recent_files  # within the grace period: left alone
        report = consistency.verify(storage.current(), repair=True, grace_seconds=0)
    assert uploaded[0] in report.moved
    assert report.clean, report.lines()
    assert [n for n in object_store.names() if n.startswith(("images/", "thumbs/"))] == []


def test_storage_failing_mid_job_spools_waits_and_then_succeeds(app_factory, object_store):
    relay = Relay(object_store.port)
    app = app_factory(**object_store.settings(port=relay.port))
    client = app.test_client()
    relay.cut()
    job_id = submit(client, prompt="a patient heron", size="256x256")["id"]
    outcome: dict[str, Any] = {}

    def drive() -> None:
        outcome["job"] = wait_for_job(app.test_client(), job_id, timeout=60)

    thread = threading.Thread(target=drive)
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        job = client.get(f"/api/jobs/{job_id}").get_json()
        spooled = [p for p in local_image_files(app) if p.startswith(".spool/")]
        if job["error"] and spooled:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "running"
    assert job["error"]["code"] == jobs.STORAGE_FAILING
    assert "Storage is failing" in job["error"]["message"]
    card = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)
    assert "Storage is failing" in card

    relay.restore()
    thread.join(60)
    assert outcome["job"]["status"] == "succeeded", outcome["job"]
    assert outcome["job"]["error"] is None
    assert local_image_files(app) == []  # the spool is empty again
    digest = outcome["job"]["images"][0]["sha256"]
    assert any(digest in name for name in object_store.names())
    relay.cut()


def test_storage_failing_past_the_deadline_fails_the_slot_and_keeps_the_spool(
    app_factory, object_store
):
    relay = Relay(object_store.port)
    app = app_factory(ATELIER_JOB_DEADLINE_SECONDS=3, **object_store.settings(port=relay.port))
    client = app.test_client()
    relay.cut()
    job = generate(client, prompt="a lost heron", size="256x256", timeout=60)
    assert job["status"] == "failed"
    assert job["images"][0]["error"]["code"] == jobs.STORAGE_FAILING
    assert "kept in the local spool" in job["images"][0]["error"]["message"]
    assert [p for p in local_image_files(app) if p.startswith(".spool/")]


def test_a_missing_container_or_bucket_stops_start_up_naming_the_setting(tmp_path, object_store):
    settings = object_store.settings()
    settings["ATELIER_STORAGE_URL"] = settings["ATELIER_STORAGE_URL"].replace(
        object_store.name, "does-not-exist"
    )
    with pytest.raises(ConfigError, match="ATELIER_STORAGE_URL.*does-not-exist"):
        make_app(tmp_path / "data", **settings)


def test_bad_credentials_stop_start_up_naming_the_setting(tmp_path, object_store):
    if object_store.kind == "azure":
        bad = azurite_connection_string(object_store.port, key="YmFkIGtleQ==")
        settings = object_store.settings(AZURE_STORAGE_CONNECTION_STRING=bad)
        expected = "AZURE_STORAGE_CONNECTION_STRING"
    else:
        settings = object_store.settings(AWS_SECRET_ACCESS_KEY="wrong")
        expected = "AWS_SECRET_ACCESS_KEY"

    def start() -> None:
        with pytest.raises(ConfigError, match=expected):
            make_app(tmp_path / "data", **settings)

    if object_store.kind == "s3":
        from moto.core import set_initial_no_auth_action_count

        # moto in this process checks keys only when told to (for this call).
        start = set_initial_no_auth_action_count(0)(start)
    start()


def test_an_unknown_storage_url_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ATELIER_STORAGE_URL"):
        make_app(tmp_path / "data", ATELIER_STORAGE_URL="ftp://somewhere/x")


def test_a_corrupted_upload_is_refused_before_any_row(object_store, monkeypatch):
    store = object_store.store()
    real_md5 = blobstore._md5
    # The client announces another MD5 than the body's: the service must refuse the upload.
    monkeypatch.setattr(blobstore, "_md5", lambda data: real_md5(data + b"x"))
    with pytest.raises(blobstore.StorageUnavailable):
        store.put("images/aa/test.png", b"some bytes")
    monkeypatch.undo()
    assert store.stat("images/aa/test.png") is None


def test_rebuild_recreates_rows_from_the_buckets_sidecars(obj_app, object_store, app_factory):
    client = obj_app.test_client()
    job = generate(client, prompt="a rebuilt orchard", size="256x256", n=2)
    assert job["status"] == "succeeded"
    # A new, empty database on another data folder, over the same bucket.
    fresh = app_factory(**object_store.settings())
    with fresh.app_context():
        report = consistency.rebuild(storage.current())
        assert report.created_jobs == [job["id"]]
        rebuilt = db.session.get(Job, job["id"])
        assert rebuilt.prompt == "a rebuilt orchard"
        assert sorted(i.sha256 for i in rebuilt.images) == sorted(
            i["sha256"] for i in job["images"]
        )
        assert consistency.verify(storage.current()).clean
