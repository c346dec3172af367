"""Operations with image storage: /readyz asking the object store (Azurite and moto, started by
the tests: tests/objstore_servers.py), the storage metrics and spool gauges, and `verify`'s
sorting of the spool of downloads waiting for their upload."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import blobstore, consistency, metrics, storage, storage_stats
from app.config import ConfigError
from app.models import Image, Job, db
from tests.edit_helpers import png
from tests.helpers import generate, submit
from tests.objstore_servers import (  # noqa: F401  (fixtures)
    AZURITE_KEY,
    S3_SECRET,
    ObjectBackend,
    Relay,
    azurite_connection_string,
    azurite_port_fixture,
    moto_port_fixture,
    object_store_fixture,
)

SECRETS = (AZURITE_KEY, S3_SECRET)
READY_WITHOUT_WORKER = {"database": "ok", "images": "ok", "worker": "not running here"}


def readyz(app: Flask) -> tuple[int, dict[str, str], str]:
    response = app.test_client().get("/readyz")
    return response.status_code, response.get_json(), response.get_data(as_text=True)


def readyz_until(app: Flask, storage_state: str, timeout: float = 30) -> tuple[int, dict, str]:
    """/readyz, asked again until its storage part reads `storage_state`. (Until the check
    answers, the part reads "timed out": azure-storage-blob's retry policy waits 15 s or more
    before it gives up on a refused connection.)"""
    deadline = time.monotonic() + timeout
    while True:
        answer = readyz(app)
        if answer[1].get("storage") == storage_state or time.monotonic() > deadline:
            return answer
        assert answer[0] == 503, answer
        time.sleep(0.1)


def no_secret_in(body: str, backend: ObjectBackend, port: int) -> None:
    for secret in (*SECRETS, azurite_connection_string(port), backend.url(), str(port)):
        assert secret not in body


@pytest.fixture
def quick_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every /readyz asks the storage service again (no remembered answer)."""
    monkeypatch.setattr(metrics, "STORAGE_CHECK_TTL_SECONDS", 0.0)


@pytest.fixture
def relayed(app_factory: Any, object_store: ObjectBackend) -> Iterator[tuple[Flask, Relay]]:
    """An app whose object store is reached through a relay the test can cut."""
    relay = Relay(object_store.port)
    yield app_factory(**object_store.settings(port=relay.port)), relay
    relay.cut()


# --- /readyz ------------------------------------------------------------------------------------


def test_readyz_fails_while_storage_is_unreachable_and_recovers(relayed, object_store, quick_probe):
    app, relay = relayed
    status, parts, _ = readyz(app)
    assert (status, parts) == (200, {**READY_WITHOUT_WORKER, "storage": "ok"})

    relay.cut()
    status, parts, body = readyz_until(app, "unreachable")
    assert status == 503
    assert parts == {**READY_WITHOUT_WORKER, "storage": "unreachable"}
    no_secret_in(body, object_store, relay.port)

    relay.restore()
    status, parts, _ = readyz(app)
    assert (status, parts["storage"]) == (200, "ok")


def test_readyz_remembers_the_storage_answer_for_a_few_seconds(
    relayed, monkeypatch: pytest.MonkeyPatch
):
    app, relay = relayed
    monkeypatch.setattr(metrics, "STORAGE_CHECK_TTL_SECONDS", 60.0)
    blobs = storage.current(app).blobs
    calls = []
    real_check = blobs.check

    def counted() -> None:
        calls.append(time.monotonic())
        real_check()

    monkeypatch.setattr(blobs, "check", counted)
    answers = [readyz(app)[:2] for _ in range(3)]
    relay.cut()
    answers.append(readyz(app)[:2])  # within the minute: the remembered answer

    assert len(calls) == 1
    assert all(answer == (200, {**READY_WITHOUT_WORKER, "storage": "ok"}) for answer in answers)
    monkeypatch.setattr(metrics, "STORAGE_CHECK_TTL_SECONDS", 0.0)
    assert readyz_until(app, "unreachable")[1]["storage"] == "unreachable"
    assert len(calls) >= 2


class BlackHole:
    """A port that accepts connections and never answers (a hung storage service)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._hold, daemon=True).start()

    def _hold(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.listener.accept()[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in self.held:
            connection.close()


def test_readyz_answers_in_time_when_storage_hangs(
    relayed, object_store, monkeypatch: pytest.MonkeyPatch
):
    app, relay = relayed
    monkeypatch.setattr(metrics, "STORAGE_CHECK_TTL_SECONDS", 30.0)
    monkeypatch.setattr(metrics, "STORAGE_CHECK_TIMEOUT_SECONDS", 0.5)
    hole = BlackHole()
    try:
        # From now on the relay leads to a service that accepts and never answers.
        relay.target_port = hole.port
        relay.cut()
        relay.restore()
        started = time.monotonic()
        status, parts, body = readyz(app)
        first = time.monotonic() - started
        started = time.monotonic()
        again = readyz(app)[:2]
        second = time.monotonic() - started
    finally:
        hole.close()

    assert (status, parts["storage"]) == (503, metrics.TIMED_OUT)
    no_secret_in(body, object_store, relay.port)
    assert first < 3, first  # the SDK's own timeouts are 5 s connect and 30 s read
    assert again == (503, parts)  # remembered: the second scrape does not wait again
    assert second < 0.4, second


def delete_container(backend: ObjectBackend) -> None:
    if backend.kind == "azure":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite_connection_string(backend.port))
        service.delete_container(backend.name)
    else:
        import boto3

        boto3.client("s3", **_s3_settings(backend)).delete_bucket(Bucket=backend.name)


def _s3_settings(backend: ObjectBackend) -> dict[str, str]:
    settings = backend.settings()
    return {
        "endpoint_url": settings["AWS_ENDPOINT_URL"],
        "aws_access_key_id": settings["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": settings["AWS_SECRET_ACCESS_KEY"],
        "region_name": settings["AWS_REGION"],
    }


def test_readyz_says_the_container_or_bucket_is_missing(app_factory, object_store, quick_probe):
    app = app_factory(**object_store.settings())
    assert readyz(app)[0] == 200
    delete_container(object_store)

    status, parts, body = readyz(app)

    missing = "container missing" if object_store.kind == "azure" else "bucket missing"
    assert (status, parts) == (503, {**READY_WITHOUT_WORKER, "storage": missing})
    no_secret_in(body, object_store, object_store.port)


def test_readyz_says_the_credentials_are_refused(
    app_factory, object_store, quick_probe, tmp_path: Path
):
    app = app_factory(**object_store.settings())
    if object_store.kind == "azure":
        wrong_key = "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA=="
        wrong = object_store.settings(
            AZURE_STORAGE_CONNECTION_STRING=azurite_connection_string(object_store.port, wrong_key)
        )
    else:
        wrong_key = "a-wrong-secret-key"
        wrong = object_store.settings(AWS_SECRET_ACCESS_KEY=wrong_key)
    # The same app, now holding a client with a key the service refuses (as after a rotation).
    files = storage.current(app)
    refused = blobstore.open_store(wrong["ATELIER_STORAGE_URL"], tmp_path, wrong)
    app.extensions[storage.EXTENSION] = storage.Storage(files.root, refused)

    def ask() -> tuple[int, dict[str, str], str]:
        return readyz(app)

    if object_store.kind == "s3":
        from moto.core import set_initial_no_auth_action_count

        ask = set_initial_no_auth_action_count(0)(ask)  # moto checks keys only when told to
    status, parts, body = ask()

    assert (status, parts["storage"]) == (503, "credentials refused")
    assert wrong_key not in body
    no_secret_in(body, object_store, object_store.port)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("ATELIER_STORAGE_URL: S3 answered HTTP 503 for bucket 'b'.", "answered HTTP 503"),
        (
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: no S3 credentials were found",
            "no credentials",
        ),
        ("something no sentence of check() says", "failing"),
    ],
)
def test_the_other_storage_answers_have_short_reasons_too(tmp_path, message, reason):
    store = blobstore.open_store("s3://b/p", tmp_path, {"AWS_REGION": "us-east-1"})
    assert metrics.storage_reason(ConfigError(message), store) == reason
    unavailable = blobstore.StorageUnavailable("S3 (s3://b/p) failed: something odd")
    assert metrics.storage_reason(unavailable, store) == "unavailable"


def test_readyz_has_no_storage_part_on_the_data_folder(idle_app):
    assert readyz(idle_app)[:2] == (200, READY_WITHOUT_WORKER)


# --- metrics ------------------------------------------------------------------------------------


def metric_lines(app: Flask) -> list[str]:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True).splitlines()


@pytest.fixture
def fresh_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own storage counters (they are process-wide)."""
    monkeypatch.setattr(storage_stats, "STATS", storage_stats.StorageStats())


def test_metrics_render_storage_bytes_and_errors_by_backend(idle_app, fresh_stats):
    storage_stats.count_bytes("az", "written", 1200)
    storage_stats.count_bytes("az", "written", 34)
    storage_stats.count_bytes("az", "read", 99)
    storage_stats.count_error("az", "put")
    storage_stats.count_error("az", "put")
    storage_stats.count_error("s3", "check")

    lines = metric_lines(idle_app)

    assert "# TYPE atelier_storage_bytes_total counter" in lines
    assert 'atelier_storage_bytes_total{backend="az",direction="written"} 1234' in lines
    assert 'atelier_storage_bytes_total{backend="az",direction="read"} 99' in lines
    assert "# TYPE atelier_storage_errors_total counter" in lines
    assert 'atelier_storage_errors_total{backend="az",operation="put"} 2' in lines
    assert 'atelier_storage_errors_total{backend="s3",operation="check"} 1' in lines
    # This app's own backend (the data folder) has its series from the start.
    assert 'atelier_storage_bytes_total{backend="file",direction="read"} 0' in lines
    assert 'atelier_storage_errors_total{backend="file",operation="get"} 0' in lines


def test_metrics_label_an_object_stores_series_with_its_backend(
    app_factory, object_store, fresh_stats
):
    app = app_factory(**object_store.settings())
    kind = "az" if object_store.kind == "azure" else "s3"

    lines = metric_lines(app)

    assert f'atelier_storage_bytes_total{{backend="{kind}",direction="written"}} 0' in lines
    assert f'atelier_storage_errors_total{{backend="{kind}",operation="put"}} 0' in lines
    assert not [line for line in lines if 'backend="file"' in line]


def test_a_job_on_object_storage_counts_its_bytes(app_factory, object_store, fresh_stats):
    app = app_factory(**object_store.settings())
    client = app.test_client()
    job = generate(client, prompt="a counted heron", size="256x256")
    assert job["status"] == "succeeded"
    kind = "az" if object_store.kind == "azure" else "s3"
    stored = sum(item.size for item in object_store.store().list(""))
    prefix = f'atelier_storage_bytes_total{{backend="{kind}",direction='
    assert f'{prefix}"written"}} {stored}' in metric_lines(app)
    original = client.get(f"/files/images/{job['images'][0]['id']}/original").get_data()
    read = next(line for line in metric_lines(app) if line.startswith(f'{prefix}"read"}}'))
    assert int(read.rsplit(" ", 1)[1]) >= len(original)


def test_metrics_show_the_spooled_downloads_waiting_for_upload(idle_app):
    assert "atelier_storage_spool_files 0" in metric_lines(idle_app)
    files = storage.current(idle_app)
    first, second = png((40, 30)), png((50, 20), color=(0, 90, 200))
    assert files.spool(7, 0, first) and files.spool(7, 1, second)

    lines = metric_lines(idle_app)

    assert "# TYPE atelier_storage_spool_files gauge" in lines
    assert "atelier_storage_spool_files 2" in lines
    assert f"atelier_storage_spool_bytes {len(first) + len(second)}" in lines
    files.unspool(7, 0)
    assert f"atelier_storage_spool_bytes {len(second)}" in metric_lines(idle_app)


# --- verify: the spool --------------------------------------------------------------------------


def verify(app: Flask, *, repair: bool = False) -> consistency.VerifyReport:
    with app.app_context():
        return consistency.verify(storage.current(), repair=repair, grace_seconds=0)


def spool_path(app: Flask, job_id: int, index: int = 0) -> Path:
    return storage.current(app).root / storage.SPOOL / f"{job_id}-{index}.bin"


def set_status(app: Flask, job_id: int, status: str) -> None:
    with app.app_context():
        db.session.get(Job, job_id).status = status
        db.session.commit()


def stored_bytes(app: Flask, image_id: int) -> bytes:
    with app.app_context():
        return storage.current().read(db.session.get(Image, image_id).file_name)


def test_a_download_waiting_for_its_upload_is_normal_and_left_alone(app):
    job_id = submit(app.test_client(), prompt="a waiting heron", size="256x256")["id"]
    storage.current(app).spool(job_id, 0, png())

    for repair in (False, True):
        report = verify(app, repair=repair)
        assert report.spool_waiting == [f".spool/{job_id}-0.bin"]
        assert report.spool_leftovers == {}
        assert report.clean, report.lines()
        assert (
            "Waiting for its upload (normal while storage fails; the worker uploads it): "
            f".spool/{job_id}-0.bin."
        ) in report.lines()
    assert spool_path(app, job_id).is_file()


def test_a_leftover_whose_image_is_stored_is_removed_by_repair(app):
    job = generate(app.test_client(), prompt="a stored heron", size="256x256")
    image = job["images"][0]
    storage.current(app).spool(job["id"], 0, stored_bytes(app, image["id"]))
    path = f".spool/{job['id']}-0.bin"

    found = verify(app)
    assert found.spool_leftovers == {path: f"image {image['id']} of job {job['id']} is stored"}
    assert not found.clean
    assert f"Spool leftover: {path} (image {image['id']} of job {job['id']} is stored)." in (
        found.lines()
    )
    result = app.test_cli_runner().invoke(args=["atelier", "verify"])
    assert result.exit_code == 1 and path in result.output

    repaired = verify(app, repair=True)
    digest = image["sha256"]
    name = f"images/{digest[:2]}/{digest}.png"
    assert repaired.spool_removed == {path: name}
    assert repaired.clean, repaired.lines()
    assert any(f"removed, its bytes are stored as {name}" in line for line in repaired.lines())
    assert not spool_path(app, job["id"]).exists()
    assert verify(app).spool_leftovers == {}


def test_a_leftover_of_a_failed_job_that_is_not_stored_is_kept_with_how_to_recover(app):
    job_id = submit(app.test_client(), prompt="a lost heron", size="256x256")["id"]
    set_status(app, job_id, "failed")
    data = png(color=(10, 200, 30))
    storage.current(app).spool(job_id, 0, data)
    path = f".spool/{job_id}-0.bin"

    result = app.test_cli_runner().invoke(args=["atelier", "verify", "--repair"])
    report = verify(app, repair=True)

    assert result.exit_code == 1
    assert f"Spool leftover: {path} (job {job_id} failed without storing image 0): kept" in (
        result.output
    )
    assert f"`cp DATA/{path} image-{job_id}-0.png`" in result.output
    assert report.spool_kept == {
        path: "no stored object holds its bytes "
        f"(a PNG image, sha256 {hashlib.sha256(data).hexdigest()})"
    }
    assert spool_path(app, job_id).read_bytes() == data


def test_a_leftover_of_a_job_that_is_gone(app):
    job = generate(app.test_client(), prompt="a shared heron", size="256x256")
    files = storage.current(app)
    # Job 900 no longer exists: once with bytes another row stores, once with bytes nowhere.
    files.spool(900, 0, stored_bytes(app, job["images"][0]["id"]))
    files.spool(901, 0, png(color=(1, 2, 3)))

    found = verify(app)
    assert found.spool_leftovers == {
        ".spool/900-0.bin": "job 900 is gone",
        ".spool/901-0.bin": "job 901 is gone",
    }
    repaired = verify(app, repair=True)

    assert list(repaired.spool_removed) == [".spool/900-0.bin"]
    assert list(repaired.spool_kept) == [".spool/901-0.bin"]
    assert repaired.remaining_problems == 1
    assert not spool_path(app, 900).exists() and spool_path(app, 901).exists()


def test_a_leftover_is_kept_when_its_stored_object_differs_or_no_row_names_it(app):
    files = storage.current(app)
    failed = submit(app.test_client(), prompt="an orphaned heron", size="256x256")["id"]
    set_status(app, failed, "failed")
    orphan = png(color=(77, 77, 0))
    with app.app_context():
        files.store_image(orphan)  # uploaded, but its row never committed
    files.spool(failed, 0, orphan)
    job = generate(app.test_client(), prompt="a damaged heron", size="256x256")
    image = job["images"][0]
    files.spool(job["id"], 0, stored_bytes(app, image["id"]))
    damaged = f"images/{image['sha256'][:2]}/{image['sha256']}.png"
    files.write(damaged, png(color=(0, 0, 0)))

    report = verify(app, repair=True)

    assert report.spool_removed == {}
    digest = hashlib.sha256(orphan).hexdigest()
    assert report.spool_kept == {
        f".spool/{failed}-0.bin": f"its bytes are stored as images/{digest[:2]}/{digest}.png, "
        "but no row names that object (an orphan, set aside by --repair)",
        f".spool/{job['id']}-0.bin": f"the object at {damaged} no longer holds these bytes",
    }
    assert spool_path(app, failed).is_file() and spool_path(app, job["id"]).is_file()


def test_spool_files_that_are_not_images_or_not_the_workers_names_are_kept(app):
    job_id = submit(app.test_client(), prompt="a canceled heron", size="256x256")["id"]
    set_status(app, job_id, "canceled")
    files = storage.current(app)
    files.spool(job_id, 1, b"not an image at all")
    (files.root / storage.SPOOL / "notes.bin").write_bytes(png())

    report = verify(app, repair=True)

    assert report.spool_leftovers == {
        f".spool/{job_id}-1.bin": f"job {job_id} canceled without storing image 1",
        ".spool/notes.bin": "not a name the worker spools under",
    }
    assert report.spool_kept[f".spool/{job_id}-1.bin"].startswith("it is not an image")
    assert report.spool_kept[".spool/notes.bin"].startswith("no stored object holds its bytes")
    assert report.spool_removed == {}


def test_deleting_a_job_sets_its_spooled_download_aside_for_verify(app):
    # On SQLite a deleted job's id can be given to the next job: its spooled download must not
    # be taken for the new job's, nor lost.
    job_id = submit(app.test_client(), prompt="a deleted heron", size="256x256")["id"]
    set_status(app, job_id, "failed")
    data = png(color=(5, 6, 7))
    files = storage.current(app)
    files.spool(job_id, 0, data)

    assert app.test_client().delete(f"/api/jobs/{job_id}").status_code == 204

    assert files.spooled(job_id, 0) is None
    [aside] = files.spool_files()
    assert aside.startswith(f"{job_id}-0.deleted-")
    assert (files.root / storage.SPOOL / aside).read_bytes() == data
    report = verify(app, repair=True)
    path = f".spool/{aside}"
    assert report.spool_leftovers == {path: f"job {job_id} was deleted while image 0 waited"}
    assert report.spool_kept[path].startswith("no stored object holds its bytes")


# --- verify: the spool on object storage --------------------------------------------------------


def test_storage_failing_past_the_deadline_leaves_a_leftover_verify_keeps(
    app_factory, object_store
):
    relay = Relay(object_store.port)
    app = app_factory(ATELIER_JOB_DEADLINE_SECONDS=3, **object_store.settings(port=relay.port))
    relay.cut()
    try:
        job = generate(app.test_client(), prompt="a stranded heron", size="256x256", timeout=60)
    finally:
        relay.restore()
    assert job["status"] == "failed"
    path = f".spool/{job['id']}-0.bin"

    report = verify(app, repair=True)

    assert report.spool_leftovers == {path: f"job {job['id']} failed without storing image 0"}
    assert report.spool_kept[path].startswith("no stored object holds its bytes")
    assert spool_path(app, job["id"]).is_file()
    assert not report.clean
    relay.cut()


def test_a_leftover_stored_in_the_object_store_is_removed(app_factory, object_store):
    app = app_factory(**object_store.settings())
    job = generate(app.test_client(), prompt="an uploaded heron", size="256x256")
    image = job["images"][0]
    data = object_store.store().get(f"images/{image['sha256'][:2]}/{image['sha256']}.png")
    storage.current(app).spool(job["id"], 0, data)

    report = verify(app, repair=True)

    assert list(report.spool_removed) == [f".spool/{job['id']}-0.bin"]
    assert report.clean, report.lines()
    assert storage.current(app).spool_files() == []
