"""Edits through the JSON API: multipart uploads and gallery ids, the job's inputs in its JSON,
the input files served, and every bad input of issue #15 refused with nothing stored or sent.

Apps run with sign-in on where ownership matters (a token per user), so every request is
scoped to its user as in production.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage

from app import inputs
from app.auth import accounts, tokens
from app.models import Job, JobInput, db
from app.validation import ValidationError
from tests.edit_helpers import EDITOR, mask, png, stored_files
from tests.emulator_client import reset
from tests.helpers import EMULATOR_KEY, emulator_log, generate, run_ready

DEPLOYMENTS = "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3"
PASSWORD = "correct horse battery"


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, (10, 90, 200)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def edit_app(app_factory: Any) -> Flask:
    return app_factory(
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS,
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
    )


@pytest.fixture
def users_app(app_factory: Any) -> Flask:
    return app_factory(
        ATELIER_AUTH="on",
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS,
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
    )


def token_client(app: Flask, username: str) -> FlaskClient:
    """A client that calls the API with a new user's bearer token."""
    with app.app_context():
        user = accounts.create_user(username, PASSWORD)
        _, token = tokens.create_token(user.id, "tests")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def post_edit(client: FlaskClient, files: list[tuple[str, bytes, str]], **fields: Any) -> Any:
    """POST /api/jobs as multipart: `files` as (field, bytes, file name)."""
    data: dict[str, Any] = {"prompt": "make the sky stormy", "provider": EDITOR, **fields}
    parts = [(name, (io.BytesIO(content), filename)) for name, content, filename in files]
    for name, part in parts:
        data.setdefault(name, []).append(part)
    return client.post("/api/jobs", data=data, content_type="multipart/form-data")


def post_json_edit(client: FlaskClient, image_ids: list[Any], **fields: Any) -> Any:
    """POST /api/jobs as JSON: an edit of the gallery images `image_ids`, with `fields`."""
    body = {"prompt": "p", "provider": EDITOR, "reference_images": image_ids, **fields}
    return client.post("/api/jobs", json=body)


def gallery_image(client: FlaskClient, prompt: str = "a calm sea") -> dict[str, Any]:
    """A stored gallery image of the client's user, made by the emulator."""
    job = generate(client, prompt=prompt, provider=EDITOR, options={"quality": "low"})
    assert job["status"] == "succeeded", job
    return job["images"][0]


def job_count(app: Flask) -> tuple[int, int]:
    with app.app_context():
        jobs = db.session.query(Job).count()
        rows = db.session.query(JobInput).count()
        db.session.remove()
        return jobs, rows


def fetch(client: FlaskClient, url: str) -> tuple[int, bytes, Any]:
    """GET a file, closing the response: (status, body, headers)."""
    with client.get(url) as response:
        return response.status_code, response.get_data(), response.headers


# --- happy paths: what is stored and shown ---------------------------------------------------


def test_multipart_edit_stores_the_uploads_exactly_and_shows_them(edit_app):
    client = edit_app.test_client()
    first, second, the_mask = png(), jpeg(), mask()

    response = post_edit(
        client,
        [("image", first, "a.png"), ("image", second, "b.jpg"), ("mask", the_mask, "m.png")],
        n="1",
        size="1024x1024",
        options=json.dumps({"quality": "low"}),
    )

    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "edit"
    assert job["options"]["quality"] == "low"
    shown = [
        (i["role"], i["sha256"], i["content_type"], i["width"], i["height"]) for i in job["inputs"]
    ]
    assert shown == [
        ("image", hashlib.sha256(first).hexdigest(), "image/png", 64, 48),
        ("image", hashlib.sha256(second).hexdigest(), "image/jpeg", 64, 48),
        ("mask", hashlib.sha256(the_mask).hexdigest(), "image/png", 64, 48),
    ]  # fmt: skip
    assert job["preview_url"] is None
    for item, original in zip(job["inputs"], (first, second, the_mask), strict=True):
        status, body, headers = fetch(client, item["url"])
        assert (status, body) == (200, original)  # exactly as uploaded: nothing embedded
        assert headers["Content-Type"] == item["content_type"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, _, headers = fetch(client, item["thumbnail_url"])
        assert (status, headers["Content-Type"]) == (200, "image/webp")


def test_json_edit_with_a_gallery_image_and_a_mask_data_url(edit_app):
    client = edit_app.test_client()
    source = gallery_image(client)
    the_mask = mask((source["width"], source["height"]))
    data_url = "data:image/png;base64," + base64.b64encode(the_mask).decode()

    response = post_json_edit(client, [source["id"]], prompt="make the sky stormy", mask=data_url)

    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "edit"
    reference, sent_mask = job["inputs"]
    # The gallery image is the very same file: same digest, same bytes.
    assert (reference["role"], reference["sha256"]) == ("image", source["sha256"])
    assert reference["source_image"] == source["id"]
    assert fetch(client, reference["url"])[1] == fetch(client, source["url"])[1]
    assert (sent_mask["role"], sent_mask["sha256"]) == (
        "mask",
        hashlib.sha256(the_mask).hexdigest(),
    )


def test_a_generation_is_kind_generate_without_inputs(edit_app):
    client = edit_app.test_client()

    job = client.post("/api/jobs", json={"prompt": "a pear", "provider": EDITOR}).get_json()

    assert (job["kind"], job["inputs"], job["preview_url"]) == ("generate", [], None)


def test_retry_and_again_reuse_the_same_input_files(edit_app):
    client = edit_app.test_client()
    job = post_edit(client, [("image", png(), "a.png"), ("mask", mask(), "m.png")]).get_json()
    with edit_app.app_context():
        Job.query.filter_by(id=job["id"]).update({"status": "failed"})
        db.session.commit()
    before = stored_files(edit_app)

    retried = client.post(f"/api/jobs/{job['id']}/retry").get_json()
    with edit_app.app_context():
        from app import jobs as job_actions

        again_id = job_actions.generate_again(job["id"], owner_id=None).id
    again = client.get(f"/api/jobs/{again_id}").get_json()

    def digests(item: dict[str, Any]) -> list[tuple[str, str]]:
        return [(i["role"], i["sha256"]) for i in item["inputs"]]

    assert retried["kind"] == again["kind"] == "edit"
    assert digests(retried) == digests(again) == digests(job)
    assert stored_files(edit_app) == before  # nothing written again


def test_edits_count_toward_the_daily_quota(app_factory):
    app = app_factory(
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS,
        ATELIER_DAILY_IMAGE_QUOTA=1,
    )
    client = app.test_client()
    assert post_edit(client, [("image", png(), "a.png")]).status_code == 202
    before = stored_files(app)

    refused = post_edit(client, [("image", png(color=(1, 2, 3)), "b.png")])

    assert refused.status_code == 429
    assert job_count(app) == (1, 1)
    # The refused upload's file was written before the quota check and removed after it.
    assert stored_files(app) == before


# --- bad input: refused, naming the field, nothing stored, nothing sent ---------------------


def assert_nothing_stored_or_sent(
    app: Flask, emulator: Any, before: set[str], jobs: tuple[int, int] = (0, 0)
) -> None:
    run_ready(app)
    assert job_count(app) == jobs
    assert stored_files(app) == before
    assert emulator_log(emulator) == []


def refused(response: Any, status: int, field: str | None) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error.get("field") == field, error
    return error["message"]


def test_too_many_images(edit_app, emulator):
    client = edit_app.test_client()
    files = [("image", png(color=(n, 0, 0)), f"{n}.png") for n in range(17)]

    message = refused(post_edit(client, files), 400, "image")

    assert "at most 16" in message
    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_file_that_is_not_an_image(edit_app, emulator):
    client = edit_app.test_client()
    script = b"<script>alert(1)</script>" + b" " * 100

    message = refused(post_edit(client, [("image", script, "x.png")]), 400, "image")

    assert "not a PNG, JPEG or WebP" in message
    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_second_image_that_is_bad_leaves_the_first_unstored(edit_app, emulator):
    client = edit_app.test_client()
    files = [("image", png(), "a.png"), ("image", b"GIF89a" + b"\0" * 50, "b.gif")]

    refused(post_edit(client, files), 400, "image")

    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_decompression_bomb(edit_app, emulator):
    client = edit_app.test_client()
    bomb = png((5000, 5000), "L", 0)  # 25 megapixels in a few kilobytes
    assert len(bomb) < 100_000

    message = refused(post_edit(client, [("image", bomb, "bomb.png")]), 400, "image")

    assert "5000x5000" in message
    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_truncated_image_that_does_not_decode(edit_app, emulator):
    client = edit_app.test_client()
    broken = png((300, 300), "RGB", (1, 2, 3))
    broken = broken[: len(broken) // 2]

    refused(post_edit(client, [("image", broken, "half.png")]), 400, "image")

    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_mask_of_the_wrong_size(edit_app, emulator):
    client = edit_app.test_client()

    message = refused(
        post_edit(client, [("image", png((64, 48)), "a.png"), ("mask", mask((48, 64)), "m.png")]),
        400,
        "mask",
    )

    assert "48x64" in message and "64x48" in message
    assert_nothing_stored_or_sent(edit_app, emulator, set())


@pytest.mark.parametrize(
    "bad_mask",
    [png((64, 48), "RGB"), jpeg((64, 48))],
    ids=["png-without-alpha", "jpeg"],
)
def test_a_mask_without_alpha(edit_app, emulator, bad_mask):
    client = edit_app.test_client()

    refused(
        post_edit(client, [("image", png(), "a.png"), ("mask", bad_mask, "m.png")]), 400, "mask"
    )

    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_mask_without_an_image(edit_app, emulator):
    client = edit_app.test_client()

    refused(post_edit(client, [("mask", mask(), "m.png")]), 400, "mask")

    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_a_mask_data_url_that_is_not_png_base64(edit_app, emulator):
    client = edit_app.test_client()
    source = gallery_image(client)
    reset(emulator)
    before = stored_files(edit_app)

    for bad in ("data:image/jpeg;base64,AAAA", "data:image/png;base64,***", "https://x/m.png"):
        response = post_json_edit(edit_app.test_client(), [source["id"]], mask=bad)
        refused(response, 400, "mask")
    assert_nothing_stored_or_sent(edit_app, emulator, before, jobs=(1, 0))


def test_an_oversized_upload_is_413_json(app_factory, emulator):
    app = app_factory(
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS,
        ATELIER_MAX_REQUEST_MB=1,
    )
    client = app.test_client()
    big = png() + b"\0" * (1024 * 1024)
    # Encoded here: werkzeug's test client spools a large body to a file it never closes.
    boundary = "atelier-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nstorm\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    response = client.post(
        "/api/jobs", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    assert_nothing_stored_or_sent(app, emulator, set())


def test_an_upload_is_read_with_a_bound():
    class Endless(io.RawIOBase):
        """A stream of PNG-looking bytes that never ends, counting what was read."""

        read_total = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            Endless.read_total += len(buffer)
            buffer[:] = b"\x89" * len(buffer)
            return len(buffer)

    with pytest.raises(ValidationError) as refused_upload:
        inputs.read_upload(io.BufferedReader(Endless()), "image")

    assert refused_upload.value.field == "image"
    assert "larger than 50 MB" in refused_upload.value.message
    assert Endless.read_total <= inputs.MAX_INPUT_BYTES + 1 + io.DEFAULT_BUFFER_SIZE


def test_unknown_and_foreign_image_ids_are_the_same_400(users_app, emulator):
    alice, bob = token_client(users_app, "alice"), token_client(users_app, "bob")
    alices = gallery_image(alice)
    reset(emulator)
    jobs_before = job_count(users_app)
    files_before = stored_files(users_app)

    foreign = post_json_edit(bob, [alices["id"]])
    unknown = post_json_edit(bob, [alices["id"] + 1000])

    # The same status, code, field and words; only the id given differs.
    foreign_message = refused(foreign, 400, "reference_images")
    unknown_message = refused(unknown, 400, "reference_images")
    assert foreign.get_json()["error"]["code"] == unknown.get_json()["error"]["code"]
    assert foreign_message.replace(str(alices["id"]), "N") == unknown_message.replace(
        str(alices["id"] + 1000), "N"
    )
    run_ready(users_app)
    assert job_count(users_app) == jobs_before
    assert stored_files(users_app) == files_before
    assert emulator_log(emulator) == []
    # Alice herself may use it.
    assert post_json_edit(alice, [alices["id"]]).status_code == 202


@pytest.mark.parametrize("image_id", [2**70, "9" * 30, -1, 1.5, True, None, [1]])
def test_an_image_id_out_of_range_or_not_a_number_is_the_same_400(edit_app, emulator, image_id):
    client = edit_app.test_client()
    jobs_before = job_count(edit_app)

    response = post_json_edit(client, [image_id])

    refused(response, 400, "reference_images")
    assert job_count(edit_app) == jobs_before
    assert emulator_log(emulator) == []


def test_another_users_input_files_are_404(users_app):
    alice, bob = token_client(users_app, "alice"), token_client(users_app, "bob")
    job = post_edit(alice, [("image", png(), "a.png")]).get_json()
    url = job["inputs"][0]["url"]

    assert fetch(alice, url)[0] == 200
    assert fetch(bob, url)[0] == 404
    assert fetch(bob, job["inputs"][0]["thumbnail_url"])[0] == 404


def test_a_model_that_cannot_edit(edit_app, emulator):
    client = edit_app.test_client()

    message = refused(
        post_edit(client, [("image", png(), "a.png")], provider="azure:dall-e-3"), 400, "image"
    )

    assert "cannot edit" in message
    assert_nothing_stored_or_sent(edit_app, emulator, set())


def test_unknown_multipart_fields_and_bad_options_are_refused(edit_app, emulator):
    client = edit_app.test_client()

    refused(post_edit(client, [("picture", png(), "a.png")]), 400, "picture")
    refused(post_edit(client, [("image", png(), "a.png")], options="{not json"), 400, "options")
    refused(post_edit(client, [("image", png(), "a.png")], n="two"), 400, "n")

    assert_nothing_stored_or_sent(edit_app, emulator, set())
