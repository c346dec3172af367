"""Files shared by two owners: deleting one owner's work never deletes the other owner's files.

Files are content-addressed, so byte-identical images of two users are one file on disk. A JPEG
or WebP carries no per-job metadata (only PNGs do), and the emulator is deterministic, so two
users who ask gpt-image-1 for the same prompt as a JPEG get the same bytes: the same original
and the same thumbnails. Apps here run with sign-in on, so every request is scoped to its user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import consistency, storage
from tests.helpers import (
    EMULATOR_KEY,
    OWNER_PASSWORD,
    app_with_owners,
    csrf_token,
    signed_in,
    wait_for_job,
)

SHARED = {
    "prompt": "a lighthouse both of them asked for",
    "provider": "azure:gpt-image-1",
    "size": "1024x1024",
    "options": {"quality": "low", "output_format": "jpeg"},
}


@pytest.fixture
def shared_app(app_factory: Any, emulator: Any) -> Flask:
    return app_with_owners(
        app_factory, ATELIER_EMULATOR_LATENCY_SECONDS=0, AZURE_OPENAI_API_KEY=EMULATOR_KEY
    )


def generate(client: FlaskClient, body: dict[str, Any] = SHARED) -> dict[str, Any]:
    response = client.post("/api/jobs", json=body, headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


def served(client: FlaskClient, url: str) -> tuple[int, bytes]:
    with client.get(url) as response:
        return response.status_code, response.get_data()


def file_urls(image: dict[str, Any]) -> list[str]:
    """Every URL that serves one of the image's files: original and each thumbnail size."""
    sha = image["sha256"]
    return [
        image["url"],
        image["thumbnail_url"],
        f"/files/{sha}.jpg",
        f"/files/{sha}-256.webp",
        f"/files/{sha}-512.webp",
    ]


@pytest.fixture
def both(shared_app: Flask) -> dict[str, Any]:
    """alice and bob, each with a finished job of the same prompt, so they share every file."""
    alice = signed_in(shared_app, "alice", OWNER_PASSWORD)
    bob = signed_in(shared_app, "bob", OWNER_PASSWORD)
    alice_job, bob_job = generate(alice), generate(bob)
    alice_image, bob_image = alice_job["images"][0], bob_job["images"][0]
    assert alice_image["id"] != bob_image["id"]
    assert alice_image["sha256"] == bob_image["sha256"]  # one file on disk for both
    before = {url: served(alice, url) for url in file_urls(alice_image)}
    assert all(status == 200 for status, _ in before.values()), before
    return {
        "app": shared_app,
        "alice": alice,
        "bob": bob,
        "alice_job": alice_job,
        "bob_job": bob_job,
        "alice_files": before,
    }


def assert_alice_still_has_her_files(both: dict[str, Any]) -> None:
    alice = both["alice"]
    for url, (_, data) in both["alice_files"].items():
        assert served(alice, url) == (200, data), url
    job = alice.get(f"/api/jobs/{both['alice_job']['id']}").get_json()
    assert [image["status"] for image in job["images"]] == ["stored"]


def test_deleting_a_job_keeps_the_files_another_user_shares(both):
    bob = both["bob"]
    response = bob.delete(
        f"/api/jobs/{both['bob_job']['id']}", headers={"X-CSRFToken": csrf_token(bob)}
    )
    assert response.status_code == 204

    assert_alice_still_has_her_files(both)


def test_emptying_the_trash_keeps_the_files_another_user_shares(both):
    bob = both["bob"]
    csrf = csrf_token(bob)
    image_id = both["bob_job"]["images"][0]["id"]
    trashed = bob.post(
        "/gallery/bulk", data={"csrf_token": csrf, "action": "delete", "ids": str(image_id)}
    )
    assert trashed.status_code == 303
    assert bob.post("/gallery/trash/empty", data={"csrf_token": csrf}).status_code == 303
    assert served(bob, both["bob_job"]["images"][0]["url"])[0] == 404  # bob's row is gone

    assert_alice_still_has_her_files(both)


def test_the_last_owner_deleting_removes_the_shared_files(both):
    """The reference count still reaches zero: once nobody uses the bytes, they go."""
    app = both["app"]
    for name in ("bob", "alice"):
        client = both[name]
        response = client.delete(
            f"/api/jobs/{both[f'{name}_job']['id']}", headers={"X-CSRFToken": csrf_token(client)}
        )
        assert response.status_code == 204
    data_dir = Path(app.config["ATELIER_DATA_DIR"])
    assert [p for p in (data_dir / "images").rglob("*") if p.is_file()] == []
    assert [p for p in (data_dir / "thumbs").rglob("*") if p.is_file()] == []


def test_verify_after_one_owner_deletes_finds_nothing_to_repair(both):
    bob = both["bob"]
    bob.delete(f"/api/jobs/{both['bob_job']['id']}", headers={"X-CSRFToken": csrf_token(bob)})
    app = both["app"]
    with app.app_context():
        report = consistency.verify(storage.current(), repair=True, grace_seconds=0)

    assert report.clean, report.lines()
    assert report.moved == [] and report.missing_thumbnails == []
    assert_alice_still_has_her_files(both)


def test_verify_repair_regenerates_a_missing_large_thumbnail(both):
    """Every kind of file is checked: the 512 px thumbnail too, not just the 256 px one."""
    app = both["app"]
    sha = both["alice_job"]["images"][0]["sha256"]
    large = Path(app.config["ATELIER_DATA_DIR"]) / f"thumbs/{sha[:2]}/{sha}-512.webp"
    large.unlink()
    with app.app_context():
        found = consistency.verify(storage.current(), grace_seconds=0)
        repaired = consistency.verify(storage.current(), repair=True, grace_seconds=0)

    image_ids = sorted(both[f"{name}_job"]["images"][0]["id"] for name in ("alice", "bob"))
    assert found.missing_thumbnails == image_ids
    assert not found.clean
    assert repaired.regenerated_thumbnails == image_ids
    assert repaired.clean, repaired.lines()
    status, data = served(both["alice"], f"/files/{sha}-512.webp")
    assert status == 200 and data == both["alice_files"][f"/files/{sha}-512.webp"][1]
