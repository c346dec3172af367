"""Originals byte for byte: what the provider sent is what is stored, downloaded and zipped.

The app talks to the emulator through a recording proxy on loopback (`Recorder`), so each test
knows the exact bytes that came over the wire (b64_json answers and blob downloads) without
re-rendering anything. The job parameters live in a sidecar per image row; *Download with prompt*
gives a modified copy with them embedded.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import delete, select

from app import consistency, credentials, pngmeta, storage, zipstream
from app.models import Image, Job, JobInput, db, write_transaction
from tests.helpers import csrf_token
from tests.independent_azure import (
    IndependentAzure,
    independent_settings,
)
from tests.originals_helpers import (  # noqa: F401  (fixtures)
    GPT,
    Recorder,
    app,
    azure,
    client,
    data_dir,
    recorder,
    run_job,
    sha,
)


@pytest.fixture
def unsigned_app(app_factory: Any, azure: IndependentAzure) -> Flask:
    return app_factory(**independent_settings(azure))


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    mimetype: str
    headers: dict[str, str]


def download(client: FlaskClient, url: str) -> Downloaded:
    with client.get(url) as response:
        assert response.status_code == 200, (url, response.status_code)
        return Downloaded(response.get_data(), response.mimetype, dict(response.headers))


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with PILImage.open(io.BytesIO(data)) as image:
        return image.mode, image.size, image.tobytes()


def sidecar_of(app: Flask, job: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    path = data_dir(app) / storage.sidecar_name(image["sha256"], job["id"], image["index"])
    return json.loads(path.read_text())


# --- the stored original is the provider's bytes -------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"provider": GPT, "n": 2}, "image/png"),  # b64_json, PNG
        ({"provider": GPT, "options": {"output_format": "jpeg"}}, "image/jpeg"),  # b64, JPEG
        ({"provider": "azure:dall-e-3"}, "image/png"),  # a URL, downloaded
        ({"provider": "azure-async", "size": "256x256", "n": 2}, "image/png"),  # async URLs
    ],
    ids=["b64-png", "b64-jpeg", "url-dalle3", "url-async"],
)
def test_the_stored_original_is_exactly_what_the_provider_sent(
    client, recorder, body, content_type
):
    job = run_job(client, prompt="a brass compass", **body)

    sent = recorder.images_sent()
    assert len(sent) == len(job["images"])
    assert sorted(image["sha256"] for image in job["images"]) == sorted(map(sha, sent))
    for image in job["images"]:
        assert image["content_type"] == content_type
        original = download(client, f"/files/images/{image['id']}/original")
        assert sha(original.data) == image["sha256"]
        assert original.data in sent
        assert original.headers["Content-Disposition"] == (
            f"attachment; filename=atelier-{job['id']}-{image['index'] + 1}"
            f"{'.jpg' if content_type == 'image/jpeg' else '.png'}"
        )
        assert download(client, image["url"]).data == original.data


def test_the_stored_original_keeps_valid_content_credentials_and_the_copy_does_not(client):
    job = run_job(client, prompt="a signed pear", provider=GPT)
    image = job["images"][0]
    original = download(client, f"/files/images/{image['id']}/original").data
    copy = download(client, f"/files/images/{image['id']}/with-prompt").data

    assert credentials.inspect(original, "image/png")["valid"] is True
    with client.application.app_context():
        row = db.session.get(Image, image["id"])
        assert row.credentials_valid is True  # read at store time, kept with the row
        assert row.content_credentials["generator"]
    assert credentials.inspect(copy, "image/png")["valid"] is False


def test_an_edit_output_is_stored_as_sent_and_its_sidecar_names_its_inputs(app, client, recorder):
    source = run_job(client, prompt="a calm sea", provider=GPT)["images"][0]
    recorder.bodies.clear()

    job = run_job(client, prompt="make it stormy", provider=GPT, reference_images=[source["id"]])

    (sent,) = recorder.images_sent()
    (image,) = job["images"]
    assert image["sha256"] == sha(sent)
    assert download(client, f"/files/images/{image['id']}/original").data == sent
    sidecar = sidecar_of(app, job, image)
    assert sidecar["inputs"] == [{"role": "image", "sha256": source["sha256"]}]
    assert sidecar["kind"] == "edit"
    assert (sidecar["job_id"], sidecar["index"], sidecar["prompt"]) == (
        job["id"],
        0,
        "make it stormy",
    )


def test_every_stored_image_has_a_sidecar_with_its_job_parameters(app, client):
    job = run_job(client, prompt="two figs", provider=GPT, n=2)

    for image in job["images"]:
        sidecar = sidecar_of(app, job, image)
        assert sidecar["prompt"] == "two figs"
        assert (sidecar["job_id"], sidecar["index"], sidecar["n"]) == (job["id"], image["index"], 2)
        assert (sidecar["provider"], sidecar["model"]) == (job["provider"], job["model"])
        assert sidecar["created_at"] == job["created_at"]
        assert sidecar["options"] == job["options"]


# --- Download with prompt ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "extension"),
    [({}, "png"), ({"output_format": "jpeg"}, "jpg")],
)
def test_download_with_prompt_is_a_labelled_modified_copy_carrying_the_metadata(
    app, client, options, extension
):
    job = run_job(client, prompt="a kettle, «copper»", provider=GPT, options=options)
    image = job["images"][0]
    original = download(client, f"/files/images/{image['id']}/original").data

    response = download(client, f"/files/images/{image['id']}/with-prompt")

    assert response.data != original
    assert response.mimetype == image["content_type"]
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="atelier-{job["id"]}-1-with-prompt.{extension}"'
    )
    assert pngmeta.read_copy(response.data) == sidecar_of(app, job, image)
    assert pixels(response.data) == pixels(original)  # not re-encoded
    assert download(client, f"/files/images/{image['id']}/original").data == original


def test_a_webp_copy_carries_the_metadata_as_xmp_and_keeps_its_pixels():
    for mode, lossless in (("RGB", False), ("RGBA", True)):
        out = io.BytesIO()
        PILImage.effect_noise((40, 30), 40).convert(mode).save(out, "WEBP", lossless=lossless)
        metadata = {"atelier": 1, "prompt": "a <moth> & a lamp"}

        copy = pngmeta.embed_copy(out.getvalue(), metadata)

        assert pngmeta.read_copy(copy) == metadata
        assert pixels(copy) == pixels(out.getvalue())
        with PILImage.open(io.BytesIO(copy)) as image:
            assert "a &lt;moth&gt; &amp; a lamp" in image.info["xmp"].decode()
        assert pngmeta.embed_copy(copy, metadata) == copy  # once, however often


def test_a_jpeg_copy_splits_a_long_prompt_over_several_comments():
    out = io.BytesIO()
    PILImage.new("RGB", (16, 16), (10, 20, 30)).save(out, "JPEG")
    metadata = {"atelier": 1, "prompt": "ü" * 40000}  # 80 000 bytes: more than one segment

    copy = pngmeta.embed_copy(out.getvalue(), metadata)

    assert copy.count(b"\xff\xfe") >= 2
    assert pngmeta.read_copy(copy) == metadata
    assert pixels(copy) == pixels(out.getvalue())


def test_embedding_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match="PNG, JPEG or WebP"):
        pngmeta.embed_copy(b"GIF89a....", {"atelier": 1})


def test_downloads_of_an_unknown_image_are_404(client):
    assert client.get("/files/images/999/original").status_code == 404
    assert client.get("/files/images/999/with-prompt").status_code == 404


def test_a_damaged_original_gives_no_copy_with_prompt(app, client):
    job = run_job(client, prompt="soon damaged", provider=GPT)
    image = job["images"][0]
    path = data_dir(app) / f"images/{image['sha256'][:2]}/{image['sha256']}.png"
    path.write_bytes(path.read_bytes()[:100])

    with client.get(f"/files/images/{image['id']}/with-prompt") as response:
        assert response.status_code == 409
        assert "damaged" in response.get_data(as_text=True)


# --- ZIP -----------------------------------------------------------------------------------


def test_the_zip_holds_originals_and_a_manifest_by_default(client, recorder):
    job = run_job(client, prompt="two pears", provider=GPT, n=2)
    ids = [str(image["id"]) for image in job["images"]]

    with client.post(
        "/gallery/zip", data={"csrf_token": csrf_token(client), "ids": ids}
    ) as response:
        assert response.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    originals = [f"atelier-{job['id']}-{number}.png" for number in (1, 2)]
    assert sorted(archive.namelist()) == sorted([*originals, "manifest.json"])
    assert sorted(archive.read(name) for name in originals) == sorted(recorder.images_sent())


def test_the_zip_option_adds_the_with_prompt_copies(app, client):
    job = run_job(client, prompt="a plum", provider=GPT)
    image = job["images"][0]
    with app.test_request_context():
        rows = [db.session.get(Image, image["id"])]
        stream = b"".join(zipstream.image_archive(rows, storage.current(), with_prompt=True))

    archive = zipfile.ZipFile(io.BytesIO(stream))
    original = archive.read(f"atelier-{job['id']}-1.png")
    copy = archive.read(f"with-prompt/atelier-{job['id']}-1-with-prompt.png")
    assert sha(original) == image["sha256"]
    assert pngmeta.read_copy(copy) == sidecar_of(app, job, image)
    manifest = json.loads(archive.read("manifest.json"))["files"]
    assert manifest[0]["with_prompt_file"] == f"with-prompt/atelier-{job['id']}-1-with-prompt.png"


def test_the_gallery_zip_checkbox_asks_for_the_with_prompt_copies(client):
    job = run_job(client, prompt="a fig", provider=GPT)
    form = {"csrf_token": csrf_token(client), "ids": [str(job["images"][0]["id"])]}

    with client.post("/gallery/zip", data={**form, "with_prompt": "1"}) as response:
        names = zipfile.ZipFile(io.BytesIO(response.get_data())).namelist()
    page = client.get("/gallery").get_data(as_text=True)

    assert f"with-prompt/atelier-{job['id']}-1-with-prompt.png" in names
    assert '<input type="checkbox" name="with_prompt" value="1">' in page


# --- rebuild from files alone ----------------------------------------------------------------


def forget_the_database(app: Flask) -> None:
    with app.app_context(), write_transaction() as session:
        session.execute(delete(Image))
        session.execute(delete(JobInput))
        session.execute(delete(Job))


def test_rebuild_recreates_jobs_images_and_edit_inputs_from_sidecars(app, client):
    source_job = run_job(client, prompt="a calm sea", provider=GPT, n=2)
    jpeg_job = run_job(client, prompt="a jpeg", provider=GPT, options={"output_format": "jpeg"})
    source = source_job["images"][1]
    edit_job = run_job(client, prompt="stormy", provider=GPT, reference_images=[source["id"]])
    before = {job["id"]: job for job in (source_job, jpeg_job, edit_job)}
    forget_the_database(app)

    with app.app_context():
        report = consistency.rebuild(storage.current(app))

    assert sorted(report.created_jobs) == sorted(before)
    for job_id, old in before.items():
        new = client.get(f"/api/jobs/{job_id}").get_json()
        assert (new["prompt"], new["provider"], new["model"], new["n"]) == (
            old["prompt"],
            old["provider"],
            old["model"],
            old["n"],
        )
        assert new["options"] == old["options"]
        assert [(i["index"], i["sha256"]) for i in new["images"]] == [
            (i["index"], i["sha256"]) for i in old["images"]
        ]
    with app.app_context():
        inputs = db.session.scalars(select(JobInput).where(JobInput.job_id == edit_job["id"]))
        assert [(item.role, item.sha256) for item in inputs] == [("image", source["sha256"])]
        assert db.session.get(Job, edit_job["id"]).kind == "edit"
        report = consistency.verify(storage.current(app))
        assert report.clean, report.lines()


def test_rebuild_recreates_both_jobs_that_share_one_file(unsigned_app):
    app, client = unsigned_app, unsigned_app.test_client()
    first = run_job(client, prompt="the same pear", provider=GPT)
    second = run_job(client, prompt="the same pear", provider=GPT)
    assert first["images"][0]["sha256"] == second["images"][0]["sha256"]  # one file, no chunk
    forget_the_database(app)

    with app.app_context():
        report = consistency.rebuild(storage.current(app))

    assert sorted(report.created_jobs) == sorted([first["id"], second["id"]])


# --- deleting ------------------------------------------------------------------------------


def test_deleting_a_job_removes_its_sidecar_but_not_a_file_another_job_uses(unsigned_app):
    app, client = unsigned_app, unsigned_app.test_client()
    first = run_job(client, prompt="shared bytes", provider=GPT)
    second = run_job(client, prompt="shared bytes", provider=GPT)
    image = first["images"][0]
    folder = data_dir(app) / storage.sidecar_folder(image["sha256"])
    original = data_dir(app) / f"images/{image['sha256'][:2]}/{image['sha256']}.png"
    assert len(list(folder.iterdir())) == 2

    assert client.delete(f"/api/jobs/{first['id']}").status_code == 204

    assert [path.name for path in folder.iterdir()] == [f"{second['id']}-0.json"]
    assert original.is_file()

    assert client.delete(f"/api/jobs/{second['id']}").status_code == 204

    assert not folder.exists()
    assert not original.exists()


def test_purging_a_trashed_image_removes_its_sidecar(app, client):
    job = run_job(client, prompt="to the trash", provider=GPT, n=2)
    gone, kept = job["images"]
    with app.app_context():
        from app import curation

        curation.trash([gone["id"]])
        assert (data_dir(app) / storage.sidecar_name(gone["sha256"], job["id"], 0)).is_file()
        curation.purge()

    assert not (data_dir(app) / storage.sidecar_name(gone["sha256"], job["id"], 0)).exists()
    assert (data_dir(app) / storage.sidecar_name(kept["sha256"], job["id"], 1)).is_file()


# --- verify --------------------------------------------------------------------------------


def test_verify_reports_a_sha256_mismatch_and_never_fixes_it(app, client):
    job = run_job(client, prompt="a tampered file", provider=GPT)
    image = job["images"][0]
    path = data_dir(app) / f"images/{image['sha256'][:2]}/{image['sha256']}.png"
    tampered = path.read_bytes()[:-12] + b"not the same"
    path.write_bytes(tampered)

    with app.app_context():
        report = consistency.verify(storage.current(app), repair=True)

    assert report.hash_mismatches == [image["id"]]
    assert f"Hash mismatch: image {image['id']}" in "\n".join(report.lines())
    assert not report.clean
    assert path.read_bytes() == tampered
    assert client.get(f"/api/jobs/{job['id']}").get_json()["images"][0]["sha256"] == image["sha256"]


def test_verify_reports_a_missing_sidecar_and_repair_writes_it(app, client):
    job = run_job(client, prompt="a lost sidecar", provider=GPT)
    image = job["images"][0]
    sidecar = data_dir(app) / storage.sidecar_name(image["sha256"], job["id"], 0)
    content = sidecar.read_bytes()
    sidecar.unlink()

    with app.app_context():
        found = consistency.verify(storage.current(app))
        repaired = consistency.verify(storage.current(app), repair=True)

    assert found.missing_sidecars == [image["id"]]
    assert not found.clean
    assert repaired.clean
    assert sidecar.read_bytes() == content


def test_verify_reports_content_credentials_that_differ_from_the_row(app, client):
    job = run_job(client, prompt="credentials checked again", provider=GPT)
    image_id = job["images"][0]["id"]
    with app.app_context(), write_transaction() as session:
        session.get(Image, image_id).credentials_valid = False

    with app.app_context():
        report = consistency.verify(storage.current(app))

    assert report.credential_mismatches == {image_id: "credentials_valid"}
    assert not report.clean
