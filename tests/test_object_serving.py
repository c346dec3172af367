"""Serving images from object storage (issue #17 item 3): streamed through Atelier with the
data folder's headers, or, with ATELIER_STORAGE_REDIRECT=on, a redirect to a short-lived signed
URL of that one object. Against the real servers tests/objstore_servers.py starts (Azurite and
moto), each test on a fresh container or bucket.

moto serves a presigned URL without checking its signature or its expiry (moto 5's S3 does not
look at X-Amz-Signature or X-Amz-Expires), so what an S3 service refuses (another key, another
method, an expired URL) is checked by recomputing the SigV4 query signature from the AWS
specification (`sigv4_refusal`); Azurite checks its SAS itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import pytest
import requests
from flask import Flask

from app import blobstore, storage, storage_stats
from app.auth import accounts
from app.config import ConfigError
from app.models import Image, Job, JobStatus, db
from app.security import CONTENT_SECURITY_POLICY
from tests.browser import (
    checked_page,
    finished_job,
    serve_app,
    submit_job,
    wait_for_js,
)
from tests.edit_helpers import png
from tests.helpers import (
    OWNER_PASSWORD,
    csrf_token,
    generate,
    make_app,
    signed_in,
    wait_for_job,
)
from tests.objstore_servers import (  # noqa: F401  (fixtures)
    S3_KEY_ID,
    S3_SECRET,
    ObjectBackend,
    Relay,
    azurite_port_fixture,
    moto_port_fixture,
    object_store_fixture,
)

# Headers that differ between two answers of the same file for reasons of time alone.
TIMELY = ("Date", "Last-Modified", "Expires")


def image_urls(image: dict[str, Any]) -> list[str]:
    sha = image["sha256"]
    return [
        f"/files/images/{image['id']}",
        f"/files/thumbs/{image['id']}",
        f"/files/images/{image['id']}/original",
        f"/files/{sha}.png",
        f"/files/{sha}.png?download=1",
        f"/files/{sha}-256.webp",
        f"/files/{sha}-512.webp",
    ]


def comparable(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in TIMELY}


def stored_name(app: Flask, image_id: int) -> str:
    with app.app_context():
        return db.session.get(Image, image_id).file_name


def one_image(app: Flask) -> dict[str, Any]:
    job = generate(app.test_client(), prompt="a pear on a plate", size="256x256")
    assert job["status"] == "succeeded", job
    return {**job["images"][0], "job_id": job["id"]}


def owners_app(app_factory: Any, backend: ObjectBackend) -> Flask:
    """Sign-in on, redirect mode, two accounts: alice and bob."""
    app = app_factory(ATELIER_AUTH="on", ATELIER_STORAGE_REDIRECT="on", **backend.settings())
    with app.app_context():
        accounts.create_user("alice", OWNER_PASSWORD)
        accounts.create_user("bob", OWNER_PASSWORD)
    return app


def job_of(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json=body, headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture
def obj_app(app_factory: Any, object_store: ObjectBackend) -> Flask:
    return app_factory(**object_store.settings())


@pytest.fixture
def redirect_app(app_factory: Any, object_store: ObjectBackend) -> Flask:
    return app_factory(ATELIER_STORAGE_REDIRECT="on", **object_store.settings())


# --- streaming ----------------------------------------------------------------------------------


def test_every_backend_sends_the_same_headers_as_the_data_folder(
    app_factory, azurite_port, moto_port
):
    backends = [ObjectBackend("azure", azurite_port), ObjectBackend("s3", moto_port)]
    for backend in backends:
        backend.create()
    apps = [app_factory()] + [app_factory(**backend.settings()) for backend in backends]
    answers = []
    for app in apps:
        client = app.test_client()
        image = one_image(app)
        found = {}
        for url in image_urls(image):
            with client.get(url) as response:
                assert response.status_code == 200, url
                assert int(response.headers["Content-Length"]) == len(response.data)
                assert all(name in response.headers for name in TIMELY), url
                found[url] = (comparable(response), hashlib.sha256(response.data).hexdigest())
                etag = response.headers["ETag"]
            with client.get(url, headers={"If-None-Match": etag}) as again:
                assert again.status_code == 304, url
                found[f"304 {url}"] = comparable(again)
            with client.get(url, headers={"Range": "bytes=10-99"}) as part:
                assert part.status_code == 206, url
                found[f"206 {url}"] = (comparable(part), part.data)
        answers.append(found)
    # The emulator is deterministic: the same image (and id) in each app.
    assert answers[1] == answers[0]
    assert answers[2] == answers[0]
    headers = answers[0]["/files/images/1/original"][0]
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "private, no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"].startswith("attachment; filename=atelier-")


def test_a_conditional_request_is_answered_without_any_storage_call(app_factory, object_store):
    relay = Relay(object_store.port)
    app = app_factory(**object_store.settings(port=relay.port))
    client = app.test_client()
    image = one_image(app)
    url = f"/files/{image['sha256']}.png"
    first = client.get(url)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    relay.cut()  # any call to the storage service now fails
    try:
        with client.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status_code == 304
            assert response.headers["ETag"] == etag
            assert response.data == b""
        # What a browser sends: both validators (the ETag decides).
        both = {"If-None-Match": etag, "If-Modified-Since": last_modified}
        assert client.get(url, headers=both).status_code == 304
        # Another ETag needs the object: the service is down, so 503 with today's message.
        errors_before = storage_stats.snapshot()["errors"].get((kind(object_store), "get"), 0)
        with client.get(url, headers={"If-None-Match": '"other"'}) as response:
            assert response.status_code == 503
            assert "Image storage is failing" in response.get_data(as_text=True)
        errors = storage_stats.snapshot()["errors"].get((kind(object_store), "get"), 0)
        assert errors == errors_before + 1
    finally:
        relay.cut()


def kind(backend: ObjectBackend) -> str:
    return "az" if backend.kind == "azure" else "s3"


def test_a_range_is_read_alone_from_storage_and_answered_206(obj_app, object_store):
    client = obj_app.test_client()
    image = one_image(obj_app)
    original = object_store.store().get(stored_name(obj_app, image["id"]))
    url = f"/files/{image['sha256']}.png"

    read_before = storage_stats.snapshot()["bytes"].get((kind(object_store), "read"), 0)
    with client.get(url, headers={"Range": "bytes=100-1099"}) as response:
        assert response.status_code == 206
        assert response.headers["Content-Range"] == f"bytes 100-1099/{len(original)}"
        assert response.headers["Content-Length"] == "1000"
        assert response.data == original[100:1100]
    read = storage_stats.snapshot()["bytes"].get((kind(object_store), "read"), 0)
    assert read - read_before == 1000  # the range alone came from storage

    with client.get(url, headers={"Range": "bytes=-50"}) as response:
        assert response.status_code == 206
        assert response.data == original[-50:]
    with client.get(url, headers={"Range": f"bytes={len(original)}-"}) as response:
        assert response.status_code == 416
    # If-Range with another ETag: the whole file, 200.
    with client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}) as response:
        assert response.status_code == 200
        assert response.data == original
    # A plain request streams the whole object, counted once.
    read_before = storage_stats.snapshot()["bytes"].get((kind(object_store), "read"), 0)
    assert client.get(url).data == original
    read = storage_stats.snapshot()["bytes"].get((kind(object_store), "read"), 0)
    assert read - read_before == len(original)


def test_if_modified_since_alone_is_answered_from_the_objects_time(obj_app):
    client = obj_app.test_client()
    image = one_image(obj_app)
    url = f"/files/images/{image['id']}"
    last_modified = client.get(url).headers["Last-Modified"]
    with client.get(url, headers={"If-Modified-Since": last_modified}) as response:
        assert response.status_code == 304
    with client.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}) as r:
        assert r.status_code == 200 and len(r.data) == image["bytes"]


def test_a_missing_object_is_404_and_a_failing_service_503(app_factory, object_store):
    relay = Relay(object_store.port)
    app = app_factory(**object_store.settings(port=relay.port))
    client = app.test_client()
    image = one_image(app)
    object_store.store().delete(stored_name(app, image["id"]))
    for url in (f"/files/{image['sha256']}.png", f"/files/images/{image['id']}"):
        assert client.get(url).status_code == 404
        assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 404
    thumb = f"/files/{image['sha256']}-256.webp"
    assert client.get(thumb).status_code == 200
    relay.cut()
    try:
        for headers in ({}, {"Range": "bytes=0-9"}):
            with client.get(thumb, headers=headers) as response:
                assert response.status_code == 503
                assert "Image storage is failing" in response.get_data(as_text=True)
    finally:
        relay.cut()


def test_backends_count_bytes_and_errors_for_the_metrics(object_store):
    store = object_store.store()
    label = kind(object_store)

    def counted() -> tuple[int, int, int]:
        snapshot = storage_stats.snapshot()
        return (
            snapshot["bytes"].get((label, "written"), 0),
            snapshot["bytes"].get((label, "read"), 0),
            snapshot["errors"].get((label, "stat"), 0),
        )

    written, read, errors = counted()
    store.put("images/aa/counted.png", b"x" * 1000)
    assert store.get("images/aa/counted.png") == b"x" * 1000
    stream = store.open("images/aa/counted.png", 10, 90)
    assert (stream.size, stream.start, stream.length) == (1000, 10, 90)
    assert b"".join(stream.chunks) == b"x" * 90
    stream.close()
    assert counted() == (written + 1000, read + 1090, errors)
    with pytest.raises(blobstore.ObjectMissing):
        store.open("images/aa/absent.png")

    relay = Relay(object_store.port)
    relay_store = ObjectBackend(object_store.kind, relay.port, name=object_store.name).store()
    relay.cut()
    with pytest.raises(blobstore.StorageUnavailable):
        relay_store.stat("images/aa/counted.png")
    assert counted()[2] == errors + 1


def test_local_files_are_counted_too(tmp_path):
    store = blobstore.LocalStore(tmp_path)
    before = storage_stats.snapshot()["bytes"]
    store.put("images/aa/a.png", b"y" * 300)
    assert store.get("images/aa/a.png") == b"y" * 300
    stream = store.open("images/aa/a.png", 100)
    assert b"".join(stream.chunks) == b"y" * 200
    stream.close()
    after = storage_stats.snapshot()["bytes"]
    assert after[("file", "written")] - before.get(("file", "written"), 0) == 300
    assert after[("file", "read")] - before.get(("file", "read"), 0) == 500


# --- redirect mode ------------------------------------------------------------------------------


def test_redirects_lead_to_the_exact_bytes_with_the_right_headers(redirect_app, object_store):
    client = redirect_app.test_client()
    image = one_image(redirect_app)
    store = object_store.store()
    original = store.get(stored_name(redirect_app, image["id"]))
    small, large = storage.thumbnail_names(image["sha256"])
    expected = {
        f"/files/{image['sha256']}.png": (original, "image/png", "inline; filename=atelier-"),
        f"/files/{image['sha256']}.png?download=1": (original, "image/png", "attachment;"),
        f"/files/images/{image['id']}/original": (original, "image/png", "attachment; filename="),
        f"/files/images/{image['id']}": (original, "image/png", "inline; filename=atelier-"),
        f"/files/{image['sha256']}-256.webp": (store.get(small), "image/webp", None),
        f"/files/{image['sha256']}-512.webp": (store.get(large), "image/webp", None),
        f"/files/thumbs/{image['id']}": (store.get(small), "image/webp", "inline;"),
    }
    origin = f"http://127.0.0.1:{object_store.port}"
    for url, (data, content_type, disposition) in expected.items():
        with client.get(url) as response:
            assert response.status_code == 302, url
            location = response.headers["Location"]
            assert location.startswith(origin + "/"), location
            assert "ETag" not in response.headers
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            cache = response.headers["Cache-Control"]
        if "/files/images/" in url or "/files/thumbs/" in url:
            assert cache == "private, no-cache", url
        else:
            max_age = int(re.fullmatch(r"private, max-age=(\d+)", cache)[1])
            # Kept less long than the URL lives (10 to 15 minutes, less a 2-minute margin).
            assert 480 - 5 <= max_age <= 780, cache
        # The same URL while the 5-minute slot lasts, so the browser's cache keeps working.
        assert client.get(url).headers["Location"] == location
        served = requests.get(location, timeout=10)
        assert served.status_code == 200, (url, served.text[:300])
        assert served.content == data, url
        assert served.headers["Content-Type"] == content_type, url
        if disposition is not None:
            assert served.headers["Content-Disposition"].startswith(disposition), url
        assert served.headers["Cache-Control"] == "private, max-age=31536000, immutable"


def test_signed_urls_repeat_within_a_five_minute_slot_and_expire_on_its_grid(object_store):
    urls = blobstore.SignedUrls(object_store.store())
    response = blobstore.SignedResponse("image/png", "inline; filename=a.png")
    grid = blobstore.SIGNED_URL_GRID_SECONDS
    slot_start = (time.time() // grid + 1) * grid  # the next slot, so none of it has passed
    first, lifetime = urls.get("images/aa/a.png", response, now=slot_start + 1)
    assert lifetime == blobstore.SIGNED_URL_LIFETIME_SECONDS - 1
    again, lifetime = urls.get("images/aa/a.png", response, now=slot_start + grid - 1)
    assert again == first and lifetime == blobstore.SIGNED_URL_LIFETIME_SECONDS - grid + 1
    other_type = urls.get("images/aa/a.png", blobstore.SignedResponse("image/webp"), slot_start)
    other_name = urls.get("images/aa/b.png", response, now=slot_start)
    next_slot = urls.get("images/aa/a.png", response, now=slot_start + grid)
    assert len({first, other_type[0], other_name[0], next_slot[0]}) == 4


def test_redirect_mode_answers_a_conditional_request_before_signing(app_factory, object_store):
    relay = Relay(object_store.port)
    app = app_factory(ATELIER_STORAGE_REDIRECT="on", **object_store.settings(port=relay.port))
    client = app.test_client()
    image = one_image(app)
    relay.cut()
    try:
        for url, etag in (
            (f"/files/{image['sha256']}.png", image["sha256"]),
            (f"/files/images/{image['id']}", image["sha256"]),
            (f"/files/{image['sha256']}-256.webp", f"{image['sha256']}-256"),
        ):
            with client.get(url, headers={"If-None-Match": f'"{etag}"'}) as response:
                assert response.status_code == 304, url
                assert "Location" not in response.headers
    finally:
        relay.cut()


def test_preview_and_download_with_prompt_are_made_by_atelier(redirect_app, object_store):
    client = redirect_app.test_client()
    image = one_image(redirect_app)
    with client.get(f"/files/images/{image['id']}/with-prompt") as response:
        assert response.status_code == 200
        assert response.headers["Content-Disposition"].endswith('-with-prompt.png"')
        assert response.data.startswith(b"\x89PNG")
    frame = png((32, 24))
    with redirect_app.app_context():
        job = db.session.get(Job, image["job_id"])
        job.preview_name = storage.current().write_preview(job.id, frame)
        job.status = JobStatus.RUNNING
        db.session.commit()
    with client.get(f"/jobs/{image['job_id']}/preview") as response:
        assert response.status_code == 200
        assert response.data == frame
        assert response.headers["Cache-Control"] == "private, no-store"


def test_a_signed_azure_url_opens_only_its_object_only_for_reading_and_expires(
    app_factory, azurite_port
):
    backend = ObjectBackend("azure", azurite_port)
    backend.create()
    app = app_factory(ATELIER_STORAGE_REDIRECT="on", **backend.settings())
    client = app.test_client()
    image = one_image(app)
    name = stored_name(app, image["id"])
    location = client.get(f"/files/{image['sha256']}.png").headers["Location"]
    assert requests.get(location, timeout=10).status_code == 200

    thumb = storage.thumbnail_names(image["sha256"])[0]
    other = location.replace(quote(name), quote(thumb))
    assert other != location
    assert requests.get(other, timeout=10).status_code == 403
    assert (
        requests.put(
            location, data=b"overwritten", timeout=10, headers={"x-ms-blob-type": "BlockBlob"}
        ).status_code
        == 403
    )
    assert requests.delete(location, timeout=10).status_code == 403
    assert backend.store().get(name)[:4] == b"\x89PNG"  # unchanged
    # The response's type is fixed by the signature too.
    assert "rsct=image/png" in location
    html = location.replace("rsct=image/png", "rsct=text/html")
    assert requests.get(html, timeout=10).status_code == 403

    store = storage.current(app).blobs
    response = blobstore.SignedResponse("image/png")
    expired = store.sign(name, response, datetime.now(UTC) - timedelta(seconds=1))
    assert requests.get(expired, timeout=10).status_code == 403
    soon = store.sign(name, response, datetime.now(UTC) + timedelta(seconds=2))
    assert requests.get(soon, timeout=10).status_code == 200
    time.sleep(3)
    assert requests.get(soon, timeout=10).status_code == 403


def sigv4_refusal(url: str, method: str = "GET", now: float | None = None) -> str | None:
    """Why an S3 service would refuse a presigned URL (None: it would accept it), recomputing
    its SigV4 query signature with the test key as AWS documents it ("Authenticating
    Requests: Using Query Parameters")."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    stamp = query["X-Amz-Date"]
    signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    if (time.time() if now is None else now) > signed_at + int(query["X-Amz-Expires"]):
        return "expired"
    encode = lambda text: quote(text, safe="-_.~")  # noqa: E731
    canonical_query = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(
        (
            method,
            quote(unquote(parts.path), safe="/-_.~"),
            canonical_query,
            f"host:{parts.netloc}\n",
            query["X-Amz-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        )
    )
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = f"AWS4{S3_SECRET}".encode()
    for piece in scope.split("/"):
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not query["X-Amz-Credential"].startswith(S3_KEY_ID + "/"):
        return "another key"
    return None if hmac.compare_digest(expected, signature) else "signature does not match"


def test_a_presigned_s3_url_opens_only_its_object_only_for_reading_and_expires(
    app_factory, moto_port
):
    backend = ObjectBackend("s3", moto_port)
    backend.create()
    app = app_factory(ATELIER_STORAGE_REDIRECT="on", **backend.settings())
    client = app.test_client()
    image = one_image(app)
    name = stored_name(app, image["id"])
    location = client.get(f"/files/{image['sha256']}.png").headers["Location"]
    assert requests.get(location, timeout=10).status_code == 200
    assert sigv4_refusal(location) is None
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["response-content-type"] == "image/png"

    thumb = storage.thumbnail_names(image["sha256"])[0]
    other = location.replace(name, thumb)
    assert other != location
    assert sigv4_refusal(other) == "signature does not match"
    assert sigv4_refusal(location, method="PUT") == "signature does not match"
    assert sigv4_refusal(location, method="DELETE") == "signature does not match"
    changed_type = location.replace("image%2Fpng", "text%2Fhtml")
    assert changed_type != location and sigv4_refusal(changed_type) == "signature does not match"
    parts = urlsplit(location)
    assert sigv4_refusal(urlunsplit(parts._replace(path="/other-bucket/x.png"))) is not None

    store = storage.current(app).blobs
    soon = store.sign(
        name, blobstore.SignedResponse("image/png"), datetime.now(UTC) + timedelta(seconds=1)
    )
    assert sigv4_refusal(soon) is None
    assert sigv4_refusal(soon, now=time.time() + 2) == "expired"
    # The redirect's URL itself expires 10 to 15 minutes from now, on the 5-minute grid.
    expires = int(query["X-Amz-Expires"])
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ends = signed_at.timestamp() + expires
    grid = blobstore.SIGNED_URL_GRID_SECONDS
    assert abs(ends - round(ends / grid) * grid) <= 1  # SigV4 counts whole seconds
    assert 600 - 5 <= ends - time.time() <= 900
    assert sigv4_refusal(location, now=ends + 1) == "expired"


def test_another_users_image_is_404_never_a_redirect(app_factory, object_store):
    app = owners_app(app_factory, object_store)
    alice = signed_in(app, "alice", OWNER_PASSWORD)
    bob = signed_in(app, "bob", OWNER_PASSWORD)
    image = job_of(alice, prompt="alice's fig", size="256x256")["images"][0]
    for url in image_urls(image):
        assert alice.get(url).status_code == 302, url
        with bob.get(url) as refused:
            assert refused.status_code == 404, url
            assert "Location" not in refused.headers
    # Names that are not quite a stored file's: 404, never a redirect.
    sha = image["sha256"]
    for url in (
        f"/files/{sha}.jpg",
        f"/files/{sha.upper()}.png",
        f"/files/{sha}-128.webp",
        f"/files/{sha[:-1]}.png",
        "/files/images/999999",
        "/files/inputs/999999",
    ):
        with alice.get(url) as refused:
            assert refused.status_code == 404, url
            assert "Location" not in refused.headers
    # Signed out: sent to sign in, never to storage.
    anonymous = app.test_client().get(f"/files/{image['sha256']}.png")
    assert f"127.0.0.1:{object_store.port}" not in anonymous.headers.get("Location", "")


def test_a_share_link_redirects_to_its_image_and_nothing_else(app_factory, object_store):
    app = owners_app(app_factory, object_store)
    alice = signed_in(app, "alice", OWNER_PASSWORD)
    shared, kept = job_of(alice, prompt="two figs", size="256x256", n=2)["images"]
    created = alice.post(
        "/shares", data={"image_id": shared["id"], "days": "7", "csrf_token": csrf_token(alice)}
    )
    assert created.status_code == 201
    token = re.search(r"/s/([A-Za-z0-9_-]{20,})", created.get_data(as_text=True))[1]
    visitor = app.test_client()
    page = visitor.get(f"/s/{token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"/s/{token}/files/{shared['sha256']}" in html
    assert "sig=" not in html and "X-Amz-Signature" not in html
    with visitor.get(f"/s/{token}/files/{shared['sha256']}.png?download=1") as response:
        assert response.status_code == 302
        assert response.headers["Referrer-Policy"] == "no-referrer"
        served = requests.get(response.headers["Location"], timeout=10)
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == shared["sha256"]
    assert served.headers["Content-Disposition"].startswith("attachment;")
    with visitor.get(f"/s/{token}/files/{kept['sha256']}.png") as response:
        assert response.status_code == 404
        assert "Location" not in response.headers


def test_csp_names_the_storage_origin_only_in_redirect_mode(app_factory, object_store):
    streaming = app_factory(**object_store.settings())
    redirecting = app_factory(ATELIER_STORAGE_REDIRECT="on", **object_store.settings())
    origin = f"http://127.0.0.1:{object_store.port}"
    assert streaming.test_client().get("/").headers["Content-Security-Policy"] == (
        CONTENT_SECURITY_POLICY
    )
    policy = redirecting.test_client().get("/").headers["Content-Security-Policy"]
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["img-src"] == f"'self' data: {origin}"
    assert policy.replace(f" {origin}", "") == CONTENT_SECURITY_POLICY  # nothing else changed
    # Pages (and so the page cache) hold Atelier's own URLs, never signed ones.
    image = one_image(redirecting)
    gallery = redirecting.test_client().get("/gallery").get_data(as_text=True)
    assert f"/files/{image['sha256']}-256.webp" in gallery
    assert origin not in gallery and "sig=" not in gallery and "X-Amz-" not in gallery


def test_a_signing_failure_is_503_and_counted(app_factory, moto_port, monkeypatch):
    backend = ObjectBackend("s3", moto_port)
    backend.create()
    app = app_factory(ATELIER_STORAGE_REDIRECT="on", **backend.settings())
    image = one_image(app)
    # The same bucket through a client with no credentials at all: signing cannot happen.
    for name, value in (
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
        ("AWS_SESSION_TOKEN", None),
        ("AWS_PROFILE", None),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    unsigned = blobstore.S3Store(
        backend.url(), {k: v for k, v in backend.settings().items() if "KEY" not in k}
    )
    current = storage.current(app)
    app.extensions[storage.EXTENSION] = dataclasses.replace(current, blobs=unsigned)
    errors_before = storage_stats.snapshot()["errors"].get(("s3", "sign"), 0)
    with app.test_client().get(f"/files/{image['sha256']}.png") as response:
        assert response.status_code == 503
        assert "Image storage is failing; try again in a moment." in response.get_data(as_text=True)
    assert storage_stats.snapshot()["errors"].get(("s3", "sign"), 0) == errors_before + 1


def test_redirect_settings_are_checked_at_start_up(tmp_path, object_store):
    with pytest.raises(ConfigError, match="ATELIER_STORAGE_REDIRECT must be on or off"):
        make_app(tmp_path / "a", ATELIER_STORAGE_REDIRECT="yes", **object_store.settings())
    with pytest.raises(ConfigError, match="ATELIER_STORAGE_REDIRECT=on needs an object store"):
        make_app(tmp_path / "b", ATELIER_STORAGE_REDIRECT="on")
    with pytest.raises(ConfigError, match="ATELIER_STORAGE_REDIRECT=on needs an object store"):
        make_app(tmp_path / "c", ATELIER_STORAGE_REDIRECT="on", ATELIER_STORAGE_URL="file:")
    assert not (tmp_path / "c" / "images").exists()
    app = make_app(tmp_path / "d", ATELIER_STORAGE_REDIRECT="OFF", **object_store.settings())
    assert app.config["ATELIER_STORAGE_REDIRECT"] == "off"


# --- in a browser -------------------------------------------------------------------------------


def test_a_gallery_in_redirect_mode_shows_its_images_in_chromium(
    browser,
    object_store,
    tmp_path,
):
    with serve_app(
        tmp_path / "data",
        ATELIER_STORAGE_REDIRECT="on",
        ATELIER_EMULATOR_LATENCY_SECONDS="0.01",
        ATELIER_POLL_INTERVAL_SECONDS="0.1",
        **object_store.settings(),
    ) as base:
        for prompt in ("a red kite", "a blue kite"):
            job = finished_job(base, submit_job(base, prompt))
            assert job["status"] == "succeeded", job
        origin = f"http://127.0.0.1:{object_store.port}"
        with checked_page(browser) as page:
            loaded: list[str] = []
            page.on("requestfinished", lambda request: loaded.append(request.url))
            page.goto(base + "/gallery")
            wait_for_js(
                page,
                "() => { const images = [...document.querySelectorAll('img[src*=\"/files/\"]')];"
                " return images.length >= 2 && images.every(i => i.complete && i.naturalWidth > 0)"
                " }",
            )
        assert any(url.startswith(origin + "/") for url in loaded), loaded
