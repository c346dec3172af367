"""Reading Content Credentials (app.credentials): the summary of a file's C2PA manifest, its
budgets, and where it shows (the image's columns, the JSON API, the gallery's filter, the
migration that adds the columns)."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib

import pytest
from PIL import Image as PILImage
from sqlalchemy import create_engine
from sqlalchemy import inspect as inspect_schema

from app import credentials, library
from app.emulator.content_credentials import GENERATOR, ContentSigner, Ingredient, break_data_hash
from app.library import GalleryFilters
from app.models import Image, db
from app.validation import ValidationError
from tests.helpers import database_url_for, flask_db, wait_for_job

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@pytest.fixture(scope="module")
def signer() -> ContentSigner:
    return ContentSigner()


def picture(output_format: str = "png", colour: str = "teal") -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (96, 64), colour).save(buffer, output_format.upper())
    return buffer.getvalue()


def signed(signer: ContentSigner, output_format: str = "png", **options) -> bytes:
    return signer.sign(picture(output_format), output_format, model="gpt-image-2", **options)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_chunk_after_header(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]


# Reading


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_a_signed_image_is_valid_and_says_who_made_it(signer, output_format):
    summary = credentials.inspect(signed(signer, output_format), MIME_TYPES[output_format])

    assert summary == {
        "valid": True,
        "trusted": False,
        "generator": GENERATOR,
        "signer": GENERATOR,
        "software_agent": "gpt-image-2",
        "ai_generated": True,
        "signed_at": summary["signed_at"],
        "signed_at_source": "claimed",
        "ingredients": [],
        "issues": [],
    }
    assert summary["signed_at"].endswith("Z")


def test_an_untrusted_signer_is_valid_but_not_trusted_and_not_an_issue(signer):
    summary = credentials.inspect(signed(signer), "image/png")

    assert (summary["valid"], summary["trusted"], summary["issues"]) == (True, False, [])


def test_the_signers_root_as_trust_anchor_makes_it_trusted(signer):
    summary = credentials.inspect(signed(signer), "image/png", trust_anchors=signer.root_pem)

    assert (summary["valid"], summary["trusted"]) == (True, True)


def test_an_unsigned_image_has_no_credentials():
    assert credentials.inspect(picture("png"), "image/png") is None
    assert credentials.inspect(picture("jpeg"), "image/jpeg") is None


def test_an_image_mentioning_c2pa_without_a_manifest_has_no_credentials():
    text = png_chunk(b"tEXt", b"Comment\x00made without c2pa or jumb boxes")

    assert credentials.inspect(with_chunk_after_header(picture(), text), "image/png") is None


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_bytes_changed_after_signing_make_it_invalid_naming_the_data_hash(signer, output_format):
    tampered = break_data_hash(signed(signer, output_format), output_format)

    summary = credentials.inspect(tampered, MIME_TYPES[output_format])

    assert summary["valid"] is False
    assert summary["generator"] == GENERATOR
    assert summary["issues"] == [
        "the file's bytes changed after signing: the data hash does not match "
        "(assertion.dataHash.mismatch)"
    ]


def test_a_changed_pixel_byte_is_caught_too(signer):
    data = bytearray(signed(signer))
    data[data.find(b"IDAT") + 10] ^= 0xFF

    summary = credentials.inspect(bytes(data), "image/png")

    assert summary["valid"] is False
    assert any("data hash" in issue for issue in summary["issues"])


def test_an_unparseable_manifest_is_invalid_with_the_reason(signer):
    data = bytearray(signed(signer))
    start = data.find(b"caBX")
    for offset in range(start + 100, start + 140):
        data[offset] ^= 0x55

    summary = credentials.inspect(bytes(data), "image/png")

    assert summary["valid"] is False
    assert summary["generator"] is None
    assert summary["issues"][0].startswith("the manifest could not be parsed: ")


def test_a_manifest_chunk_of_garbage_is_invalid():
    garbage = png_chunk(b"caBX", b"\x00\x00\x00\x10jumbc2pa" + b"\x07" * 64)

    summary = credentials.inspect(with_chunk_after_header(picture(), garbage), "image/png")

    assert summary["valid"] is False
    assert summary["issues"][0].startswith("the manifest could not be parsed")


def test_an_enormous_manifest_is_not_parsed_and_is_invalid(monkeypatch):
    def must_not_run(*args):
        raise AssertionError("the SDK was asked to read an enormous manifest")

    monkeypatch.setattr(credentials, "_read_manifest_store", must_not_run)
    enormous = png_chunk(b"caBX", b"jumbc2pa" + bytes(credentials.MAX_MANIFEST_BYTES))
    data = with_chunk_after_header(picture(), enormous)

    summary = credentials.inspect(data, "image/png")

    assert summary["valid"] is False
    assert summary["issues"] == ["the manifest is too large to check (8.0 MiB > 8.0 MiB)"]


def test_a_file_over_the_size_budget_is_not_parsed(signer, monkeypatch):
    data = signed(signer)
    monkeypatch.setattr(credentials, "MAX_FILE_BYTES", len(data) - 1)

    summary = credentials.inspect(data, "image/png")

    assert summary["valid"] is False
    assert summary["issues"][0].startswith("the file is too large to check")


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_manifest_size_is_measured_from_the_container(signer, output_format):
    data = signed(signer, output_format)

    size = credentials.manifest_size(data, MIME_TYPES[output_format])

    assert 1000 < size < len(data) - len(picture(output_format)) + 100
    assert credentials.manifest_size(picture(output_format), MIME_TYPES[output_format]) == 0


def test_a_read_past_the_time_budget_gives_up_and_says_so(signer, monkeypatch):
    release = threading.Event()
    finished = threading.Event()

    def slow_read(*args):
        release.wait(10)
        finished.set()
        return None

    monkeypatch.setattr(credentials, "_read_manifest_store", slow_read)
    try:
        summary = credentials.inspect(signed(signer), "image/png", timeout=0.05)
    finally:
        release.set()

    assert summary["valid"] is False
    assert summary["issues"] == ["not checked: reading the manifest took too long (over 0.05 s)"]
    assert finished.wait(5)  # the abandoned read ends on its own


def test_stuck_reads_are_bounded_and_later_files_are_not_checked(signer, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(credentials, "_read_manifest_store", lambda *args: release.wait(10))
    data = signed(signer)
    try:
        for _ in range(credentials.MAX_STUCK_READS):
            credentials.inspect(data, "image/png", timeout=0.01)
        summary = credentials.inspect(data, "image/png", timeout=5)
    finally:
        release.set()

    assert summary["valid"] is False
    assert summary["issues"] == [
        "not checked: earlier checks are still running past their time budget"
    ]
    for _ in range(credentials.MAX_STUCK_READS):  # every stuck read gives its place back
        assert credentials._stuck.acquire(timeout=5)
    for _ in range(credentials.MAX_STUCK_READS):
        credentials._stuck.release()


def test_an_unexpected_error_is_recorded_not_raised(signer, monkeypatch):
    def broken(*args):
        raise RuntimeError("native library on fire")

    monkeypatch.setattr(credentials, "_read_manifest_store", broken)

    summary = credentials.inspect(signed(signer), "image/png")

    assert summary["valid"] is False
    assert summary["issues"] == ["the manifest could not be read: native library on fire"]


def test_ingredients_are_listed_by_title(signer):
    inputs = (
        Ingredient(signed(signer), "png", "harbour.png"),
        Ingredient(picture("jpeg"), "jpeg", "boat.jpg"),
    )

    summary = credentials.inspect(signed(signer, ingredients=inputs), "image/png")

    assert summary["valid"] is True
    assert summary["ingredients"] == ["harbour.png", "boat.jpg"]


# Summaries of manifest stores as the SDK reports them


def store(manifest: dict, state: str = "Valid", failures: list | None = None) -> dict:
    return {
        "active_manifest": "urn:c2pa:one",
        "manifests": {"urn:c2pa:one": manifest},
        "validation_state": state,
        "validation_results": {"activeManifest": {"failure": failures or []}},
    }


def actions(*entries: dict, label: str = "c2pa.actions.v2") -> dict:
    return {"label": label, "data": {"actions": list(entries)}}


@pytest.mark.parametrize(
    ("generator", "readable"),
    [
        ({"claim_generator_info": [{"name": "OpenAI API"}]}, "OpenAI API"),
        ({"claim_generator": "Azure OpenAI ImageGen c2pa-rs/0.49.5"}, "Azure OpenAI"),
        ({"claim_generator": "Microsoft_Responsible_AI/1.0 c2pa-rs/0.28"}, "Azure OpenAI"),
        ({"claim_generator_info": [{"name": "ChatGPT"}]}, "ChatGPT"),
        ({"claim_generator_info": [{"name": "Some Camera App"}]}, "Some Camera App"),
        ({}, None),
    ],
)
def test_generators_get_readable_names(generator, readable):
    assert credentials.summarise(store(generator))["generator"] == readable


def test_composite_ai_media_in_an_opened_action_counts_as_ai():
    opened = actions(
        {
            "action": "c2pa.opened",
            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/"
            "compositeWithTrainedAlgorithmicMedia",
            "softwareAgent": "Editor 2.1",
        }
    )

    summary = credentials.summarise(store({"assertions": [opened]}))

    assert summary["ai_generated"] is True
    assert summary["software_agent"] == "Editor 2.1"


def test_a_camera_capture_is_not_ai():
    captured = actions(
        {
            "action": "c2pa.created",
            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
        },
        label="c2pa.actions",
    )

    assert credentials.summarise(store({"assertions": [captured]}))["ai_generated"] is False


def test_a_timestamp_authoritys_time_wins_over_the_claimed_one():
    manifest = {
        "signature_info": {"issuer": "OpenAI", "time": "2026-11-30T10:00:00+00:00"},
        "assertions": [actions({"action": "c2pa.created", "when": "2026-11-30T09:59:59Z"})],
    }

    summary = credentials.summarise(store(manifest, state="Trusted"))

    assert (summary["signed_at"], summary["signed_at_source"]) == (
        "2026-11-30T10:00:00+00:00",
        "timestamp",
    )
    assert (summary["signer"], summary["trusted"], summary["valid"]) == ("OpenAI", True, True)


def test_unknown_failure_codes_keep_the_sdks_explanation():
    failures = [
        {"code": "signingCredential.untrusted", "explanation": "signing certificate untrusted"},
        {"code": "claim.missing", "explanation": "claim missing from manifest"},
    ]

    summary = credentials.summarise(store({"title": "a.png"}, state="Invalid", failures=failures))

    assert summary["valid"] is False
    assert summary["issues"] == ["claim missing from manifest (claim.missing)"]


def test_a_store_without_its_active_manifest_is_invalid():
    summary = credentials.summarise({"manifests": {}, "validation_state": "Valid"})

    assert summary["valid"] is False
    assert summary["issues"] == ["the manifest store names no active manifest"]


def test_columns_copy_the_verdict():
    assert credentials.columns(None) == {"content_credentials": None, "credentials_valid": None}
    summary = {"valid": False, "issues": ["x"]}
    assert credentials.columns(summary) == {
        "content_credentials": summary,
        "credentials_valid": False,
    }


# Where credentials show


@pytest.fixture
def images(app, client):
    """Three stored images: credentials valid, invalid, and none."""
    response = client.post("/api/jobs", json={"prompt": "three gulls", "size": "256x256", "n": 3})
    job = wait_for_job(client, response.get_json()["id"])
    ids = [image["id"] for image in job["images"]]
    valid = {**credentials._invalid("x"), "valid": True, "issues": [], "generator": GENERATOR}
    invalid = credentials._invalid("the manifest could not be parsed: broken")
    with app.app_context():
        for image_id, summary in zip(ids, (valid, invalid, None), strict=True):
            row = db.session.get(Image, image_id)
            for column, value in credentials.columns(summary).items():
                setattr(row, column, value)
        db.session.commit()
    return {"job": job["id"], "ids": ids}


def test_the_api_shows_each_images_credentials(client, images):
    job = client.get(f"/api/jobs/{images['job']}").get_json()
    shown = {image["id"]: image["content_credentials"] for image in job["images"]}
    valid_id, invalid_id, none_id = images["ids"]

    assert shown[none_id] is None
    assert shown[valid_id]["valid"] is True
    assert shown[valid_id]["generator"] == GENERATOR
    assert shown[invalid_id] == {
        "valid": False,
        "trusted": False,
        "generator": None,
        "signer": None,
        "software_agent": None,
        "ai_generated": False,
        "signed_at": None,
        "ingredients": [],
        "issues": ["the manifest could not be parsed: broken"],
    }


def test_the_gallery_filters_by_credentials(app, images):
    valid_id, invalid_id, _none_id = images["ids"]
    with app.app_context():
        page = library.gallery_page(GalleryFilters.from_args({"credentials": "valid"}), limit=50)
        assert [image.id for image in page.items] == [valid_id]
        page = library.gallery_page(GalleryFilters(credentials="invalid"), limit=50)
        assert [image.id for image in page.items] == [invalid_id]
        assert len(library.gallery_page(GalleryFilters(), limit=50).items) == 3


def test_the_credentials_filter_round_trips_and_refuses_nonsense():
    filters = GalleryFilters.from_args({"credentials": "valid"})

    assert filters.to_args() == {"credentials": "valid"}
    assert filters.active
    with pytest.raises(ValidationError) as refused:
        GalleryFilters.from_args({"credentials": "maybe"})
    assert refused.value.field == "credentials"


def test_the_migration_adds_and_removes_the_columns(tmp_path):
    def columns() -> dict[str, set[str]]:
        url = database_url_for(tmp_path) or f"sqlite:///{tmp_path / 'atelier.db'}"
        engine = create_engine(url)
        try:
            schema = inspect_schema(engine)
            return {
                table: {column["name"] for column in schema.get_columns(table)}
                | {index["name"] for index in schema.get_indexes(table)}
                for table in ("images", "job_inputs")
            }
        finally:
            engine.dispose()

    added = {"content_credentials", "credentials_valid"}
    assert flask_db(tmp_path, "upgrade").returncode == 0
    upgraded = columns()
    downgrade = flask_db(tmp_path, "downgrade", "805f0f12650d")
    downgraded = columns()

    assert added | {"ix_images_credentials_valid"} <= upgraded["images"]
    assert added <= upgraded["job_inputs"]
    assert downgrade.returncode == 0, downgrade.stderr
    assert not (added | {"ix_images_credentials_valid"}) & downgraded["images"]
    assert not added & downgraded["job_inputs"]
    assert flask_db(tmp_path, "upgrade").returncode == 0


def test_a_forked_worker_reads_with_contexts_of_its_own(signer):
    data = signed(signer)
    assert credentials.inspect(data, "image/png")["valid"] is True  # the parent made a context
    parents = dict(credentials._contexts)

    pid = os.fork()
    if pid == 0:  # the child: gunicorn's worker after the fork
        try:
            fresh = not credentials._contexts
            valid = credentials.inspect(data, "image/png")["valid"]
            os._exit(0 if fresh and valid else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert credentials._contexts == parents
