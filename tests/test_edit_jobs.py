"""Edit jobs end to end against the emulator over loopback: the exact stored bytes are sent,
Retry sends them again without a re-upload, a cut stream fails with Retry and is never resent,
and files shared between outputs and inputs are only removed when nothing uses them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete

from app import consistency, curation, jobs, pricing, storage
from app.models import Image, Job, JobInput, db, write_transaction
from tests.edit_helpers import EDITOR, EDITOR_SETTINGS, mask, png, stored_files
from tests.helpers import csrf_token, emulator_log, wait_for_job


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def edit_app(app_factory: Any) -> Flask:
    return app_factory(**EDITOR_SETTINGS)


def post_edit(client: FlaskClient, files: list[tuple[str, bytes]], **fields: Any) -> dict:
    data: dict[str, Any] = {"prompt": "make the sky stormy", "provider": EDITOR, **fields}
    for number, (name, content) in enumerate(files):
        data.setdefault(name, []).append((io.BytesIO(content), f"{number}.png"))
    response = client.post("/api/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def post_json(client: FlaskClient, **body: Any) -> dict:
    response = client.post("/api/jobs", json={"provider": EDITOR, **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def edit_requests(emulator: Any) -> list[dict[str, Any]]:
    return [entry for entry in emulator_log(emulator) if entry["path"].endswith("/images/edits")]


def sent_files(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(part["role"], part["sha256"]) for part in entry["files"]]


def test_a_multipart_edit_sends_exactly_the_uploaded_bytes(edit_app, emulator):
    client = edit_app.test_client()
    first, second = png(), png(color=(0, 120, 0))
    the_mask = mask((64, 48))

    job = post_edit(client, [("image", first), ("image", second), ("mask", the_mask)])
    done = wait_for_job(client, job["id"])

    assert done["status"] == "succeeded", done
    assert done["images"][0]["status"] == "stored"
    (entry,) = edit_requests(emulator)
    assert sent_files(entry) == [
        ("image", sha(first)),
        ("image", sha(second)),
        ("mask", sha(the_mask)),
    ]
    assert [part["content_type"] for part in entry["files"]] == ["image/png"] * 3


def test_a_library_edit_sends_the_stored_original_and_retry_sends_it_again(edit_app, emulator):
    client = edit_app.test_client()
    source_job = wait_for_job(client, post_json(client, prompt="a calm sea")["id"])
    source = source_job["images"][0]
    with client.get(source["url"]) as response:
        original = response.get_data()
    assert sha(original) == source["sha256"]
    the_mask = mask((source["width"], source["height"]))

    job = post_json(
        client,
        prompt="make the sky stormy",
        reference_images=[source["id"]],
        mask="data:image/png;base64," + base64.b64encode(the_mask).decode(),
    )
    done = wait_for_job(client, job["id"])
    files_before = stored_files(edit_app)
    retried = wait_for_job(client, client.post(f"/api/jobs/{job['id']}/retry").get_json()["id"])

    assert done["status"] == retried["status"] == "succeeded"
    first, second = edit_requests(emulator)
    assert (
        sent_files(first)
        == sent_files(second)
        == [
            ("image", source["sha256"]),
            ("mask", sha(the_mask)),
        ]
    )
    assert retried["inputs"][0]["source_image"] == source["id"]
    # The retry's new output is the only new file: no input was written again.
    assert len(stored_files(edit_app) - files_before) <= 3


def test_a_cut_stream_fails_with_a_reason_and_is_not_resent(edit_app, emulator):
    client = edit_app.test_client()
    options = {"partial_images": 1, "quality": "low"}
    job = post_edit(client, [("image", png())], prompt="a cut [stream-cut]", options=_json(options))

    done = wait_for_job(client, job["id"])

    assert done["status"] == "failed"
    assert done["error"]["code"] == "stream_interrupted"
    assert "Retry" in done["error"]["message"]
    assert done["preview_url"] is None
    assert len(edit_requests(emulator)) == 1  # never sent again on its own
    assert not list((Path(edit_app.config["ATELIER_DATA_DIR"]) / "previews").glob("*"))
    # It may have been billed: the estimate stays.
    assert done["cost_source"] == "estimate" and done["cost_usd"] > 0
    # One click: Retry sends it again (the emulator cuts only the first stream of a prompt).
    retried = wait_for_job(client, client.post(f"/api/jobs/{job['id']}/retry").get_json()["id"])
    assert retried["status"] == "succeeded"
    assert len(edit_requests(emulator)) == 2


def _json(value: Any) -> str:
    return json.dumps(value)


def test_deleting_an_output_keeps_the_file_another_job_uses_as_input(edit_app):
    client = edit_app.test_client()
    source_job = wait_for_job(client, post_json(client, prompt="a calm sea")["id"])
    source = source_job["images"][0]
    edit = wait_for_job(
        client, post_json(client, prompt="stormy", reference_images=[source["id"]])["id"]
    )
    with edit_app.app_context():
        shared = db.session.get(Image, source["id"]).file_name
    root = Path(edit_app.config["ATELIER_DATA_DIR"])

    assert client.delete(f"/api/jobs/{source_job['id']}").status_code == 204

    assert (root / shared).is_file(), "an input another job uses was deleted"
    edit_after = client.get(f"/api/jobs/{edit['id']}").get_json()
    assert edit_after["inputs"][0]["source_image"] is None  # the gallery image is gone
    with client.get(edit_after["inputs"][0]["url"]) as response:
        assert response.status_code == 200
    # Once the last job using it goes, so does the file.
    assert client.delete(f"/api/jobs/{edit['id']}").status_code == 204
    assert not (root / shared).exists()


def test_deleting_an_edit_keeps_its_input_that_is_still_a_gallery_image(edit_app):
    client = edit_app.test_client()
    source = wait_for_job(client, post_json(client, prompt="a calm sea")["id"])["images"][0]
    edit = wait_for_job(
        client, post_json(client, prompt="stormy", reference_images=[source["id"]])["id"]
    )
    with edit_app.app_context():
        image = db.session.get(Image, source["id"])
        names = [image.file_name, image.thumbnail_name, image.thumbnail_large_name]
    root = Path(edit_app.config["ATELIER_DATA_DIR"])

    assert client.delete(f"/api/jobs/{edit['id']}").status_code == 204

    assert all((root / name).is_file() for name in names)


def test_purging_the_trash_keeps_an_input_another_job_uses(edit_app):
    client = edit_app.test_client()
    source = wait_for_job(client, post_json(client, prompt="a calm sea")["id"])["images"][0]
    edit = wait_for_job(
        client, post_json(client, prompt="stormy", reference_images=[source["id"]])["id"]
    )
    root = Path(edit_app.config["ATELIER_DATA_DIR"])
    with edit_app.app_context():
        shared = db.session.get(Image, source["id"]).file_name
        curation.trash([source["id"]])
        assert curation.purge() == 1
        assert db.session.get(Image, source["id"]) is None
        (item,) = db.session.query(JobInput).filter_by(job_id=edit["id"]).all()
        assert (item.file_name, item.source_image_id) == (shared, None)

    assert (root / shared).is_file()


def test_an_upload_identical_to_an_output_shares_its_file_and_both_survive(edit_app):
    client = edit_app.test_client()
    source = wait_for_job(client, post_json(client, prompt="a calm sea")["id"])["images"][0]
    with client.get(source["url"]) as response:
        original = response.get_data()
    edit = post_edit(client, [("image", original)])
    root = Path(edit_app.config["ATELIER_DATA_DIR"])
    with edit_app.app_context():
        shared = db.session.get(Image, source["id"]).file_name

    wait_for_job(client, edit["id"])
    assert client.delete(f"/api/jobs/{edit['id']}").status_code == 204

    assert (root / shared).is_file()
    with client.get(source["url"]) as response:
        assert response.get_data() == original


def test_the_estimate_of_an_edit_includes_its_input_images(edit_app):
    client = edit_app.test_client()
    options = _json({"quality": "low"})
    plain = post_json(client, prompt="a pear", options={"quality": "low"}, size="1024x1024")
    edit = post_edit(client, [("image", png((1024, 1024)))], options=options, size="1024x1024")

    # GUESS-based figure: 65 + 129 * 4 tiles (768 px square) tokens at $10 per million.
    expected_extra = pricing.input_image_tokens([_Input(1024, 1024)]) * 10.0 / 1_000_000
    assert edit["cost_usd"] == pytest.approx(plain["cost_usd"] + expected_extra)
    assert edit["cost_usd"] > plain["cost_usd"]


class _Input:
    role = "image"

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height


def test_a_job_whose_input_file_vanished_fails_without_sending(edit_app, emulator):
    client = edit_app.test_client()
    job = post_edit(client, [("image", png())])
    root = Path(edit_app.config["ATELIER_DATA_DIR"])
    (root / "images").joinpath(job["inputs"][0]["sha256"][:2]).joinpath(
        job["inputs"][0]["sha256"] + ".png"
    ).unlink()

    done = wait_for_job(client, job["id"])

    assert (done["status"], done["error"]["code"]) == ("failed", "input_missing")
    assert edit_requests(emulator) == []
    with edit_app.app_context():
        assert jobs.get_job(job["id"]).cost_usd == 0


def finished_edit(app: Flask) -> tuple[FlaskClient, dict, bytes, bytes]:
    """An edit (an upload and a mask) run to success: (client, job, image bytes, mask bytes)."""
    client = app.test_client()
    first, the_mask = png(), mask((64, 48))
    job = post_edit(client, [("image", first), ("mask", the_mask)])
    done = wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return client, done, first, the_mask


def test_the_zip_holds_the_inputs_and_the_manifest_names_them(edit_app):
    client, job, first, the_mask = finished_edit(edit_app)
    token = csrf_token(client)

    with client.post(
        "/gallery/zip", data={"ids": [job["images"][0]["id"]], "csrf_token": token}
    ) as response:
        assert response.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(response.get_data()))

    (entry,) = json.loads(archive.read("manifest.json"))["files"]
    assert entry["kind"] == "edit"
    assert [(i["role"], i["sha256"]) for i in entry["inputs"]] == [
        ("image", sha(first)),
        ("mask", sha(the_mask)),
    ]
    for item, original in zip(entry["inputs"], (first, the_mask), strict=True):
        assert item["file"] == f"inputs/{item['sha256']}.png"
        assert archive.read(item["file"]) == original


def test_verify_counts_inputs_as_used_and_repairs_their_thumbnails(edit_app):
    _, job, _, _ = finished_edit(edit_app)
    root = Path(edit_app.config["ATELIER_DATA_DIR"])
    with edit_app.app_context():
        clean = consistency.verify(storage.current(), grace_seconds=0)
        assert clean.clean, clean.lines()
        (root / db.session.get(JobInput, 1).thumbnail_name).unlink()

        found = consistency.verify(storage.current(), grace_seconds=0)
        repaired = consistency.verify(storage.current(), repair=True, grace_seconds=0)
        after = consistency.verify(storage.current(), grace_seconds=0)

    assert not found.clean
    assert any("Missing input thumbnail: input 1" in line for line in found.lines())
    assert repaired.regenerated_input_thumbnails == [1]
    assert repaired.moved == []  # no input file is ever taken for an orphan
    assert after.clean, after.lines()


def test_rebuild_links_an_edits_inputs_again_from_its_png_metadata(edit_app):
    client, job, first, the_mask = finished_edit(edit_app)
    with edit_app.app_context():
        with write_transaction() as session:
            session.execute(delete(Job))  # a lost database; the files stay
        report = consistency.rebuild(storage.current())

    assert report.created_jobs == [job["id"]]
    assert report.unknown == []  # the input files are not left over as unknown
    rebuilt = client.get(f"/api/jobs/{job['id']}").get_json()
    assert rebuilt["kind"] == "edit"
    assert [(i["role"], i["sha256"]) for i in rebuilt["inputs"]] == [
        ("image", sha(first)),
        ("mask", sha(the_mask)),
    ]
    with client.get(rebuilt["inputs"][1]["url"]) as response:
        assert response.get_data() == the_mask
