"""Scaled out on object storage (issue #17's "Done when"): two app instances as separate
processes, each on its OWN data folder, sharing nothing but one PostgreSQL database and one
container (Azurite) or bucket (moto's S3 server).

100 jobs submitted round-robin all succeed with exactly one submit each; every image is in the
object store with the size and sha256 its row says, both instances serve every image and
thumbnail with the same bytes, and neither data folder holds anything image-like. A kill -9
between an object's upload and its row's commit leaves an orphan that `flask atelier verify`
reports and `verify --repair` removes, never a row without its object.

PostgreSQL only: it is the database several hosts can share (tests/test_object_storage.py
covers one app on object storage on both databases).
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from app import storage
from tests.helpers import free_port, on_postgresql
from tests.objstore_servers import (  # noqa: F401  (fixtures)
    ObjectBackend,
    azurite_port_fixture,
    moto_port_fixture,
    object_store_fixture,
)
from tests.processes import (
    flask_command,
    generation_requests,
    logs_of,
    submit_round_robin,
    submits,
    wait_all_final,
)

JOBS = 100
# The first bytes of every format an image is stored as (app.storage.FORMATS).
PNG, JPEG, RIFF, WEBP = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"WEBP"
# The synchronous deployment: its answer dies with the process, so a crash after the upload
# leaves the object with no row that will ever name it (the asynchronous API would fetch the
# same bytes again and reuse the object).
SYNC_DEPLOYMENT = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1"}

pytestmark = pytest.mark.skipif(
    not on_postgresql(),
    reason="needs a shared PostgreSQL database (ATELIER_TEST_DB=postgresql); "
    "tests/test_object_storage.py covers one app on object storage on both databases",
)


@pytest.fixture
def emulator_latency() -> str:
    return "0.2"


def is_image_like(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    return head.startswith((PNG, JPEG)) or (head[:4] == RIFF and head[8:12] == WEBP)


def image_like_files(folder: Path) -> list[str]:
    """Every file under `folder` (nothing excluded) whose first bytes are PNG, JPEG or WebP."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and is_image_like(path)
    )


def instance_env(app_env: dict[str, str], data_dir: Path, settings: dict[str, str]) -> dict:
    """The environment an instance on `data_dir` runs with (for its `flask atelier` commands)."""
    return {**app_env, **settings, "ATELIER_DATA_DIR": str(data_dir)}


def get(session: requests.Session, url: str) -> bytes:
    response = session.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def test_two_instances_on_separate_folders_share_only_the_database_and_object_store(
    start_app, emulator_url, app_env, object_store: ObjectBackend, tmp_path
):
    settings = object_store.settings()
    data_a, data_b = Path(app_env["ATELIER_DATA_DIR"]), tmp_path / "data-b"
    _, first = start_app(**settings)
    _, second = start_app(port=free_port(), ATELIER_DATA_DIR=str(data_b), **settings)
    bases = [first, second]

    ids = submit_round_robin(bases, "scaled-out job", JOBS)
    jobs = wait_all_final(first, ids, timeout=120)

    assert [jobs[job_id]["status"] for job_id in ids] == ["succeeded"] * JOBS
    assert submits(emulator_url) == JOBS
    images = [image for job_id in ids for image in jobs[job_id]["images"]]
    assert len(images) == JOBS and {image["status"] for image in images} == {"stored"}

    store = object_store.store()
    listed = {item.name: item.size for item in store.list("")}
    with requests.Session() as session:
        for image in images:
            digest = image["sha256"]
            (original,) = [n for n in listed if n.startswith(f"images/{digest[:2]}/{digest}.")]
            assert listed[original] == image["bytes"], original
            stored = store.get(original)
            assert hashlib.sha256(stored).hexdigest() == digest
            thumbnail = store.get(storage.thumbnail_names(digest)[0])
            for base in bases:
                assert get(session, base + urlsplit(image["url"]).path) == stored
                assert get(session, base + urlsplit(image["thumbnail_url"]).path) == thumbnail

    assert image_like_files(data_a) == []
    assert image_like_files(data_b) == []
    check = flask_command(instance_env(app_env, data_b, settings), "atelier", "verify")
    assert check.returncode == 0, check.stdout
    assert "Consistent." in check.stdout
    assert "Traceback" not in logs_of(tmp_path)


def test_kill_between_upload_and_commit_leaves_an_orphan_verify_removes(
    start_app, emulator_url, app_env, object_store: ObjectBackend, tmp_path
):
    settings = {**object_store.settings(), **SYNC_DEPLOYMENT}
    data_a, data_b = Path(app_env["ATELIER_DATA_DIR"]), tmp_path / "data-b"
    store = object_store.store()

    # Alone on the queue, so that it is the instance that takes the job (and dies).
    crashing, first = start_app(ATELIER_TEST_CRASH_AT="after_rename", **settings)
    try:
        answer = requests.post(
            f"{first}/api/jobs", json={"prompt": "an orphan", "n": 2}, timeout=10
        )
        job_id = answer.json()["id"]
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        job_id = None  # it died while answering; the row was committed (found below)
    assert crashing.popen.wait(timeout=30) == -signal.SIGKILL, "the crash point was not reached"
    crashing.stop()
    uploaded = sorted(store.list(""), key=lambda item: item.name)
    assert [item.name.split("/")[0] for item in uploaded] == [
        "images", "sidecars", "thumbs", "thumbs"
    ]  # fmt: skip

    _, first = start_app(**settings)  # the same instance again, on its own folder
    _, second = start_app(port=free_port(), ATELIER_DATA_DIR=str(data_b), **settings)
    if job_id is None:
        (job,) = requests.get(f"{second}/api/jobs", timeout=5).json()["items"]
        job_id = job["id"]
    crashed = wait_all_final(first, [job_id], timeout=30)[job_id]
    # The synchronous answer died with the process: the job ends, with no stored image.
    assert crashed["status"] == "failed", crashed
    assert [image for image in crashed["images"] if image["status"] == "stored"] == []
    kept_id = requests.post(f"{second}/api/jobs", json={"prompt": "kept", "n": 1}, timeout=10)
    kept = wait_all_final(second, [kept_id.json()["id"]], timeout=30)[kept_id.json()["id"]]
    assert kept["status"] == "succeeded", kept
    assert generation_requests(emulator_url) == 2  # the crashed job was never sent again

    orphans = [item.name for item in uploaded]
    env_a, env_b = (instance_env(app_env, data, settings) for data in (data_a, data_b))
    found = flask_command(env_a, "atelier", "verify", "--grace-seconds", "0")
    assert found.returncode == 1, found.stdout
    for name in orphans:
        assert name in found.stdout, found.stdout
    assert "Missing original" not in found.stdout  # never a row without its object
    assert set(orphans) <= {item.name for item in store.list("")}  # only reported

    repaired = flask_command(env_b, "atelier", "verify", "--repair", "--grace-seconds", "0")
    assert repaired.returncode == 0, repaired.stdout
    assert "Consistent after repair." in repaired.stdout
    left = {item.name for item in store.list("")}
    assert left.isdisjoint(orphans)
    digest = kept["images"][0]["sha256"]
    assert {name.split("/")[0] for name in left if digest in name} == {
        "images", "sidecars", "thumbs"
    }  # fmt: skip

    again = flask_command(env_a, "atelier", "verify")
    assert again.returncode == 0, again.stdout
    assert "Consistent." in again.stdout
    assert image_like_files(data_a) == [] and image_like_files(data_b) == []
    assert "Traceback" not in logs_of(tmp_path)
